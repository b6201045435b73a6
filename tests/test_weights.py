"""yolo3.weights: the file layout written, loading by layer name, loading the original
tool's Keras 2 files by layer order, skipping output layers of another class count,
and the one-line errors."""
import h5py
import keras
import numpy as np
import pytest

from yolo3.errors import UserError
from yolo3.weights import FORMAT, load_weights, save_weights


def small_model(out_filters=6, hidden=4, extra=False):
    """conv_000 -> bn_000 -> conv_001 (hidden channels) -> conv_002 (the output),
    with random weights and names as in this project's models."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(hidden, 3, use_bias=False, name="conv_000")(inputs)
    x = keras.layers.BatchNormalization(name="bn_000")(x)
    x = keras.layers.Conv2D(5, 1, name="conv_001")(x)
    if extra:
        x = keras.layers.Conv2D(5, 1, name="extra")(x)
    x = keras.layers.Conv2D(out_filters, 1, name="conv_002")(x)
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(out_filters + hidden)
    for layer in model.layers:
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    return model


def zeroed(model):
    """`model` with every weight 0, so that a load is visible."""
    for layer in model.layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    return model


def weights_of(model):
    return {l.name: l.get_weights() for l in model.layers if l.weights}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert len(a[name]) == len(b[name])
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)


# ---- this project's files ---------------------------------------------------------

def test_saved_file_holds_one_group_per_layer_in_weights_order(tmp_path):
    model = small_model()
    save_weights(model, tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert f.attrs["format"] == FORMAT
        assert [n.decode() for n in f.attrs["layer_names"]] == [
            "conv_000", "bn_000", "conv_001", "conv_002"]
        assert sorted(f["bn_000"]) == ["0", "1", "2", "3"]   # gamma, beta, mean, variance
        bn = model.get_layer("bn_000")
        np.testing.assert_array_equal(f["bn_000"]["3"], bn.moving_variance.numpy())
        np.testing.assert_array_equal(f["conv_001"]["1"], model.get_layer("conv_001").bias)


def test_round_trip_by_layer_name(tmp_path):
    source = small_model()
    save_weights(source, tmp_path / "w.h5")
    target = zeroed(small_model())
    loaded, skipped = load_weights(target, tmp_path / "w.h5")
    assert loaded == ["conv_000", "bn_000", "conv_001", "conv_002"] and skipped == []
    assert_same(weights_of(target), weights_of(source))


def test_a_layer_missing_from_the_file_is_reported_and_keeps_its_weights(tmp_path):
    save_weights(small_model(), tmp_path / "w.h5")
    target = small_model(extra=True)
    before = target.get_layer("extra").get_weights()
    loaded, skipped = load_weights(target, tmp_path / "w.h5")
    assert skipped == [("extra", "not in the file")] and "extra" not in loaded
    assert_same({"extra": target.get_layer("extra").get_weights()}, {"extra": before})


# ---- another class count ----------------------------------------------------------

def test_output_layers_of_another_class_count_are_skipped(tmp_path):
    coco = small_model(out_filters=3 * (5 + 80))
    save_weights(coco, tmp_path / "coco.h5")
    target = small_model(out_filters=3 * (5 + 2))
    loaded, skipped = load_weights(target, tmp_path / "coco.h5", output_layers=("conv_002",))
    assert loaded == ["conv_000", "bn_000", "conv_001"]
    assert skipped == [("conv_002", "shape [(1, 1, 5, 255), (255,)] in the file, "
                                    "[(1, 1, 5, 21), (21,)] in the model")]
    assert_same({"conv_001": target.get_layer("conv_001").get_weights()},
                {"conv_001": coco.get_layer("conv_001").get_weights()})


def test_a_mismatch_outside_the_output_layers_is_another_model(tmp_path):
    save_weights(small_model(hidden=4), tmp_path / "w.h5")
    with pytest.raises(UserError, match=r"w\.h5: layer conv_000: shape .*"
                                        "the file belongs to another model"):
        load_weights(small_model(hidden=8), tmp_path / "w.h5", output_layers=("conv_002",))


def test_without_skip_mismatch_even_an_output_layer_mismatch_is_an_error(tmp_path):
    save_weights(small_model(out_filters=6), tmp_path / "w.h5")
    with pytest.raises(UserError, match="layer conv_002: shape"):
        load_weights(small_model(out_filters=9), tmp_path / "w.h5", skip_mismatch=False)


# ---- Keras 2 (the original tool) and Keras 3 files ---------------------------------

def write_keras2(path, model, names, whole_model=False):
    """A Keras 2 HDF5 weights file, written by hand: root attribute layer_names,
    one group per layer with attribute weight_names and one dataset per name.
    `names` maps this model's layer names to the auto names stored."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if whole_model else f
        root.attrs["layer_names"] = np.array(list(names.values()), "S")
        for mine, theirs in names.items():
            group = root.create_group(theirs)
            values = model.get_layer(mine).get_weights()
            weight_names = [f"{theirs}/w{i}:0" for i in range(len(values))]
            group.attrs["weight_names"] = np.array(weight_names, "S")
            for name, value in zip(weight_names, values):
                group.create_dataset(name, data=value)


@pytest.mark.parametrize("whole_model", [False, True])
def test_keras2_auto_names_are_paired_by_number_not_by_text(tmp_path, whole_model):
    """conv2d_2 < conv2d_3 < conv2d_10 (numbers, not text order) pair with conv_000,
    conv_001, conv_002; the stored order of the names does not matter."""
    source = small_model()
    names = {"conv_002": "conv2d_10", "conv_000": "conv2d_2",
             "bn_000": "batch_normalization_1", "conv_001": "conv2d_3"}
    write_keras2(tmp_path / "k2.h5", source, names, whole_model)
    target = zeroed(small_model())
    loaded, skipped = load_weights(target, tmp_path / "k2.h5")
    assert sorted(loaded) == ["bn_000", "conv_000", "conv_001", "conv_002"] and skipped == []
    assert_same(weights_of(target), weights_of(source))


def test_keras2_file_with_another_layer_count_is_another_model(tmp_path):
    source = small_model()
    write_keras2(tmp_path / "k2.h5", source, {"conv_000": "conv2d_1", "conv_001": "conv2d_2"})
    with pytest.raises(UserError, match="the weights file has 2 conv layers, the model has 3"):
        load_weights(small_model(), tmp_path / "k2.h5")


@pytest.mark.parametrize("name", ["k3.weights.h5", "k3.keras"])
def test_keras3_files_load_by_name(tmp_path, name):
    source = small_model()
    path = tmp_path / name
    source.save_weights(path) if name.endswith(".weights.h5") else source.save(path)
    target = zeroed(small_model())
    load_weights(target, path)
    assert_same(weights_of(target), weights_of(source))


# ---- errors -------------------------------------------------------------------------

def test_a_missing_file_is_the_callers_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(small_model(), tmp_path / "missing.h5")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "is a directory, expected a weights file"),
    (lambda p: p.write_bytes(b"not hdf5 at all"), "not a readable weights file"),
    (lambda p: h5py.File(p, "w").close(), "HDF5 file without Keras weights"),
])
def test_unreadable_files_are_one_line_errors_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(UserError, match=f"bad.h5: {message}"):
        load_weights(small_model(), path)


def test_a_file_of_another_model_with_no_common_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    save_weights(other, tmp_path / "other.h5")
    with pytest.raises(UserError, match="no layer of this model found in the file"):
        load_weights(small_model(), tmp_path / "other.h5")


def test_nan_weights_are_refused(tmp_path):
    source = small_model()
    kernel, bias = source.get_layer("conv_001").get_weights()
    bias[0] = np.nan
    source.get_layer("conv_001").set_weights([kernel, bias])
    save_weights(source, tmp_path / "nan.h5")
    with pytest.raises(UserError, match="layer conv_001: NaN or infinite values"):
        load_weights(small_model(), tmp_path / "nan.h5")
