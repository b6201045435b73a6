"""convert.py: the original's command line, default outputs, atomic outputs, errors
as one line and exit status 2, and --to-darknet checked with OpenCV."""
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import convert
from tests.fixtures.darknet import cfg_text, random_weights
from yolo3.errors import run_cli

TINY_LIKE = [  # 2 heads, 1 class, input 32
    ("convolutional", dict(batch_normalize=1, filters=8, size=3, stride=1, pad=1, activation="leaky")),
    ("maxpool", dict(size=2, stride=2)),
    ("convolutional", dict(batch_normalize=1, filters=16, size=3, stride=1, pad=1, activation="leaky")),
    ("convolutional", dict(filters=18, size=1, stride=1, pad=1, activation="linear")),
    ("yolo", dict(mask="3,4,5", anchors="10,14, 23,27, 37,58, 81,82, 135,169, 344,319",
                  classes=1, num=6)),
    ("route", dict(layers=-3)),
    ("convolutional", dict(filters=18, size=1, stride=1, pad=1, activation="linear")),
    ("yolo", dict(mask="1,2,3", anchors="10,14, 23,27, 37,58, 81,82, 135,169, 344,319",
                  classes=1, num=6)),
]
THREE_HEADS = TINY_LIKE[:5] + [
    ("route", dict(layers=-3)),
    ("convolutional", dict(filters=18, size=1, stride=1, pad=1, activation="linear")),
    ("yolo", dict(mask="0,1,2", anchors="1,2, 3,4, 5,6, 7,8, 9,10, 11,12, 13,14, 15,16, 17,18",
                  classes=1, num=9)),
    ("route", dict(layers=-6)),
    ("convolutional", dict(filters=18, size=1, stride=1, pad=1, activation="linear")),
    ("yolo", dict(mask="3,4,5", anchors="1,2, 3,4, 5,6, 7,8, 9,10, 11,12, 13,14, 15,16, 17,18",
                  classes=1, num=9)),
]
X = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)


def files(tmp_path, sections=TINY_LIKE, **kwargs):
    cfg = tmp_path / "net.cfg"
    cfg.write_text(cfg_text(sections, width=32, height=32))
    random_weights(tmp_path / "net.weights", cfg, **kwargs)
    return str(cfg), str(tmp_path / "net.weights")


def cli(capsys, *argv):
    code = run_cli(convert.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def opencv_heads(cfg, weights, names):
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.setInput(X.transpose(0, 3, 1, 2).copy())
    return [o.transpose(0, 2, 3, 1) for o in net.forward(names)]


def listing(folder):
    return sorted(p.name for p in Path(folder).rglob("*"))


def test_default_outputs_by_head_count(tmp_path, capsys, monkeypatch):
    from yolo3.darknet import build_model, load_cfg
    from yolo3.weights import load_weights
    monkeypatch.chdir(tmp_path)
    cfg, weights = files(tmp_path)
    code, out, _ = cli(capsys, cfg, weights)
    assert code == 0 and "wrote model_data/tiny_yolo_weights.h5" in out
    assert "read 2076 of 2076 floats" in out  # 248 + 1216 + 306 + 306
    model = build_model(load_cfg(cfg))
    loaded, skipped = load_weights(model, "model_data/tiny_yolo_weights.h5")
    assert skipped == [] and len(loaded) == 6
    ref = opencv_heads(cfg, weights, ["conv_3", "conv_6"])
    for a, b in zip(model(X), ref):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4)
    cfg3, weights3 = files(tmp_path, THREE_HEADS)
    assert cli(capsys, cfg3, weights3)[0] == 0
    assert (tmp_path / "model_data" / "yolo_weights.h5").is_file()


def test_keras_output_and_anchors_out(tmp_path, capsys):
    from yolo3.anchors import get_anchors
    cfg, weights = files(tmp_path)
    code, out, _ = cli(capsys, cfg, weights, tmp_path / "m.keras",
                       "--anchors-out", tmp_path / "a.txt")
    assert code == 0, out
    model = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    ref = opencv_heads(cfg, weights, ["conv_3", "conv_6"])
    for a, b in zip(model(X), ref):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4)
    np.testing.assert_array_equal(get_anchors(tmp_path / "a.txt").ravel(),
                                  [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319])
    assert not [n for n in listing(tmp_path) if ".tmp-" in n]


@pytest.mark.parametrize("extra, message", [
    (["out.keras", "-w"], "-w writes weights"),
    (["out.txt"], "must end in .h5"),
    (["out.h5", "--anchors-out", "out.h5"], "must differ"),
    (["out.h5", "--bn-epsilon", "0"], "--bn-epsilon"),
])
def test_bad_outputs_write_nothing(tmp_path, capsys, monkeypatch, extra, message):
    cfg, weights = files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    code, _, err = cli(capsys, cfg, weights, *extra)
    assert code == 2 and message in err and err.count("\n") == 1
    assert listing(tmp_path) == before


def test_anchors_out_checked_before_writing(tmp_path, capsys):
    """A cfg without [yolo] has no anchors: an error, and no model written."""
    cfg, weights = files(tmp_path, TINY_LIKE[:4])
    code, _, err = cli(capsys, cfg, weights, tmp_path / "m.h5", "--anchors-out",
                       tmp_path / "a.txt")
    assert code == 2 and "no [yolo] sections" in err
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "a.txt").exists()
    text = Path(cfg).read_text()  # [yolo] without anchors= (optional in darknet)
    Path(cfg).with_name("noanchors.cfg").write_text(text + "\n[yolo]\nclasses=1\nnum=3\n")
    code, _, err = cli(capsys, Path(cfg).with_name("noanchors.cfg"), weights, tmp_path / "m.h5",
                       "--anchors-out", tmp_path / "a.txt")
    assert code == 2 and "section 6 [yolo]: no anchors= to write" in err
    assert not (tmp_path / "m.h5").exists()
    code, _, err = cli(capsys, cfg, weights)  # 0 heads: no default output name
    assert code == 2 and "give the output" in err


def test_truncated_leftover_strict_partial(tmp_path, capsys):
    cfg, weights = files(tmp_path, drop_floats=3)
    code, _, err = cli(capsys, cfg, weights, tmp_path / "m.h5")
    assert code == 2 and "conv_006" in err and "3 of its 306 floats are missing" in err
    assert not (tmp_path / "m.h5").exists()

    cfg, weights = files(tmp_path, extra_floats=5)
    code, out, err = cli(capsys, cfg, weights, tmp_path / "m.h5")
    assert code == 0 and "warning:" in err and "5 floats left over" in err
    (tmp_path / "m.h5").unlink()
    code, _, err = cli(capsys, cfg, weights, tmp_path / "m.h5", "--strict")
    assert code == 2 and "--strict" in err and not (tmp_path / "m.h5").exists()

    cfg, weights = files(tmp_path, drop_floats=306)  # the last conv is absent
    assert cli(capsys, cfg, weights, tmp_path / "m.h5")[0] == 2
    code, out, _ = cli(capsys, cfg, weights, tmp_path / "m.h5", "--partial")
    assert code == 0 and "weights for layers 0..3 (3 convolutions); no weights for layers 6" in out
    from yolo3.weights import read_weights
    assert sorted(read_weights(tmp_path / "m.h5")) == ["bn_000", "bn_002", "conv_000",
                                                       "conv_002", "conv_003"]


def test_progress_bar_and_missing_files(tmp_path, capsys, monkeypatch):
    from yolo3 import progress
    cfg, weights = files(tmp_path)
    code, _, err = cli(capsys, cfg, weights, tmp_path / "m.h5")
    assert code == 0 and "reading weights" not in err      # not a terminal: no bar
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setattr(progress, "DELAY", 0)
    code, _, err = cli(capsys, cfg, weights, tmp_path / "m.h5")
    assert code == 0 and "reading weights:" in err and "| 0/4 [" in err  # 4 convolutions
    code, _, err = cli(capsys, cfg, tmp_path / "nope.weights", tmp_path / "m2.h5")
    assert code == 2 and "nope.weights: no such file" in err
    assert cli(capsys)[0] == 2


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        convert.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for flag in ("--weights-only", "--plot-model", "--anchors-out", "--strict", "--partial",
                 "--bn-epsilon", "--to-darknet", "--classes", "--anchors", "--mask"):
        assert flag in out


def test_plot_model_message_or_file(tmp_path, capsys):
    cfg, weights = files(tmp_path)
    code, out, err = cli(capsys, cfg, weights, tmp_path / "m.h5", "-p")
    assert code == 0
    assert (tmp_path / "m.png").is_file() or "install pydot and graphviz" in err


def test_to_darknet_round_trip(tmp_path, capsys):
    """tiny_yolo_body (2 classes) weights -> darknet -> OpenCV and -> convert.py."""
    from yolo3.model import tiny_yolo_body
    from yolo3.weights import save_weights
    model = tiny_yolo_body(keras.Input((None, None, 3), name="image"), 3, 2)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if layer.name.startswith("bn_"):
            n = layer.weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(-.2, .2, n),
                               rng.uniform(-.2, .2, n), rng.uniform(0.5, 2, n)])
    save_weights(model, tmp_path / "trained.weights.h5")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "anchors.txt").write_text("10,14,  23,27,  37,58,  81,82,  135,169,  344,319\n")
    code, out, err = cli(capsys, "--to-darknet", tmp_path / "trained.weights.h5", "--classes",
                         tmp_path / "classes.txt", "--anchors", tmp_path / "anchors.txt",
                         tmp_path / "out" / "tiny2")
    assert code == 0, err
    assert "mask 3,4,5/1,2,3" in out
    cfg, weights = tmp_path / "out" / "tiny2.cfg", tmp_path / "out" / "tiny2.weights"
    assert "mask=1,2,3" in cfg.read_text() and "classes=2" in cfg.read_text()
    want = [np.asarray(o) for o in model(X)]
    for a, b in zip(want, opencv_heads(cfg, weights, ["conv_15", "conv_22"])):
        np.testing.assert_allclose(a, b, atol=1e-4)
    code, _, err = cli(capsys, cfg, weights, tmp_path / "back.keras", "--strict")
    assert code == 0, err
    back = keras.saving.load_model(tmp_path / "back.keras", compile=False)
    for a, b in zip(back(X), want):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)


def test_to_darknet_from_training_keras_file(tmp_path, capsys):
    """A .keras training model (body + yolo_loss layer) exports its detection body."""
    from yolo3.training import create_tiny_model, detection_body
    anchors = np.array([10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319],
                       np.float32).reshape(-1, 2)
    model = create_tiny_model((64, 64), anchors, 1, load_pretrained=False)
    model.save(tmp_path / "train.keras")
    (tmp_path / "anchors.txt").write_text("10,14, 23,27, 37,58, 81,82, 135,169, 344,319\n")
    code, _, err = cli(capsys, "--to-darknet", tmp_path / "train.keras", "--classes", "1",
                       "--anchors", tmp_path / "anchors.txt", tmp_path / "t")
    assert code == 0, err
    x = np.random.default_rng(2).uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    net = cv2.dnn.readNetFromDarknet(str(tmp_path / "t.cfg"), str(tmp_path / "t.weights"))
    net.setInput(x.transpose(0, 3, 1, 2).copy())
    ref = [o.transpose(0, 2, 3, 1) for o in net.forward(["conv_15", "conv_22"])]
    for a, b in zip(detection_body(model)(x), ref):
        np.testing.assert_allclose(np.asarray(a), b, atol=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--to-darknet", "m.h5", "out"], "needs --classes and --anchors"),
    (["--to-darknet", "m.h5", "--classes", "2", "--anchors", "a.txt"], "one argument"),
    (["--to-darknet", "missing.h5", "--classes", "2", "--anchors", "a.txt", "o"], "no such file"),
])
def test_to_darknet_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    Path("m.h5").write_bytes(b"")
    code, _, err = cli(capsys, *argv)
    assert code == 2 and message in err
