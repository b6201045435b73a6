"""The ground truth and detections of many images, packed into a few flat
arrays with per-image offsets, so that an evaluation of 100,000 images holds
a handful of numpy arrays instead of several small arrays per image.

Image i owns rows offsets[i]:offsets[i + 1] of its arrays. Ground truth rows
are `x_min, y_min, x_max, y_max, class`; detection rows are a box `x_min,
y_min, x_max, y_max`, a score and a class. Everything is float64 (boxes,
scores) and int64 (classes), the types the evaluation computes in.
"""
import dataclasses
from typing import Optional

import numpy as np

from .errors import UserError

CHUNK = 1000    # images converted at a time before their arrays are joined


@dataclasses.dataclass(frozen=True)
class PackedBoxes:
    gt: np.ndarray             # (G, 5) float64
    gt_offsets: np.ndarray     # (images + 1,) int64
    boxes: np.ndarray          # (D, 4) float64
    scores: np.ndarray         # (D,) float64
    classes: np.ndarray        # (D,) int64
    det_offsets: np.ndarray    # (images + 1,) int64
    sizes: Optional[np.ndarray] = None   # (images, 2) (w, h), or None

    def __len__(self):
        return len(self.gt_offsets) - 1

    def ground_truth(self, start=0, stop=None):
        """Per-image ground-truth arrays (views) of images start..stop."""
        bounds = self.gt_offsets[start:(len(self) if stop is None else stop) + 1]
        return [self.gt[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def detections(self, start=0, stop=None):
        """Per-image (boxes, scores, classes) views of images start..stop."""
        bounds = self.det_offsets[start:(len(self) if stop is None else stop) + 1]
        return [(self.boxes[a:b], self.scores[a:b], self.classes[a:b])
                for a, b in zip(bounds[:-1], bounds[1:])]


def pack(ground_truth, detections, num_classes, image_sizes=None):
    """PackedBoxes of per-image ground truth ((n, 5) arrays) and detections
    ((boxes, scores, classes) per image), CHUNK images converted at a time.
    ValueError when the two lists differ in length; UserError for a class id
    outside 0..num_classes-1."""
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but "
                         f"{len(detections)} detection lists")
    packer = Packer(num_classes)
    for start in range(0, len(ground_truth), CHUNK):
        stop = start + CHUNK
        packer.add(ground_truth[start:stop], detections[start:stop],
                   None if image_sizes is None else image_sizes[start:stop])
    return packer.result()


class Packer:
    """PackedBoxes built chunk by chunk: add() packs the arrays of a chunk of
    images at once (its per-image arrays can then go), result() joins the
    chunks."""

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.chunks = []

    def add(self, ground_truth, detections, image_sizes=None):
        """One chunk: per-image ground truth, detections and (w, h) sizes."""
        chunk = _pack_chunk(ground_truth, detections, image_sizes)
        for ids in (chunk.gt[:, 4].astype(np.int64), chunk.classes):
            bad = ids[(ids < 0) | (ids >= self.num_classes)]
            if bad.size:
                raise UserError(f"class id {int(bad[0])} outside 0..{self.num_classes - 1} "
                                f"({self.num_classes} classes)")
        self.chunks.append(chunk)

    def result(self):
        """The PackedBoxes of every chunk added, images in order."""
        chunks = self.chunks or [_pack_chunk([], [], [])]

        def offsets(name, rows):     # each chunk's start from 0: add the rows before it
            shifts = np.cumsum([0] + [len(getattr(c, rows)) for c in chunks[:-1]])
            return np.concatenate([getattr(chunks[0], name)[:1]] + [
                getattr(c, name)[1:] + shift for c, shift in zip(chunks, shifts)])

        def joined(name):
            pieces = [getattr(c, name) for c in chunks]
            return None if any(p is None for p in pieces) else np.concatenate(pieces)

        return PackedBoxes(joined("gt"), offsets("gt_offsets", "gt"), joined("boxes"),
                           joined("scores"), joined("classes"),
                           offsets("det_offsets", "scores"), joined("sizes"))


def _pack_chunk(ground_truth, detections, image_sizes):
    gts = [np.asarray(gt, dtype=np.float64).reshape(-1, 5) for gt in ground_truth]
    boxes, scores, classes = [], [], []
    for det_boxes, det_scores, det_classes in detections:
        boxes.append(np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4))
        scores.append(np.asarray(det_scores, dtype=np.float64).reshape(-1))
        classes.append(np.asarray(det_classes).reshape(-1).astype(np.int64))
    sizes = None if image_sizes is None else np.asarray(image_sizes, np.int64).reshape(-1, 2)
    return PackedBoxes(_join(gts, (0, 5), np.float64), _offsets(gts),
                       _join(boxes, (0, 4), np.float64), _join(scores, (0,), np.float64),
                       _join(classes, (0,), np.int64), _offsets(scores), sizes)


def _join(arrays, empty_shape, dtype):
    return np.concatenate(arrays) if arrays else np.zeros(empty_shape, dtype)


def _offsets(arrays):
    return np.concatenate([[0], np.cumsum([len(a) for a in arrays], dtype=np.int64)])
