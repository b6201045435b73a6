"""Measure a detector on annotated images: VOC AP@0.5 per class and its mean
(all-point, or 11-point with --voc07) and COCO AP@[.5:.95], AP50, AP75, APs/m/l
(pycocotools).

    python evaluate.py --annotations test.txt --model trained.weights.h5 \\
        --anchors model_data/tiny_yolo_anchors.txt --classes classes.txt \\
        --json metrics.json --plot pr.png
"""
import sys

from yolo3.annotation_file import read_annotations
from yolo3.cli import Parser, quiet_tensorflow
from yolo3.detector_options import add_model_arguments
from yolo3.errors import UserError, run_cli
from yolo3.progress import progress_bar


def build_parser():
    parser = Parser(description=__doc__)
    parser.add_argument("--annotations", required=True,
                        help="ground truth: `path x_min,y_min,x_max,y_max,class ...` lines "
                             "(relative image paths: current folder, then the file's folder)")
    add_model_arguments(parser, score=0.001, max_boxes=100)
    parser.add_argument("--voc07", action="store_true",
                        help="show the VOC2007 11-point AP instead of the all-point AP "
                             "(both are in --json)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the metrics as JSON: mAP50, mAP, coco, per_class, ...")
    parser.add_argument("--plot", metavar="PNG",
                        help="write the precision-recall curves (one panel per class)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip bad annotation lines with a warning instead of stopping")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they show on a terminal)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    from yolo3.evaluation import (detect_annotations, evaluate_packed,  # Keras
                                  format_table, plot_pr_curves, write_json)
    from yolo3.detector import make_detector
    yolo = make_detector(args)
    progress = False if args.no_progress else None
    lines = read_annotations(args.annotations, num_classes=len(yolo.class_names),
                             skip_bad=args.skip_bad, progress=progress)
    with progress_bar(len(lines), "detecting", progress, unit="image") as advance:
        data = detect_annotations(yolo, lines, advance)
    del lines       # the packed boxes are all the evaluation needs
    report, curves = evaluate_packed(data, yolo.class_names, progress=progress)
    print(format_table(report, voc07=args.voc07))
    if args.json:
        write_json(report, args.json)
        print(f"metrics written to {args.json}")
    if args.plot:
        if not curves:
            raise UserError("no class has ground truth: nothing to plot")
        plot_pr_curves(curves, report, args.plot)
        print(f"precision-recall curves written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
