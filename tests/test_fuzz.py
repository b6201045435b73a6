"""Fuzzing (hypothesis, bounded to a few seconds per target): every parser either
returns a correct result or raises UserError; never another exception, never a
partial output file. No example database is written (tests must not write to the
repository)."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from yolo3.errors import UserError

FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


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
