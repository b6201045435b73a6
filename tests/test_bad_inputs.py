"""Bad inputs through the real command lines: each row of the table in
docs/reliability.md has a test here. A user mistake gives exit status 2,
one `error: ...` line naming the file, line and value (an annotation file lists
all its bad lines under it), no traceback, and no output file left behind.
The scripts' main(argv) run in-process through run_cli, as `python X.py` does."""
import importlib
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.darknet import SMALL_CFG, SMALL_CFG_FLOATS
from yolo3.errors import run_cli
from tests.fixtures import ROOT

TINY_ANCHORS = str(ROOT / "model_data" / "tiny_yolo_anchors.txt")


def cli(capsys, script, argv):
    """(status, stdout, stderr) of `python SCRIPT.py ARGV...` run in-process."""
    module = importlib.import_module(script)
    capsys.readouterr()
    status = run_cli(module.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_user_error(result, *fragments):
    """Exit status 2, one `error:` line, no traceback; every fragment named."""
    status, out, err = result
    assert status == 2, (status, out, err)
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert err.lstrip().startswith("error:") or err.count("\n") >= 1, err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)
    return err


def save_image(path, mode="RGB", size=(64, 64), fmt=None, seed=0):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (size[1], size[0]),
                                             dtype=np.uint16))
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A valid small data set; tests break one thing at a time. The current folder
    is tmp_path, so default output paths never land in the repository."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data"
    folder.mkdir()
    lines = []
    for i in range(4):
        path = save_image(folder / f"im{i}.png", seed=i)
        lines.append(f"{path} 10,10,40,40,{i % 2}")
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("red\ngreen\n")
    return folder


def train_args(data, **overrides):
    args = {"--annotations": data / "train.txt", "--classes": data / "classes.txt",
            "--anchors": TINY_ANCHORS, "--weights": "none",
            "--log-dir": data.parent / "log", "--input-size": 64, "--batch-size": 2,
            "--freeze-epochs": 1, "--epochs": 1, "--val-split": 0.25}
    args.update(overrides)
    return [str(v) for kv in args.items() for v in kv]


def add_line(data, text):
    path = data / "train.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [text]) + "\n")
    return len(lines) + 1   # its line number


# ------------------------------------------------------------ annotation files

def test_malformed_line(capsys, data):
    number = add_line(data, f"{data / 'im0.png'} 10,10,40")
    err = assert_user_error(cli(capsys, "train", train_args(data)),
                            f"{data / 'train.txt'}:{number}:", "10,10,40",
                            "unparsable box")
    assert "1 bad line" in err.splitlines()[0]


def test_non_numeric_box(capsys, data):
    number = add_line(data, f"{data / 'im0.png'} 10,10,4O,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "10,10,4O,40,0")


def test_float_coordinates_are_accepted():
    from yolo3.annotation_file import parse_line
    line = parse_line("a b.jpg 10.5,12,40.25,41.75,1")
    assert line.path == "a b.jpg"
    np.testing.assert_array_equal(line.boxes, [[10.5, 12, 40.25, 41.75, 1]])
    assert line.boxes.dtype == np.float32


def test_min_not_below_max(capsys, data):
    number = add_line(data, f"{data / 'im0.png'} 40,10,10,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "x_min >= x_max", "40,10,10,40,0")


def test_class_id_out_of_range(capsys, data):
    number = add_line(data, f"{data / 'im0.png'} 10,10,40,40,2")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "class id 2", "10,10,40,40,2")


def test_box_outside_the_image(capsys, data):
    number = add_line(data, f"{data / 'im0.png'} 10,10,90,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "outside the 64x64 image")


def test_missing_image(capsys, data):
    number = add_line(data, "missing.png 10,10,40,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "image not found", "missing.png")


def test_all_bad_lines_reported_at_once(capsys, data):
    first = add_line(data, "missing.png 10,10,40,40,0")
    second = add_line(data, f"{data / 'im1.png'} 10,10,40,40,7")
    err = assert_user_error(cli(capsys, "train", train_args(data)),
                            f":{first}:", f":{second}:")
    assert "2 bad lines" in err


def test_skip_bad_trains_on_the_rest(data):
    """--skip-bad: the bad line is dropped with a warning (checked on the reader)."""
    from yolo3.annotation_file import read_annotations
    add_line(data, "missing.png 10,10,40,40,0")
    lines = read_annotations(data / "train.txt", 2, skip_bad=True)
    assert len(lines) == 4


def test_empty_annotation_file(capsys, data):
    (data / "train.txt").write_text("\n# only a comment\n")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      data / "train.txt", "no usable annotation lines")


def test_annotation_file_missing(capsys, data):
    assert_user_error(cli(capsys, "train", train_args(
        data, **{"--annotations": data / "nope.txt"})), data / "nope.txt", "not found")


def test_directory_instead_of_a_file(capsys, data):
    assert_user_error(cli(capsys, "train", train_args(
        data, **{"--annotations": data})), data, "folder")
    assert_user_error(cli(capsys, "train", train_args(
        data, **{"--classes": data})), data)
    assert_user_error(cli(capsys, "train", train_args(
        data, **{"--anchors": data})), data)


def test_binary_file_as_annotations(capsys, data):
    # (Bytes >= 0x80 are fuzzed in test_fuzz; here the message must stay printable
    # for pytest's strict capture, which the real stderr does not need.)
    (data / "train.txt").write_bytes(bytes(range(128)) * 4)
    assert_user_error(cli(capsys, "train", train_args(data)), data / "train.txt")


# ------------------------------------------------------------------ image files

def test_truncated_jpeg(capsys, data):
    path = save_image(data / "cut.jpg", fmt="JPEG")
    path.write_bytes(path.read_bytes()[:400])
    number = add_line(data, f"{path} 10,10,40,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "truncated", path)


def test_zero_byte_image(capsys, data):
    (data / "empty.jpg").write_bytes(b"")
    number = add_line(data, f"{data / 'empty.jpg'} 10,10,40,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "empty", "empty.jpg")


def test_text_file_named_jpg(capsys, data):
    (data / "notes.jpg").write_text("not an image")
    number = add_line(data, f"{data / 'notes.jpg'} 10,10,40,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "not an image", "notes.jpg")


def _png_header(width, height):
    """A PNG that claims width x height pixels (8-bit RGB) and holds none."""
    import struct
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_decompression_bomb(capsys, data):
    (data / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    number = add_line(data, f"{data / 'bomb.png'} 10,10,40,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "too large", "bomb.png")


def test_directory_as_image(capsys, data):
    (data / "folder.jpg").mkdir()
    number = add_line(data, f"{data / 'folder.jpg'} 10,10,40,40,0")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'train.txt'}:{number}:", "folder.jpg")


@pytest.mark.parametrize("mode, fmt, suffix", [
    ("RGB", "PNG", "jpg"),         # a PNG named .jpg
    ("L", "JPEG", "jpg"),          # greyscale
    ("P", "PNG", "png"),           # palette
    ("RGBA", "PNG", "png"),        # transparency
    ("CMYK", "JPEG", "jpg"),
    ("I;16", "PNG", "png"),        # 16-bit greyscale
    ("LA", "PNG", "png"),
    ("1", "PNG", "png"),           # 1-bit
])
def test_every_image_mode_is_accepted(tmp_path, mode, fmt, suffix):
    """Read by content, converted to RGB: the line validates and the training
    sample is a (64, 64, 3) image in [0, 1] with its box."""
    from yolo3.annotation_file import read_annotations
    from yolo3.utils import get_random_data
    path = save_image(tmp_path / f"image.{suffix}", mode, (80, 60), fmt)
    (tmp_path / "a.txt").write_text(f"{path} 10,10,40,40,0\n")
    (line,) = read_annotations(tmp_path / "a.txt", 1, full_check=True)
    image, boxes = get_random_data(line, (64, 64), random=False)
    assert image.shape == (64, 64, 3) and 0 <= image.min() and image.max() <= 1
    assert np.count_nonzero(boxes[:, 2] > boxes[:, 0]) == 1


# ----------------------------------------------------- classes, anchors, flags

def test_empty_classes_file(capsys, data):
    (data / "classes.txt").write_text("\n\n")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      data / "classes.txt", "no class names")


def test_classes_file_not_utf8(capsys, data):
    (data / "classes.txt").write_bytes(b"red\n\xff\xfegreen\n")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      data / "classes.txt", "not a UTF-8 text file")


def test_duplicate_class_name(capsys, data):
    (data / "classes.txt").write_text("red\ngreen\nred\n")
    assert_user_error(cli(capsys, "train", train_args(data)),
                      f"{data / 'classes.txt'}:3:", "red")


@pytest.mark.parametrize("text, what", [
    ("10,14, 23,27, 37,58, 81,82", "4 anchors"),
    ("10,14, 23,27, 37", "odd number"),
    ("10,14, 23,27, 37,58, 81,82, 135,169, 344,x", "'x'"),
    ("10,14, 23,27, 37,58, 81,82, 135,169, 344,-3", "-3"),
])
def test_anchors_file_with_a_wrong_count_or_value(capsys, data, text, what):
    (data / "anchors.txt").write_text(text + "\n")
    assert_user_error(cli(capsys, "train", train_args(
        data, **{"--anchors": data / "anchors.txt"})), data / "anchors.txt", what)


@pytest.mark.parametrize("size", [100, 0, 48])
def test_input_size_not_a_multiple_of_32(capsys, data, size):
    assert_user_error(cli(capsys, "train", train_args(data, **{"--input-size": size})),
                      f"--input-size {size}: must be a positive multiple of 32")


def test_bad_flag_value(capsys, data):
    assert_user_error(cli(capsys, "train", train_args(data, **{"--epochs": "ten"})),
                      "ten")


def test_named_weights_file_missing(capsys, data):
    assert_user_error(cli(capsys, "train", train_args(
        data, **{"--weights": data / "nope.h5"})), data / "nope.h5")


def _foreign_weights(path, filters):
    """A weights file whose conv_000 has `filters` filters (tiny's has 16)."""
    import keras
    from yolo3.weights import save_weights
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(filters, 3, use_bias=False, name="conv_000")(inputs)
    save_weights(keras.Model(inputs, x), path)
    return path


def test_weights_file_of_another_model(capsys, data):
    path = _foreign_weights(data / "other.weights.h5", 8)
    assert_user_error(cli(capsys, "train", train_args(data, **{"--weights": path})),
                      path, "conv_000", "another model")


def test_weights_file_that_is_not_hdf5(capsys, data):
    (data / "junk.h5").write_bytes(b"\x89HDF\r\n" + bytes(300))
    assert_user_error(cli(capsys, "train", train_args(
        data, **{"--weights": data / "junk.h5"})), data / "junk.h5")


def test_detector_with_a_weights_file_of_another_model(capsys, data):
    path = _foreign_weights(data / "other.weights.h5", 8)
    assert_user_error(cli(capsys, "yolo", [
        "--model", path, "--anchors", TINY_ANCHORS, "--classes", data / "classes.txt",
        "--image", data / "im0.png", "--output", data.parent / "out"]), path)
    assert not (data.parent / "out").exists() or not any((data.parent / "out").iterdir())


def test_log_dir_not_writable(capsys, data):
    """A file where the log folder should go (and, when not root, a read-only
    folder): stops before any training with the path named."""
    blocker = data.parent / "blocker"
    blocker.write_text("")
    assert_user_error(cli(capsys, "train", train_args(
        data, **{"--log-dir": blocker / "run"})), blocker)
    if os.geteuid() != 0:
        locked = data.parent / "locked"
        locked.mkdir(mode=0o500)
        assert_user_error(cli(capsys, "train", train_args(
            data, **{"--log-dir": locked / "run"})), locked)


def test_kmeans_with_an_empty_annotation_file(capsys, data):
    (data / "train.txt").write_text("")
    assert_user_error(cli(capsys, "kmeans", [data / "train.txt", "--out",
                                             data.parent / "anchors.txt"]),
                      data / "train.txt")
    assert not (data.parent / "anchors.txt").exists()


# ------------------------------------------------------ darknet cfg and weights

def darknet_files(folder, extra_floats=0):
    cfg = folder / "net.cfg"
    cfg.write_text(SMALL_CFG)
    weights = folder / "net.weights"
    floats = np.random.default_rng(0).uniform(0.1, 1, SMALL_CFG_FLOATS + extra_floats)
    weights.write_bytes(np.array([0, 2, 0], "<i4").tobytes()
                        + np.array([0], "<i8").tobytes() + floats.astype("<f4").tobytes())
    return cfg, weights


def test_weights_shorter_than_the_cfg(capsys, tmp_path):
    cfg, weights = darknet_files(tmp_path, extra_floats=-50)
    out = tmp_path / "out.weights.h5"
    assert_user_error(cli(capsys, "convert", [cfg, weights, out]),
                      weights, "ends in layer 1", "50 of its 105 floats are missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.cfg", "net.weights"]


def test_weights_longer_than_the_cfg(capsys, tmp_path):
    cfg, weights = darknet_files(tmp_path, extra_floats=7)
    out = tmp_path / "out.weights.h5"
    status, _, err = cli(capsys, "convert", [cfg, weights, out])
    assert status == 0 and "7 floats" in err and "left over" in err and out.is_file()
    out.unlink()
    assert_user_error(cli(capsys, "convert", [cfg, weights, out, "--strict"]),
                      weights, "7 floats")
    assert not out.exists()


def test_cfg_with_an_unknown_section(capsys, tmp_path):
    cfg, weights = darknet_files(tmp_path)
    cfg.write_text(SMALL_CFG.replace("[yolo]", "[yollo]"))
    assert_user_error(cli(capsys, "convert", [cfg, weights, tmp_path / "o.h5"]),
                      f"{cfg}:18:", "yollo")


def test_zero_byte_weights(capsys, tmp_path):
    cfg, weights = darknet_files(tmp_path)
    weights.write_bytes(b"")
    assert_user_error(cli(capsys, "convert", [cfg, weights, tmp_path / "o.h5"]),
                      weights, "header")


# ------------------------------------------------------------- write failures

def _limit_file_size():
    """In the child: files may not grow past 8 KiB (writes fail with EFBIG)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


def test_disk_full_while_writing(tmp_path):
    """A write error (the file-size limit stands in for a full disk): exit status
    2, one error line naming the output, and neither it nor a temporary left."""
    cfg, weights = darknet_files(tmp_path)
    out = tmp_path / "out.weights.h5"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, str(ROOT / "convert.py"), str(cfg),
                          str(weights), str(out)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, preexec_fn=_limit_file_size,
                         timeout=600)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error:")]
    assert str(out) in line and "too large" in line.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.cfg", "net.weights"]


def test_no_space_left_message(tmp_path, monkeypatch, capsys):
    """ENOSPC from the writer: `error: PATH: no space left on the device`."""
    import errno
    from yolo3 import atomic
    from yolo3.anchors import write_anchors

    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode:
            def write(_data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            handle.write = write
        return handle

    monkeypatch.setattr(atomic, "open", full_disk_open, raising=False)
    out = tmp_path / "anchors.txt"
    status = run_cli(lambda argv: write_anchors(out, [[10, 14]] * 6), [])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip() == f"error: {out}: no space left on the device"
    assert list(tmp_path.iterdir()) == []
