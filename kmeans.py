"""Anchors for a data set: k-means on box sizes with the distance 1 - IoU.

    python kmeans.py train.txt                 # 9 anchors -> ./yolo_anchors.txt
    python kmeans.py train.txt -k 6 --out tiny_anchors.txt --plot anchors.png
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from yolo3.anchors import anchor_masks, parse_mask, write_anchors
from yolo3.atomic import atomic_path
from yolo3.errors import UserError, run_cli
from yolo3.kinds import counts_text, kind_for_anchors
from yolo3.kmeans import (BPR_IOU, BPR_RATIO, RESTARTS_LARGE, RESTARTS_SMALL, SMALL_DATA,
                          UPDATES, anchor_stats, euclidean_kmeans,
                          evolve_anchors, iou_kmeans, read_box_sizes, refine_integer,
                          sort_by_area, wh_iou)

PLOT_POINTS = 20000     # boxes drawn in the scatter at most (a fixed random subset)


def parse_size(text):
    """'416' -> (416, 416); '608x416' -> (608, 416) as (width, height)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0 or any(p % 32 for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected a multiple of 32 like 416 or 608x416 (got {text!r})")
    return tuple(parts)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def non_negative(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value})")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (the help text says what happens then)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser():
    parser = argparse.ArgumentParser(
        description="k-means anchors (distance 1 - IoU of box width and height) for "
                    "YOLOv3 from an annotation file.",
        formatter_class=HelpFormatter)
    parser.add_argument("annotations", help="annotation file: `path x_min,y_min,x_max,"
                        "y_max,class ...` per line")
    parser.add_argument("-k", type=positive, default=9,
                        help="number of anchors: 9 for YOLOv3, 6 for tiny-YOLOv3")
    parser.add_argument("--input-size", type=parse_size, default="416",
                        metavar="WxH", help="network input size; boxes are scaled by "
                        "their image's letterbox factor into these pixels")
    parser.add_argument("--raw-pixels", action="store_true",
                        help="cluster boxes in image pixels, unscaled (the original "
                        "tool's behaviour; needs no image files)")
    parser.add_argument("--restarts", type=positive, default=None,
                        help="k-means runs from different k-means++ seeds; the best "
                        f"mean IoU is kept (default: {RESTARTS_SMALL} for up to "
                        f"{SMALL_DATA:,} distinct box sizes, else {RESTARTS_LARGE})")
    parser.add_argument("--update", choices=UPDATES, default="median",
                        help="centroid update (median: the original)")
    parser.add_argument("--max-iter", type=positive, default=300,
                        help="iterations per run at most")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--metric", choices=("iou", "euclidean"), default="iou",
                        help="distance: 1 - IoU, or euclidean on (w, h) with "
                        "scikit-learn's KMeans (for comparison)")
    parser.add_argument("--evolve", type=non_negative, default=0, metavar="N",
                        help="then refine for N generations of a genetic search "
                        "(0: off)")
    parser.add_argument("--mask", type=parse_mask, default=None,
                        help="anchor mask for the head report, e.g. 3,4,5/1,2,3 "
                        "(default: the model kind's: 6,7,8/3,4,5/0,1,2 for 9 "
                        "anchors, 3,4,5/1,2,3 for 6)")
    parser.add_argument("--out", default="yolo_anchors.txt",
                        help="anchors file to write (`w,h, w,h, ...`)")
    parser.add_argument("--force", action="store_true",
                        help="allow overwriting an existing file under model_data/")
    parser.add_argument("--plot", metavar="PNG", default=None,
                        help="also save a plot of the clusters and anchors to this PNG "
                        "(default: no plot)")
    return parser


def check_out(path, force):
    """Refuse to replace the shipped defaults under model_data/ silently."""
    path = Path(path)
    if (path.exists() and not force
            and "model_data" in (p.name for p in path.resolve().parents)):
        raise UserError(f"{path}: refusing to overwrite a file under model_data/ "
                        "(use --force, or another --out)")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; --out needs a file name")


def head_names(k, mask, input_wh):
    """Per anchor: the heads (by output grid) whose mask holds it."""
    try:
        masks = anchor_masks(k, mask)
    except UserError:
        if mask is not None:
            raise
        return None
    strides = kind_for_anchors(k).strides
    names = []
    for anchor in range(k):
        heads = [f"{input_wh[0] // strides[h]}x{input_wh[1] // strides[h]}"
                 for h, head in enumerate(masks) if anchor in head]
        names.append(" + ".join(heads) if heads else "none (unused by the mask)")
    return names


def plot_clusters(path, wh, anchors, input_wh, title, seed=0, raw_pixels=False):
    """Two panels: box (w, h) coloured by nearest anchor (viridis) with the anchors
    as black points; the anchors as rectangles on the network input (or, with
    raw_pixels, centred on a frame of the network input's size)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    import matplotlib

    if len(wh) > PLOT_POINTS:
        wh = wh[np.random.default_rng(seed).choice(len(wh), PLOT_POINTS, replace=False)]
    labels = np.argmax(wh_iou(wh, anchors), axis=1)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 1, len(anchors)))
    figure = Figure(figsize=(12, 5.5), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.scatter(wh[:, 0], wh[:, 1], c=labels, s=6, cmap="viridis",
                 vmin=0, vmax=max(len(anchors) - 1, 1))
    left.scatter(anchors[:, 0], anchors[:, 1], c="black", s=40, alpha=0.8,
                 label="anchors (centroids)")
    unit = "image pixels" if raw_pixels else "input pixels"
    left.set_xlabel(f"box width ({unit})")
    left.set_ylabel(f"box height ({unit})")
    left.set_title(f"{len(wh)} boxes by nearest anchor (IoU)")
    left.legend(loc="upper left")
    cx, cy = input_wh[0] / 2, input_wh[1] / 2
    right.add_patch(Rectangle((0, 0), *input_wh, fill=False, edgecolor="grey",
                              linestyle="--", label="network input"))
    for index, ((w, h), colour) in enumerate(zip(anchors, colours)):
        right.add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False,
                                  edgecolor=colour, linewidth=2,
                                  label=f"{index}: {w:.0f}x{h:.0f}"))
    span = max(input_wh[0], input_wh[1], anchors[:, 0].max(), anchors[:, 1].max())
    right.set_xlim(cx - span / 2 - 5, cx + span / 2 + 5)
    right.set_ylim(cy + span / 2 + 5, cy - span / 2 - 5)      # image y axis points down
    right.set_aspect("equal")
    right.set_xlabel(f"x ({unit})")
    right.set_ylabel(f"y ({unit})")
    right.set_title("anchors (raw image pixels)" if raw_pixels
                    else "anchors on the network input")
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png")


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_out(args.out, args.force)
    if args.mask is not None:
        anchor_masks(args.k, args.mask)        # a bad mask fails before the work
    boxes = read_box_sizes(args.annotations, args.input_size, args.raw_pixels)
    wh = boxes.wh
    units = ("image pixels (raw)" if args.raw_pixels
             else "input pixels ({}x{} letterbox)".format(*args.input_size))
    print(f"{len(wh)} boxes from {boxes.lines} lines ({boxes.images} images with boxes) of "
          f"{args.annotations}, in {units}")

    if args.metric == "iou":
        result = iou_kmeans(wh, args.k, args.restarts, args.update, args.max_iter,
                            args.seed)
        how = f"1 - IoU, {args.update} update, polished"
    else:
        result = euclidean_kmeans(wh, args.k, args.restarts, args.max_iter, args.seed)
        how = "euclidean on (w, h), scikit-learn KMeans"
    state = "converged" if result.converged else "stopped at --max-iter"
    print(f"k-means ({how}), best of {result.restarts} restarts, seed {args.seed}: "
          f"{state} after {result.iterations} iterations; mean IoU "
          f"{result.mean_iou:.2%} before rounding to whole pixels")
    anchors = result.anchors
    if args.evolve:
        before = anchor_stats(wh, np.maximum(np.rint(anchors), 1)).mean_iou
        anchors = evolve_anchors(wh, anchors, args.evolve, args.seed)
        after = anchor_stats(wh, np.maximum(np.rint(anchors), 1)).mean_iou
        print(f"evolved {args.evolve} generations: mean IoU {before:.2%} -> {after:.2%}")

    if args.metric == "iou":
        anchors = refine_integer(wh, anchors)     # whole pixels, as the file holds
    else:
        anchors = sort_by_area(np.maximum(np.rint(anchors), 1))
    stats = anchor_stats(wh, anchors)
    heads = head_names(args.k, args.mask, args.input_size)
    print("anchors (w,h), sorted by area; boxes = boxes whose best anchor it is:")
    print(f"  {'#':>2s}  {'w,h':>9s}  {'boxes':>7s}  {'share':>6s}  head")
    for index, ((w, h), count) in enumerate(zip(anchors, stats.counts)):
        head = heads[index] if heads else "-"
        print(f"  {index:2d}  {int(w):>4d},{int(h):<4d}  {count:7d}  "
              f"{count / len(wh):6.1%}  {head}")
    if heads is None:
        print(f"note: train.py takes {counts_text()} anchors, not {args.k}")
    else:
        lost = sum(int(c) for c, h in zip(stats.counts, heads) if h.startswith("none"))
        if lost:
            print(f"note: {lost} boxes ({lost / len(wh):.1%}) have their best anchor in no "
                  "head of this mask and get no training target; "
                  "a mask such as 3,4,5/0,1,2 uses every anchor")
    print(f"Accuracy: {stats.mean_iou:.2%} (mean best IoU)")
    print(f"Best possible recall: {stats.bpr_iou:.2%} of boxes with IoU > {BPR_IOU} to "
          f"an anchor; {stats.bpr_ratio:.2%} within {BPR_RATIO:g}x in w and h")
    write_anchors(args.out, anchors)
    print(f"wrote {args.out}")
    if args.plot:
        plot_clusters(args.plot, wh, anchors, args.input_size,
                      f"{Path(args.annotations).parent.name}/{Path(args.annotations).name}: "
                      f"k={args.k}, {how}, "
                      f"mean IoU {stats.mean_iou:.2%}", args.seed, args.raw_pixels)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
