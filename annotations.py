"""Convert Pascal VOC XML, COCO instances JSON or YOLO txt labels to the annotation
line format `path x_min,y_min,x_max,y_max,class_id ...` plus a classes file.

    python annotations.py voc VOCdevkit/VOC2007 --ids VOCdevkit/VOC2007/ImageSets/Main/train.txt -o voc_train.txt
    python annotations.py coco annotations/instances_val2017.json --images val2017 -o coco_val.txt
    python annotations.py yolo dataset -o train.txt            # dataset/images, dataset/labels
"""
import sys

from yolo3.annotation_file import get_classes
from yolo3.cli import Parser
from yolo3.errors import run_cli
from yolo3.label_formats import (COCO_CATEGORY_MODES, convert_coco, convert_voc, convert_yolo,
                                 summary, write_annotations)


def build_parser():
    parser = Parser(description=__doc__)
    formats = parser.add_subparsers(dest="format", required=True, metavar="{voc,coco,yolo}")
    common = Parser(add_help=False)
    common.add_argument("-o", "--output", required=True,
                        help="annotation file to write")
    common.add_argument("--classes-out", default=None,
                        help="classes file to write (default: OUTPUT with _classes.txt, "
                             "e.g. train.txt -> train_classes.txt)")
    common.add_argument("--negatives", action="store_true",
                        help="keep images without any object as lines with only a path "
                             "(images whose objects were all skipped are still left out)")
    common.add_argument("--absolute", action="store_true",
                        help="write absolute image paths instead of paths relative to "
                             "the output file's folder")
    kw = dict(parents=[common])

    voc = formats.add_parser("voc", help="Pascal VOC XML files", **kw,
                             description="Pascal VOC XML: one file per image.")
    voc.add_argument("folder", help="VOC root (with Annotations/ and JPEGImages/) or a "
                                    "folder of .xml files")
    voc.add_argument("--images", default=None,
                     help="image folder (default: JPEGImages/ beside the XML folder, "
                          "else the XML folder)")
    voc.add_argument("--ids", default=None,
                     help="image ids to convert, one per line, e.g. "
                          "ImageSets/Main/train.txt (default: every .xml file, sorted)")
    voc.add_argument("--classes", default=None,
                     help="class names in id order, one per line (default: every "
                          "object name found, sorted)")
    voc.add_argument("--include-difficult", action="store_true",
                     help="keep objects marked <difficult>1</difficult>")
    voc.add_argument("--skip-unknown", action="store_true",
                     help="skip objects whose name is not in --classes (otherwise an error)")
    voc.add_argument("--skip-bad", action="store_true",
                     help="report and skip empty boxes (min >= max) and boxes outside "
                          "the image (otherwise an error)")

    coco = formats.add_parser("coco", help="COCO instances JSON", **kw,
                              description="COCO instances JSON (crowd boxes are skipped).")
    coco.add_argument("json", help="instances file, e.g. instances_train2017.json")
    coco.add_argument("--images", required=True,
                      help="folder holding the images' file_name")
    coco.add_argument("--categories", choices=COCO_CATEGORY_MODES, default="coco",
                      help="class ids: coco = the 80 COCO categories as 0..79 in COCO "
                           "order; listed = the file's categories by id; present = "
                           "only categories with boxes, by id")

    yolo = formats.add_parser("yolo", help="YOLO normalised txt labels", **kw,
                              description="YOLO labels: `class cx cy w h` (0..1) per "
                                          "line, one .txt per image.")
    yolo.add_argument("folder", help="dataset folder with images/ and labels/, or an "
                                     "images folder")
    yolo.add_argument("--labels", default=None,
                      help="label folder (default: FOLDER/labels, or the images path "
                           "with its last 'images' part replaced by 'labels', or the "
                           "images folder itself)")
    yolo.add_argument("--classes", default=None,
                      help="class names, line N = class N (default: classes.txt in the "
                           "labels or dataset folder)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    classes = get_classes(args.classes) if getattr(args, "classes", None) else None
    if args.format == "voc":
        conversion = convert_voc(args.folder, args.images, classes, args.ids,
                                 args.include_difficult, args.skip_unknown, args.negatives,
                                 args.skip_bad)
    elif args.format == "coco":
        conversion = convert_coco(args.json, args.images, args.categories, args.negatives)
    else:
        conversion = convert_yolo(args.folder, args.labels, classes, args.negatives)
    output, classes_out = write_annotations(conversion, args.output, args.classes_out,
                                            args.absolute)
    print(f"{args.format}: {summary(conversion)}")
    print(f"wrote {output} and {classes_out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
