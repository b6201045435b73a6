"""NaN and divergence: degenerate boxes never give a NaN loss; a diverging run
stops with a message naming likely causes and keeps the last good weights."""

import numpy as np
import pytest

from yolo3.anchors import get_anchors
from yolo3.model import preprocess_true_boxes, yolo_loss
from tests.fixtures import ROOT

TINY_ANCHORS = get_anchors(ROOT / "model_data" / "tiny_yolo_anchors.txt")
YOLO_ANCHORS = get_anchors(ROOT / "model_data" / "yolo_anchors.txt")

# x_min, y_min, x_max, y_max, class in input pixels (64 x 64 input).
DEGENERATE = np.array([
    [10, 10, 10, 30, 0],      # zero width (padding by the original's rule)
    [10, 10, 30, 10, 1],      # zero height: width > 0, so it becomes a target
    [40, 40, 20, 20, 0],      # max < min
    [-50, -50, -10, -10, 1],  # wholly outside, top-left
    [70, 70, 200, 200, 0],    # wholly outside, bottom-right
    [0, 0, 64, 64, 1],        # the whole image
    [63, 63, 64, 64, 0],      # one pixel in the corner
    [0, 0, 1e6, 1e6, 1],      # absurdly large
], dtype=np.float32)


def _loss(anchors, boxes, raw_scale, seed=0, size=64, num_classes=2):
    rng = np.random.default_rng(seed)
    y_true = preprocess_true_boxes(boxes[None], (size, size), anchors, num_classes)
    heads = len(y_true)
    outputs = [rng.normal(0, raw_scale, size=(1, size // s, size // s,
                                             3 * (5 + num_classes))).astype(np.float32)
               for s in (32, 16, 8)[:heads]]
    return outputs, y_true


@pytest.mark.parametrize("anchors", [TINY_ANCHORS, YOLO_ANCHORS], ids=["tiny", "yolov3"])
@pytest.mark.parametrize("raw_scale", [0.0, 1.0, 30.0])
def test_degenerate_boxes_give_a_finite_loss_and_gradient(anchors, raw_scale):
    """Every degenerate box at once, with raw outputs from zero to saturating."""
    import tensorflow as tf
    outputs, y_true = _loss(anchors, DEGENERATE, raw_scale)
    variables = [tf.Variable(o) for o in outputs]
    with tf.GradientTape() as tape:
        loss = yolo_loss([*variables, *[tf.constant(y) for y in y_true]], anchors, 2)
    grads = tape.gradient(loss, variables)
    assert np.isfinite(float(loss))
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("row", range(len(DEGENERATE)))
def test_each_degenerate_box_alone(row):
    outputs, y_true = _loss(TINY_ANCHORS, DEGENERATE[row:row + 1], 1.0, seed=row)
    loss = yolo_loss([*outputs, *y_true], TINY_ANCHORS, 2)
    assert np.isfinite(float(loss))


def _dataset(folder, count=8, size=64):
    from PIL import Image
    rng = np.random.default_rng(1)
    folder.mkdir()
    lines = []
    for i in range(count):
        pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        pixels[10:40, 12:44] = (220, 40, 40)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
        lines.append(f"{folder / f'im{i}.png'} 12,10,44,40,{i % 2}")
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("a\nb\n")


def test_absurd_learning_rate_stops_with_causes_and_keeps_good_weights(
        tmp_path, monkeypatch, capsys):
    """Stage 1 trains normally; stage 2 with --unfreeze-lr 1e30 diverges. The run
    stops in that epoch, names the likely causes, and keeps the weights from the
    end of stage 1 as last_good (the resume state stays at the good epoch)."""
    import h5py
    import train
    from yolo3.errors import run_cli
    monkeypatch.chdir(tmp_path)
    _dataset(tmp_path / "data")
    log = tmp_path / "log"
    status = run_cli(train.main, [
        "--annotations", str(tmp_path / "data" / "train.txt"),
        "--classes", str(tmp_path / "data" / "classes.txt"),
        "--anchors", str(ROOT / "model_data" / "tiny_yolo_anchors.txt"),
        "--weights", "none", "--log-dir", str(log), "--input-size", "64",
        "--batch-size", "2", "--unfreeze-batch-size", "2", "--freeze-epochs", "1",
        "--epochs", "3", "--val-split", "0", "--unfreeze-lr", "1e30", "--no-jit"])
    err = capsys.readouterr().err
    assert status == 1
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "epoch 2" in line and "learning rate" in line and "degenerate boxes" in line
    good = log / "last_good.weights.h5"
    assert str(good) in line
    assert not (log / "trained_weights_final.weights.h5").exists()

    def arrays(path):
        with h5py.File(path, "r") as f:
            return {name: [np.asarray(f[name][k]) for k in sorted(f[name])]
                    for name in f if isinstance(f[name], h5py.Group)}

    kept, stage_1 = arrays(good), arrays(log / "trained_weights_stage_1.weights.h5")
    assert kept.keys() == stage_1.keys() and len(kept) > 20
    for name in kept:
        for a, b in zip(kept[name], stage_1[name]):
            assert np.all(np.isfinite(a))
            np.testing.assert_array_equal(a, b)
    import json
    state = json.loads((log / "train_state" / "state.json").read_text())
    assert state["epoch"] == 1
