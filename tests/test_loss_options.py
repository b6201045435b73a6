"""yolo_loss's options (box_loss, iou_normalizer, label_smoothing) against the
written-out reference of test_loss, the parts they report, their validation,
YoloLoss's config in a saved training model, and one loss layer on inputs of two
sizes (multi-scale training)."""
import keras
import numpy as np
import pytest

from tests.fixtures import TINY_ANCHORS, YOLO_ANCHORS
from tests.test_box_losses import gradient
from tests.test_loss import random_case, reference_loss
from yolo3.anchors import TINY_MASK, YOLO_MASK
from yolo3.errors import UserError
from yolo3.model import YoloLoss, yolo_loss

CASES = [(YOLO_ANCHORS, YOLO_MASK, (64, 160)), (TINY_ANCHORS, TINY_MASK, (160, 64))]


@pytest.mark.parametrize("box_loss", ["iou", "giou", "diou", "ciou"])
@pytest.mark.parametrize("anchors, mask, size", CASES)
def test_iou_box_losses_match_the_reference(box_loss, anchors, mask, size):
    # Inputs 2.5 times wider than high or higher than wide: DIoU and CIoU in
    # relative units instead of pixels would be about 1% off in the box term.
    outputs, y_true = random_case(anchors, mask, size, 3, seed=2)
    expected = reference_loss(outputs, y_true, anchors, 3, mask, 0.5, box_loss=box_loss,
                              iou_normalizer=0.5)
    no_box = reference_loss(outputs, y_true, anchors, 3, mask, 0.5, box_loss=box_loss,
                            iou_normalizer=0.0)
    loss, parts = yolo_loss([*outputs, *y_true], anchors, 3, box_loss=box_loss,
                            iou_normalizer=0.5, return_parts=True)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(parts["box"]) == pytest.approx(expected - no_box, rel=1e-5)
    assert float(parts["xy"]) == 0 and float(parts["wh"]) == 0 and float(parts["box"]) > 0
    assert float(loss) == pytest.approx(sum(float(v) for v in parts.values()), rel=1e-6)


@pytest.mark.parametrize("anchors, mask, size", CASES)
def test_label_smoothing_matches_the_reference(anchors, mask, size):
    outputs, y_true = random_case(anchors, mask, size, 3, seed=4)
    for head, y in zip(outputs, y_true):   # confident and right: +-6 on the classes
        head.reshape(*y.shape[:4], 8)[..., 5:] = np.where(y[..., 5:] == 1, 6, -6)
    expected = reference_loss(outputs, y_true, anchors, 3, mask, 0.5, label_smoothing=0.1)
    got = float(yolo_loss([*outputs, *y_true], anchors, 3, label_smoothing=0.1))
    assert got == pytest.approx(expected, rel=1e-5)
    # BCE(t, z) = softplus(z) - t z: each class bit of an object, 1 at z = 6 or 0 at
    # z = -6, moves by eps/2 towards 1/2 and costs 0.05 * 6 = 0.3 more (batch of 2).
    objects = sum(y[..., 4].sum() for y in y_true)
    unsmoothed = float(yolo_loss([*outputs, *y_true], anchors, 3))
    assert got - unsmoothed == pytest.approx(0.3 * 3 * objects / 2, rel=1e-4)


def test_the_original_reports_no_box_term_and_smoothing_zero_is_the_original():
    outputs, y_true = random_case(*CASES[0], 3, seed=1)
    loss, parts = yolo_loss([*outputs, *y_true], YOLO_ANCHORS, 3, return_parts=True)
    assert float(parts["box"]) == 0 and float(parts["xy"]) > 0 and float(parts["wh"]) > 0
    same = yolo_loss([*outputs, *y_true], YOLO_ANCHORS, 3, label_smoothing=0.0,
                     box_loss="original", iou_normalizer=3.0)
    assert float(same) == float(loss)


@pytest.mark.parametrize("options, message", [
    ({"box_loss": "mse"}, "box loss 'mse': not one of original, iou, giou, diou, ciou"),
    ({"iou_normalizer": 0.0}, "iou_normalizer 0.0: not a positive number"),
    ({"iou_normalizer": float("nan")}, "iou_normalizer nan: not a positive number"),
    ({"label_smoothing": 1.0}, r"label_smoothing 1.0: not in \[0, 1\)"),
    ({"label_smoothing": -0.1}, r"label_smoothing -0.1: not in \[0, 1\)")])
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=f"^{message}$"):
        YoloLoss(TINY_ANCHORS, 2, **options)
    with pytest.raises(UserError, match=f"^{message}$"):
        yolo_loss([], TINY_ANCHORS, 2, **options)


@pytest.mark.parametrize("box_loss", ["giou", "ciou"])
def test_huge_logits_and_a_zero_size_true_box_give_finite_gradients(box_loss):
    outputs, y_true = random_case(*CASES[0], 3, seed=11)
    outputs[0] *= 60             # exp of the wh logits overflows float32
    y_true[0][0, 0, 0, 0, :5] = [0.1, 0.1, 0.0, 0.0, 1]
    rest = [*outputs[1:], *y_true]

    def loss(head0):
        return yolo_loss([head0, *rest], YOLO_ANCHORS, 3, box_loss=box_loss)

    grad = gradient(loss, outputs[0])
    assert np.isfinite(float(loss(outputs[0]))) and np.isfinite(grad).all()
    assert np.abs(grad).sum() > 0


def test_a_saved_training_model_keeps_its_loss_options(tmp_path):
    from yolo3.training import create_tiny_model
    options = {"box_loss": "ciou", "iou_normalizer": 0.5, "label_smoothing": 0.1}
    model = create_tiny_model((64, 64), TINY_ANCHORS, 2, load_pretrained=False,
                              freeze_body=0, loss_options=options)
    model.save(tmp_path / "train.keras")
    loaded = keras.saving.load_model(tmp_path / "train.keras").get_layer("yolo_loss")
    assert {k: getattr(loaded, k) for k in options} == options
    # a config from before these options loads as the original loss
    config = loaded.get_config()
    for key in options:
        del config[key]
    old = YoloLoss.from_config(config)
    assert (old.box_loss, old.iou_normalizer, old.label_smoothing) == ("original", 1.0, 0.0)


def test_one_loss_layer_on_inputs_of_two_sizes():
    # A model on (None, None) grids, as multi-scale training builds it; grids of
    # 2x2 and 3x4 cells have fewer anchor slots than max_true_boxes (100). On
    # TensorFlow one trace with unknown grid sizes serves both inputs.
    channels = 3 * (5 + 2)
    heads = [keras.Input((None, None, channels)) for _ in TINY_MASK]
    y_true = [keras.Input((None, None, 3, 7)) for _ in TINY_MASK]
    layer = YoloLoss(TINY_ANCHORS, 2, ignore_thresh=0.7, box_loss="ciou", label_smoothing=0.2)
    model = keras.Model([*heads, *y_true], layer([*heads, *y_true]))
    cases = [random_case(TINY_ANCHORS, TINY_MASK, size, 2, seed=6) for size in (64, (96, 128))]
    expected = [reference_loss(outputs, y, TINY_ANCHORS, 2, TINY_MASK, 0.7, box_loss="ciou",
                               label_smoothing=0.2) for outputs, y in cases]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        spec = [tf.TensorSpec((None, None, None, channels))] * 2 \
            + [tf.TensorSpec((None, None, None, 3, 7))] * 2
        run = tf.function(lambda *inputs: model(list(inputs)), input_signature=spec)
    else:
        def run(*inputs):
            return model.predict_on_batch(list(inputs))
    got = [float(run(*outputs, *y)[0]) for outputs, y in cases]
    assert got == pytest.approx(expected, rel=1e-5)
    if keras.backend.backend() == "tensorflow":
        assert run.experimental_get_tracing_count() == 1
