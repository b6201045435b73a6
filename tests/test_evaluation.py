"""mAP on crafted detections with hand-computed answers, and agreement with
pycocotools' AP50."""
import json

import numpy as np
import pytest

from yolo3 import evaluation as ev
from yolo3.errors import UserError

# Two images, class 0: A has g1, g2; B has g3.
GT = [np.array([[0, 0, 10, 10, 0], [20, 20, 30, 30, 0], [40, 40, 60, 60, 1]]),
      np.array([[0, 0, 10, 10, 0]])]


def dets(rows):
    """rows of (x0, y0, x1, y1, score, class) -> (boxes, scores, classes)."""
    rows = np.array(rows, dtype=float).reshape(-1, 6)
    return rows[:, :4], rows[:, 4], rows[:, 5].astype(int)


# Score order: d1 TP (g1), d2 duplicate of g1 FP, d3 FP (nothing there), d4 TP (g3),
# d5 TP (g2); class 1 (gt in A) is never detected; class 2 has a detection only.
DETS = [dets([[0, 0, 10, 10, .9, 0], [1, 0, 10, 10, .8, 0], [20, 20, 30, 30, .5, 0],
              [0, 0, 5, 5, .95, 2]]),
        dets([[50, 50, 60, 60, .7, 0], [0, 0, 10, 10.5, .6, 0]])]
# precision 1, 1/2, 1/3, 2/4, 3/5 at recall 1/3, 1/3, 1/3, 2/3, 1:
# all-point: 1/3 * 1 + 1/3 * .6 + 1/3 * .6 = 0.7333
# 11-point: t = 0, .1, .2, .3 -> 1; t = .4 ... 1 (7 points) -> .6; (4 + 4.2) / 11
AP_ALL = (1 + .6 + .6) / 3
AP_11 = (4 * 1 + 7 * .6) / 11


def test_hand_computed_ap_with_duplicate_and_unmatched_classes():
    report, curves = ev.evaluate(GT, DETS, ["a", "b", "c", "d"])
    a = report["per_class"]["a"]
    assert (a["gt"], a["detections"], a["tp"]) == (3, 5, 3)
    assert a["AP50"] == pytest.approx(AP_ALL)
    assert a["AP50_11point"] == pytest.approx(AP_11)
    np.testing.assert_allclose(curves["a"][1], [1, 1 / 2, 1 / 3, 2 / 4, 3 / 5])
    np.testing.assert_allclose(curves["a"][0], [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    # class b: ground truth, no detection -> AP 0, counted in the mean.
    assert report["per_class"]["b"]["AP50"] == 0
    # class c: detections but no ground truth -> reported, left out of the mean;
    # class d: neither -> only listed as without ground truth.
    assert report["per_class"]["c"]["AP50"] is None
    assert "d" not in report["per_class"]
    assert report["classes_without_ground_truth"] == ["c", "d"]
    assert report["mAP50"] == pytest.approx((AP_ALL + 0) / 2)
    assert report["mAP50_11point"] == pytest.approx((AP_11 + 0) / 2)


def test_voc_ap_formulas():
    assert ev.voc_ap([0.5, 1.0], [1.0, 0.5]) == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    # the dip in precision is filled by the later higher value (monotone envelope)
    assert ev.voc_ap([0.25, 0.5, 0.75], [1.0, 0.4, 0.6]) == pytest.approx(.25 + .25 * .6 + .25 * .6)
    # 11-point: recall reaches .5 with precision 1 -> t = 0 ... .5 -> 6 / 11
    assert ev.voc_ap([0.5], [1.0], use_07_metric=True) == pytest.approx(6 / 11)
    assert ev.voc_ap([], []) == 0


def test_iou_threshold_is_inclusive_and_no_fallback_to_second_box():
    gt = [np.array([[0, 0, 10, 10, 0], [5, 0, 15, 10, 0]])]
    # IoU([0,0,10,5], g1) = 50 / 100 = 0.5 exactly -> a true positive
    half = ev.evaluate_voc(gt, [dets([[0, 0, 10, 5, .9, 0]])], 1)[0]
    assert half["tp"] == 1
    # b = [2,0,12,10]: IoU 80/120 with g1 (already taken by a), 70/130 with g2.
    # VOC rule: b takes its best box g1, which is taken -> false positive.
    both = ev.evaluate_voc(gt, [dets([[0, 0, 10, 10, .9, 0], [2, 0, 12, 10, .8, 0]])], 1)[0]
    assert both["tp"] == 1
    assert both["ap"] == pytest.approx(0.5)


def test_image_without_boxes_counts_as_negative():
    gt = [np.array([[0, 0, 10, 10, 0]]), np.zeros((0, 5))]
    det = [dets([[0, 0, 10, 10, .5, 0]]), dets([[0, 0, 10, 10, .9, 0]])]
    row = ev.evaluate_voc(gt, det, 1)[0]
    # FP at .9 first, then the TP: precision 1/2 at recall 1 -> AP 0.5
    assert row["ap"] == pytest.approx(0.5)


def test_bad_class_id_is_a_user_error():
    with pytest.raises(UserError, match="class id 5 outside 0..1"):
        ev.evaluate_voc([np.array([[0, 0, 1, 1, 5]])], [dets([])], 2)


def random_scene(rng, n_images=30, n_classes=3):
    """Well separated ground truth (so both matchers agree) and noisy detections."""
    gts, dts = [], []
    for _ in range(n_images):
        k = rng.integers(0, 6)
        cells = rng.choice(16, size=k, replace=False)
        x0, y0 = (cells % 4) * 100 + 5, (cells // 4) * 100 + 5
        wh = rng.uniform(30, 80, size=(k, 2))
        gt = np.stack([x0, y0, x0 + wh[:, 0], y0 + wh[:, 1], rng.integers(0, n_classes, k)], 1)
        rows = []
        for box in gt.reshape(-1, 5):
            for _ in range(rng.integers(0, 3)):   # misses, hits and duplicates
                jitter = rng.normal(0, 6, 4)
                cls = box[4] if rng.random() < .85 else rng.integers(0, n_classes)
                rows.append([*(box[:4] + jitter), rng.random(), cls])
        for _ in range(rng.integers(0, 4)):       # background false positives
            x, y = rng.uniform(0, 350, 2)
            rows.append([x, y, x + 40, y + 40, rng.random() * .6, rng.integers(0, n_classes)])
        gts.append(gt.reshape(-1, 5))
        dts.append(dets(rows))
    return gts, dts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap50_agrees_with_pycocotools(seed):
    gts, dts = random_scene(np.random.default_rng(seed))
    report, _ = ev.evaluate(gts, dts, ["x", "y", "z"])
    # COCO samples the same monotone PR envelope at 101 recall points; the
    # difference from the all-point integral is at most one step of 1/100 per class.
    assert report["coco"]["AP50"] == pytest.approx(report["mAP50"], abs=0.012)
    assert 0.2 < report["mAP50"] < 0.95


def test_coco_per_class_ap_and_perfect_detections():
    gt = [np.array([[0, 0, 10, 10, 0], [20, 20, 40, 40, 1]])]
    det = [dets([[0, 0, 10, 10, .9, 0], [20, 20, 40, 40, .8, 1]])]
    report, _ = ev.evaluate(gt, det, ["a", "b"])
    assert report["mAP50"] == 1 and report["mAP"] == pytest.approx(1)
    assert report["per_class"]["a"]["AP"] == pytest.approx(1)
    empty, _ = ev.evaluate(gt, [dets([])], ["a", "b"])
    assert empty["mAP50"] == 0 and empty["mAP"] == 0


def test_table_json_and_plot(tmp_path):
    report, curves = ev.evaluate(GT, DETS, ["a", "b", "c", "d"])
    table = ev.format_table(report)
    assert "mAP50 (VOC all-point, IoU 0.5) = 0.3667 over 2 classes" in table
    assert ev.format_table(report, voc07=True).splitlines()[1].split()[4] == f"{AP_11:.3f}"
    ev.write_json(report, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert {"mAP50", "mAP", "per_class"} <= set(data)
    ev.plot_pr_curves(curves, report, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"


def pycocotools_reference(gts, dts, num_classes):
    """The plain whole-set COCOeval run (every image's records in memory):
    (stats, per-class AP over all areas and 100 detections)."""
    import contextlib
    import io
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images = [{"id": i} for i in range(len(gts))]
    annotations = [{"id": len(images) + n, "image_id": i, "category_id": int(c) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0}
                   for n, (i, (x0, y0, x1, y1, c)) in enumerate(
                       (i, row) for i, gt in enumerate(gts) for row in gt)]
    results = [{"image_id": i, "category_id": int(c) + 1, "score": float(s),
                "bbox": [x0, y0, x1 - x0, y1 - y0]}
               for i, (boxes, scores, classes) in enumerate(dts)
               for (x0, y0, x1, y1), s, c in zip(boxes, scores, classes)]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c + 1} for c in range(num_classes)]}
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    return list(evaluator.stats), [precision[:, :, c][precision[:, :, c] > -1].mean()
                                   for c in range(num_classes - 1)]


def test_coco_metrics_in_chunks_are_pycocotools_numbers(monkeypatch):
    """500 images in chunks of 37: boxes of every area range, tied scores, an
    image with 150 detections of one class (beyond the 100 kept), images with
    no ground truth or no detections, a class never in the ground truth."""
    from yolo3 import coco_metrics
    monkeypatch.setattr(coco_metrics, "CHUNK", 37)
    rng = np.random.default_rng(5)
    gts, dts = [], []
    for i in range(500):
        k = rng.integers(0, 5)
        xy = rng.uniform(0, 300, (k, 2))
        wh = np.exp(rng.uniform(np.log(4), np.log(200), (k, 2)))   # small to large
        gt = np.concatenate([xy, xy + wh, rng.integers(0, 3, (k, 1))], 1)
        rows = [[*(box[:4] + rng.normal(0, .08, 4) * np.tile(box[2:4] - box[:2], 2)),
                 rng.choice([.3, .5, .9, rng.random()]), box[4] if rng.random() < .9 else 3]
                for box in gt for _ in range(rng.integers(0, 3))]
        count = 150 if i == 7 else rng.integers(0, 3)
        for _ in range(count):             # false positives, some with tied scores
            x, y = rng.uniform(0, 350, 2)
            rows.append([x, y, x + rng.uniform(5, 120), y + rng.uniform(5, 120),
                         rng.choice([.5, rng.random()]), 0 if i == 7 else rng.integers(0, 4)])
        gts.append(gt if i % 50 else np.zeros((0, 5)))
        dts.append(dets(rows) if i % 40 else dets([]))
    stats, per_class = pycocotools_reference(gts, dts, 4)
    summary, ours = ev.evaluate_coco(gts, dts, 4)
    assert [summary[k] for k in ev.COCO_KEYS] == [max(s, 0.0) for s in stats]
    assert ours[:3] == per_class and ours[3] is None
    assert 0.2 < summary["AP50"] < 0.9 and summary["APs"] > 0 and summary["APl"] > 0


def test_coco_progress_bar_on_a_terminal_only(capsys, monkeypatch):
    from yolo3 import coco_metrics, progress
    monkeypatch.setattr(coco_metrics, "CHUNK", 1)
    ev.evaluate_coco(GT, DETS, 4)
    assert capsys.readouterr().err == ""        # not a terminal: no bar
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setattr(progress, "DELAY", 0)
    ev.evaluate_coco(GT, DETS, 4)
    err = capsys.readouterr().err
    assert "COCO AP:" in err and "/2 [" in err
    ev.evaluate(GT, DETS, ["a", "b", "c", "d"], progress=False)
    assert capsys.readouterr().err == ""


def test_packed_boxes_give_back_every_image(monkeypatch):
    """Packed in chunks of 3 and joined: each image's rows come back as given,
    empty images included; sizes as (w, h) rows."""
    from yolo3 import packed_boxes
    monkeypatch.setattr(packed_boxes, "CHUNK", 3)
    rng = np.random.default_rng(3)
    gts = [rng.uniform(0, 50, (k, 5)).round() for k in [2, 0, 1, 3, 0, 0, 4]]
    dts = [dets(rng.uniform(0, 1, (k, 6)).round(2)) for k in [0, 3, 1, 0, 2, 0, 5]]
    sizes = [(10 + i, 20 + i) for i in range(7)]
    data = packed_boxes.pack(gts, dts, 60, sizes)
    assert len(data) == 7 and data.gt_offsets.tolist() == [0, 2, 2, 3, 6, 6, 6, 10]
    assert data.det_offsets.tolist() == [0, 0, 3, 4, 4, 6, 6, 11]
    assert data.sizes.tolist() == [list(s) for s in sizes]
    for gt, got in zip(gts, data.ground_truth()):
        np.testing.assert_array_equal(got, gt)
    for want, got in zip(dts, data.detections()):
        for a, b in zip(want, got):
            np.testing.assert_array_equal(b, a)
    middle = data.detections(4, 6)
    assert [len(s) for _, s, _ in middle] == [2, 0]
    np.testing.assert_array_equal(middle[0][1], dts[4][1])
    empty = packed_boxes.pack([], [], 2, [])
    assert len(empty) == 0 and empty.gt.shape == (0, 5) and empty.detections() == []
    with pytest.raises(ValueError, match="7 ground-truth images but 6 detection lists"):
        packed_boxes.pack(gts, dts[:6], 60)
    with pytest.raises(UserError, match="class id -1 outside 0..1"):
        packed_boxes.pack([np.zeros((0, 5))], [dets([[0, 0, 1, 1, .5, -1]])], 2)


def per_image_voc(gts, dts, num_classes):
    """The VOC evaluation image by image (detections gathered per class in
    lists of small arrays, as before packing): per class (n_gt, tp, recall,
    precision, AP, 11-point AP)."""
    scores, flags = [[] for _ in range(num_classes)], [[] for _ in range(num_classes)]
    n_gt = [0] * num_classes
    for gt, (boxes, det_scores, classes) in zip(gts, dts):
        for c in range(num_classes):
            n_gt[c] += int(np.sum(gt[:, 4] == c))
            sel = classes == c
            scores[c] += list(det_scores[sel])
            flags[c] += list(ev.match_image(gt[gt[:, 4] == c, :4], boxes[sel],
                                            det_scores[sel]))
    rows = []
    for c in range(num_classes):
        order = sorted(range(len(scores[c])), key=lambda j: -scores[c][j])   # stable
        tp = np.cumsum([flags[c][j] for j in order])
        precision = tp / np.arange(1, len(order) + 1)
        recall = tp / n_gt[c] if n_gt[c] else np.zeros(len(order))
        aps = (ev.voc_ap(recall, precision), ev.voc_ap(recall, precision, True))
        rows.append((n_gt[c], int(sum(flags[c])), recall, precision,
                     *(aps if n_gt[c] else (None, None))))
    return rows


def test_packed_report_is_the_per_image_and_pycocotools_report(monkeypatch):
    """600 images packed 64 at a time, COCO in chunks of 150: the VOC numbers
    equal an image-by-image evaluation's, the COCO ones a whole-set COCOeval's,
    exactly."""
    from yolo3 import coco_metrics, packed_boxes
    monkeypatch.setattr(packed_boxes, "CHUNK", 64)
    monkeypatch.setattr(coco_metrics, "CHUNK", 150)
    rng = np.random.default_rng(11)
    gts, dts = random_scene(rng, n_images=600)
    for i in range(0, 600, 97):      # images without ground truth, without detections
        gts[i] = np.zeros((0, 5))
        dts[i + 1] = dets([])
    dts = [(b, s.round(1), c) for b, s, c in dts]     # many tied scores across images
    names = ["x", "y", "z", "w"]      # w: no ground truth, no detections
    report, curves = ev.evaluate(gts, dts, names)
    for c, (n_gt, tp, recall, precision, ap, ap11) in enumerate(per_image_voc(gts, dts, 3)):
        row = report["per_class"][names[c]]
        assert (row["gt"], row["tp"], row["AP50"], row["AP50_11point"]) == (n_gt, tp, ap, ap11)
        assert row["detections"] == len(recall)
        np.testing.assert_array_equal(curves[names[c]][0], recall)
        np.testing.assert_array_equal(curves[names[c]][1], precision)
    voc = per_image_voc(gts, dts, 3)
    assert report["mAP50"] == float(np.mean([v[4] for v in voc]))
    assert report["mAP50_11point"] == float(np.mean([v[5] for v in voc]))
    stats, per_class = pycocotools_reference(gts, dts, 4)
    assert [report["coco"][k] for k in ev.COCO_KEYS] == [max(s, 0.0) for s in stats]
    assert [report["per_class"][n]["AP"] for n in names[:3]] == per_class[:3]
    assert 0.2 < report["mAP50"] < 0.95
    assert report["images"] == 600 and report["classes_without_ground_truth"] == ["w"]


class JitterDetector:
    """Each line's ground truth moved by up to 3 pixels, random scores, one
    false positive per image; records the paths of every call."""
    class_names = ("a", "b")

    def __init__(self, lines):
        self.truth = {line.path: line.boxes for line in lines}
        self.rng = np.random.default_rng(0)
        self.calls = []

    def detect(self, paths, progress=None):
        self.calls.append(list(paths))
        results = []
        for path in paths:
            truth = self.truth[path]
            rows = [[*(box[:4] + self.rng.uniform(-3, 3, 4)), self.rng.random(), box[4]]
                    for box in truth] + [[0, 0, 4, 4, self.rng.random(), 1]]
            results.append(dets(rows))
        return results


def test_detect_annotations_packs_chunk_by_chunk(tmp_path, monkeypatch):
    """22 lines in chunks of 5: the detector sees 5, 5, 5, 5, 2 images; the
    packed rows, sizes and report are those of the lines and detections."""
    from PIL import Image

    from yolo3.annotation_file import parse_line
    monkeypatch.setattr(ev, "CHUNK", 5)
    rng = np.random.default_rng(2)
    lines = []
    for i in range(22):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (40 + i, 30 + 2 * i)).save(path)
        xy = rng.uniform(0, 15, (1 + i % 3, 2)).round(1)
        boxes = " ".join(f"{x},{y},{x + 12},{y + 9},{i % 2}" for x, y in xy)
        lines.append(parse_line(f"{path} {boxes}"))
    detector = JitterDetector(lines)
    data = ev.detect_annotations(detector, lines)
    assert [len(c) for c in detector.calls] == [5, 5, 5, 5, 2]
    assert data.sizes.tolist() == [[40 + i, 30 + 2 * i] for i in range(22)]
    for line, gt in zip(lines, data.ground_truth()):
        np.testing.assert_array_equal(gt, line.boxes)
    again = JitterDetector(lines)   # the same detections, image by image
    expected = again.detect([line.path for line in lines])
    for want, got in zip(expected, data.detections()):
        for a, b in zip(want, got):
            np.testing.assert_array_equal(b, a)
    report, _ = ev.evaluate_detector(JitterDetector(lines), lines, coco=False)
    voc = per_image_voc([line.boxes.astype(float) for line in lines], expected, 2)
    assert report["mAP50"] == float(np.mean([v[4] for v in voc])) and report["mAP"] is None
