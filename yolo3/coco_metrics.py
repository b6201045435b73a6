"""COCO box metrics (AP@[.5:.95], AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) in
memory that does not grow with per-image records: pycocotools matches the
detections of CHUNK images at a time (its per-image, class and area records
are dropped after each chunk); what accumulating needs is kept as compact
arrays per detection, and the accumulation and summary follow
COCOeval.accumulate and COCOeval.summarize step by step, so the numbers are
pycocotools' own.

Input: the ground truth and detections of all images, packed
(yolo3.packed_boxes).
Image ids are 0.., category id = class id + 1, annotation ids from 1
(pycocotools treats id 0 as 'unmatched')."""
import contextlib
import io

import numpy as np

from .progress import progress_bar

COCO_KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl",
             "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
CHUNK = 1000    # images per pycocotools evaluation


def coco_ground_truth(ground_truth, num_classes, image_sizes=None, first_id=0):
    """A pycocotools COCO object of the ground truth, built in memory (image ids
    from first_id)."""
    return _coco(ground_truth, num_classes, image_sizes, first_id, _gt_annotations)


def _gt_annotations(i, gt):
    for x0, y0, x1, y1, c in np.asarray(gt, dtype=np.float64).reshape(-1, 5):
        w, h = x1 - x0, y1 - y0
        yield {"image_id": i, "category_id": int(c) + 1, "bbox": [x0, y0, w, h],
               "area": w * h, "iscrowd": 0}


def _dt_annotations(i, det):
    """As COCO.loadRes makes them from results: area w * h, iscrowd 0."""
    for (x0, y0, x1, y1), s, c in zip(*det):
        w, h = x1 - x0, y1 - y0
        yield {"image_id": i, "category_id": int(c) + 1, "bbox": [x0, y0, w, h],
               "score": float(s), "area": w * h, "iscrowd": 0}


def _coco(items, num_classes, image_sizes, first_id, annotations_of):
    from pycocotools.coco import COCO

    images, annotations = [], []
    for i, item in enumerate(items, first_id):
        width, height = image_sizes[i - first_id] if image_sizes is not None else (0, 0)
        images.append({"id": i, "width": int(width), "height": int(height)})
        for annotation in annotations_of(i, item):
            annotations.append({"id": len(annotations) + 1, **annotation})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class _Matches:
    """Per class and area range, over the images in order: each kept detection's
    score, rank in its image (score order), matched and ignored flags per IoU
    threshold; and the count of ground truths that are not ignored."""

    def __init__(self, num_classes, params):
        cells = num_classes * len(params.areaRng)
        self.scores, self.ranks, self.matched, self.ignored = ([[] for _ in range(cells)]
                                                               for _ in range(4))
        self.gt_counts = np.zeros(cells, np.int64)

    def add(self, eval_images):
        """COCOeval.evalImgs of one chunk: (class, area, image) in that nesting.
        Each cell keeps one array of each kind per chunk."""
        per_cell = len(eval_images) // len(self.gt_counts)
        for cell in range(len(self.gt_counts)):
            records = [r for r in eval_images[cell * per_cell:(cell + 1) * per_cell]
                       if r is not None]
            self.gt_counts[cell] += sum(np.count_nonzero(r["gtIgnore"] == 0) for r in records)
            records = [r for r in records if len(r["dtScores"])]
            if records:
                self.scores[cell].append(np.concatenate([r["dtScores"] for r in records]))
                self.ranks[cell].append(np.concatenate(
                    [np.arange(len(r["dtScores"]), dtype=np.uint8) for r in records]))
                self.matched[cell].append(np.concatenate(
                    [r["dtMatches"] != 0 for r in records], axis=1))
                self.ignored[cell].append(np.concatenate(
                    [r["dtIgnore"].astype(bool) for r in records], axis=1))

    def accumulate(self, params):
        """(precision (T, R, K, A, M), recall (T, K, A, M)) as COCOeval.accumulate;
        -1 where a class has no ground truth in an area range."""
        T, R, A, M = (len(params.iouThrs), len(params.recThrs), len(params.areaRng),
                      len(params.maxDets))
        K = len(self.gt_counts) // A
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        for cell, npig in enumerate(self.gt_counts):
            if npig == 0:
                continue
            k, a = divmod(cell, A)
            scores, ranks = _joined(self.scores[cell], 0), _joined(self.ranks[cell], 0)
            matched = _joined(self.matched[cell], 1, T)
            ignored = _joined(self.ignored[cell], 1, T)
            for m, max_dets in enumerate(params.maxDets):
                kept = np.nonzero(ranks < max_dets)[0]     # each image's first max_dets
                kept = kept[np.argsort(-scores[kept], kind="mergesort")]
                for t in range(T):    # one threshold at a time: a row, not a (T, n) block
                    hit, skip = matched[t, kept], ignored[t, kept]
                    tp = np.cumsum(hit & ~skip).astype(dtype=float)
                    fp = np.cumsum(~hit & ~skip).astype(dtype=float)
                    rc = tp / npig
                    pr = tp / (fp + tp + np.spacing(1))
                    recall[t, k, a, m] = rc[-1] if len(tp) else 0
                    # the precision envelope, then sampled at the recall points
                    pr = np.maximum.accumulate(pr[::-1])[::-1]
                    at = np.searchsorted(rc, params.recThrs, side="left")
                    q = np.zeros(R)
                    q[at < len(pr)] = pr[at[at < len(pr)]]
                    precision[t, :, k, a, m] = q
        return precision, recall


def _joined(parts, axis, rows=None):
    if parts:
        return np.concatenate(parts, axis=axis)
    return np.zeros((rows, 0), bool) if rows else np.zeros(0)


def _chunk_records(gts, dets, num_classes, image_sizes, first_id):
    """COCOeval.evalImgs (per class, area range, image) of one chunk of images."""
    from pycocotools.cocoeval import COCOeval

    coco_gt = coco_ground_truth(gts, num_classes, image_sizes, first_id)
    coco_dt = _coco(dets, num_classes, image_sizes, first_id, _dt_annotations)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
    return evaluator.evalImgs


def coco_metrics(data, num_classes, progress=None):
    """(summary dict over COCO_KEYS, per-class AP list (None for classes without
    ground truth)) of PackedBoxes (yolo3.packed_boxes). A bar over the images
    shows when `progress` (None: on a terminal)."""
    from pycocotools.cocoeval import COCOeval

    present = set(np.unique(data.gt[:, 4].astype(np.int64)).tolist())
    has_gt = [c in present for c in range(num_classes)]
    if not present or not len(data.scores):
        return dict.fromkeys(COCO_KEYS, 0.0), [0.0 if h else None for h in has_gt]
    evaluator = COCOeval(iouType="bbox")
    matches = _Matches(num_classes, evaluator.params)
    with progress_bar(len(data), "COCO AP", progress, unit="image") as advance:
        for start in range(0, len(data), CHUNK):
            stop = min(start + CHUNK, len(data))
            sizes = data.sizes[start:stop] if data.sizes is not None else None
            matches.add(_chunk_records(data.ground_truth(start, stop),
                                       data.detections(start, stop), num_classes, sizes,
                                       start))
            advance(stop - start)
    precision, recall = matches.accumulate(evaluator.params)
    evaluator.eval = {"params": evaluator.params, "precision": precision, "recall": recall}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.summarize()
    # -1 marks "no ground truth in this area range": report it as 0.
    summary = {k: max(float(v), 0.0) for k, v in zip(COCO_KEYS, evaluator.stats)}
    per_class = []
    for c in range(num_classes):
        values = precision[:, :, c, 0, -1]
        per_class.append(float(values[values > -1].mean()) if has_gt[c] else None)
    return summary, per_class
