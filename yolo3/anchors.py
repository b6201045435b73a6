"""Anchors files and anchor masks (which anchors each output head uses)."""
import numpy as np

from .atomic import atomic_open
from .errors import UserError, read_text
from .kinds import KINDS, kind_for_anchors

# The default masks (yolo3.kinds holds them): head 1 (stride 32) gets the largest
# anchors; tiny's is the original keras-yolo3's (anchor 0 unused, anchor 3 shared).
YOLO_MASK = KINDS["yolov3"].mask()
TINY_MASK = KINDS["yolov3-tiny"].mask()
# The mask darknet's current yolov3-tiny.cfg states.
TINY_MASK_DARKNET = [[3, 4, 5], [0, 1, 2]]


def get_anchors(path):
    """Read `w,h, w,h, ...` (one line, commas, spaces allowed) -> float32 (N, 2)."""
    path = str(path)
    text = read_text(path)
    tokens = [t for t in text.replace("\n", ",").replace(" ", "").split(",") if t]
    values = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            raise UserError(f"{path}: anchors must be numbers ({token!r})") from None
        if not np.isfinite(value) or value <= 0:
            raise UserError(f"{path}: anchors must be positive ({token})")
        values.append(value)
    if len(values) % 2:
        raise UserError(f"{path}: odd number of values ({len(values)}); "
                        "anchors are w,h pairs")
    try:
        kind_for_anchors(len(values) // 2)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return np.array(values, dtype=np.float32).reshape(-1, 2)


def format_anchors(anchors):
    """The original's format: integers `w,h,  w,h, ...` on one line."""
    return ",  ".join(f"{int(round(w))},{int(round(h))}" for w, h in anchors)


def write_anchors(path, anchors):
    """Write anchors atomically in the original's format."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(format_anchors(anchors) + "\n")


def parse_mask(text):
    """'3,4,5/1,2,3' -> [[3, 4, 5], [1, 2, 3]] (heads separated by '/')."""
    try:
        mask = [[int(i) for i in head.split(",")] for head in str(text).split("/")]
    except ValueError:
        raise UserError(f"bad mask {text!r}: expected e.g. 3,4,5/1,2,3") from None
    return mask


def check_mask(mask, num_anchors, kind=None):
    """Raise UserError unless the mask has a head per output of the model kind and
    every index is a valid anchor."""
    heads = kind_for_anchors(num_anchors, kind).heads
    if len(mask) != heads or any(len(h) == 0 for h in mask):
        raise UserError(f"mask {mask} has {len(mask)} heads; {num_anchors} anchors "
                        f"need {heads}")
    for head in mask:
        for index in head:
            if not 0 <= index < num_anchors:
                raise UserError(f"mask index {index} outside 0..{num_anchors - 1}")
    return mask


def anchor_masks(num_anchors, mask=None, kind=None):
    """`mask` checked, or the default mask of the model kind (by default the one
    `num_anchors` anchors mean: 9 = YOLOv3, 6 = tiny-YOLOv3)."""
    if mask is not None:
        return check_mask(mask, num_anchors, kind)
    return kind_for_anchors(num_anchors, kind).mask()
