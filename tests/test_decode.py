"""Decoding: yolo_head and yolo_correct_boxes on hand-computed cases, yolo_eval on
crafted feature maps with known detections, NMS on every backend path."""
import numpy as np
import pytest
from keras import ops

from yolo3 import model as yolo_model
from yolo3.model import (non_max_suppression, yolo_correct_boxes, yolo_eval, yolo_eval_batch,
                         yolo_head)
from tests.fixtures import YOLO_ANCHORS


def test_yolo_head_by_hand():
    # 2x2 grid, one anchor (64, 32), one class, input 64x64. Cell (j=1, i=0):
    # tx = ln 3 -> sigmoid 0.75 -> x = (0.75 + 0) / 2; ty = 0 -> y = (0.5 + 1) / 2;
    # tw = ln 2 -> w = 2 * 64 / 64; th = 0 -> h = 32 / 64.
    feats = np.zeros((1, 2, 2, 6), np.float32)
    feats[0, 1, 0, :4] = [np.log(3), 0, np.log(2), 0]
    feats[0, 1, 0, 4:] = [np.log(4), -np.log(4)]          # sigmoid: 0.8, 0.2
    xy, wh, conf, probs = (ops.convert_to_numpy(t) for t in
                           yolo_head(feats, np.array([[64, 32]], np.float32), 1, (64, 64)))
    np.testing.assert_allclose(xy[0, 1, 0, 0], [0.375, 0.75], rtol=1e-6)
    np.testing.assert_allclose(wh[0, 1, 0, 0], [2.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(conf[0, 1, 0, 0], [0.8], rtol=1e-6)
    np.testing.assert_allclose(probs[0, 1, 0, 0], [0.2], rtol=1e-6)
    np.testing.assert_allclose(xy[0, 0, 1, 0], [0.75, 0.25], rtol=1e-6)   # zeros: centre of cell


def test_yolo_correct_boxes_by_hand():
    # image 208 high x 416 wide in a 416 input: scale 1, offset (0.25, 0) on y,
    # scale (2, 1). Box xy (.5,.5) wh (.25,.25) -> yx (.5,.5), hw (.5,.25)
    # -> (y_min, x_min, y_max, x_max) = (.25, .375, .75, .625) * (208, 416).
    boxes = yolo_correct_boxes(np.array([[0.5, 0.5]], np.float32),
                               np.array([[0.25, 0.25]], np.float32), (416, 416), (208, 416))
    np.testing.assert_allclose(ops.convert_to_numpy(boxes), [[52, 156, 156, 260]], rtol=1e-6)


def crafted_outputs(size=64, num_classes=2):
    """Three heads of logits at -20 (nothing), with two class-1 boxes in head 0:
    cell (0,0) anchor (116,90) at confidence logit 10, and cell (i=1, j=0) at 5."""
    outputs = [np.full((1, size // s, size // s, 3 * (5 + num_classes)), -20, np.float32)
               for s in (32, 16, 8)]
    for i, conf in ((0, 10.0), (1, 5.0)):
        cell = outputs[0][0, 0, i].reshape(3, 5 + num_classes)
        cell[0, :4] = 0
        cell[0, 4] = conf
        cell[0, 5 + 1] = 10
    return outputs


def sig(x):
    return 1 / (1 + np.exp(-x))


def test_yolo_eval_on_crafted_maps():
    # Box 1: centre (16, 16), anchor 116x90 -> (y_min, x_min, y_max, x_max) =
    # (16-45, 16-58, 16+45, 16+58). Box 2 is 32 px to the right: IoU = 84*90 /
    # (2*10440 - 7560) = 0.568 > 0.5 -> suppressed; kept with iou_threshold 0.6.
    outputs = crafted_outputs()
    boxes, scores, classes = yolo_eval(outputs, YOLO_ANCHORS, 2, (64, 64), score_threshold=0.3)
    np.testing.assert_allclose(boxes, [[-29, -42, 61, 74]], atol=1e-4)
    np.testing.assert_allclose(scores, [sig(10) * sig(10)], rtol=1e-6)
    assert classes.tolist() == [1]
    boxes, scores, classes = yolo_eval(outputs, YOLO_ANCHORS, 2, (64, 64), score_threshold=0.3,
                                       iou_threshold=0.6)
    np.testing.assert_allclose(boxes, [[-29, -42, 61, 74], [-29, -10, 61, 106]], atol=1e-4)
    np.testing.assert_allclose(scores, [sig(10) ** 2, sig(5) * sig(10)], rtol=1e-6)


def test_yolo_eval_undoes_the_letterbox_of_a_wide_image():
    # A 64x128 (h x w) image letterboxed into 64x64: scale 0.5, the image occupies
    # rows 16..48. The centre (16, 16) maps to x = 32, y = (16-16)*2 = 0.
    outputs = crafted_outputs()
    boxes, _, _ = yolo_eval(outputs, YOLO_ANCHORS, 2, (64, 128), score_threshold=0.3)
    np.testing.assert_allclose(boxes, [[0 - 90, 32 - 116, 0 + 90, 32 + 116]], atol=1e-3)


def test_batched_eval_equals_one_image_at_a_time():
    rng = np.random.default_rng(0)
    outputs = [rng.normal(-2, 2, (3, 2 * s, 2 * s, 21)).astype(np.float32) for s in (1, 2, 4)]
    shapes = [(64, 64), (50, 120), (200, 90)]
    batched = yolo_eval_batch(outputs, YOLO_ANCHORS, 2, shapes, score_threshold=0.2)
    for b, shape in enumerate(shapes):
        single = yolo_eval([o[b:b + 1] for o in outputs], YOLO_ANCHORS, 2, shape,
                           score_threshold=0.2)
        for x, y in zip(batched[b], single):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-4)


def greedy_nms_by_hand(boxes, scores, max_boxes, iou_threshold):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if len(keep) == max_boxes:
            break
        ok = True
        for k in keep:
            y0, x0 = max(boxes[i][0], boxes[k][0]), max(boxes[i][1], boxes[k][1])
            y1, x1 = min(boxes[i][2], boxes[k][2]), min(boxes[i][3], boxes[k][3])
            inter = max(y1 - y0, 0) * max(x1 - x0, 0)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])
            if inter / (area(boxes[i]) + area(boxes[k]) - inter) > iou_threshold:
                ok = False
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("path", ["tensorflow", "numpy"])
def test_nms_matches_a_greedy_reference(path, monkeypatch):
    if path == "numpy":
        monkeypatch.setattr(yolo_model.keras.backend, "backend", lambda: "jax")
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (200, 2))
    wh = rng.uniform(5, 40, (200, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, (200, 2)).astype(np.float32)
    out_boxes, out_scores, out_classes = non_max_suppression(boxes, scores, 15, 0.3, 0.45)
    for c in range(2):
        cand = np.flatnonzero(scores[:, c] >= 0.3)
        keep = cand[greedy_nms_by_hand(boxes[cand], scores[cand, c], 15, 0.45)]
        np.testing.assert_array_equal(out_boxes[out_classes == c], boxes[keep])
        np.testing.assert_array_equal(out_scores[out_classes == c], scores[keep, c])
