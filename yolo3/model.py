"""YOLOv3, YOLOv3-SPP and tiny-YOLOv3 in Keras 3: networks, decoding, training
targets, loss.

Keeps the public API of keras-yolo3's yolo3/model.py; the networks live in
yolo3.networks (darknet layer names, see there) and are re-exported here. The
networks, the decoding (yolo_head ... yolo_boxes_and_scores) and the loss use
keras.ops only, so they run on every Keras backend; non-max suppression is the one
backend-specific step.
"""
import numpy as np
import keras
from keras import layers, ops

from .anchors import YOLO_MASK, TINY_MASK, anchor_masks
from .box_losses import IOU_KINDS, iou_terms
from .errors import UserError
from .kinds import kind_for_anchors
from .networks import (DarknetConv2D, DarknetConv2D_BN_Leaky, darknet_body,
                       make_last_layers, resblock_body, spp_block, tiny_yolo_body,
                       yolo_body, yolo_spp_body)
from .utils import compose


# ---------------------------------------------------------------------------
# Decoding

def _swap_xy(t):
    """(..., 2) x,y <-> y,x (backend-neutral; no negative-step slicing)."""
    return ops.concatenate([t[..., 1:2], t[..., 0:1]], axis=-1)


def yolo_head(feats, anchors, num_classes, input_shape, calc_loss=False):
    """Raw head output -> box xy (cell offset + sigmoid, over the grid), wh
    (exp * anchor over the input size), objectness and class probabilities."""
    num_anchors = len(anchors)
    dtype = feats.dtype
    anchors_tensor = ops.reshape(ops.convert_to_tensor(np.asarray(anchors, "float32"),
                                                      dtype=dtype), (1, 1, 1, num_anchors, 2))
    shape = ops.shape(feats)
    grid_h, grid_w = shape[1], shape[2]
    grid_y = ops.tile(ops.reshape(ops.arange(grid_h), (-1, 1, 1, 1)), (1, grid_w, 1, 1))
    grid_x = ops.tile(ops.reshape(ops.arange(grid_w), (1, -1, 1, 1)), (grid_h, 1, 1, 1))
    grid = ops.cast(ops.concatenate([grid_x, grid_y], axis=-1), dtype)

    feats = ops.reshape(feats, (-1, grid_h, grid_w, num_anchors, num_classes + 5))
    grid_wh = ops.cast(ops.stack([grid_w, grid_h]), dtype)
    input_wh = ops.cast(_swap_xy(ops.convert_to_tensor(input_shape)), dtype)
    box_xy = (ops.sigmoid(feats[..., :2]) + grid) / grid_wh
    box_wh = ops.exp(feats[..., 2:4]) * anchors_tensor / input_wh
    box_confidence = ops.sigmoid(feats[..., 4:5])
    box_class_probs = ops.sigmoid(feats[..., 5:])
    if calc_loss:
        return grid, feats, box_xy, box_wh
    return box_xy, box_wh, box_confidence, box_class_probs


def yolo_correct_boxes(box_xy, box_wh, input_shape, image_shape):
    """Undo the letterbox: relative boxes in the network input -> (y_min, x_min,
    y_max, x_max) in image pixels. image_shape is (h, w), or (batch, h, w) with
    box tensors of rank 5 (batch first)."""
    dtype = box_xy.dtype
    box_yx = _swap_xy(box_xy)
    box_hw = _swap_xy(box_wh)
    input_shape = ops.cast(ops.convert_to_tensor(input_shape), dtype)
    image_shape = ops.cast(ops.convert_to_tensor(image_shape), dtype)
    if len(image_shape.shape) == 2:     # one (h, w) per image: broadcast over the grid
        image_shape = ops.reshape(image_shape, (-1, 1, 1, 1, 2))
    scale_min = ops.min(input_shape / image_shape, axis=-1, keepdims=True)
    new_shape = ops.round(image_shape * scale_min)
    offset = (input_shape - new_shape) / 2.0 / input_shape
    scale = input_shape / new_shape
    box_yx = (box_yx - offset) * scale
    box_hw = box_hw * scale
    box_mins = box_yx - box_hw / 2.0
    box_maxes = box_yx + box_hw / 2.0
    boxes = ops.concatenate([box_mins, box_maxes], axis=-1)
    return boxes * ops.concatenate([image_shape, image_shape], axis=-1)


def yolo_boxes_and_scores(feats, anchors, num_classes, input_shape, image_shape):
    """One head -> boxes (n, 4) in image pixels and box scores (n, num_classes)."""
    box_xy, box_wh, box_confidence, box_class_probs = yolo_head(
        feats, anchors, num_classes, input_shape)
    boxes = yolo_correct_boxes(box_xy, box_wh, input_shape, image_shape)
    boxes = ops.reshape(boxes, (-1, 4))
    box_scores = ops.reshape(box_confidence * box_class_probs, (-1, num_classes))
    return boxes, box_scores


def _input_shape(yolo_outputs):
    shape = ops.shape(yolo_outputs[0])
    return ops.stack([shape[1] * 32, shape[2] * 32])


def decode_batch(yolo_outputs, anchors, num_classes, image_shapes, mask=None):
    """All heads of a batch -> boxes (B, N, 4) in each image's pixels and box
    scores (B, N, num_classes); image_shapes is (B, 2) as (h, w)."""
    anchors = np.asarray(anchors, "float32")
    mask = anchor_masks(len(anchors), mask)
    input_shape = _input_shape(yolo_outputs)
    batch = ops.shape(yolo_outputs[0])[0]
    all_boxes, all_scores = [], []
    for head, feats in enumerate(yolo_outputs):
        box_xy, box_wh, confidence, class_probs = yolo_head(
            feats, anchors[mask[head]], num_classes, input_shape)
        boxes = yolo_correct_boxes(box_xy, box_wh, input_shape, image_shapes)
        all_boxes.append(ops.reshape(boxes, (batch, -1, 4)))
        all_scores.append(ops.reshape(confidence * class_probs, (batch, -1, num_classes)))
    return ops.concatenate(all_boxes, axis=1), ops.concatenate(all_scores, axis=1)


def _box_area(boxes):
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def _nms_numpy(boxes, scores, max_boxes, iou_threshold):
    """Greedy NMS as tf.image.non_max_suppression: highest score first, drop boxes
    whose IoU with a kept box exceeds iou_threshold. Returns kept indexes."""
    corners = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]),
                              np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    areas = _box_area(corners)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and len(keep) < max_boxes:
        best, rest = order[0], order[1:]
        keep.append(best)
        mins = np.maximum(corners[best, :2], corners[rest, :2])
        maxes = np.minimum(corners[best, 2:], corners[rest, 2:])
        inter = np.prod(np.maximum(maxes - mins, 0), axis=1)
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _nms_tensorflow(boxes, scores, max_boxes, iou_threshold):
    import tensorflow as tf
    return tf.image.non_max_suppression(boxes, scores, max_boxes,
                                        iou_threshold=iou_threshold).numpy()


def non_max_suppression(boxes, scores, max_boxes=20, score_threshold=.6, iou_threshold=.5):
    """One image: boxes (N, 4), scores (N, C) -> per-class NMS (at most max_boxes
    per class) of the boxes scoring >= score_threshold; returns numpy (boxes,
    scores, classes) concatenated class by class, as the original yolo_eval."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    nms = _nms_tensorflow if keras.backend.backend() == "tensorflow" else _nms_numpy
    out_boxes, out_scores, out_classes = [], [], []
    for c in range(scores.shape[1]):
        candidates = np.flatnonzero(scores[:, c] >= score_threshold)
        if candidates.size == 0:
            continue
        keep = candidates[nms(boxes[candidates], scores[candidates, c],
                              max_boxes, iou_threshold)]
        out_boxes.append(boxes[keep])
        out_scores.append(scores[keep, c])
        out_classes.append(np.full(len(keep), c, np.int32))
    if not out_boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(out_boxes), np.concatenate(out_scores), np.concatenate(out_classes)


def yolo_eval_batch(yolo_outputs, anchors, num_classes, image_shapes, max_boxes=20,
                    score_threshold=.6, iou_threshold=.5, mask=None):
    """yolo_eval for a batch: a list of (boxes, scores, classes), one per image."""
    image_shapes = np.asarray(image_shapes, np.float32).reshape(-1, 2)
    boxes, scores = decode_batch(yolo_outputs, anchors, num_classes, image_shapes, mask)
    boxes, scores = ops.convert_to_numpy(boxes), ops.convert_to_numpy(scores)
    return [non_max_suppression(b, s, max_boxes, score_threshold, iou_threshold)
            for b, s in zip(boxes, scores)]


def yolo_eval(yolo_outputs, anchors, num_classes, image_shape, max_boxes=20,
              score_threshold=.6, iou_threshold=.5, mask=None):
    """Detections of one image (batch 1): boxes (n, 4) as (y_min, x_min, y_max,
    x_max) in image pixels, scores (n,), classes (n,)."""
    return yolo_eval_batch([o[:1] for o in yolo_outputs], anchors, num_classes,
                           [image_shape], max_boxes, score_threshold, iou_threshold,
                           mask)[0]


# ---------------------------------------------------------------------------
# Training targets

def preprocess_true_boxes(true_boxes, input_shape, anchors, num_classes, mask=None,
                          iou_thresh=None):
    """Boxes (m, T, 5) as x_min, y_min, x_max, y_max, class in input pixels (rows
    with zero width are padding) -> y_true, one (m, h/s, w/s, len(mask[l]), 5 + C)
    array per head, holding relative x, y, w, h, objectness 1 and the class bits.

    The original's arrays, with one difference: when a zero-width row stands before
    a valid box of the same image, the original's loop writes the wrong row. It
    finds the best anchors of the valid boxes only, then reads box t of the
    unfiltered array for the t-th valid box: the zero-width row's cell, x, y, w, h
    and class go to the valid box's anchor slot, and the valid box is lost. Here
    each valid box is written in its own cell.

    iou_thresh (None: off, the original): a box also trains every other anchor of
    the masks whose (w, h) IoU with it exceeds iou_thresh (darknet's yolo layer
    option), in the same cell of that anchor's head. Such an extra target never
    replaces a box's best-anchor target in the same slot; of several extra targets
    in one free slot the last box's is kept, with its own class bit only."""
    if iou_thresh is not None and not 0 <= iou_thresh <= 1:
        raise UserError(f"iou_thresh {iou_thresh!r}: not between 0 and 1")
    true_boxes = np.array(true_boxes, dtype="float32")
    input_shape = np.array(input_shape, dtype="int32")
    anchors = np.asarray(anchors, dtype="float32")
    anchor_mask = anchor_masks(len(anchors), mask)
    strides = kind_for_anchors(len(anchors)).strides
    batch = true_boxes.shape[0]

    classes = true_boxes[..., 4]
    valid = true_boxes[..., 2] - true_boxes[..., 0] > 0
    bad = valid & ((classes < 0) | (classes >= num_classes) | (classes != np.floor(classes)))
    if bad.any():
        raise ValueError(f"class id {classes[bad][0]:g} outside 0..{num_classes - 1} "
                         f"(num_classes={num_classes})")

    # Integer (floor-divided) centre, as the original; then relative to the input.
    boxes_xy = (true_boxes[..., 0:2] + true_boxes[..., 2:4]) // 2
    boxes_wh = true_boxes[..., 2:4] - true_boxes[..., 0:2]
    true_boxes[..., 0:2] = boxes_xy / input_shape[::-1]
    true_boxes[..., 2:4] = boxes_wh / input_shape[::-1]

    y_true = []
    for head, head_mask in enumerate(anchor_mask):
        grid = input_shape // strides[head]
        y_true.append(np.zeros((batch, grid[0], grid[1], len(head_mask), 5 + num_classes),
                               dtype="float32"))

    # Best anchor of each valid box by IoU of (w, h) with both centred at the origin.
    image_index, box_index = np.nonzero(valid)
    wh = boxes_wh[image_index, box_index]                       # (n, 2)
    inter = np.prod(np.minimum(wh[:, None, :], anchors[None, :, :]), axis=-1)
    iou = inter / (np.prod(wh, axis=-1)[:, None] + np.prod(anchors, axis=-1)[None, :] - inter)
    best_anchor = np.argmax(iou, axis=-1)
    rows = true_boxes[image_index, box_index]                   # (n, 5), in box order

    for head, head_mask in enumerate(anchor_mask):
        slot_of_anchor = np.full(len(anchors), -1)
        slot_of_anchor[head_mask] = np.arange(len(head_mask))
        best = _head_targets(y_true[head], image_index, slot_of_anchor[best_anchor], rows)
        # A later box in the same cell and slot overwrites box and objectness, but
        # the class bits of the earlier one stay set (the original's loop does this).
        y_true[head][best[:4] + (5 + best[4],)] = 1
        _write_last(y_true[head], best)
        if iou_thresh is not None:
            box, anchor = np.nonzero(iou > iou_thresh)          # box order
            other = anchor != best_anchor[box]
            extra = _head_targets(y_true[head], image_index[box[other]],
                                  slot_of_anchor[anchor[other]], rows[box[other]])
            free = ~np.isin(_slot_keys(y_true[head], extra), _slot_keys(y_true[head], best))
            _write_last(y_true[head], tuple(t[free] for t in extra), one_hot=True)
    return y_true


def _head_targets(head_true, image, slot, rows):
    """The targets of one head: the rows whose anchor slot is in this head (slot
    >= 0) -> (image, j, i, slot, class, row) index arrays and rows, in order."""
    grid_h, grid_w = head_true.shape[1:3]
    take = slot >= 0
    b, k, row = image[take], slot[take], rows[take]
    # float32 coordinate times the grid size in float64, as the original's
    # numpy scalar arithmetic (it decides the cell of a box on a cell edge).
    i = np.clip(np.floor(row[:, 0].astype("float64") * grid_w).astype("int32"), 0, grid_w - 1)
    j = np.clip(np.floor(row[:, 1].astype("float64") * grid_h).astype("int32"), 0, grid_h - 1)
    return b, j, i, k, row[:, 4].astype("int32"), row


def _slot_keys(head_true, targets):
    """One integer per (image, j, i, slot) of the targets."""
    grid_h, grid_w, slots = head_true.shape[1:4]
    b, j, i, k = targets[:4]
    return ((b * grid_h + j) * grid_w + i) * slots + k


def _write_last(head_true, targets, one_hot=False):
    """Write x, y, w, h and objectness 1 of the last target in each slot (and with
    one_hot, its class bit)."""
    _, last_from_end = np.unique(_slot_keys(head_true, targets)[::-1], return_index=True)
    last = len(targets[0]) - 1 - last_from_end
    b, j, i, k, c, row = (t[last] for t in targets)
    head_true[b, j, i, k, 0:4] = row[:, 0:4]
    head_true[b, j, i, k, 4] = 1
    if one_hot:
        head_true[b, j, i, k, 5 + c] = 1


# ---------------------------------------------------------------------------
# Loss

def box_iou(b1, b2):
    """IoU of boxes b1 (..., 4) against b2 (n, 4), both as x, y, w, h -> (..., n)."""
    b1 = ops.expand_dims(b1, -2)
    b1_xy, b1_wh = b1[..., :2], b1[..., 2:4]
    b1_mins, b1_maxes = b1_xy - b1_wh / 2.0, b1_xy + b1_wh / 2.0
    b2 = ops.expand_dims(b2, 0)
    b2_xy, b2_wh = b2[..., :2], b2[..., 2:4]
    b2_mins, b2_maxes = b2_xy - b2_wh / 2.0, b2_xy + b2_wh / 2.0
    intersect_wh = ops.maximum(ops.minimum(b1_maxes, b2_maxes) - ops.maximum(b1_mins, b2_mins), 0.0)
    intersect_area = intersect_wh[..., 0] * intersect_wh[..., 1]
    b1_area = b1_wh[..., 0] * b1_wh[..., 1]
    b2_area = b2_wh[..., 0] * b2_wh[..., 1]
    return intersect_area / (b1_area + b2_area - intersect_area)


def _sigmoid_cross_entropy(labels, logits):
    """Elementwise BCE on logits: max(x, 0) - x z + log(1 + exp(-|x|))."""
    return ops.relu(logits) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))


def _object_slots(object_mask, max_true_boxes):
    """The anchor slots holding objects, per image: object_mask (B, h, w, A) ->
    (weights (B, k), index (B, k)) with k = min(max_true_boxes, h*w*A), from
    top-k on the mask; padding slots (no object) get weight 0. On a grid of
    unknown size (multi-scale) k = max_true_boxes: the mask is padded with k
    empty slots, and their indexes point at the last real slot (weight 0)."""
    static = object_mask.shape[1:]
    batch = ops.shape(object_mask)[0]
    if None not in static:
        slots = int(np.prod(static))
        return ops.top_k(ops.reshape(object_mask, (batch, slots)), min(max_true_boxes, slots))
    flat_mask = ops.reshape(object_mask, (batch, -1))
    padded = ops.concatenate([flat_mask, ops.zeros((batch, max_true_boxes), flat_mask.dtype)],
                             axis=1)
    weight, index = ops.top_k(padded, max_true_boxes)
    return weight, ops.minimum(index, ops.shape(flat_mask)[1] - 1)


def _gather_slots(t, index):
    """t (B, h, w, A, C), index (B, k) -> the indexed slots (B, k, C)."""
    flat = ops.reshape(t, (ops.shape(t)[0], -1, t.shape[-1]))
    return ops.take_along_axis(flat, ops.expand_dims(index, -1), axis=1)


def _best_true_iou(pred_box, true_boxes, present):
    """For every predicted box, the best IoU with the true boxes of the same image
    and head (the original's per-image loop, vectorised): pred_box (B, h, w, A, 4),
    true_boxes (B, k, 4) with present (B, k) > 0 for real boxes -> (B, h, w, A)."""
    pred = ops.reshape(pred_box, (ops.shape(pred_box)[0], -1, 1, 4))   # (B, P, 1, 4)
    chosen = ops.expand_dims(true_boxes, 1)                            # (B, 1, k, 4)
    p_mins, p_maxes = pred[..., :2] - pred[..., 2:] / 2.0, pred[..., :2] + pred[..., 2:] / 2.0
    t_mins, t_maxes = chosen[..., :2] - chosen[..., 2:] / 2.0, chosen[..., :2] + chosen[..., 2:] / 2.0
    inter_wh = ops.maximum(ops.minimum(p_maxes, t_maxes) - ops.maximum(p_mins, t_mins), 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = pred[..., 2] * pred[..., 3] + chosen[..., 2] * chosen[..., 3] - inter
    iou = inter / ops.maximum(union, 1e-30)
    iou = ops.where(ops.expand_dims(present, 1) > 0, iou, 0.0)     # padding slots: no box
    best = ops.max(iou, axis=-1)                                   # (B, P)
    return ops.reshape(best, ops.shape(pred_box)[:-1])


BOX_LOSSES = ("original",) + IOU_KINDS
_MAX_WH_LOGIT = 20.0     # exp(20) anchors: far beyond any image, still finite squared


def check_loss_options(box_loss="original", iou_normalizer=1.0, label_smoothing=0.0):
    """A UserError naming the first loss option out of range."""
    if box_loss not in BOX_LOSSES:
        raise UserError(f"box loss {box_loss!r}: not one of {', '.join(BOX_LOSSES)}")
    if not 0 < iou_normalizer < float("inf"):
        raise UserError(f"iou_normalizer {iou_normalizer!r}: not a positive number")
    if not 0 <= label_smoothing < 1:
        raise UserError(f"label_smoothing {label_smoothing!r}: not in [0, 1)")


def _original_box_targets(y_true, grid, head_anchors, input_shape):
    """The original's box targets in logit space, (B, h, w, A, 2) each: the cell
    offsets (for the xy BCE) and the log size over the anchor (for the wh L2)."""
    object_mask = y_true[..., 4:5]
    grid_wh = ops.cast(ops.stack([ops.shape(grid)[1], ops.shape(grid)[0]]), "float32")
    raw_true_xy = y_true[..., :2] * grid_wh - grid
    wh_ratio = y_true[..., 2:4] / head_anchors * _swap_xy(input_shape)
    raw_true_wh = ops.where(object_mask > 0, ops.log(ops.maximum(wh_ratio, 1e-9)), 0.0)
    return raw_true_xy, raw_true_wh


def _overlap_loss(kind, y_true, raw_pred, pred_xy, head_anchors, input_shape, index):
    """1 - the `kind` overlap of the decoded and the true box at the indexed slots,
    in input pixels (DIoU and CIoU change when x and y scale differently):
    (B, k, 1). The wh logits are capped before exp so that huge ones stay finite."""
    input_wh = _swap_xy(input_shape)
    pixels = ops.concatenate([input_wh, input_wh], axis=-1)
    pred_wh = ops.exp(ops.minimum(raw_pred[..., 2:4], _MAX_WH_LOGIT)) * head_anchors
    pred_box = _gather_slots(ops.concatenate([pred_xy * input_wh, pred_wh], axis=-1), index)
    true_box = _gather_slots(y_true[..., 0:4], index) * pixels
    return ops.expand_dims(1 - iou_terms(pred_box, true_box, kind), -1)


def yolo_loss(args, anchors, num_classes, ignore_thresh=.5, print_loss=False, mask=None,
              max_true_boxes=100, return_parts=False, box_loss="original",
              iou_normalizer=1.0, label_smoothing=0.0):
    """YOLOv3 loss: args = [*yolo_outputs, *y_true]. Sum over heads of the box,
    confidence and class terms, each summed and divided by the batch size.
    max_true_boxes bounds the objects per image and head in y_true (static
    shapes): the box and class terms, zero off the objects, are computed on
    those slots only, and the ignore mask compares every prediction with them.
    With return_parts also returns the terms, a dict with the keys xy, wh, box,
    confidence and class (the loss is their sum).

    box_loss "original": the box terms are the original's xy BCE on the cell
    offsets and wh L2 on the log sizes ("box" is 0). "iou", "giou", "diou" or
    "ciou": one term per object instead ("xy" and "wh" are 0), iou_normalizer *
    (2 - w h) * (1 - overlap) of the decoded and the true box, in input pixels.
    With the default iou_normalizer 1 this is of the original's size: near a
    good fit, a shift of d cells costs 2 d^2 per axis in the xy BCE (its excess
    over the entropy floor) against about 2 d / 3 in 1 - IoU for a box of 3
    cells; a size error of a factor e^r costs r^2 / 2 per axis in the wh L2
    against about |r| in 1 - IoU; so errors of a fraction of a cell or of a size
    cost about the same, and a box far off costs at most 2 (1 - CIoU < 2).

    label_smoothing eps: the class targets become y (1 - eps) + eps / 2
    (YOLOv5's smooth BCE); 0 is the original."""
    check_loss_options(box_loss, iou_normalizer, label_smoothing)
    anchors = np.asarray(anchors, "float32")
    anchor_mask = anchor_masks(len(anchors), mask)
    num_layers = len(anchor_mask)
    yolo_outputs = [ops.cast(t, "float32") for t in args[:num_layers]]
    y_true = [ops.cast(t, "float32") for t in args[num_layers:]]
    input_shape = ops.cast(_input_shape(yolo_outputs), "float32")
    batch = ops.cast(ops.shape(yolo_outputs[0])[0], "float32")
    parts = {"xy": 0.0, "wh": 0.0, "box": 0.0, "confidence": 0.0, "class": 0.0}
    for head in range(num_layers):
        object_mask = y_true[head][..., 4:5]
        head_anchors = anchors[anchor_mask[head]]
        grid, raw_pred, pred_xy, pred_wh = yolo_head(
            yolo_outputs[head], head_anchors, num_classes, input_shape, calc_loss=True)
        pred_box = ops.concatenate([pred_xy, pred_wh], axis=-1)
        box_loss_scale = 2 - y_true[head][..., 2:3] * y_true[head][..., 3:4]

        weight, index = _object_slots(object_mask[..., 0], max_true_boxes)
        best_iou = _best_true_iou(ops.stop_gradient(pred_box),
                                  _gather_slots(y_true[head][..., 0:4], index), weight)
        ignore_mask = ops.expand_dims(ops.cast(best_iou < ignore_thresh, "float32"), -1)
        confidence_bce = _sigmoid_cross_entropy(object_mask, raw_pred[..., 4:5])

        # object slots only: (B, k, C) gathered, each weighted by its object_mask
        obj = ops.expand_dims(weight, -1)
        obj_scale = obj * _gather_slots(box_loss_scale, index)
        obj_pred = _gather_slots(raw_pred, index)
        class_true = _gather_slots(y_true[head][..., 5:], index)
        if label_smoothing:
            class_true = class_true * (1 - label_smoothing) + label_smoothing / 2
        terms = {
            "confidence": object_mask * confidence_bce
                          + (1 - object_mask) * confidence_bce * ignore_mask,
            "class": obj * _sigmoid_cross_entropy(class_true, obj_pred[..., 5:]),
        }
        if box_loss == "original":
            raw_true_xy, raw_true_wh = _original_box_targets(
                y_true[head], grid, head_anchors, input_shape)
            terms["xy"] = obj_scale * _sigmoid_cross_entropy(
                _gather_slots(raw_true_xy, index), obj_pred[..., 0:2])
            terms["wh"] = obj_scale * 0.5 * ops.square(
                _gather_slots(raw_true_wh, index) - obj_pred[..., 2:4])
        else:
            terms["box"] = iou_normalizer * obj_scale * _overlap_loss(
                box_loss, y_true[head], raw_pred, pred_xy, head_anchors, input_shape, index)
        for key, value in terms.items():
            parts[key] = parts[key] + ops.sum(value) / batch
    loss = parts["xy"] + parts["wh"] + parts["box"] + parts["confidence"] + parts["class"]
    if print_loss:
        shown = ("xy", "wh") if box_loss == "original" else ("box",)
        _print_tensors("loss:", loss, *[parts[k] for k in shown + ("confidence", "class")])
    return (loss, parts) if return_parts else loss


def _print_tensors(label, *tensors):
    """Print tensors from inside a compiled step, on any backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        tf.print(label, *tensors)
    elif backend == "jax":
        import jax
        jax.debug.print(label + " {}" * len(tensors), *tensors)
    else:
        print(label, *[ops.convert_to_numpy(t) for t in tensors])


@keras.saving.register_keras_serializable(package="yolo3")
class YoloLoss(layers.Layer):
    """The training model's last layer: [*yolo_outputs, *y_true] -> the YOLO loss,
    repeated once per image so that Keras's mean over the batch is the loss.
    max_true_boxes: an upper bound on the objects per image and head in y_true
    (see yolo_loss); a tighter bound makes the loss cheaper. box_loss,
    iou_normalizer and label_smoothing: see yolo_loss (the defaults are the
    original loss)."""

    def __init__(self, anchors, num_classes, ignore_thresh=.5, mask=None,
                 print_loss=False, max_true_boxes=100, box_loss="original",
                 iou_normalizer=1.0, label_smoothing=0.0, **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        check_loss_options(box_loss, iou_normalizer, label_smoothing)
        self.anchors = np.asarray(anchors, "float32")
        self.num_classes = int(num_classes)
        self.ignore_thresh = float(ignore_thresh)
        self.mask = anchor_masks(len(self.anchors), mask)
        self.print_loss = bool(print_loss)
        self.max_true_boxes = int(max_true_boxes)
        self.box_loss = box_loss
        self.iou_normalizer = float(iou_normalizer)
        self.label_smoothing = float(label_smoothing)

    def call(self, inputs):
        loss = yolo_loss(inputs, self.anchors, self.num_classes, self.ignore_thresh,
                         self.print_loss, self.mask, self.max_true_boxes,
                         box_loss=self.box_loss, iou_normalizer=self.iou_normalizer,
                         label_smoothing=self.label_smoothing)
        return ops.ones((ops.shape(inputs[0])[0],), "float32") * loss

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {**super().get_config(), "anchors": self.anchors.tolist(),
                "num_classes": self.num_classes, "ignore_thresh": self.ignore_thresh,
                "mask": self.mask, "print_loss": self.print_loss,
                "max_true_boxes": self.max_true_boxes, "box_loss": self.box_loss,
                "iou_normalizer": self.iou_normalizer,
                "label_smoothing": self.label_smoothing}


__all__ = [
    "DarknetConv2D", "DarknetConv2D_BN_Leaky", "resblock_body", "darknet_body",
    "make_last_layers", "spp_block", "yolo_body", "yolo_spp_body", "tiny_yolo_body", "yolo_head", "yolo_correct_boxes",
    "yolo_boxes_and_scores", "yolo_eval", "yolo_eval_batch", "decode_batch",
    "non_max_suppression", "preprocess_true_boxes", "box_iou", "yolo_loss", "YoloLoss",
    "BOX_LOSSES", "check_loss_options",
    "compose", "YOLO_MASK", "TINY_MASK",
]
