"""The IoU family of box overlaps: IoU, GIoU, DIoU and CIoU of boxes given as
centre x, y, width, height, in keras.ops (any Keras backend).

The losses built on them are 1 - value: GIoU (Rezatofighi et al. 2019) still has a
gradient for disjoint boxes, DIoU (Zheng et al. 2020) pulls the centres together,
CIoU adds the aspect ratio. Every division has a floor, so zero-size boxes give
finite values and finite gradients.
"""
import math

from keras import ops

from .errors import UserError

IOU_KINDS = ("iou", "giou", "diou", "ciou")
_EPS = 1e-9


def _corners(box):
    half = box[..., 2:4] / 2.0
    return box[..., 0:2] - half, box[..., 0:2] + half


def _area(wh):
    return wh[..., 0] * wh[..., 1]


def _aspect_angle(wh):
    """atan(w / h), with a floor on h (0 for a zero-width box, pi/2 for zero height)."""
    return ops.arctan(wh[..., 0] / ops.maximum(wh[..., 1], _EPS))


def iou_terms(pred, true, kind="iou"):
    """The `kind` overlap (one of IOU_KINDS) of boxes pred and true, (..., 4) as
    x, y, w, h in the same units -> (...). IoU lies in [0, 1], GIoU in (-1, 1],
    DIoU and CIoU in (-1, 1]; all are 1 for identical boxes.

    giou: IoU - (C - U) / C, C the area of the smallest enclosing box, U the union.
    diou: IoU - d^2 / c^2, d the distance of the centres, c the enclosing diagonal.
    ciou: DIoU - alpha v, v = 4 / pi^2 (atan(wt / ht) - atan(wp / hp))^2 and
    alpha = v / (1 - IoU + v) a constant (no gradient), as the CIoU authors' code."""
    if kind not in IOU_KINDS:
        raise UserError(f"IoU kind {kind!r}: not one of {', '.join(IOU_KINDS)}")
    pred_mins, pred_maxes = _corners(pred)
    true_mins, true_maxes = _corners(true)
    inter = _area(ops.maximum(ops.minimum(pred_maxes, true_maxes)
                              - ops.maximum(pred_mins, true_mins), 0.0))
    union = _area(pred[..., 2:4]) + _area(true[..., 2:4]) - inter
    iou = inter / ops.maximum(union, _EPS)
    if kind == "iou":
        return iou
    enclosing = ops.maximum(pred_maxes, true_maxes) - ops.minimum(pred_mins, true_mins)
    if kind == "giou":
        hull = _area(enclosing)
        return iou - (hull - union) / ops.maximum(hull, _EPS)
    centre_distance = ops.sum(ops.square(pred[..., 0:2] - true[..., 0:2]), axis=-1)
    diagonal = ops.sum(ops.square(enclosing), axis=-1)
    diou = iou - centre_distance / ops.maximum(diagonal, _EPS)
    if kind == "diou":
        return diou
    v = (4 / math.pi ** 2) * ops.square(_aspect_angle(true[..., 2:4])
                                        - _aspect_angle(pred[..., 2:4]))
    alpha = ops.stop_gradient(v / ops.maximum(1 - iou + v, _EPS))
    return diou - alpha * v
