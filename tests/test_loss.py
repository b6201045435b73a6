"""yolo_loss against a slow, obvious numpy transcription of the original's formulas
(explicit loops over images, heads and true boxes), plus numerical safety."""
import numpy as np
import pytest
import keras
from keras import ops

from yolo3.anchors import TINY_MASK, YOLO_MASK
from yolo3.model import preprocess_true_boxes, yolo_loss
from tests.fixtures import TINY_ANCHORS, YOLO_ANCHORS
from tests.test_box_losses import overlap_reference


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bce_logits(z, x):
    """-z log(sigmoid(x)) - (1-z) log(1-sigmoid(x)), in float64."""
    p = sigmoid(x)
    return -(z * np.log(p) + (1 - z) * np.log(1 - p))


def iou_xywh(a, b):
    a0, a1 = a[:2] - a[2:] / 2, a[:2] + a[2:] / 2
    b0, b1 = b[:2] - b[2:] / 2, b[:2] + b[2:] / 2
    wh = np.maximum(np.minimum(a1, b1) - np.maximum(a0, b0), 0)
    inter = wh[0] * wh[1]
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def reference_loss(outputs, y_true, anchors, num_classes, mask, ignore_thresh,
                   box_loss="original", iou_normalizer=1.0, label_smoothing=0.0):
    """The loss written out with loops; box_loss other than "original": 1 - the
    overlap in input pixels replaces the xy and wh terms; label_smoothing eps: the
    class targets are y (1 - eps) + eps / 2."""
    outputs = [np.asarray(o, np.float64) for o in outputs]
    y_true = [np.asarray(y, np.float64) for y in y_true]
    batch = outputs[0].shape[0]
    input_h, input_w = outputs[0].shape[1] * 32, outputs[0].shape[2] * 32
    total = 0.0
    for l, head_mask in enumerate(mask):
        _, gh, gw, _ = outputs[l].shape
        na = len(head_mask)
        raw = outputs[l].reshape(batch, gh, gw, na, 5 + num_classes)
        for b in range(batch):
            truths = [y_true[l][b, j, i, k, :4] for j in range(gh) for i in range(gw)
                      for k in range(na) if y_true[l][b, j, i, k, 4] == 1]
            for j in range(gh):
                for i in range(gw):
                    for k in range(na):
                        t = raw[b, j, i, k]
                        y = y_true[l][b, j, i, k]
                        aw, ah = anchors[head_mask[k]]
                        px = (sigmoid(t[0]) + i) / gw
                        py = (sigmoid(t[1]) + j) / gh
                        pw = np.exp(t[2]) * aw / input_w
                        ph = np.exp(t[3]) * ah / input_h
                        pred = np.array([px, py, pw, ph])
                        best = max([iou_xywh(pred, tb) for tb in truths], default=0.0)
                        conf = bce_logits(y[4], t[4])
                        if y[4] == 1:
                            scale = 2 - y[2] * y[3]
                            if box_loss == "original":
                                txy = np.array([y[0] * gw - i, y[1] * gh - j])
                                twh = np.log(np.array([y[2] / aw * input_w,
                                                       y[3] / ah * input_h]))
                                total += scale * bce_logits(txy, t[0:2]).sum()
                                total += scale * 0.5 * ((twh - t[2:4]) ** 2).sum()
                            else:
                                pixels = np.array([input_w, input_h, input_w, input_h])
                                total += iou_normalizer * scale * (1 - overlap_reference(
                                    pred * pixels, y[:4] * pixels, box_loss))
                            total += conf
                            classes = y[5:] * (1 - label_smoothing) + label_smoothing / 2
                            total += bce_logits(classes, t[5:]).sum()
                        elif best < ignore_thresh:
                            total += conf
    return total / batch


def random_case(anchors, mask, size, num_classes, seed, objects=True):
    """Random outputs and the y_true of random boxes; size: the input's side, or
    its (height, width)."""
    h, w = (size, size) if np.isscalar(size) else size
    rng = np.random.default_rng(seed)
    batch = 2
    boxes = np.zeros((batch, 8, 5), np.float32)
    if objects:
        for b in range(batch):
            n = rng.integers(1, 8)
            x0 = rng.integers(0, w - 20, n)
            y0 = rng.integers(0, h - 20, n)
            boxes[b, :n, 0], boxes[b, :n, 1] = x0, y0
            boxes[b, :n, 2] = np.minimum(x0 + rng.integers(4, w, n), w - 1)
            boxes[b, :n, 3] = np.minimum(y0 + rng.integers(4, h, n), h - 1)
            boxes[b, :n, 4] = rng.integers(0, num_classes, n)
    y_true = preprocess_true_boxes(boxes, (h, w), anchors, num_classes, mask)
    outputs = [rng.normal(0, 1.5, (batch, y.shape[1], y.shape[2], 3 * (5 + num_classes)))
               .astype(np.float32) for y in y_true]
    return outputs, y_true


@pytest.mark.parametrize("anchors, mask, thresh", [(YOLO_ANCHORS, YOLO_MASK, 0.5),
                                                   (TINY_ANCHORS, TINY_MASK, 0.7)])
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_the_per_image_reference(anchors, mask, thresh, seed):
    outputs, y_true = random_case(anchors, mask, 96, 3, seed)
    expected = reference_loss(outputs, y_true, anchors, 3, mask, thresh)
    got = float(yolo_loss([*outputs, *y_true], anchors, 3, ignore_thresh=thresh))
    assert got == pytest.approx(expected, rel=1e-5)


def test_ignore_mask_uses_only_the_boxes_of_the_same_head():
    # A prediction that overlaps a true box of head 0 perfectly is not ignored in
    # head 1 (the reference loops over head 1's boxes only): compare both.
    outputs, y_true = random_case(YOLO_ANCHORS, YOLO_MASK, 128, 2, 5)
    expected = reference_loss(outputs, y_true, YOLO_ANCHORS, 2, YOLO_MASK, 0.5)
    assert float(yolo_loss([*outputs, *y_true], YOLO_ANCHORS, 2)) == pytest.approx(expected, rel=1e-5)


def test_no_objects_gives_only_the_confidence_term():
    outputs, y_true = random_case(YOLO_ANCHORS, YOLO_MASK, 64, 2, 3, objects=False)
    # Without objects every cell contributes BCE(0, t_conf) = softplus(t_conf).
    expected = sum(np.log1p(np.exp(o.reshape(*o.shape[:3], 3, 7)[..., 4].astype(np.float64))).sum()
                   for o in outputs) / 2
    loss, parts = yolo_loss([*outputs, *y_true], YOLO_ANCHORS, 2, return_parts=True)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(parts["xy"]) == 0 and float(parts["class"]) == 0


def gradient_of_loss(outputs, y_true, anchors):
    import tensorflow as tf
    variables = [tf.Variable(o) for o in outputs]
    with tf.GradientTape() as tape:
        loss = yolo_loss([*variables, *[tf.constant(y) for y in y_true]], anchors, 3)
    return loss, tape.gradient(loss, variables)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.GradientTape")
@pytest.mark.parametrize("objects", [True, False])
def test_gradients_are_finite_even_for_large_logits_and_degenerate_boxes(objects):
    outputs, y_true = random_case(YOLO_ANCHORS, YOLO_MASK, 64, 3, 11, objects)
    outputs[0][..., :] *= 60          # huge logits: exp overflows in float32
    if objects:
        y_true[2][0, 0, 0, 0, :5] = [0.01, 0.01, 0.0, 0.0, 1]   # zero-size true box
    loss, grads = gradient_of_loss(outputs, y_true, YOLO_ANCHORS)
    assert np.isfinite(float(loss))
    assert all(np.isfinite(g.numpy()).all() for g in grads)


def test_half_precision_outputs_give_the_float32_loss():
    outputs, y_true = random_case(YOLO_ANCHORS, YOLO_MASK, 64, 3, 4)
    exact = float(yolo_loss([*outputs, *y_true], YOLO_ANCHORS, 3))
    half = [ops.cast(o, "float16") for o in outputs]
    rounded = [np.asarray(ops.convert_to_numpy(h), np.float32) for h in half]
    expected = reference_loss(rounded, y_true, YOLO_ANCHORS, 3, YOLO_MASK, 0.5)
    assert float(yolo_loss([*half, *y_true], YOLO_ANCHORS, 3)) == pytest.approx(expected, rel=1e-5)
    assert exact == pytest.approx(expected, rel=1e-2)


def test_a_tight_bound_on_the_objects_gives_the_exact_loss():
    # max_true_boxes = the most objects any image has in a head: every object
    # slot is still gathered, so the loss is the reference's.
    outputs, y_true = random_case(YOLO_ANCHORS, YOLO_MASK, 96, 3, seed=3)
    most = int(max(y[..., 4].reshape(len(y), -1).sum(1).max() for y in y_true))
    expected = reference_loss(outputs, y_true, YOLO_ANCHORS, 3, YOLO_MASK, 0.5)
    got = float(yolo_loss([*outputs, *y_true], YOLO_ANCHORS, 3, max_true_boxes=most))
    assert most >= 2 and got == pytest.approx(expected, rel=1e-5)
    # one fewer drops an object's terms
    fewer = float(yolo_loss([*outputs, *y_true], YOLO_ANCHORS, 3, max_true_boxes=most - 1))
    assert fewer < expected * (1 - 1e-4)
