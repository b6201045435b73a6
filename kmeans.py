"""Anchors for a data set: k-means on box sizes with the distance 1 - IoU.

    python kmeans.py train.txt                 # 9 anchors -> ./yolo_anchors.txt
    python kmeans.py train.txt -k 6 --out tiny_anchors.txt --plot anchors.png
"""
import sys
from pathlib import Path

import numpy as np

from yolo3.anchors import anchor_masks, parse_mask, write_anchors
from yolo3.cli import Parser, add_input_size, non_negative_int, positive_int
from yolo3.errors import UserError, run_cli
from yolo3.kmeans import (RESTARTS_LARGE, RESTARTS_SMALL, SMALL_DATA, UPDATES,
                          anchor_report, anchor_stats, euclidean_kmeans, evolve_anchors,
                          iou_kmeans, plot_clusters, read_box_sizes, refine_integer,
                          sort_by_area)


def build_parser():
    parser = Parser(description=__doc__)
    parser.add_argument("annotations", help="annotation file: `path x_min,y_min,x_max,"
                        "y_max,class ...` per line")
    parser.add_argument("-k", type=positive_int, default=9,
                        help="number of anchors: 9 for YOLOv3, 6 for tiny-YOLOv3")
    add_input_size(parser, what="network input; boxes are scaled by their image's "
                   "letterbox factor into these pixels")
    parser.add_argument("--raw-pixels", action="store_true",
                        help="cluster boxes in image pixels, unscaled (the original "
                        "tool's behaviour; needs no image files)")
    parser.add_argument("--restarts", type=positive_int, default=None,
                        help="k-means runs from different k-means++ seeds; the best "
                        f"mean IoU is kept (default: {RESTARTS_SMALL} for up to "
                        f"{SMALL_DATA:,} distinct box sizes, else {RESTARTS_LARGE})")
    parser.add_argument("--update", choices=UPDATES, default="median",
                        help="centroid update (median: the original)")
    parser.add_argument("--max-iter", type=positive_int, default=300,
                        help="iterations per run at most")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--metric", choices=("iou", "euclidean"), default="iou",
                        help="distance: 1 - IoU, or euclidean on (w, h) with "
                        "scikit-learn's KMeans (for comparison)")
    parser.add_argument("--evolve", type=non_negative_int, default=0, metavar="N",
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
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they show on a terminal for work "
                        "over a second)")
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_out(args.out, args.force)
    if args.mask is not None:
        anchor_masks(args.k, args.mask)        # a bad mask fails before the work
    input_wh = args.input_size[::-1]
    progress = False if args.no_progress else None
    boxes = read_box_sizes(args.annotations, input_wh, args.raw_pixels, progress)
    wh = boxes.wh
    units = ("image pixels (raw)" if args.raw_pixels
             else "input pixels ({}x{} letterbox)".format(*input_wh))
    print(f"{len(wh)} boxes from {boxes.lines} lines ({boxes.images} images with boxes) of "
          f"{args.annotations}, in {units}")

    if args.metric == "iou":
        result = iou_kmeans(wh, args.k, args.restarts, args.update, args.max_iter,
                            args.seed, progress=progress)
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
    stats, report = anchor_report(wh, anchors, args.mask, input_wh)
    print("\n".join(report))
    write_anchors(args.out, anchors)
    print(f"wrote {args.out}")
    if args.plot:
        plot_clusters(args.plot, wh, anchors, input_wh,
                      f"{Path(args.annotations).parent.name}/{Path(args.annotations).name}: "
                      f"k={args.k}, {how}, "
                      f"mean IoU {stats.mean_iou:.2%}", args.seed, args.raw_pixels)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
