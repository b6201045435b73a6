"""Anchors files and anchor masks (which anchors each output head uses)."""
import numpy as np

from .atomic import atomic_open
from .errors import UserError

# Head 1 (stride 32) gets the largest anchors.
YOLO_MASK = [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
# The original keras-yolo3 tiny mask: anchor 0 unused, anchor 3 shared. darknet's
# official yolov3-tiny weights were trained with it, so it stays the default.
TINY_MASK = [[3, 4, 5], [1, 2, 3]]
# The mask darknet's current yolov3-tiny.cfg states.
TINY_MASK_DARKNET = [[3, 4, 5], [0, 1, 2]]

MODEL_KINDS = {9: "YOLOv3 (3 heads)", 6: "tiny-YOLOv3 (2 heads)"}


def get_anchors(path):
    """Read `w,h, w,h, ...` (one line, commas, spaces allowed) -> float32 (N, 2)."""
    path = str(path)
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file ({exc.reason} at byte "
                        f"{exc.start})") from None
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
    count = len(values) // 2
    if count not in MODEL_KINDS:
        raise UserError(f"{path}: {count} anchors; expected 9 for YOLOv3 (3 heads) "
                        "or 6 for tiny-YOLOv3 (2 heads)")
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


def check_mask(mask, num_anchors):
    """Raise UserError unless every head's indexes are valid anchors."""
    heads = 3 if num_anchors == 9 else 2
    if len(mask) != heads or any(len(h) == 0 for h in mask):
        raise UserError(f"mask {mask} has {len(mask)} heads; {num_anchors} anchors "
                        f"need {heads}")
    for head in mask:
        for index in head:
            if not 0 <= index < num_anchors:
                raise UserError(f"mask index {index} outside 0..{num_anchors - 1}")
    return mask


def anchor_masks(num_anchors, tiny_mask=None):
    """The mask for a model with `num_anchors` anchors (9 = YOLOv3, 6 = tiny)."""
    if num_anchors == 9:
        return check_mask(tiny_mask, 9) if tiny_mask is not None else YOLO_MASK
    if num_anchors == 6:
        return check_mask(tiny_mask, 6) if tiny_mask is not None else TINY_MASK
    raise UserError(f"{num_anchors} anchors; expected 9 (YOLOv3) or 6 (tiny-YOLOv3)")
