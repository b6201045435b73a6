"""Detection quality: VOC AP@0.5 (all-point and 11-point) and COCO AP
(pycocotools' numbers, yolo3.coco_metrics), a per-class table, precision-recall plots, and a Keras callback that
logs the validation mAP50 during training.

Inputs everywhere: per image, ground truth (n, 5) `x_min, y_min, x_max, y_max,
class` and detections (boxes (k, 4) `x_min, y_min, x_max, y_max`, scores (k,),
classes (k,)), all in image pixels. Boxes are continuous coordinates: area =
(x_max - x_min) * (y_max - y_min), no "+1" (as pycocotools). Inside, and for
evaluate_packed, they are packed into flat arrays (yolo3.packed_boxes).
"""
import json
import math

import keras
import numpy as np

from .atomic import atomic_open, atomic_path
from .coco_metrics import COCO_KEYS, coco_metrics
from .errors import UserError
from .packed_boxes import CHUNK, Packer, pack

IOU_THRESHOLD = 0.5


def voc_ap(recall, precision, use_07_metric=False):
    """Area under the PR curve, as the VOC devkit computes it.

    All-point (VOC 2010+): make precision monotone decreasing from the right,
    then sum (r[i+1] - r[i]) * p[i+1] over the points where recall changes.
    11-point (VOC 2007): mean over t in {0, .1, ..., 1} of max(p[r >= t]) (0 if none).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for t in np.linspace(0.0, 1.0, 11):
            above = precision[recall >= t - 1e-12]
            total += above.max() if above.size else 0.0
        return total / 11.0
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def iou_matrix(a, b):
    """IoU of every box in a (n, 4) with every box in b (m, 4), xyxy -> (n, m)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(gt_boxes, det_boxes, det_scores, iou_threshold=IOU_THRESHOLD):
    """True-positive flags for one image and one class (VOC devkit rule).

    In descending score order each detection takes the ground-truth box it overlaps
    most; it is a true positive when IoU >= threshold and that box is still free.
    A second detection of a taken box is a false positive (no fall-back to the
    next best box, as in the VOC devkit).
    """
    tp = np.zeros(len(det_scores), dtype=bool)
    if len(gt_boxes) == 0 or len(det_scores) == 0:
        return tp
    order = np.argsort(-np.asarray(det_scores), kind="stable")
    ious = iou_matrix(np.asarray(det_boxes)[order], gt_boxes)
    best = ious.argmax(axis=1)
    hit = np.nonzero(ious[np.arange(len(order)), best] >= iou_threshold)[0]
    # Among hits (already in score order), only the first claim on each box counts.
    _, first = np.unique(best[hit], return_index=True)
    tp[order[hit[first]]] = True
    return tp


def evaluate_voc(ground_truth, detections, num_classes, iou_threshold=IOU_THRESHOLD):
    """Per-class VOC AP at one IoU threshold -> list of dicts (one per class) with
    gt, detections, tp, ap (all-point), ap_11point, precision, recall (arrays)."""
    return voc_per_class(pack(ground_truth, detections, num_classes), num_classes,
                         iou_threshold)


def voc_per_class(data, num_classes, iou_threshold=IOU_THRESHOLD):
    """evaluate_voc on PackedBoxes: each image's detections are matched class by
    class, their flags written into one array over all detections."""
    n_gt = np.bincount(data.gt[:, 4].astype(np.int64), minlength=num_classes)
    flags = np.zeros(len(data.scores), bool)
    for i in np.nonzero(np.diff(data.det_offsets))[0]:     # images with detections
        first, gt = data.det_offsets[i], data.ground_truth(i, i + 1)[0]
        (boxes, scores, classes), = data.detections(i, i + 1)
        for c in np.unique(classes):
            sel = np.nonzero(classes == c)[0]
            flags[first + sel] = match_image(gt[gt[:, 4] == c, :4], boxes[sel], scores[sel],
                                             iou_threshold)
    # Per class, the detections stay in image order, as the stable sort needs.
    return [_pr_curve(data.scores[data.classes == c], flags[data.classes == c], int(n_gt[c]))
            for c in range(num_classes)]


def _pr_curve(scores, flags, n_gt):
    """Precision/recall over detections sorted by score, and the two APs."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(flags[order])
    fp = np.cumsum(~flags[order])
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    recall = tp / n_gt if n_gt else np.zeros_like(precision)
    return {"gt": n_gt, "detections": int(len(scores)), "tp": int(flags.sum()),
            "ap": voc_ap(recall, precision) if n_gt else None,
            "ap_11point": voc_ap(recall, precision, True) if n_gt else None,
            "precision": precision, "recall": recall}


def evaluate_coco(ground_truth, detections, num_classes, image_sizes=None, progress=None):
    """COCO metrics as pycocotools' COCOeval computes them, in bounded memory
    (yolo3.coco_metrics) -> (summary dict, per-class AP list (None for classes
    without ground truth))."""
    return coco_metrics(pack(ground_truth, detections, num_classes, image_sizes),
                        num_classes, progress)


def evaluate(ground_truth, detections, class_names, image_sizes=None, coco=True,
             progress=None):
    """Full report: VOC AP50 (all-point and 11-point) and COCO metrics per class.

    mAP50 = mean all-point VOC AP@0.5 over classes that have ground truth; mAP =
    COCO AP@[.5:.95]. Classes without ground truth are listed and left out. A
    bar shows the COCO evaluation when `progress` (None: on a terminal).
    """
    data = pack(ground_truth, detections, len(class_names), image_sizes)
    return evaluate_packed(data, class_names, coco, progress)


def evaluate_packed(data, class_names, coco=True, progress=None):
    """evaluate on PackedBoxes (yolo3.packed_boxes) -> (report, curves)."""
    num_classes = len(class_names)
    voc = voc_per_class(data, num_classes)
    if coco:
        summary, coco_ap = coco_metrics(data, num_classes, progress)
    else:
        summary, coco_ap = None, [None] * num_classes
    per_class, curves, missing = {}, {}, []
    for c, (name, v) in enumerate(zip(class_names, voc)):
        if v["gt"] == 0:
            missing.append(name)
            if v["detections"] == 0:
                continue
        per_class[name] = {"id": c, "gt": v["gt"], "detections": v["detections"],
                           "tp": v["tp"], "AP50": v["ap"], "AP50_11point": v["ap_11point"],
                           "AP": coco_ap[c]}
        if v["gt"]:
            curves[name] = (v["recall"], v["precision"])
    scored = [v for v in voc if v["gt"]]
    report = {
        "images": len(data),
        "mAP50": float(np.mean([v["ap"] for v in scored])) if scored else 0.0,
        "mAP50_11point": float(np.mean([v["ap_11point"] for v in scored])) if scored else 0.0,
        "mAP": summary["AP"] if summary else None,
        "coco": summary,
        "per_class": per_class,
        "classes_without_ground_truth": missing,
    }
    return report, curves


def _fmt(value):
    return "    -" if value is None else f"{value:.3f}"


def format_table(report, voc07=False):
    """Per-class table and summary lines as text."""
    key = "AP50_11point" if voc07 else "AP50"
    head = "AP50(11pt)" if voc07 else "AP50"
    width = max([5] + [len(n) for n in report["per_class"]])
    lines = [f"{'class':<{width}}  {'gt':>5}  {'dets':>6}  {'tp':>5}  {head:>10}  {'AP':>6}"]
    for name, row in report["per_class"].items():
        lines.append(f"{name:<{width}}  {row['gt']:>5}  {row['detections']:>6}  {row['tp']:>5}"
                     f"  {_fmt(row[key]):>10}  {_fmt(row['AP']):>6}")
    mean = report["mAP50_11point"] if voc07 else report["mAP50"]
    counted = sum(1 for r in report["per_class"].values() if r["gt"])
    lines.append(f"{'mean':<{width}}  {'':>5}  {'':>6}  {'':>5}  {_fmt(mean):>10}  "
                 f"{_fmt(report['mAP']):>6}")
    lines.append(f"mAP50 ({'VOC07 11-point' if voc07 else 'VOC all-point'}, IoU 0.5) = "
                 f"{mean:.4f} over {counted} classes with ground truth, "
                 f"{report['images']} images")
    if report["coco"]:
        lines.append("COCO: " + ", ".join(f"{k} {report['coco'][k]:.4f}" for k in COCO_KEYS[:6]))
    if report["classes_without_ground_truth"]:
        lines.append(f"{len(report['classes_without_ground_truth'])} classes without ground "
                     "truth (left out of the means)")
    return "\n".join(lines)


def write_json(report, path):
    """Write the report (no curves) as JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")


def plot_pr_curves(curves, report, path):
    """One precision-recall panel per class with ground truth, in a grid (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise UserError("no class has ground truth: nothing to plot")
    cols = math.ceil(math.sqrt(len(curves)))
    rows = math.ceil(len(curves) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.2 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    for ax, (name, (recall, precision)) in zip(axes.flat, curves.items()):
        if len(recall):   # start at recall 0 so single points show as a line
            ax.plot(np.r_[0, recall], np.r_[precision[0], precision], lw=1)
        ax.set_title(f"{name} AP50 {report['per_class'][name]['AP50']:.2f}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.tight_layout()
    with atomic_path(path) as temp:
        fig.savefig(temp, format="png", dpi=80)
    plt.close(fig)


def detect_annotations(detector, lines, progress=None):
    """Run `detector` on the images of annotation lines (AnnotationLine objects or
    strings) -> PackedBoxes of their ground truth, detections and image sizes
    (w, h). The images go through in chunks, each packed before the next, so
    nothing per image is kept but its rows in the packed arrays."""
    from .annotation_file import as_annotation_lines
    from .images import image_size

    lines = as_annotation_lines(lines)
    packer = Packer(len(detector.class_names))
    for start in range(0, len(lines), CHUNK):
        chunk = lines[start:start + CHUNK]
        packer.add([line.boxes for line in chunk],
                   detector.detect([line.path for line in chunk], progress=progress),
                   [image_size(line.path) for line in chunk])
    return packer.result()


def evaluate_detector(detector, lines, progress=None, coco=True):
    """detect_annotations + evaluate -> (report, curves)."""
    return evaluate_packed(detect_annotations(detector, lines, progress),
                           detector.class_names, coco)


def validation_detector(body, class_names, anchors, input_shape, mask=None, score=0.001,
                        iou=0.45, max_boxes=100, batch_size=8):
    """The detector that scores a model in training: `body` itself (its weights
    shared, not copied) at input_shape (h, w), keeping every box above a low
    score, up to 100 per image, as a mAP needs."""
    from .detector import YOLO

    return YOLO(body=body, class_names=class_names, anchors=anchors,
                model_image_size=tuple(input_shape), mask=mask, score=score, iou=iou,
                max_boxes=max_boxes, batch_size=batch_size)


class MapEvaluation(keras.callbacks.Callback):
    """Every `every` epochs, the VOC mAP50 of the model being trained on the
    validation lines, put into logs['val_mAP50'] (NaN on the other epochs, so
    that CSVLogger keeps the column) for CSVLogger, TensorBoard and History.
    Place it before those callbacks. With best_path, the body's weights are saved
    there whenever the mAP50 improves.

    The detector shares the training model's weights (no copy per evaluation)."""

    def __init__(self, val_lines, anchors, class_names, input_shape, every=1, mask=None,
                 score=0.001, iou=0.45, max_boxes=100, batch_size=8, best_path=None,
                 verbose=1):
        super().__init__()
        from .annotation_file import as_annotation_lines

        if every < 1:
            raise UserError(f"--eval-every must be >= 1 (got {every})")
        self.lines = as_annotation_lines(val_lines)
        self.anchors, self.class_names = np.asarray(anchors, np.float32), list(class_names)
        self.options = {"input_shape": tuple(input_shape), "mask": mask, "score": score,
                        "iou": iou, "max_boxes": max_boxes, "batch_size": batch_size}
        self.every, self.best_path, self.verbose = every, best_path, verbose
        self.best = -math.inf
        self.history = []
        self._detector = None

    def _get_detector(self):
        if self._detector is None:
            from .training import detection_body

            body = self.model if len(self.model.inputs) == 1 else detection_body(self.model)
            self._detector = validation_detector(body, self.class_names, self.anchors,
                                                 **self.options)
        return self._detector

    def on_train_begin(self, logs=None):
        self._detector = None   # a new stage may bring a new (recompiled) model

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if (epoch + 1) % self.every:
            logs["val_mAP50"] = float("nan")
            return
        report, _ = evaluate_detector(self._get_detector(), self.lines, coco=False)
        value = report["mAP50"]
        logs["val_mAP50"] = value
        self.history.append((epoch + 1, value))
        message = f"\nEpoch {epoch + 1}: val_mAP50 {value:.4f}"
        if value > self.best:
            if self.best_path:
                from .weights import save_weights
                save_weights(self._detector.body, self.best_path)
                message += f", best so far: weights saved to {self.best_path}"
            self.best = value
        if self.verbose:
            print(message)
