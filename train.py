"""Train YOLOv3 or tiny-YOLOv3 on your annotations with the original keras-yolo3
two-stage schedule: stage 1 trains the unfrozen layers (Adam 1e-3, 50 epochs),
stage 2 trains every layer (Adam 1e-4, to epoch 100, ReduceLROnPlateau and
EarlyStopping). The model kind follows the anchors file: 9 anchors = YOLOv3,
6 = tiny-YOLOv3.

    python train.py --annotations train.txt --classes model_data/voc_classes.txt
    python train.py --demo            # synthetic shapes, tiny-YOLOv3, about 5 minutes
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from yolo3.anchors import get_anchors  # noqa: F401  (the original's helpers)
from yolo3.annotation_file import get_classes  # noqa: F401
from yolo3.batches import data_generator, data_generator_wrapper  # noqa: F401
from yolo3.errors import UserError, run_cli
from yolo3.schedule import TrainConfig, describe_outputs, run_training
from yolo3.training import create_model, create_tiny_model  # noqa: F401

__all__ = ["get_classes", "get_anchors", "create_model", "create_tiny_model",
           "data_generator", "data_generator_wrapper", "main"]
DEFAULTS = TrainConfig()


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer ({text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative ({value})")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """A bad flag: one line `error: ...` and exit status 2 (via run_cli)."""
        raise UserError(message)


def build_parser():
    p = _Parser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = DEFAULTS

    def add(flag, help_text, **kw):
        p.add_argument(flag, help=f"{help_text} (default: {kw.get('default')})", **kw)

    def switch(flag, help_text):
        p.add_argument(flag, action="store_true", help=f"{help_text} (default: off)")

    add("--annotations", "annotation file: `path x_min,y_min,x_max,y_max,class ...` per "
        "line", default=d.annotations)
    add("--classes", "class names, one per line", default=d.classes)
    add("--anchors", "anchors file `w,h, w,h, ...` in input pixels; 9 anchors train "
        "YOLOv3, 6 tiny-YOLOv3", default=d.anchors)
    add("--mask", "anchor mask, heads separated by '/', e.g. 3,4,5/0,1,2; default: "
        "6,7,8/3,4,5/0,1,2 for YOLOv3, 3,4,5/1,2,3 (the original's) for tiny",
        default=None)
    add("--weights", "pretrained weights loaded by layer name; 'none' trains from "
        "scratch; default: model_data/yolo_weights.h5 (9 anchors) or "
        "model_data/tiny_yolo_weights.h5 (6), from scratch when that file is absent",
        default=None)
    add("--log-dir", "folder for checkpoints, logs and final weights", default=d.log_dir)
    add("--input-size", "network input size in pixels, a multiple of 32",
        type=positive_int, default=d.input_size)
    add("--batch-size", "stage-1 batch size (global over all replicas)",
        type=positive_int, default=d.batch_size)
    add("--unfreeze-batch-size", "stage-2 batch size (global)", type=positive_int,
        default=d.unfreeze_batch_size)
    add("--freeze-epochs", "epochs of stage 1 (frozen body)", type=positive_int,
        default=d.freeze_epochs)
    add("--epochs", "total epochs, both stages", type=positive_int, default=d.epochs)
    add("--lr", "stage-1 Adam learning rate", type=float, default=d.lr)
    add("--unfreeze-lr", "stage-2 Adam learning rate", type=float, default=d.unfreeze_lr)
    add("--freeze-body", "stage 1 freezing: 0 nothing, 1 the Darknet53 backbone, 2 all "
        "but the output convolutions", type=int, choices=(0, 1, 2),
        default=d.freeze_body)
    add("--val-split", "fraction of the (shuffled) lines kept for validation; 0: "
        "monitor the training loss", type=float, default=d.val_split)
    add("--val-annotations", "a separate validation annotation file instead of the "
        "split", default=None)
    add("--seed", "seed of the train/validation shuffle, the augmentation and the "
        "initial weights of layers not loaded",
        type=int, default=d.seed)
    add("--checkpoint-period", "check val_loss for a best checkpoint every N epochs",
        type=positive_int, default=d.checkpoint_period)
    add("--workers", "data loading workers (processes when > 1)", type=positive_int,
        default=d.workers)
    add("--eval-every", "compute the validation mAP@0.5 every N epochs (0: never)",
        type=positive_int, default=0)
    add("--strategy", "none; mirrored (all local GPUs); multiworker (machines set by "
        "TF_CONFIG); JAX backend: DataParallel", choices=("none", "mirrored",
                                                           "multiworker"),
        default=d.strategy)
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
                     default="auto", help="compile the training step with XLA (default: "
                     "only on a GPU/TPU, and always on the JAX backend; on a CPU "
                     "TensorFlow without XLA is faster)")
    xla.add_argument("--no-jit", dest="jit", action="store_const", const=False,
                     help="never compile the training step with XLA")
    switch("--mixed-precision", "float16 on GPU, bfloat16 on CPU (the loss stays "
           "float32)")
    switch("--no-augment", "train on letterboxed images without random augmentation")
    switch("--augment-validation", "augment the validation images too, as the original "
           "did (noisier val_loss, which drives checkpoints and early stopping)")
    switch("--exif-transpose", "rotate images by their EXIF orientation, boxes with them "
           "(boxes must then refer to the rotated image)")
    switch("--demo", "generate a synthetic shapes data set under --log-dir (logs/demo/ "
           "unless given) and train tiny-YOLOv3 on it through both stages")
    return p


def config_from_args(args):
    return TrainConfig(
        annotations=args.annotations, classes=args.classes, anchors=args.anchors,
        weights=args.weights, log_dir=args.log_dir, input_size=args.input_size,
        batch_size=args.batch_size, unfreeze_batch_size=args.unfreeze_batch_size,
        freeze_epochs=args.freeze_epochs, epochs=args.epochs, lr=args.lr,
        unfreeze_lr=args.unfreeze_lr, freeze_body=args.freeze_body,
        val_split=args.val_split, val_annotations=args.val_annotations, seed=args.seed,
        checkpoint_period=args.checkpoint_period, workers=args.workers,
        resume=args.resume, mask=args.mask, skip_bad=args.skip_bad,
        full_check=args.full_check, eval_every=args.eval_every,
        bottleneck=args.bottleneck, jit=args.jit,
        mixed_precision=args.mixed_precision, strategy=args.strategy,
        augment=not args.no_augment, augment_validation=args.augment_validation,
        exif_transpose=args.exif_transpose)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo:
        from yolo3.demo import run_demo
        log_dir = args.log_dir if args.log_dir != DEFAULTS.log_dir else "logs/demo/"
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
