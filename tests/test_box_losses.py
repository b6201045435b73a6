"""yolo3.box_losses.iou_terms: IoU, GIoU, DIoU and CIoU against values worked out by
hand, CIoU's alpha held constant in the gradient, and finite values and gradients
for zero-size boxes. Runs on the TensorFlow and the JAX backends."""
import math

import keras
import numpy as np
import pytest
from keras import ops

from yolo3.box_losses import IOU_KINDS, iou_terms
from yolo3.errors import UserError

ATAN_3_4 = math.atan(0.75)    # 2 atan(1/2) = atan(4/3), so atan(2) - atan(1/2) = atan(3/4)
V_B = 4 / math.pi ** 2 * ATAN_3_4 ** 2
ALPHA_B = V_B / (1 - 1 / 3 + V_B)

# (pred, true) as x, y, w, h, and the expected iou, giou, diou, ciou.
PAIRS = [
    # [0,2]^2 and [1,3]^2: inter 1, union 7, hull [0,3]^2 = 9, d^2 = 2, c^2 = 18.
    ((1, 1, 2, 2), (2, 2, 2, 2), (1 / 7, 1 / 7 - 2 / 9, 1 / 7 - 2 / 18, 1 / 7 - 2 / 18)),
    # 2x1 and 1x2 on one centre: inter 1, union 3, hull 2x2 = 4, d = 0; the aspect
    # angles atan(1/2) and atan(2) differ by atan(3/4).
    ((0, 0, 2, 1), (0, 0, 1, 2), (1 / 3, 1 / 3 - 1 / 4, 1 / 3, 1 / 3 - ALPHA_B * V_B)),
    # [-1,1]^2 and [3,5]x[-1,1]: disjoint, hull 6x2 = 12, union 8, d^2 = 16, c^2 = 40.
    ((0, 0, 2, 2), (4, 0, 2, 2), (0, -4 / 12, -16 / 40, -16 / 40)),
    # [0,2]^2 inside [-2,2]^2: inter 4, union 16 = hull, d^2 = 2, c^2 = 32.
    ((0, 0, 4, 4), (1, 1, 2, 2), (1 / 4, 1 / 4, 1 / 4 - 2 / 32, 1 / 4 - 2 / 32)),
    # zero-width prediction in a unit box: IoU 0, hull = the unit box, same centre;
    # v = 4/pi^2 (pi/4 - 0)^2 = 1/4, alpha = 0.25 / 1.25 = 0.2, so CIoU = -0.05.
    ((0, 0, 0, 1), (0, 0, 1, 1), (0, 0, 0, -0.05)),
    # two zero-size boxes on one point: nothing to overlap, every term 0.
    ((3, 3, 0, 0), (3, 3, 0, 0), (0, 0, 0, 0)),
    # identical boxes: 1 (alpha = 0 / 0 guarded to 0).
    ((2, 1, 3, 5), (2, 1, 3, 5), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("kind", IOU_KINDS)
def test_hand_computed_pairs(kind):
    pred = np.array([p for p, _, _ in PAIRS], np.float32)
    true = np.array([t for _, t, _ in PAIRS], np.float32)
    expected = [e[IOU_KINDS.index(kind)] for _, _, e in PAIRS]
    got = ops.convert_to_numpy(iou_terms(pred, true, kind))
    assert got.shape == (len(PAIRS),)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_batch_dimensions_broadcast():
    pred = np.tile(np.array([[1, 1, 2, 2]], np.float32), (2, 3, 1))
    true = np.array([2, 2, 2, 2], np.float32)
    got = ops.convert_to_numpy(iou_terms(pred, true, "giou"))
    np.testing.assert_allclose(got, np.full((2, 3), 1 / 7 - 2 / 9), rtol=1e-5)


def gradient(fn, x):
    """d sum(fn(x)) / dx on the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = ops.sum(fn(variable))
        return tape.gradient(value, variable).numpy()
    if backend == "jax":
        import jax
        return np.asarray(jax.grad(lambda v: ops.sum(fn(v)))(x))
    pytest.skip(f"no gradient helper for the {backend} backend")


def overlap_reference(pred, true, kind, alpha=None):
    """The `kind` overlap of one pair of boxes with positive sizes, in float64,
    written out; for ciou, alpha given is held fixed."""
    (px, py, pw, ph), (tx, ty, tw, th) = pred, true
    iw = max(min(px + pw / 2, tx + tw / 2) - max(px - pw / 2, tx - tw / 2), 0)
    ih = max(min(py + ph / 2, ty + th / 2) - max(py - ph / 2, ty - th / 2), 0)
    union = pw * ph + tw * th - iw * ih
    iou = iw * ih / union
    cw = max(px + pw / 2, tx + tw / 2) - min(px - pw / 2, tx - tw / 2)
    ch = max(py + ph / 2, ty + th / 2) - min(py - ph / 2, ty - th / 2)
    diou = iou - ((px - tx) ** 2 + (py - ty) ** 2) / (cw ** 2 + ch ** 2)
    v = 4 / math.pi ** 2 * (math.atan(tw / th) - math.atan(pw / ph)) ** 2
    if alpha is None:
        alpha = v / (1 - iou + v) if v else 0.0     # v = 0: no aspect term
    return {"iou": iou, "giou": iou - (cw * ch - union) / (cw * ch), "diou": diou,
            "ciou": diou - alpha * v}[kind]


def test_ciou_gradient_holds_alpha_constant():
    pred = np.array([0.3, -0.2, 2.0, 1.0])
    true = np.array([0.0, 0.0, 1.0, 2.0])
    got = gradient(lambda p: iou_terms(p, true.astype(np.float32), "ciou"),
                   pred.astype(np.float32))

    def central_difference(alpha, step=1e-6):
        return np.array([(overlap_reference(pred + e, true, "ciou", alpha)
                          - overlap_reference(pred - e, true, "ciou", alpha)) / (2 * step)
                         for e in np.eye(4) * step])

    # the point's alpha: DIoU - CIoU with alpha 1 is v
    iou = overlap_reference(pred, true, "iou")
    v = overlap_reference(pred, true, "diou") - overlap_reference(pred, true, "ciou", 1.0)
    alpha = v / (1 - iou + v)
    np.testing.assert_allclose(got, central_difference(alpha), rtol=1e-3, atol=1e-5)
    # alpha differentiated too would give another gradient in w and h
    assert np.abs(central_difference(None) - central_difference(alpha))[2:].min() > 1e-2


@pytest.mark.parametrize("kind", IOU_KINDS)
def test_the_written_out_reference_agrees_on_the_positive_pairs(kind):
    # the reference (used by the loss tests) against the hand values
    for pred, true, expected in PAIRS[:4] + PAIRS[-1:]:
        assert overlap_reference(pred, true, kind) == pytest.approx(
            expected[IOU_KINDS.index(kind)], abs=1e-12)


@pytest.mark.parametrize("kind", IOU_KINDS)
@pytest.mark.parametrize("pred, true", [((0, 0, 0, 1), (0, 0, 1, 1)),     # zero width
                                        ((0, 0, 1, 0), (0.2, 0, 1, 1)),   # zero height
                                        ((3, 3, 0, 0), (3, 3, 0, 0)),     # both points
                                        ((0, 0, 1, 1), (5, 5, 0, 0)),     # point target
                                        ((2, 1, 3, 5), (2, 1, 3, 5))])    # identical
def test_zero_size_boxes_have_finite_values_and_gradients(kind, pred, true):
    pred = np.array(pred, np.float32)
    true = np.array(true, np.float32)
    value = ops.convert_to_numpy(iou_terms(pred, true, kind))
    grad = gradient(lambda p: iou_terms(p, true, kind), pred)
    assert np.isfinite(value) and np.isfinite(grad).all(), (value, grad)


def test_unknown_kind_is_a_user_error():
    with pytest.raises(UserError, match="^IoU kind 'eiou': not one of iou, giou, diou, ciou$"):
        iou_terms(np.zeros(4, np.float32), np.zeros(4, np.float32), "eiou")
