"""Train YOLOv3, YOLOv3-SPP or tiny-YOLOv3 on your annotations with the original
keras-yolo3 two-stage schedule: stage 1 trains the unfrozen layers (Adam 1e-3, 50
epochs), stage 2 trains every layer (Adam 1e-4, to epoch 100, ReduceLROnPlateau and
EarlyStopping). The model follows the anchors file (9 anchors = YOLOv3, 6 =
tiny-YOLOv3) unless --model names it (yolov3-spp: 9 anchors too).

    python train.py --annotations train.txt --classes model_data/voc_classes.txt
    python train.py --demo            # synthetic shapes, tiny-YOLOv3, about 5 minutes
"""
import argparse
import dataclasses
import sys

from yolo3.cli import (SIZE_HELP, Parser, input_size, non_negative_int, quiet_tensorflow,
                       side_range)
from yolo3.recipes import BOX_LOSSES, LR_SCHEDULES, OPTIMIZERS, RECIPES

quiet_tensorflow()   # before the imports below load TensorFlow

from yolo3.anchors import get_anchors  # noqa: E402
from yolo3.annotation_file import get_classes  # noqa: E402
from yolo3.batches import data_generator, data_generator_wrapper  # noqa: E402
from yolo3.errors import run_cli  # noqa: E402
from yolo3.kinds import NAMES as KIND_NAMES  # noqa: E402
from yolo3.trainer import TrainConfig, describe_outputs, run_training  # noqa: E402
from yolo3.training import create_model, create_tiny_model  # noqa: E402

__all__ = ["get_classes", "get_anchors", "create_model", "create_tiny_model",
           "data_generator", "data_generator_wrapper", "main"]


def by_recipe(dest):
    """The help's note on a field that the recipe sets."""
    def show(value):
        return "off" if value in ((), False) else f"{value:g}" if isinstance(value, float) \
            else str(value)
    return "(default: " + ", ".join(f"{name} {show(table[dest])}"
                                    for name, table in RECIPES.items()) + ")"


def add_recipe_parts(p):
    """The flags of the recipe's parts; each left out takes --recipe's value."""
    group = p.add_argument_group(
        "recipe", "--recipe sets the defaults of every flag in this group (and of the "
        "batch sizes and learning rates); a flag given on the command line wins. See "
        "docs/recipes.md.")

    def add(flag, help_text, **kw):
        dest = flag[2:].replace("-", "_")
        group.add_argument(flag, help=f"{help_text} {by_recipe(dest)}", **kw)

    group.add_argument("--recipe", choices=tuple(RECIPES), help="faithful: the original "
                       "keras-yolo3 schedule; modern: the recipe that measured best on "
                       "small real sets")
    add("--optimizer", "adam; adamw (decoupled weight decay); sgd (Nesterov momentum)",
        choices=OPTIMIZERS)
    add("--weight-decay", "decoupled weight decay of the convolution kernels (not "
        "BatchNorm, not biases); when > 0 it replaces the kernels' L2 loss term",
        type=float)
    group.add_argument("--momentum", type=float, help="sgd's momentum")
    add("--lr-schedule", "plateau: constant rate, ReduceLROnPlateau and EarlyStopping in "
        "stage 2; cosine: linear warmup then cosine decay over each stage's optimizer "
        "steps", choices=LR_SCHEDULES)
    add("--warmup-epochs", "cosine: epochs of linear warmup at the start of each stage",
        type=float)
    add("--final-lr", "cosine: the last rate as a fraction of the stage's rate", type=float)
    add("--ema", "validate, checkpoint and save an exponential moving average of the "
        "weights", action=argparse.BooleanOptionalAction)
    add("--ema-decay", "the EMA's decay d: average = d x average + (1 - d) x weights after "
        "each optimizer step", type=float)
    add("--ema-ramp", "the decay ramps in as d x (1 - exp(-updates / N)), so early "
        "weights leave the average quickly", type=non_negative_int)
    add("--mosaic", "probability that a training image is a mosaic of 4", type=float)
    add("--mixup", "probability that a training image is blended with another",
        type=float)
    add("--close-mosaic", "no mosaic and mixup in the last N epochs", type=non_negative_int)
    add("--iou-thresh", "a box also trains every anchor whose shape IoU with it exceeds "
        "this (0: only its best anchor)", type=float)
    add("--box-loss", "original: xy BCE + wh L2; iou, giou, diou, ciou: an IoU loss on the "
        "decoded box", choices=BOX_LOSSES)
    add("--iou-normalizer", "weight of the IoU box loss", type=float)
    add("--label-smoothing", "class targets 1 - e/2 and e/2 instead of 1 and 0", type=float)
    add("--multi-scale", "LOW-HIGH: a new input size every --scale-every batches, the "
        "longer side a multiple of 32 in that range (validation at --input-size); off",
        type=side_range, metavar="LOW-HIGH")
    group.add_argument("--scale-every", type=non_negative_int,
                       help="batches between multi-scale size draws")
    add("--accumulate", "batches per optimizer step (gradient accumulation: the "
        "effective batch is N x the batch size)", type=non_negative_int)


def build_parser():
    """The flags; each destination is a TrainConfig field, whose default it takes."""
    p = Parser(description=__doc__)
    add = p.add_argument

    def switch(flag, help_text, **kw):
        add(flag, action="store_true", help=help_text, **kw)

    add("--annotations", help="annotation file: `path x_min,y_min,x_max,y_max,class ...` "
        "per line")
    add("--classes", help="class names, one per line")
    add("--anchors", help="anchors file `w,h, w,h, ...` in input pixels; 9 anchors train "
        "YOLOv3 (or --model yolov3-spp), 6 tiny-YOLOv3")
    add("--model", choices=KIND_NAMES, help="the network; default: by the anchor count "
        "(9: yolov3, 6: yolov3-tiny)")
    add("--mask", help="anchor mask, heads separated by '/', e.g. 3,4,5/0,1,2; default: "
        "the model's: 6,7,8/3,4,5/0,1,2 for YOLOv3 and SPP, 3,4,5/1,2,3 (the "
        "original's) for tiny")
    add("--weights", help="pretrained weights loaded by layer name; 'none' trains from "
        "scratch; default: the model's file in model_data/ (yolo_weights.h5, "
        "tiny_yolo_weights.h5, yolo_spp_weights.h5), from scratch when it is absent")
    add("--log-dir", help="folder for checkpoints, logs and final weights")
    add("--input-size", dest="input_shape", type=input_size, metavar="SIZE",
        help=f"network input size: {SIZE_HELP}")
    add("--batch-size", type=non_negative_int,
        help=f"stage-1 batch size (global over all replicas) {by_recipe('batch_size')}")
    add("--unfreeze-batch-size", type=non_negative_int,
        help=f"stage-2 batch size (global) {by_recipe('unfreeze_batch_size')}")
    add("--freeze-epochs", type=non_negative_int, help="epochs of stage 1 (frozen body)")
    add("--epochs", type=non_negative_int, help="total epochs, both stages")
    add("--lr", type=float, help=f"stage-1 learning rate {by_recipe('lr')}")
    add("--unfreeze-lr", type=float, help=f"stage-2 learning rate {by_recipe('unfreeze_lr')}")
    add("--freeze-body", type=int, choices=(0, 1, 2), help="stage 1 freezing: 0 nothing, "
        "1 the Darknet53 backbone, 2 all but the output convolutions")
    add("--val-split", type=float, help="fraction of the (shuffled) lines kept for "
        "validation; 0: monitor the training loss")
    add("--val-annotations", help="a separate validation annotation file instead of the "
        "split")
    add("--seed", type=int, help="seed of the train/validation shuffle, the augmentation "
        "and the initial weights of layers not loaded")
    add("--checkpoint-period", type=non_negative_int,
        help="check val_loss for a best checkpoint every N epochs")
    add("--workers", type=non_negative_int,
        help="data loading workers (processes when > 1)")
    add("--eval-every", type=non_negative_int,
        help="compute the validation mAP@0.5 every N epochs (0: never)")
    add("--strategy", choices=("none", "mirrored", "multiworker"),
        help="none; mirrored (all local GPUs); multiworker (machines set by TF_CONFIG); "
        "JAX backend: DataParallel")
    switch("--resume", "continue the run in --log-dir from its last completed epoch "
           "(optimizer state, lr, best val_loss, stage); starts fresh, saying so, "
           "when there is no saved state")
    switch("--skip-bad", "skip bad annotation lines with a warning instead of stopping")
    switch("--full-check", "decode every image before training (slow; finds corrupt "
           "files)")
    switch("--bottleneck", "stage 1 (with --freeze-body 2) on cached features of the "
           "frozen body: computed once, no augmentation; much faster on a CPU")
    xla = p.add_mutually_exclusive_group()
    xla.add_argument("--jit", dest="jit", action="store_const", const=True,
                     help="compile the training step with XLA (default: only on a "
                     "GPU/TPU, and always on the JAX backend; on a CPU TensorFlow "
                     "without XLA is faster)")
    xla.add_argument("--no-jit", dest="jit", action="store_const", const=False,
                     help="never compile the training step with XLA (default: see --jit)")
    switch("--mixed-precision", "float16 on GPU, bfloat16 on CPU (the loss stays "
           "float32)")
    add("--no-augment", dest="augment", action="store_false", help="train on letterboxed "
        "images without random augmentation (by default every image is augmented)")
    switch("--augment-validation", "augment the validation images too, as the original "
           "did (noisier val_loss, which drives checkpoints and early stopping)")
    switch("--exif-transpose", "rotate images by their EXIF orientation, boxes with them "
           "(boxes must then refer to the rotated image)")
    add("--no-tensorboard", dest="tensorboard", action="store_false",
        help="write no TensorBoard logs (by default they go to --log-dir)")
    switch("--demo", "generate a synthetic shapes data set under --log-dir (logs/demo/ "
           "unless given) and train tiny-YOLOv3 on it through both stages")
    add_recipe_parts(p)
    p.set_defaults(**dataclasses.asdict(TrainConfig()))
    return p


def config_from_args(args):
    """The TrainConfig of parsed flags (every destination but --demo is a field)."""
    return TrainConfig(**{k: v for k, v in vars(args).items() if k != "demo"})


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo:
        from yolo3.demo import run_demo
        log_dir = args.log_dir if args.log_dir != TrainConfig.log_dir else "logs/demo/"
        return run_demo(log_dir, resume=args.resume, jit=args.jit)
    cfg = config_from_args(args)
    result = run_training(cfg)
    if result.status:
        print(f"error: {result.message}", file=sys.stderr)
        return result.status
    print(f"Done: {result.epochs_done} epochs. Written:")
    print("\n".join(describe_outputs(cfg.log_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
