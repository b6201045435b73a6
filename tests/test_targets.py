"""preprocess_true_boxes: hand-derived cells, slots and values, and agreement with a
plain transcription of the original per-box loop."""
import numpy as np
import pytest

from yolo3.anchors import TINY_MASK, YOLO_MASK, get_anchors
from yolo3.errors import UserError
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


# Multi-anchor assignment (iou_thresh). Box B: centre (150, 190), wh (100, 140); its
# (w, h) IoU with the anchors: (116, 90) 9000 / 15440 = .583 (best: head 0 slot 0),
# (59, 119) 7021 / 14000 = .5015 (head 1 slot 2), (156, 198) 14000 / 30888 = .453
# (head 0 slot 1), (62, 45) 2790 / 14000 = .199, the others below .14.
# Cells: head 0 (13x13) i = floor(150/32) = 4, j = floor(190/32) = 5; head 1
# (26x26) i = floor(150/16) = 9, j = floor(190/16) = 11.
BOX_B = [100, 120, 200, 260, 2]
REL_B = [150 / 416, 190 / 416, 100 / 416, 140 / 416, 1]


@pytest.mark.parametrize("thresh, extra_slots", [(0.213, [(0, 5, 4, 1), (1, 11, 9, 2)]),
                                                 (0.5, [(1, 11, 9, 2)]),
                                                 (0.19, [(0, 5, 4, 1), (1, 11, 9, 2),
                                                         (1, 11, 9, 1)])])
def test_a_box_also_trains_the_anchors_above_iou_thresh(thresh, extra_slots):
    # 0.19 adds (62, 45): head 1 slot 1; 0.5 keeps only .5015.
    y = preprocess_true_boxes(boxes_of(BOX_B), (416, 416), YOLO_ANCHORS, 3,
                              iou_thresh=thresh)
    target = np.array(REL_B + [0, 0, 1], np.float32)
    for head, j, i, k in [(0, 5, 4, 0)] + extra_slots:
        np.testing.assert_allclose(y[head][0, j, i, k], target, rtol=1e-6)
    assert sum(a.sum() for a in y) == pytest.approx(target.sum() * (1 + len(extra_slots)),
                                                     rel=1e-6)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_an_extra_target_never_replaces_a_best_one(order):
    # Box A: (65, 80)-(215, 280), centre (140, 180), wh (150, 200), class 0. IoU with
    # (156, 198): 29700 / 31188 = .952 (best: head 0 slot 1, the cell of B, which
    # takes it as an extra); (116, 90): 10440 / 30000 = .348 (head 0 slot 0, B's
    # best); (373, 326): 30000 / 121598 = .247 (head 0 slot 2); (59, 119):
    # 7021 / 30000 = .234 (head 1 slot 2, cell i = floor(140/16) = 8, j = 11).
    rows = [[65, 80, 215, 280, 0], BOX_B]
    y = preprocess_true_boxes(boxes_of(*[rows[n] for n in order]), (416, 416),
                              YOLO_ANCHORS, 3, iou_thresh=0.213)
    a = [140 / 416, 180 / 416, 150 / 416, 200 / 416, 1, 1, 0, 0]
    b = REL_B + [0, 0, 1]
    expected = {(0, 5, 4, 0): b, (0, 5, 4, 1): a, (0, 5, 4, 2): a,
                (1, 11, 9, 2): b, (1, 11, 8, 2): a}
    for (head, j, i, k), target in expected.items():
        np.testing.assert_allclose(y[head][0, j, i, k], target, rtol=1e-6)
    assert [a[..., 4].sum() for a in y] == [3, 2, 0]
    assert sum(a.sum() for a in y) == pytest.approx(sum(map(sum, expected.values())), rel=1e-6)


def test_of_two_extra_targets_in_one_slot_the_last_box_wins_with_its_class_only():
    # B' (102, 122)-(198, 258), class 1: the same centre, wh (96, 136); best (116, 90)
    # 8640 / 14856 = .58 (B's slot: the later box wins, both class bits stay set, as
    # without iou_thresh); extras above 0.3 as B's: (59, 119) 7021 / 13056 = .54,
    # (156, 198) 13056 / 30888 = .42, in the same slots as B's -> B' only.
    y = preprocess_true_boxes(boxes_of(BOX_B, [102, 122, 198, 258, 1]), (416, 416),
                              YOLO_ANCHORS, 3, iou_thresh=0.3)
    b2 = [150 / 416, 190 / 416, 96 / 416, 136 / 416, 1]
    np.testing.assert_allclose(y[0][0, 5, 4, 0], b2 + [0, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(y[0][0, 5, 4, 1], b2 + [0, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(y[1][0, 11, 9, 2], b2 + [0, 1, 0], rtol=1e-6)
    assert [a[..., 4].sum() for a in y] == [2, 1, 0]


@pytest.mark.parametrize("thresh, extra", [(0.5, False), (0.49, True)])
def test_an_iou_equal_to_iou_thresh_does_not_exceed_it(thresh, extra):
    # wh (116, 45): (62, 45) 2790 / 5220 = .534 is the best (head 1 slot 1, cell
    # floor(158/16) = 9, floor(122/16) = 7); (116, 90) 5220 / 10440 = .5 exactly
    # (head 0 slot 0, cell floor(158/32) = 4, floor(122/32) = 3).
    y = preprocess_true_boxes(boxes_of([100, 100, 216, 145, 0]), (416, 416),
                              YOLO_ANCHORS, 1, iou_thresh=thresh)
    assert y[1][0, 7, 9, 1, 4] == 1 and y[1][..., 4].sum() == 1
    assert y[0][0, 3, 4, 0, 4] == extra and y[0][..., 4].sum() == extra


def test_iou_thresh_one_is_the_original():
    # No (w, h) IoU exceeds 1: the targets of the original loop.
    rng = np.random.default_rng(3)
    x0, y0 = rng.integers(0, 300, (2, 4, 20))
    boxes = np.stack([x0, y0, x0 + rng.integers(1, 116, (4, 20)),
                      y0 + rng.integers(1, 116, (4, 20)), rng.integers(0, 3, (4, 20))], -1)
    ours = preprocess_true_boxes(boxes, (416, 416), YOLO_ANCHORS, 3, iou_thresh=1.0)
    for a, b in zip(ours, original_loop(boxes, (416, 416), YOLO_ANCHORS, 3, YOLO_MASK)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("thresh", [-0.1, 1.5])
def test_iou_thresh_outside_0_1_is_a_user_error(thresh):
    with pytest.raises(UserError, match=f"^iou_thresh {thresh}: not between 0 and 1$"):
        preprocess_true_boxes(boxes_of(BOX_B), (416, 416), YOLO_ANCHORS, 3,
                              iou_thresh=thresh)
