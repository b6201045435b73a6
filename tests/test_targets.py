"""preprocess_true_boxes: hand-derived cells, slots and values, and agreement with a
plain transcription of the original per-box loop."""
import numpy as np
import pytest

from yolo3.anchors import TINY_MASK, YOLO_MASK, get_anchors
from yolo3.model import preprocess_true_boxes

from tests.fixtures import TINY_ANCHORS, YOLO_ANCHORS


def boxes_of(*rows, slots=5):
    out = np.zeros((1, slots, 5), np.float32)
    out[0, :len(rows)] = rows
    return out


def test_default_anchor_files_match_the_original():
    assert np.array_equal(get_anchors("model_data/yolo_anchors.txt"), YOLO_ANCHORS)
    assert np.array_equal(get_anchors("model_data/tiny_yolo_anchors.txt"), TINY_ANCHORS)


def test_one_box_goes_to_its_best_anchor_cell_and_slot():
    # centre (150, 190), wh (100, 140): IoU with (116, 90) = 9000 / 15440 = 0.583 is
    # the best (59,119: 0.50; 156,198: 0.45) -> head 0 (mask 6,7,8), slot 0;
    # cell i = floor(150/416*13) = 4, j = floor(190/416*13) = 5.
    y = preprocess_true_boxes(boxes_of([100, 120, 200, 260, 2]), (416, 416), YOLO_ANCHORS, 3)
    assert [a.shape for a in y] == [(1, 13, 13, 3, 8), (1, 26, 26, 3, 8), (1, 52, 52, 3, 8)]
    expected = np.array([150 / 416, 190 / 416, 100 / 416, 140 / 416, 1, 0, 0, 1], np.float32)
    np.testing.assert_allclose(y[0][0, 5, 4, 0], expected, rtol=1e-6)
    assert y[0].sum() == pytest.approx(expected.sum(), rel=1e-6)
    assert y[1].sum() == 0 and y[2].sum() == 0


def test_floor_divided_centre():
    # (101 + 200) // 2 = 150, not 150.5
    y = preprocess_true_boxes(boxes_of([101, 120, 200, 260, 0]), (416, 416), YOLO_ANCHORS, 1)
    cell = y[0][0][y[0][0][..., 4] == 1]
    assert cell[0, 0] == pytest.approx(150 / 416)


def test_tiny_box_at_the_border_and_box_at_the_far_corner():
    # (0,0)-(8,8): best anchor 0 (IoU 64/130) -> head 2 slot 0, cell (0, 0).
    # (380,380)-(416,416): centre 398, wh 36: best anchor 2 (33,23: 759/1296 = .586)
    # -> head 2 slot 2, cell floor(398/416*52) = 49.
    y = preprocess_true_boxes(boxes_of([0, 0, 8, 8, 0], [380, 380, 416, 416, 1]),
                              (416, 416), YOLO_ANCHORS, 2)
    np.testing.assert_allclose(y[2][0, 0, 0, 0], [4 / 416, 4 / 416, 8 / 416, 8 / 416, 1, 1, 0])
    np.testing.assert_allclose(y[2][0, 49, 49, 2], [398 / 416, 398 / 416, 36 / 416, 36 / 416, 1, 0, 1])
    assert y[2][..., 4].sum() == 2 and y[0].sum() == 0 and y[1].sum() == 0


def test_later_box_overwrites_the_same_cell_and_slot_class_bits_stay():
    # Both boxes: centre (150, 190), best anchor 6 -> same cell and slot. The
    # second box's x, y, w, h win; the original sets class bits without clearing.
    y = preprocess_true_boxes(boxes_of([100, 120, 200, 260, 0], [102, 122, 198, 258, 1]),
                              (416, 416), YOLO_ANCHORS, 3)
    np.testing.assert_allclose(y[0][0, 5, 4, 0],
                               [150 / 416, 190 / 416, 96 / 416, 136 / 416, 1, 1, 1, 0], rtol=1e-6)
    assert y[0][..., 4].sum() == 1


def test_tiny_mask_quirks():
    # Exactly anchor 0 -> no head holds anchor 0: no target. Exactly anchor 3 ->
    # both heads (mask 3,4,5 slot 0 and 1,2,3 slot 2); centre (140, 141).
    y = preprocess_true_boxes(boxes_of([0, 0, 10, 14, 0], [100, 100, 181, 182, 1]),
                              (416, 416), TINY_ANCHORS, 2)
    assert len(y) == 2
    rel = [140 / 416, 141 / 416, 81 / 416, 82 / 416, 1, 0, 1]
    np.testing.assert_allclose(y[0][0, 4, 4, 0], rel, rtol=1e-6)
    np.testing.assert_allclose(y[1][0, 8, 8, 2], rel, rtol=1e-6)
    assert y[0][..., 4].sum() == 1 and y[1][..., 4].sum() == 1
    # With darknet's mask 0,1,2 the anchor-0 box lands in head 1, slot 0.
    y = preprocess_true_boxes(boxes_of([0, 0, 10, 14, 0]), (416, 416), TINY_ANCHORS, 2,
                              mask=[[3, 4, 5], [0, 1, 2]])
    assert y[1][0, 0, 0, 0, 4] == 1 and y[0].sum() == 0


def test_bad_class_id_is_a_clear_error():
    with pytest.raises(ValueError, match=r"class id 5 outside 0\.\.2 \(num_classes=3\)"):
        preprocess_true_boxes(boxes_of([10, 10, 50, 50, 5]), (416, 416), YOLO_ANCHORS, 3)


def original_loop(true_boxes, input_shape, anchors, num_classes, anchor_mask):
    """A plain transcription of keras-yolo3's preprocess_true_boxes."""
    true_boxes = np.array(true_boxes, dtype="float32")
    input_shape = np.array(input_shape, dtype="int32")
    boxes_xy = (true_boxes[..., 0:2] + true_boxes[..., 2:4]) // 2
    boxes_wh = true_boxes[..., 2:4] - true_boxes[..., 0:2]
    true_boxes[..., 0:2] = boxes_xy / input_shape[::-1]
    true_boxes[..., 2:4] = boxes_wh / input_shape[::-1]
    m = true_boxes.shape[0]
    num_layers = len(anchor_mask)
    grid_shapes = [input_shape // {0: 32, 1: 16, 2: 8}[l] for l in range(num_layers)]
    y_true = [np.zeros((m, grid_shapes[l][0], grid_shapes[l][1], len(anchor_mask[l]),
                        5 + num_classes), dtype="float32") for l in range(num_layers)]
    anchors = np.expand_dims(anchors, 0)
    anchor_maxes = anchors / 2.
    anchor_mins = -anchor_maxes
    valid_mask = boxes_wh[..., 0] > 0
    for b in range(m):
        wh = boxes_wh[b, valid_mask[b]]
        if len(wh) == 0:
            continue
        wh = np.expand_dims(wh, -2)
        box_maxes = wh / 2.
        box_mins = -box_maxes
        intersect_mins = np.maximum(box_mins, anchor_mins)
        intersect_maxes = np.minimum(box_maxes, anchor_maxes)
        intersect_wh = np.maximum(intersect_maxes - intersect_mins, 0.)
        intersect_area = intersect_wh[..., 0] * intersect_wh[..., 1]
        box_area = wh[..., 0] * wh[..., 1]
        anchor_area = anchors[..., 0] * anchors[..., 1]
        iou = intersect_area / (box_area + anchor_area - intersect_area)
        best_anchor = np.argmax(iou, axis=-1)
        for t, n in enumerate(best_anchor):
            for l in range(num_layers):
                if n in anchor_mask[l]:
                    i = np.floor(true_boxes[b, t, 0] * grid_shapes[l][1]).astype("int32")
                    j = np.floor(true_boxes[b, t, 1] * grid_shapes[l][0]).astype("int32")
                    k = anchor_mask[l].index(n)
                    c = true_boxes[b, t, 4].astype("int32")
                    y_true[l][b, j, i, k, 0:4] = true_boxes[b, t, 0:4]
                    y_true[l][b, j, i, k, 4] = 1
                    y_true[l][b, j, i, k, 5 + c] = 1
    return y_true


@pytest.mark.parametrize("anchors, mask, size", [(YOLO_ANCHORS, YOLO_MASK, (416, 416)),
                                                 (YOLO_ANCHORS, YOLO_MASK, (320, 608)),
                                                 (TINY_ANCHORS, TINY_MASK, (416, 416))])
def test_matches_the_original_loop_on_random_boxes(anchors, mask, size):
    rng = np.random.default_rng(7)
    h, w = size
    boxes = np.zeros((6, 30, 5), np.float32)
    for b in range(6):
        n = rng.integers(0, 31)
        x0 = rng.integers(0, w - 2, n)
        y0 = rng.integers(0, h - 2, n)
        x1 = np.minimum(x0 + rng.integers(1, w // 2, n), w - 1)
        y1 = np.minimum(y0 + rng.integers(1, h // 2, n), h - 1)
        boxes[b, :n] = np.stack([x0, y0, x1, y1, rng.integers(0, 4, n)], -1)
    ours = preprocess_true_boxes(boxes, size, anchors, 4)
    theirs = original_loop(boxes, size, anchors, 4, mask)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_a_zero_width_row_before_a_valid_box_the_one_difference():
    # Row 0 has zero width (x 50..50, y 50..80, class 1); row 1 is the box of the
    # first test: best anchor 6 -> head 0 slot 0, cell (j, i) = (5, 4).
    boxes = boxes_of([50, 50, 50, 80, 1], [100, 120, 200, 260, 2])
    ours = preprocess_true_boxes(boxes, (416, 416), YOLO_ANCHORS, 3)
    valid = np.array([150 / 416, 190 / 416, 100 / 416, 140 / 416, 1, 0, 0, 1], np.float32)
    np.testing.assert_allclose(ours[0][0, 5, 4, 0], valid, rtol=1e-6)
    assert ours[0][..., 4].sum() == 1 and ours[1].sum() == 0 and ours[2].sum() == 0
    # The original takes the valid box's anchor (6: head 0, slot 0) but reads row 0:
    # centre ((50 + 50) // 2, (50 + 80) // 2) = (50, 65), w 0, h 30, class 1, so cell
    # i = floor(50 / 416 * 13) = 1, j = floor(65 / 416 * 13) = 2; the valid box is lost.
    theirs = original_loop(boxes, (416, 416), YOLO_ANCHORS, 3, YOLO_MASK)
    wrong = np.array([50 / 416, 65 / 416, 0, 30 / 416, 1, 0, 1, 0], np.float32)
    np.testing.assert_allclose(theirs[0][0, 2, 1, 0], wrong, rtol=1e-6)
    assert theirs[0][0, 5, 4].sum() == 0 and theirs[0][..., 4].sum() == 1
