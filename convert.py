"""Convert darknet cfg + weights to Keras 3 (weights by layer name, or a .keras
model), or a Keras YOLOv3 / tiny model back to darknet (.cfg + .weights).

    python convert.py yolov3.cfg yolov3.weights            # -> model_data/yolo_weights.h5
    python convert.py yolov3-tiny.cfg yolov3-tiny.weights  # -> model_data/tiny_yolo_weights.h5
    python convert.py --partial darknet53.cfg darknet53.conv.74 model_data/darknet53_weights.h5
    python convert.py --to-darknet trained.weights.h5 --classes voc.txt \\
        --anchors model_data/yolo_anchors.txt out/yolov3-voc
"""
import os
import sys
import time
import warnings

from yolo3.cli import Parser, quiet_tensorflow
from yolo3.errors import UserError, run_cli



def build_parser():
    parser = Parser(description=__doc__)
    parser.add_argument("config_path", nargs="?", help="darknet cfg file")
    parser.add_argument("weights_path", nargs="?", help="darknet .weights file")
    parser.add_argument("output_path", nargs="?", help=(
        "output: .h5 / .weights.h5 = weights by layer name, .keras = full model "
        "(default: the model kind's: model_data/yolo_weights.h5, tiny_yolo_weights.h5 "
        "or yolo_spp_weights.h5 for yolov3.cfg, yolov3-tiny.cfg or yolov3-spp.cfg; "
        "another cfg: by its number of heads); with --to-darknet the "
        "output prefix (writes PREFIX.cfg and PREFIX.weights)"))
    parser.add_argument("-w", "--weights-only", action="store_true",
                        help="write weights only, even for a .keras name")
    parser.add_argument("-p", "--plot-model", action="store_true",
                        help="also draw the model graph to OUTPUT.png (needs pydot and "
                             "graphviz)")
    parser.add_argument("--anchors-out", metavar="FILE",
                        help="also write the cfg's [yolo] anchors to FILE")
    parser.add_argument("--strict", action="store_true",
                        help="leftover floats in the weights file are an error, not a "
                             "warning")
    parser.add_argument("--partial", action="store_true",
                        help="accept a weights file that covers only the first layers "
                             "(e.g. darknet53.conv.74); the rest keep their initial "
                             "values and are left out of a .h5 output")
    parser.add_argument("--bn-epsilon", type=float, default=1e-3,
                        help="BatchNormalization epsilon of the Keras model; gamma is "
                             "adjusted so the outputs match darknet (1e-3: "
                             "yolo_body's)")
    parser.add_argument("--to-darknet", metavar="MODEL",
                        help="convert the other way: a Keras model (.keras) or weights "
                             "file (.h5, .weights.h5) of a YOLOv3 / tiny model to "
                             "darknet; needs --classes and --anchors")
    parser.add_argument("--classes", metavar="C",
                        help="with --to-darknet: classes file or class count")
    parser.add_argument("--anchors", metavar="A",
                        help="with --to-darknet: anchors file (9 = YOLOv3, 6 = tiny)")
    parser.add_argument("--mask", help="with --to-darknet: anchor mask per head, e.g. "
                                       "3,4,5/1,2,3 (default: the model kind's default)")
    return parser


def output_kind(path, weights_only):
    """'keras' (full model) or 'weights' for an output name, or a UserError."""
    if path.endswith(".keras"):
        if weights_only:
            raise UserError(f"{path}: -w writes weights; name it .h5 or .weights.h5")
        return "keras"
    if path.endswith(".h5"):
        return "weights"
    raise UserError(f"{path}: output must end in .h5, .weights.h5 or .keras")


def plot(model, path):
    import keras
    reason = ""
    try:
        keras.utils.plot_model(model, to_file=path, show_shapes=True)
    except ImportError as exc:
        reason = f" ({exc})"
    if not os.path.isfile(path):  # under IPython, Keras prints its reason instead
        print(f"-p: cannot draw the model graph{reason}; install pydot and graphviz",
              file=sys.stderr)
        return
    print(f"wrote {path}")


def to_keras(args):
    from yolo3 import darknet
    from yolo3.anchors import write_anchors
    from yolo3.kinds import KINDS, counts_text, kind_of_names
    if not args.config_path or not args.weights_path:
        raise UserError("give a cfg file and a weights file (see --help)")
    for path in (args.config_path, args.weights_path):
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    if not 0 < args.bn_epsilon < 1:
        raise UserError(f"--bn-epsilon must be between 0 and 1 ({args.bn_epsilon})")
    network = darknet.load_cfg(args.config_path)
    heads = len(network.heads)
    model_kind = kind_of_names(f"conv_{c.index:03d}" for c in network.convs) or next(
        (k for k in KINDS.values() if k.heads == heads), None)
    output = args.output_path or (model_kind.default_weights if model_kind else None)
    if output is None:
        raise UserError(f"{args.config_path}: {heads} [yolo] sections; give the output "
                        "file name")
    kind = output_kind(output, args.weights_only)
    anchors = None
    if args.anchors_out:  # checked before anything is written
        anchors = network.anchors()
        if len(anchors) not in {k.num_anchors for k in KINDS.values()}:
            raise UserError(f"{args.config_path}: {len(anchors)} anchors; an anchors "
                            f"file holds {counts_text()}")
        if os.path.abspath(args.anchors_out) == os.path.abspath(output):
            raise UserError("--anchors-out must differ from the output file")

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, weights = darknet.darknet_to_keras(
            network, args.weights_path, args.bn_epsilon, partial=args.partial,
            strict=args.strict)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    darknet.save_converted(model, output, kind == "weights", weights.missing)
    if anchors is not None:
        write_anchors(args.anchors_out, anchors)
    print_summary(network, weights, model, time.perf_counter() - start)
    print(f"wrote {output}" + (f" and {args.anchors_out}" if anchors is not None else ""))
    if args.plot_model:
        plot(model, os.path.splitext(output)[0] + ".png")
    return 0


def print_summary(network, weights, model, seconds):
    major, minor, revision = weights.version
    convs = network.convs
    print(f"darknet weights {major}.{minor}.{revision}, seen {weights.seen}: read "
          f"{weights.floats_read} of {weights.floats_total} floats in {seconds:.1f} s")
    print(f"{len(network.layers)} darknet layers, {len(convs)} convolutions "
          f"({sum(c.params['bn'] for c in convs)} with batch norm), "
          f"{model.count_params()} parameters")
    if weights.missing:
        got = (f"layers {weights.loaded[0]}..{weights.loaded[-1]} "
               f"({len(weights.loaded)} convolutions)" if weights.loaded else "none")
        print(f"--partial: weights for {got}; no weights for layers "
              + ", ".join(str(i) for i in weights.missing))
    for number, head in enumerate(network.heads, 1):
        print(f"head {number}: conv_{head['source']:03d}, {head['classes']} classes, "
              f"mask {','.join(map(str, head['mask']))}")
    if len(network.heads) == 2:
        print("note: the project decodes tiny models with mask 3,4,5/1,2,3 by default "
              "(darknet's yolov3-tiny weights were trained with it, whatever the cfg "
              "says); see --mask in yolo.py / train.py")


def class_count(text):
    from yolo3.annotation_file import get_classes
    if text.isdigit():
        count = int(text)
    else:
        if not os.path.isfile(text):
            raise UserError(f"{text}: no such classes file")
        count = len(get_classes(text))
    if count < 1:
        raise UserError(f"--classes: need at least one class ({text})")
    return count


def to_darknet(args):
    import numpy as np
    from yolo3 import darknet
    from yolo3.anchors import anchor_masks, get_anchors, parse_mask
    if args.config_path and args.weights_path or not args.config_path or args.output_path:
        raise UserError("--to-darknet MODEL takes one argument: the output prefix")
    if not args.classes or not args.anchors:
        raise UserError("--to-darknet needs --classes and --anchors")
    if not os.path.isfile(args.to_darknet):
        raise UserError(f"{args.to_darknet}: no such file")
    num_classes = class_count(args.classes)
    anchors = get_anchors(args.anchors)
    mask = anchor_masks(len(anchors), parse_mask(args.mask) if args.mask else None)
    model = darknet.load_yolo_model(args.to_darknet, anchors, mask, num_classes)
    cfg, weights, floats = darknet.write_darknet(model, args.config_path,
                                                 np.asarray(anchors), mask, num_classes)
    print(f"wrote {cfg} and {weights} ({floats} floats, {num_classes} classes, "
          f"mask {'/'.join(','.join(map(str, m)) for m in mask)})")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    if args.to_darknet:
        return to_darknet(args)
    return to_keras(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
