"""Mosaic and mixup, the image-mixing augmentations of later YOLOs (v4, v5): four
training images cut around a random centre into one, and two images blended.

Both take and return (image float32 (h, w, 3) in [0, 1], boxes float32 (n, 5) as
x_min, y_min, x_max, y_max, class in input pixels, without padding rows).
"""
import numpy as np


def mosaic(samples, input_shape, rng, min_size=2.0, min_area=0.1, centre=None):
    """Four (image, boxes) samples, each at input_shape (h, w), tiled into one
    (image (h, w, 3), boxes (m, 5)).

    The centre (cx, cy) is drawn uniformly in [0.25 w, 0.75 w) x [0.25 h, 0.75 h)
    from the numpy Generator `rng` (x first) and floored to whole pixels; `centre`
    gives it instead (no draw). Sample k fills quadrant k of the canvas: top-left,
    top-right, bottom-left, bottom-right. Images are cropped, not resized, so objects
    keep their scale: each quadrant shows the part of its sample that touches the
    centre, e.g. the top-left quadrant [0, cx) x [0, cy) shows sample 0's bottom-right
    corner [w - cx, w) x [h - cy, h). Boxes move with their pixels, are clipped to
    their quadrant, and are dropped when the clipped width or height is below
    min_size pixels or the clipped area is below min_area times the area before
    clipping (slivers of objects). Boxes come out in sample order, classes kept.
    """
    if len(samples) != 4:
        raise ValueError(f"mosaic needs 4 samples ({len(samples)})")
    h, w = input_shape
    cx, cy = _draw_centre(w, h, rng) if centre is None else (int(v) for v in centre)
    if not (0 <= cx <= w and 0 <= cy <= h):
        raise ValueError(f"mosaic centre ({cx}, {cy}) outside the {w}x{h} canvas")
    image = np.empty((h, w, 3), np.float32)
    kept = []
    for k, (sample, boxes) in enumerate(samples):
        if np.shape(sample) != (h, w, 3):
            raise ValueError(f"mosaic sample {k}: shape {np.shape(sample)}, not {(h, w, 3)}")
        right, bottom = k % 2, k // 2
        x0, x1 = (cx, w) if right else (0, cx)
        y0, y1 = (cy, h) if bottom else (0, cy)
        # Shift from sample to canvas pixels: the sample's touching corner to the centre.
        dx = cx if right else cx - w
        dy = cy if bottom else cy - h
        image[y0:y1, x0:x1] = sample[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
        kept.append(_cut_boxes(boxes, dx, dy, (x0, y0, x1, y1), min_size, min_area))
    return image, np.concatenate(kept)


def _draw_centre(w, h, rng):
    """The mosaic centre (cx, cy) in whole pixels, each in the middle half."""
    cx = int(rng.uniform(0.25 * w, 0.75 * w))
    cy = int(rng.uniform(0.25 * h, 0.75 * h))
    return cx, cy


def _cut_boxes(boxes, dx, dy, region, min_size, min_area):
    """Boxes shifted by (dx, dy) and clipped to region (x0, y0, x1, y1); the ones
    that keep at least min_size per side and min_area of their area."""
    boxes = np.array(boxes, np.float32).reshape(-1, 5)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    x0, y0, x1, y1 = region
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] + np.float32(dx), x0, x1)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] + np.float32(dy), y0, y1)
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    keep = (width >= min_size) & (height >= min_size) & (width * height >= min_area * area)
    return boxes[keep]


def mixup(first, second, rng, alpha=32.0):
    """Two (image, boxes) samples of the same size blended into one: image =
    r * first + (1 - r) * second with r ~ Beta(alpha, alpha) drawn from the numpy
    Generator `rng` (YOLOv5's alpha = beta = 32 keeps r near 0.5); the boxes of
    both, first's then second's. Returns (image float32, boxes (n1 + n2, 5))."""
    (a, boxes_a), (b, boxes_b) = first, second
    if np.shape(a) != np.shape(b):
        raise ValueError(f"mixup of images of shapes {np.shape(a)} and {np.shape(b)}")
    r = np.float32(rng.beta(alpha, alpha))
    image = r * np.asarray(a, np.float32) + (np.float32(1) - r) * np.asarray(b, np.float32)
    boxes = np.concatenate([np.asarray(boxes_a, np.float32).reshape(-1, 5),
                            np.asarray(boxes_b, np.float32).reshape(-1, 5)])
    return image, boxes


def largest_boxes(boxes, max_boxes):
    """Boxes (n, 5) -> (max_boxes, 5) zero padded: when there are more than
    max_boxes, the max_boxes largest by area (ties: the earlier), in their order."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 5)
    if len(boxes) > max_boxes:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = np.sort(np.argsort(-area, kind="stable")[:max_boxes])
        boxes = boxes[keep]
    padded = np.zeros((max_boxes, 5), np.float32)
    padded[:len(boxes)] = boxes
    return padded
