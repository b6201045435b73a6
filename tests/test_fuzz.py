"""Fuzzing (hypothesis, bounded to a few seconds per target): every parser either
returns a correct result or raises UserError; never another exception, never a
partial output file. No example database is written (tests must not write to the
repository)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fixtures.darknet import SMALL_CFG, SMALL_CFG_FLOATS
from yolo3.errors import UserError

# FUZZ_EXAMPLES=1000 for a longer local search; CI keeps the default.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)), deadline=None,
                database=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------
# Anchors files

ANCHOR_TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.integers(-5, 10**6).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.sampled_from(["", " ", "1e999", "nan", "0x10", "١٢", "1_0"])),
             max_size=20).map(lambda xs: ",".join(xs)),
    st.binary(max_size=40),
)


@FUZZ
@given(text=ANCHOR_TEXT)
def test_anchors_file(tmp_path_factory, text):
    from yolo3.anchors import get_anchors
    path = _write(tmp_path_factory.mktemp("anchors"), "anchors.txt", text)
    try:
        anchors = get_anchors(path)
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert anchors.dtype == np.float32 and anchors.shape in ((6, 2), (9, 2))
    assert np.all(np.isfinite(anchors)) and np.all(anchors > 0)


# ---------------------------------------------------------------------------
# preprocess_true_boxes: any valid boxes -> targets inside the grids

@st.composite
def box_batches(draw):
    """(boxes (m, T, 5) in input pixels, input_shape (h, w), num_classes, tiny)."""
    tiny = draw(st.booleans())
    h = 32 * draw(st.integers(1, 4))
    w = 32 * draw(st.integers(1, 4))
    num_classes = draw(st.integers(1, 5))
    m = draw(st.integers(1, 3))
    t = draw(st.integers(0, 6))
    coord = st.floats(-20, 200, allow_nan=False, width=32)
    rows = draw(st.lists(st.tuples(coord, coord, coord, coord,
                                   st.integers(0, num_classes - 1)),
                         min_size=m * t, max_size=m * t))
    boxes = np.array(rows, dtype=np.float32).reshape(m, t, 5)
    return boxes, (h, w), num_classes, tiny


def _anchors(tiny):
    path = "tiny_yolo_anchors.txt" if tiny else "yolo_anchors.txt"
    from yolo3.anchors import get_anchors
    return get_anchors(os.path.join(os.path.dirname(__file__), "..", "model_data", path))


@FUZZ
@given(case=box_batches())
def test_preprocess_true_boxes(case):
    from yolo3.anchors import anchor_masks
    from yolo3.model import preprocess_true_boxes
    boxes, input_shape, num_classes, tiny = case
    anchors = _anchors(tiny)
    y_true = preprocess_true_boxes(boxes.copy(), input_shape, anchors, num_classes)
    masks = anchor_masks(len(anchors))
    assert len(y_true) == len(masks)
    for head, y in enumerate(y_true):
        stride = (32, 16, 8)[head]
        assert y.shape == (boxes.shape[0], input_shape[0] // stride,
                           input_shape[1] // stride, len(masks[head]), 5 + num_classes)
        assert np.all(np.isfinite(y))
        objectness = y[..., 4]
        assert set(np.unique(objectness)) <= {0.0, 1.0}
        # Every assigned slot holds a class bit; empty slots hold nothing.
        assert np.all(y[objectness == 1][:, 5:].sum(-1) >= 1)
        assert np.all(y[objectness == 0][:, :5] == 0)
    # Each real box (width > 0) lands in at most one slot per head, and no head
    # holds more objects than there are real boxes.
    real = (boxes[..., 2] - boxes[..., 0] > 0).sum(axis=1)
    for y in y_true:
        assert np.all(y[..., 4].reshape(len(real), -1).sum(axis=1) <= real)


@FUZZ
@given(case=box_batches(), bad=st.sampled_from([-1, 5, 99, 2.5]))
def test_preprocess_true_boxes_bad_class(case, bad):
    """A class id outside [0, C) is refused with a message naming it."""
    from yolo3.model import preprocess_true_boxes
    boxes, input_shape, num_classes, tiny = case
    if bad == 5:
        bad = num_classes
    boxes = np.concatenate([boxes, np.array([[[1, 1, 9, 9, bad]]] * boxes.shape[0],
                                            np.float32)], axis=1)
    with pytest.raises((ValueError, UserError), match="class"):
        preprocess_true_boxes(boxes, input_shape, _anchors(tiny), num_classes)


# ---------------------------------------------------------------------------
# Annotation lines and files

NUMBER = st.one_of(st.integers(-10**6, 10**6).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["1e39", "-1e39", "1e400", "3.4e38", "1" * 60, "",
                                    "+", "-", ".", "e", "0x1", "1,5"]))
BOX = st.lists(NUMBER, min_size=0, max_size=7).map(",".join)
SEPARATOR = st.sampled_from([" ", "  ", "\t", "\u00a0", "\u3000", " \r", "\x0b"])
LINE = st.one_of(
    st.text(max_size=80),
    st.builds(lambda path, boxes, sep: sep.join([path] + boxes),
              st.text(min_size=0, max_size=20).filter(lambda s: "\n" not in s),
              st.lists(BOX, max_size=4), SEPARATOR),
)


def _check_line(line, num_classes):
    assert isinstance(line.path, str) and line.path
    assert line.boxes.dtype == np.float32 and line.boxes.shape[1:] == (5,)
    boxes = line.boxes
    assert np.all(np.isfinite(boxes)), boxes
    assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])
    classes = boxes[:, 4]
    assert np.all(classes == np.floor(classes)) and np.all(classes >= 0)
    if num_classes is not None:
        assert np.all(classes < num_classes)


@FUZZ
@given(text=LINE, num_classes=st.one_of(st.none(), st.integers(1, 5)))
@example(text="a.jpg 0,0,1e39,5,0", num_classes=None)     # float32 overflow -> inf
@example(text="a b.jpg 1,2,3,4,1e39", num_classes=None)
def test_annotation_line(text, num_classes):
    from yolo3.annotation_file import parse_line
    try:
        line = parse_line(text, source="f.txt:7", num_classes=num_classes)
    except UserError as exc:
        assert all(m.startswith("f.txt:7: ") for m in str(exc).split("\n")), str(exc)
        return
    _check_line(line, num_classes)


@FUZZ
@given(lines=st.lists(LINE, max_size=6), eol=st.sampled_from(["\n", "\r\n"]),
       bom=st.booleans(), raw=st.one_of(st.none(), st.binary(max_size=60)))
def test_annotation_file(tmp_path_factory, lines, eol, bom, raw):
    """Any file content: validated lines, or one UserError naming FILE:LINE."""
    from yolo3.annotation_file import read_annotations
    data = raw if raw is not None else (
        ("\ufeff" if bom else "") + eol.join(lines)).encode("utf-8", "surrogatepass")
    path = _write(tmp_path_factory.mktemp("ann"), "train.txt", data)
    try:
        good = read_annotations(path, num_classes=3, check_images=False)
    except UserError as exc:
        assert str(path) in str(exc).split("\n")[0]
        return
    for line in good:
        _check_line(line, 3)


# ---------------------------------------------------------------------------
# get_random_data: outputs inside the canvas, width and height > 1, <= max_boxes

MODES = [("RGB", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGBA", "PNG"),
         ("1", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG"), ("RGB", "JPEG"),
         ("L", "JPEG"), ("F", "TIFF"), ("RGB", "BMP")]


@st.composite
def image_cases(draw):
    iw, ih = draw(st.integers(1, 120)), draw(st.integers(1, 120))
    mode, fmt = draw(st.sampled_from(MODES))
    coord_x = st.floats(-10, iw + 10, allow_nan=False)
    coord_y = st.floats(-10, ih + 10, allow_nan=False)
    boxes = draw(st.lists(st.tuples(coord_x, coord_y, coord_x, coord_y,
                                    st.integers(0, 3)), max_size=12))
    # The parser guarantees x_min < x_max and y_min < y_max; order each box so.
    boxes = [(min(a, c), min(b, d), max(a, c) + 0.5, max(b, d) + 0.5, k)
             for a, b, c, d, k in boxes]
    size = (32 * draw(st.integers(1, 4)), 32 * draw(st.integers(1, 4)))
    return (iw, ih), mode, fmt, boxes, size, draw(st.integers(1, 8)), draw(
        st.integers(0, 2**32 - 1))


def _make_image(folder, image_size, mode, fmt, seed):
    from PIL import Image
    rng = np.random.default_rng(seed)
    iw, ih = image_size
    pixels = rng.integers(0, 256, size=(ih, iw, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, size=(ih, iw), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((ih, iw), dtype=np.float32))
    else:
        image = image.convert(mode)
    path = folder / f"image.{fmt.lower()}"
    image.save(path, format=fmt)
    return path


@FUZZ
@given(case=image_cases(), random=st.booleans())
def test_get_random_data(tmp_path_factory, case, random):
    from yolo3.annotation_file import AnnotationLine
    from yolo3.utils import get_random_data
    image_size, mode, fmt, boxes, (h, w), max_boxes, seed = case
    path = _make_image(tmp_path_factory.mktemp("img"), image_size, mode, fmt, seed)
    line = AnnotationLine(str(path), np.array(boxes, np.float32).reshape(-1, 5))
    image, box = get_random_data(line, (h, w), random=random, max_boxes=max_boxes,
                                 rng=np.random.default_rng(seed))
    assert image.shape == (h, w, 3) and image.dtype == np.float32
    assert np.all(np.isfinite(image)) and image.min() >= 0 and image.max() <= 1
    assert box.shape == (max_boxes, 5) and box.dtype == np.float32
    real = box[np.any(box != 0, axis=1)]
    assert len(real) <= min(max_boxes, len(boxes))
    # Real boxes first, zero padding after.
    assert np.all(box[len(real):] == 0)
    min_side = 1 if random else 0
    assert np.all(real[:, 0] >= 0) and np.all(real[:, 1] >= 0)
    assert np.all(real[:, 2] <= w) and np.all(real[:, 3] <= h)
    assert np.all(real[:, 2] - real[:, 0] > min_side)
    assert np.all(real[:, 3] - real[:, 1] > min_side)
    assert set(real[:, 4].tolist()) <= {float(b[4]) for b in boxes}


# ---------------------------------------------------------------------------
# darknet cfg parser and weights reader

CFG_KINDS = ["convolutional", "route", "shortcut", "upsample", "maxpool", "yolo",
             "avgpool", "dropout", "softmax", "net", "bogus", "Convolutional"]
CFG_KEYS = ["filters", "size", "stride", "pad", "padding", "batch_normalize",
            "activation", "layers", "from", "mask", "anchors", "classes", "num",
            "groups", "probability", "dilation", "whatever", ""]
CFG_VALUE = st.one_of(st.integers(-3, 40).map(str),
                      st.sampled_from(["leaky", "linear", "mish", "tanhh", "-1,-3",
                                       "0,1,2", "10,14, 23,27, 37,58", "1e3", "2.0",
                                       "70000", "", "nan", "-1,x", "١"]),
                      st.text(max_size=8))


@st.composite
def cfg_texts(draw):
    lines = ["[net]", f"width={draw(st.sampled_from([32, 64, 33, 0, -32]))}",
             f"height={draw(st.sampled_from([32, 64]))}",
             f"channels={draw(st.sampled_from([1, 3, 0]))}"]
    for _ in range(draw(st.integers(0, 6))):
        lines.append(f"[{draw(st.sampled_from(CFG_KINDS))}]")
        for _ in range(draw(st.integers(0, 4))):
            lines.append(f"{draw(st.sampled_from(CFG_KEYS))}="
                         f"{draw(CFG_VALUE)}{draw(st.sampled_from(['', ' # c', ' ;x']))}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines)


@FUZZ
@given(text=cfg_texts())
def test_darknet_cfg(tmp_path_factory, text):
    """A UserError naming the cfg, or a network that builds into a Keras model
    with one output per [yolo] section."""
    from yolo3 import darknet
    path = _write(tmp_path_factory.mktemp("cfg"), "net.cfg",
                  text.encode("utf-8", "surrogatepass"))
    try:
        network = darknet.load_cfg(path)
    except UserError as exc:
        assert str(path) in str(exc)
        return
    assert network.layers
    if network.num_floats > 200_000:   # keep the run small; big ones parse, too
        return
    model = darknet.build_model(network)
    assert len(model.outputs) == len(network.outputs())
    # Keras holds what darknet stores: bias or BN's 4 vectors, and the kernel.
    assert model.count_params() == network.num_floats


@st.composite
def weights_files(draw):
    """(bytes of a .weights file for SMALL_CFG, expected outcome)."""
    major, minor = draw(st.sampled_from([(0, 2), (0, 1), (1, 0), (0, 0), (1000, 2)]))
    wide = major * 10 + minor >= 2 and major < 1000
    header = np.array([major, minor, 0], "<i4").tobytes() + (
        np.array([123], "<i8" if wide else "<i4").tobytes())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    floats = rng.uniform(0.1, 1.0, SMALL_CFG_FLOATS).astype("<f4")
    data = header + floats.tobytes()
    cut = draw(st.one_of(st.none(), st.integers(0, len(data) - 1)))
    pad = draw(st.binary(max_size=9))
    if cut is not None:
        data = data[:cut]
    return data + pad, cut is None, len(header) + 4 * SMALL_CFG_FLOATS


@FUZZ
@given(case=weights_files())
def test_darknet_weights(tmp_path_factory, case):
    """Truncated or padded files: an error naming the file, a warning for
    leftovers, or every float read in place."""
    import warnings
    from yolo3 import darknet
    data, whole, exact_length = case
    folder = tmp_path_factory.mktemp("w")
    cfg = _write(folder, "tiny.cfg", SMALL_CFG)
    path = _write(folder, "tiny.weights", data)
    network = darknet.load_cfg(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            weights = darknet.read_weights(path, network)
        except UserError as exc:
            assert str(path) in str(exc) and (not whole or len(data) < 20)
            return
    assert weights.floats_read == SMALL_CFG_FLOATS
    leftover = [w for w in caught if "left over" in str(w.message)]
    assert bool(leftover) == (len(data) != exact_length)
    assert set(weights.arrays) == {"conv_000", "bn_000", "conv_001"}
    for arrays in weights.arrays.values():
        assert all(np.all(np.isfinite(a)) for a in arrays)
