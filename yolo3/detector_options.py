"""The detector's options: their defaults (the original YOLO class's, plus ours)
and the command-line flags for them that yolo.py and evaluate.py share. Nothing
here imports Keras, so `--help` and a bad flag answer at once."""
from .anchors import parse_mask
from .cli import add_input_size, format_size, positive_int

DEFAULTS = {
    "model_path": "model_data/yolo.h5",
    "anchors_path": "model_data/yolo_anchors.txt",
    "classes_path": "model_data/coco_classes.txt",
    "score": 0.3,
    "iou": 0.45,
    "model_image_size": (416, 416),
    "gpu_num": 1,
    "mask": None,
    "max_boxes": 20,
    "batch_size": 8,
}


def add_model_arguments(parser, score=DEFAULTS["score"], max_boxes=DEFAULTS["max_boxes"]):
    """The model flags shared by yolo.py and evaluate.py."""
    parser.add_argument("--model", default=DEFAULTS["model_path"],
                        help="weights (.weights.h5, .h5 from convert.py/train.py or the "
                             "original tool), a .keras body, or a .tflite / .onnx file from "
                             "--export, which carries its anchors, mask, classes and input "
                             "size (those flags are then not used)")
    parser.add_argument("--anchors", default=DEFAULTS["anchors_path"],
                        help="anchors file; 9 anchors = YOLOv3, 6 = tiny")
    parser.add_argument("--classes", default=DEFAULTS["classes_path"],
                        help="class names, one per line")
    parser.add_argument("--score", type=float, default=score,
                        help="minimum score (objectness x class probability)")
    parser.add_argument("--iou", type=float, default=DEFAULTS["iou"],
                        help="IoU above which NMS drops a box of the same class")
    add_input_size(parser, format_size(DEFAULTS["model_image_size"]))
    parser.add_argument("--mask", type=parse_mask, default=None,
                        help="anchor mask per head, e.g. 3,4,5/1,2,3 (default: 6,7,8/3,4,5/"
                             "0,1,2 for YOLOv3, 3,4,5/1,2,3 for tiny, the original's)")
    parser.add_argument("--max-boxes", type=positive_int, default=max_boxes,
                        help="at most this many boxes per class and image")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"],
                        help="images per forward pass")
