"""Networks: shapes, convolution counts, deterministic names, the training model,
and weight files (ours, Keras 3, the original's Keras 2 .h5)."""
import h5py
import keras
import numpy as np
import pytest

from yolo3.errors import UserError
from yolo3.model import tiny_yolo_body, yolo_body
from yolo3.training import build_body, compile_model, create_tiny_model, detection_body
from yolo3.weights import load_weights, save_weights
from tests.fixtures import TINY_ANCHORS


def convs(model):
    return [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]


@pytest.fixture(scope="module")
def yolo416():
    return yolo_body(keras.Input((416, 416, 3)), 3, 80)


def test_yolo_body_shapes_and_size(yolo416):
    assert [tuple(o.shape) for o in yolo416.outputs] == [
        (None, 13, 13, 255), (None, 26, 26, 255), (None, 52, 52, 255)]
    assert len(convs(yolo416)) == 75
    assert yolo416.count_params() == 62001757     # darknet yolov3.weights: same count


@pytest.mark.parametrize("size", [320, 608])
def test_other_input_sizes(size):
    body = tiny_yolo_body(keras.Input((size, size, 3)), 3, 2)
    assert [tuple(o.shape) for o in body.outputs] == [(None, size // 32, size // 32, 21),
                                                      (None, size // 16, size // 16, 21)]
    assert len(convs(body)) == 13
    assert body.count_params() == 8858734 - (255 - 21) * (512 + 1) - (255 - 21) * (256 + 1)


def test_names_follow_darknet_indexes_and_repeat_across_builds(yolo416):
    again = yolo_body(keras.Input((None, None, 3)), 3, 80)
    names = [l.name for l in yolo416.layers[1:]]
    assert names == [l.name for l in again.layers[1:]]
    assert {"pad_001", "add_004", "add_074", "upsample_085", "concat_086", "concat_098",
            "conv_081", "conv_093", "conv_105"} <= set(names)
    assert yolo416.get_layer("conv_081").filters == 255
    assert yolo416.get_layer("conv_080").kernel_size == (3, 3)
    # The skip connections are the ends of the 4th and 3rd stages (shortcuts 61, 36).
    concat = yolo416.get_layer("concat_086")
    assert [t._keras_history[0].name for t in concat.input] == ["upsample_085", "add_061"]
    assert [t._keras_history[0].name for t in yolo416.get_layer("concat_098").input] == \
        ["upsample_097", "add_036"]
    tiny = [l.name for l in tiny_yolo_body(keras.Input((None, None, 3)), 3, 80).layers[1:]]
    assert tiny[:5] == ["conv_000", "bn_000", "leaky_000", "maxpool_001", "conv_002"]
    assert "maxpool_011" in tiny and "concat_020" in tiny and "conv_022" in tiny


def test_training_model_trains_only_the_unfrozen_layers_and_saves_a_loadable_body(tmp_path):
    body = build_body(6, 3)
    save_weights(body, tmp_path / "start.h5")
    model = create_tiny_model((64, 64), TINY_ANCHORS, 3, weights_path=tmp_path / "start.h5",
                              freeze_body=2)
    assert model.get_layer("yolo_loss").output.shape == (None,)
    assert [tuple(i.shape) for i in model.inputs[1:]] == [(None, 2, 2, 3, 8), (None, 4, 4, 3, 8)]
    compile_model(model, 1e-2)
    rng = np.random.default_rng(0)
    x = rng.random((2, 64, 64, 3)).astype(np.float32)
    y = [rng.random((2, 2, 2, 3, 8)).round().astype(np.float32) * 0.5,
         np.zeros((2, 4, 4, 3, 8), np.float32)]
    trained = detection_body(model)
    before = {l.name: [w.copy() for w in l.get_weights()] for l in trained.layers if l.weights}
    history = model.fit([x, *y], np.zeros(2), epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    for layer in trained.layers:
        if layer.weights:
            same = all(np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights()))
            assert same == (layer.name not in ("conv_015", "conv_022")), layer.name
    save_weights(trained, tmp_path / "body.weights.h5")
    fresh = tiny_yolo_body(keras.Input((None, None, 3)), 3, 3)
    loaded, skipped = load_weights(fresh, tmp_path / "body.weights.h5")
    assert len(loaded) == 24 and not skipped
    for a, b in zip(fresh.predict(x, verbose=0), trained.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_pretrained_weights_skip_only_the_output_convs_for_another_class_count(tmp_path, capsys):
    coco = build_body(6, 80)
    save_weights(coco, tmp_path / "coco.h5")
    create_tiny_model((64, 64), TINY_ANCHORS, 3, weights_path=tmp_path / "coco.h5")
    out = capsys.readouterr().out
    assert "22 layers loaded, 2 skipped (conv_015, conv_022)" in out
    # YOLOv3 weights are not a tiny model: refused, naming the first bad layer.
    with pytest.raises(UserError, match="conv_000.*another model"):
        yolo = build_body(9, 3)
        save_weights(yolo, tmp_path / "yolo.h5")
        create_tiny_model((64, 64), TINY_ANCHORS, 3, weights_path=tmp_path / "yolo.h5")


def write_keras2_h5(path, body):
    """The original tool's weights file: Keras 2 HDF5 with conv2d_N and
    batch_normalization_N numbered in creation (darknet) order."""
    by_index = [(int(l.name[-3:]), l) for l in body.layers
                if l.weights and l.name[:4] in ("conv", "bn_0")]
    with h5py.File(path, "w") as f:
        names = []
        counts = {"conv": 0, "bn": 0}
        for _, layer in sorted(by_index, key=lambda t: (t[0], t[1].name.startswith("bn"))):
            kind = "conv" if layer.name.startswith("conv") else "bn"
            counts[kind] += 1
            name = f"conv2d_{counts[kind]}" if kind == "conv" else f"batch_normalization_{counts[kind]}"
            names.append(name)
            group = f.create_group(name)
            suffixes = (["kernel:0", "bias:0"] if kind == "conv" else
                        ["gamma:0", "beta:0", "moving_mean:0", "moving_variance:0"])
            weight_names = [f"{name}/{s}" for s in suffixes[:len(layer.get_weights())]]
            for w, value in zip(weight_names, layer.get_weights()):
                group.create_dataset(w, data=value)
            group.attrs["weight_names"] = np.array(weight_names, dtype="S")
        f.attrs["layer_names"] = np.array(names, dtype="S")
        f.attrs["keras_version"] = b"2.1.5"


def test_legacy_keras2_weights_load_by_order(tmp_path):
    source = build_body(6, 2)
    rng = np.random.default_rng(1)
    for layer in source.layers:
        layer.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) + (w.ndim == 1)
                           for w in layer.get_weights()])
    write_keras2_h5(tmp_path / "legacy.h5", source)
    target = build_body(6, 2)
    loaded, skipped = load_weights(target, tmp_path / "legacy.h5")
    assert len(loaded) == 24 and not skipped
    x = rng.random((1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(target.predict(x, verbose=0)[1], source.predict(x, verbose=0)[1],
                               rtol=1e-5, atol=1e-5)


def test_keras3_weights_files_and_damaged_files(tmp_path):
    source = build_body(6, 2)
    source.save_weights(tmp_path / "k3.weights.h5")
    target = build_body(6, 2)
    assert len(load_weights(target, tmp_path / "k3.weights.h5")[0]) == 24
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(UserError, match="junk.h5: not a readable weights file"):
        load_weights(target, tmp_path / "junk.h5")
    data = (tmp_path / "k3.weights.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.h5"):
        load_weights(target, tmp_path / "cut.h5")
