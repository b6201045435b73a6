"""One training run (`Trainer`): the original train.py's two-stage schedule.
Stage 1 trains the unfrozen layers with Adam 1e-3, stage 2 trains every layer
with Adam 1e-4 plus ReduceLROnPlateau and EarlyStopping; with resume state after
every epoch (yolo3.resume), an epoch CSV log and loss plot, a NaN guard, Ctrl-C
handling, and stage 1 on cached features with --bottleneck (yolo3.bottleneck)."""
import contextlib
import dataclasses
import math
import os
import sys
from typing import Optional

import keras
import numpy as np

from . import bottleneck, recipes
from .anchors import anchor_masks, get_anchors, parse_mask
from .annotation_file import get_classes, read_annotations
from .batches import YoloDataset, free_size_batches
from .callbacks import (EpochLog, NaNGuard, PeriodCheckpoint, ResumableEarlyStopping,
                        ResumableReduceLROnPlateau)
from .cli import format_size
from .ema import WeightEMA
from .distribute import (check_batch, has_accelerator, make_distribution,
                         replica_multiple, use_xla)
from .errors import UserError
from .evaluation import MapEvaluation
from .resume import STATE_DIR, ResumeStore, run_fingerprint, stage_end_unsaved
from .kinds import kind_for_anchors
from .multiscale import scale_sizes
from .optimization import WarmupCosine, make_optimizer, remove_l2
from .training import compile_model, create_training_model, detection_body, unfreeze_all
from .weights import save_weights

@dataclasses.dataclass
class TrainConfig:
    """Every option of train.py, named as its flags' destinations (defaults of the
    original's train.py)."""
    annotations: str = "train.txt"
    classes: str = "model_data/voc_classes.txt"
    anchors: str = "model_data/yolo_anchors.txt"
    model: Optional[str] = None          # a kind of yolo3.kinds; None: by the anchors
    weights: Optional[str] = None        # None: the kind's default; "none": from scratch
    log_dir: str = "logs/000/"
    input_shape: tuple = (416, 416)      # (h, w); --input-size 416 or WIDTHxHEIGHT
    recipe: str = "faithful"             # yolo3.recipes: the defaults of the None fields
    batch_size: Optional[int] = None     # faithful 32
    unfreeze_batch_size: Optional[int] = None
    freeze_epochs: int = 50
    epochs: int = 100
    lr: Optional[float] = None           # faithful 1e-3
    unfreeze_lr: Optional[float] = None  # faithful 1e-4
    freeze_body: int = 2
    val_split: float = 0.1
    val_annotations: Optional[str] = None
    seed: int = 47
    checkpoint_period: int = 3
    workers: int = 1
    resume: bool = False
    mask: Optional[str] = None
    skip_bad: bool = False
    full_check: bool = False
    eval_every: int = 0
    bottleneck: bool = False
    jit: object = "auto"                 # True, False or "auto" (see use_xla)
    mixed_precision: bool = False
    strategy: str = "none"
    augment: bool = True
    augment_validation: bool = False     # the original augmented validation data
    exif_transpose: bool = False
    tensorboard: bool = True
    # the recipe's parts (None: the recipe's value; see yolo3.recipes)
    optimizer: Optional[str] = None      # adam, adamw or sgd
    weight_decay: Optional[float] = None
    momentum: float = 0.937              # sgd's Nesterov momentum
    lr_schedule: Optional[str] = None    # plateau (ReduceLROnPlateau) or cosine
    warmup_epochs: Optional[float] = None
    final_lr: Optional[float] = None     # cosine: the last lr as a fraction of the first
    ema: Optional[bool] = None
    ema_decay: Optional[float] = None
    ema_ramp: Optional[int] = None       # updates over which the decay ramps in
    mosaic: Optional[float] = None       # probability per training image
    mixup: Optional[float] = None
    close_mosaic: Optional[int] = None   # mosaic and mixup off for the last N epochs
    iou_thresh: Optional[float] = None   # 0: one anchor per box; else also anchors above it
    box_loss: Optional[str] = None       # original, giou, diou or ciou
    iou_normalizer: Optional[float] = None
    label_smoothing: Optional[float] = None
    multi_scale: Optional[tuple] = None  # () or (low, high) input sides, multiples of 32
    scale_every: int = 10                # batches between multi-scale size draws
    accumulate: Optional[int] = None     # batches per optimizer step


@dataclasses.dataclass
class Stage:
    number: int
    first_epoch: int      # Keras initial_epoch
    end_epoch: int        # Keras epochs
    lr: float
    batch_size: int

    @property
    def weights_name(self):
        """The body's weights at the end of the stage: <log dir>/NAME.weights.h5."""
        return "trained_weights_stage_1" if self.number == 1 else "trained_weights_final"


@dataclasses.dataclass
class TrainResult:
    status: int                  # 0 done, 1 diverged (NaN), 130 interrupted
    epochs_done: int
    outputs: dict
    message: str = ""


def split_lines(lines, val_split, seed=47):
    """The original's split: shuffle with numpy's legacy generator seeded by
    `seed` (np.random.seed(seed); np.random.shuffle(lines)), the last
    int(n * val_split) lines validate, the rest train."""
    lines = list(lines)
    np.random.RandomState(seed).shuffle(lines)
    num_val = int(len(lines) * val_split)
    return lines[:len(lines) - num_val], lines[len(lines) - num_val:]


def plan_stages(freeze_epochs, epochs, lr, unfreeze_lr, batch_size, unfreeze_batch_size):
    """Stage 1: epochs [0, freeze_epochs); stage 2: [freeze_epochs, epochs).
    A stage with no epochs is left out."""
    stages = []
    if freeze_epochs > 0:
        stages.append(Stage(1, 0, min(freeze_epochs, epochs), lr, batch_size))
    if epochs > freeze_epochs:
        stages.append(Stage(2, max(freeze_epochs, 0), epochs, unfreeze_lr,
                            unfreeze_batch_size))
    return stages


def _check_config(cfg):
    if any(v <= 0 or v % 32 for v in cfg.input_shape):
        raise UserError(f"--input-size {format_size(cfg.input_shape)}: must be a positive "
                        "multiple of 32 (the network downsamples 5 times by 2)")
    for name in ("batch_size", "unfreeze_batch_size", "checkpoint_period", "workers"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be "
                            "at least 1")
    if cfg.freeze_epochs < 0 or cfg.epochs < 0:
        raise UserError(f"--freeze-epochs {cfg.freeze_epochs} / --epochs {cfg.epochs}: "
                        "must not be negative")
    if not 0 <= cfg.val_split < 1:
        raise UserError(f"--val-split {cfg.val_split}: must be in [0, 1)")
    if cfg.freeze_body not in (0, 1, 2):
        raise UserError(f"--freeze-body {cfg.freeze_body}: choose 0, 1 or 2")
    if cfg.lr <= 0 or cfg.unfreeze_lr <= 0:
        raise UserError("--lr and --unfreeze-lr must be positive")


def _check_combinations(cfg):
    """The parts that cannot go together, refused in one line."""
    per_image = [flag for flag, on in (("--mosaic", cfg.mosaic), ("--mixup", cfg.mixup),
                                       ("--multi-scale", cfg.multi_scale)) if on]
    if cfg.bottleneck and per_image:
        raise UserError(f"--bottleneck trains stage 1 on cached, un-augmented features: "
                        f"it cannot be combined with {' / '.join(per_image)}")
    if cfg.multi_scale:
        scale_sizes(cfg.input_shape, *cfg.multi_scale)   # UserError for a bad range


def _read_data(cfg, num_classes):
    """Training and validation lines; (train, val, monitor)."""
    def read(path):
        return read_annotations(path, num_classes, full_check=cfg.full_check,
                                skip_bad=cfg.skip_bad)
    lines = read(cfg.annotations)
    if cfg.val_annotations:
        train, val = split_lines(lines, 0.0, cfg.seed)[0], read(cfg.val_annotations)
    else:
        train, val = split_lines(lines, cfg.val_split, cfg.seed)
        if cfg.val_split > 0 and not val:
            need = math.ceil(1 / cfg.val_split)
            raise UserError(
                f"{cfg.annotations}: {len(lines)} lines give no validation line with "
                f"--val-split {cfg.val_split} (at least {need} lines needed); add lines, "
                "pass --val-annotations FILE, or --val-split 0 to monitor the "
                "training loss instead")
    if not train:
        raise UserError(f"{cfg.annotations}: no training lines left after the split")
    monitor = "val_loss" if val else "loss"
    if not val:
        print("note: no validation lines (--val-split 0): the checkpoints, "
              "ReduceLROnPlateau and EarlyStopping monitor the training loss")
    return train, val, monitor


def _weights_choice(cfg, kind):
    """(path or None, freeze level): the default file missing -> from scratch,
    nothing frozen; a named file missing -> UserError."""
    if cfg.weights and cfg.weights.lower() == "none":
        if cfg.freeze_body:
            print("note: --weights none: training from scratch with nothing frozen")
        return None, 0
    if cfg.weights:
        if not os.path.isfile(cfg.weights):
            raise UserError(f"--weights {cfg.weights}: no such file")
        return cfg.weights, cfg.freeze_body
    default = kind.default_weights
    if not os.path.isfile(default):
        print(f"note: {default} not found: training from scratch with nothing frozen "
              "(convert darknet weights with convert.py to start from pretrained ones)")
        return None, 0
    return default, cfg.freeze_body


def _clamp_batch(batch, count, what):
    if batch > count:
        print(f"note: {what} batch size {batch} is larger than the {count} {what} "
              f"lines; using {count}")
        return count
    return batch


@dataclasses.dataclass
class RunCallbacks:
    """The callbacks that live through both stages: one object each, so that the
    best values, the period count and the log rows carry over as in the original."""
    checkpoint: PeriodCheckpoint
    reduce_lr: ResumableReduceLROnPlateau
    early_stopping: ResumableEarlyStopping
    epoch_log: EpochLog
    nan_guard: NaNGuard
    map_evaluation: Optional[MapEvaluation]
    ema: Optional[WeightEMA] = None

    def carried(self):
        """The callbacks whose state the resume state saves."""
        return {"checkpoint": self.checkpoint, "reduce_lr": self.reduce_lr,
                "early_stopping": self.early_stopping}


class Trainer:
    """One run of the schedule for a TrainConfig: the constructor reads the files,
    builds the model and the callbacks; `run()` trains and returns a TrainResult.
    `callbacks`: extra Keras callbacks for every stage; `verbose`: model.fit's
    ("auto": progress bars on a terminal, one line per epoch in a log)."""

    def __init__(self, cfg, callbacks=(), verbose="auto"):
        cfg = recipes.resolve(cfg)
        _check_config(cfg)
        recipes.check(cfg)
        _check_combinations(cfg)
        self.cfg, self.extra_callbacks = cfg, list(callbacks)
        self.verbose = (1 if sys.stdout.isatty() else 2) if verbose == "auto" else verbose
        self.class_names = get_classes(cfg.classes)
        self.anchors = get_anchors(cfg.anchors)
        self.kind = kind_for_anchors(len(self.anchors), cfg.model)
        self.mask = anchor_masks(len(self.anchors),
                                 parse_mask(cfg.mask) if cfg.mask else None, self.kind.name)
        self.input_shape = tuple(cfg.input_shape)
        self.train_lines, self.val_lines, self.monitor = _read_data(
            cfg, len(self.class_names))
        self.weights_path, self.freeze_body = _weights_choice(cfg, self.kind)
        self.bottleneck = cfg.bottleneck and self.freeze_body == 2
        if cfg.bottleneck and not self.bottleneck:
            print("note: --bottleneck needs --freeze-body 2 and pretrained weights; "
                  "stage 1 trains the whole model instead")
        self.distribution = make_distribution(cfg.strategy)
        # several workers: only the chief writes into --log-dir
        self.log_dir = self.distribution.worker_log_dir(
            cfg.log_dir, [STATE_DIR] if cfg.resume else [])
        os.makedirs(self.log_dir, exist_ok=True)
        with self.distribution.scope():
            self.model = self._build_model()
        self.distribution.synchronize_batch_norm(self.model)
        self.body = detection_body(self.model)
        self.callbacks = self._make_callbacks()
        fingerprint = run_fingerprint(self.kind.name, self.class_names, self.anchors,
                                      self.mask, self.input_shape)
        self.resume_store = ResumeStore(self.log_dir, self.body, fingerprint,
                                        self.callbacks.carried(), self.callbacks.ema)
        self.outputs = {}

    def path(self, name):
        return os.path.join(self.log_dir, name)

    def _build_model(self):
        if self.cfg.mixed_precision:
            gpu = keras.backend.backend() == "tensorflow" and has_accelerator()
            keras.mixed_precision.set_global_policy(
                "mixed_float16" if gpu else "mixed_bfloat16")
        keras.utils.set_random_seed(self.cfg.seed)   # reproducible new layers
        cfg = self.cfg
        model = create_training_model(
            self.kind, (None, None) if cfg.multi_scale else self.input_shape, self.anchors,
            len(self.class_names), load_pretrained=self.weights_path is not None,
            freeze_body=self.freeze_body, weights_path=self.weights_path, mask=self.mask,
            loss_options={"box_loss": cfg.box_loss, "iou_normalizer": cfg.iou_normalizer,
                          "label_smoothing": cfg.label_smoothing})
        if cfg.weight_decay > 0:   # decoupled decay replaces the kernels' L2 term
            remove_l2(model)
        return model

    def _make_callbacks(self):
        cfg = self.cfg
        map_evaluation = None
        if cfg.eval_every and self.val_lines:
            map_evaluation = MapEvaluation(
                self.val_lines, self.anchors, self.class_names, self.input_shape,
                every=cfg.eval_every, mask=self.mask,
                best_path=self.path("best_map50.weights.h5"))
        return RunCallbacks(
            checkpoint=PeriodCheckpoint(self.body, self.log_dir, self.monitor,
                                        cfg.checkpoint_period),
            reduce_lr=ResumableReduceLROnPlateau(monitor=self.monitor, factor=0.1,
                                                 patience=3, verbose=1),
            early_stopping=ResumableEarlyStopping(monitor=self.monitor, min_delta=0,
                                                  patience=10, verbose=1),
            epoch_log=EpochLog(self.path("training_log.csv"), self.path("loss.png"),
                               cfg.freeze_epochs),
            nan_guard=NaNGuard(self.body, self.log_dir),
            map_evaluation=map_evaluation,
            ema=WeightEMA(self.body, cfg.ema_decay, cfg.ema_ramp) if cfg.ema else None)

    # -- the schedule ------------------------------------------------------------
    def run(self):
        """The recipe: plan the stages, resume, stage 1, stage 2 (each saving its
        weights), mark the run finished. Ctrl-C saves the weights as `interrupted`."""
        cfg = self.cfg
        stages = plan_stages(cfg.freeze_epochs, cfg.epochs, cfg.lr, cfg.unfreeze_lr,
                             cfg.batch_size, cfg.unfreeze_batch_size)
        first, state = self.resume_point()
        if state is not None and state.get("finished"):
            print(f"--resume: the run in {self.log_dir} already finished "
                  f"({state['epoch']} epochs)")
            return TrainResult(0, state["epoch"], self.outputs)
        print(f"Train on {len(self.train_lines)} samples, val on {len(self.val_lines)} "
              f"samples ({self.distribution.describe()}).")
        epochs_done = first
        try:
            for stage in stages:
                epochs_done = self.run_stage(stage, first, state)
                if self.callbacks.nan_guard.tripped:
                    return TrainResult(1, epochs_done, self.outputs, "training stopped: "
                                       + self.callbacks.nan_guard.tripped)
                first = max(first, stage.end_epoch)
            if stages and stages[-1].number == 1:   # --epochs <= --freeze-epochs
                self.save("trained_weights_final")
            self.resume_store.finish(epochs_done)
        except KeyboardInterrupt:
            self.save("interrupted")
            return TrainResult(130, self.resume_store.saved_epoch(epochs_done),
                               self.outputs, "interrupted: weights saved to "
                               f"{self.outputs['interrupted']}; continue with --resume")
        return TrainResult(0, epochs_done, self.outputs)

    def resume_point(self):
        """(first epoch, saved state or None): with --resume, the saved state put
        back and the epoch log's rows up to it; else a fresh start."""
        first, state = self.resume_store.restore() if self.cfg.resume else (0, None)
        epoch_log = self.callbacks.epoch_log
        epoch_log.rows = EpochLog.read_rows(epoch_log.csv_path, first)
        return first, state

    def run_stage(self, stage, first, state):
        """Train `stage` from epoch `first` on and save its weights (unless the NaN
        guard stopped it); returns the epochs done. A stage that the resumed state
        covers trains no epoch."""
        weights = self.path(f"{stage.weights_name}.weights.h5")
        if first >= stage.end_epoch:
            if stage_end_unsaved(first, stage.end_epoch, weights):
                self.save(stage.weights_name)
            return first
        first = max(first, stage.first_epoch)
        if stage.number == 2:
            unfreeze_all(self.model)
            print("Unfreeze all of the layers.")
        batch = _clamp_batch(stage.batch_size, len(self.train_lines), "training")
        check_batch(batch, self.distribution)
        head_only = stage.number == 1 and self.bottleneck
        with self.distribution.scope():
            model, train, val = self.stage_data(batch, first, head_only)
            train, val = (self.distribution.local_batches(train),
                          self.distribution.local_batches(val))
            compile_model(model, stage.lr, jit_compile=use_xla(self.cfg.jit, head_only),
                          optimizer=self.optimizer(stage, len(train), model))
            free_size = self.cfg.multi_scale and keras.backend.backend() == "tensorflow"
            if free_size:   # the batches shuffle themselves either way
                train = free_size_batches(train)
            self.resume_store.restore_optimizer(state, stage, first, model)
        print(f"Stage {stage.number}: epochs {first + 1}..{stage.end_epoch}, batch size "
              f"{batch}, lr {stage.lr:g}.")
        history = model.fit(train, validation_data=val, initial_epoch=first,
                            epochs=stage.end_epoch, verbose=self.verbose, shuffle=not free_size,
                            callbacks=self.stage_callbacks(stage, head_only))
        if not self.callbacks.nan_guard.tripped:
            self.save(stage.weights_name)
        return first + len(history.epoch)

    def optimizer(self, stage, batches_per_epoch, model):
        """The stage's optimizer: the recipe's kind, its rate constant (for
        ReduceLROnPlateau) or warmup + cosine over the stage's batches (Keras calls
        a schedule with the batch count, also under --accumulate)."""
        cfg = self.cfg
        rate = stage.lr
        if cfg.lr_schedule == "cosine":
            total = batches_per_epoch * (stage.end_epoch - stage.first_epoch)
            warmup = min(round(batches_per_epoch * cfg.warmup_epochs), total)
            rate = WarmupCosine(stage.lr, total, warmup, cfg.final_lr)
        return make_optimizer(cfg.optimizer, rate, model, weight_decay=cfg.weight_decay,
                              momentum=cfg.momentum, accumulate=cfg.accumulate)

    def stage_data(self, batch, first, head_only):
        """(model, training batches, validation batches or None) of a stage."""
        if head_only:
            return bottleneck.prepare(
                self.body, self.train_lines, self.val_lines, input_shape=self.input_shape,
                anchors=self.anchors, class_names=self.class_names, mask=self.mask,
                folder=self.path("bottleneck"), seed=self.cfg.seed, batch_size=batch,
                first_epoch=first)
        cfg = self.cfg
        mosaic_until = cfg.epochs - cfg.close_mosaic
        train = self.dataset(
            self.train_lines, batch, cfg.augment, first, mosaic=cfg.mosaic,
            mixup=cfg.mixup, mosaic_until=mosaic_until,
            sizes=scale_sizes(self.input_shape, *cfg.multi_scale) if cfg.multi_scale else None,
            size_every=cfg.scale_every)
        val = None
        if self.val_lines:
            val_batch = replica_multiple(min(batch, len(self.val_lines)), self.distribution)
            val = self.dataset(self.val_lines, val_batch, self.cfg.augment_validation,
                               shuffle=False)
        return self.model, train, val

    def dataset(self, lines, batch, augment, epoch=0, shuffle=None, **parts):
        """Batches of `lines`; `parts`: the training-only YoloDataset options
        (mosaic, mixup, multi-scale sizes)."""
        targets = {"iou_thresh": self.cfg.iou_thresh} if self.cfg.iou_thresh else None
        return YoloDataset(lines, batch, self.input_shape, self.anchors,
                           len(self.class_names), mask=self.mask, augment=augment,
                           shuffle=augment if shuffle is None else shuffle,
                           seed=self.cfg.seed, initial_epoch=epoch,
                           exif_transpose=self.cfg.exif_transpose,
                           workers=self.cfg.workers,
                           use_multiprocessing=self.cfg.workers > 1,
                           target_options=targets, **parts)

    def stage_callbacks(self, stage, head_only):
        """The stage's callbacks. Order matters: the mAP is added to the logs before
        they are written. No mAP on bottleneck features: they carry no images.
        With --ema the validation, the mAP and the checkpoints see the averaged
        weights, and the resume state the live ones."""
        run = self.callbacks
        callbacks = [run.nan_guard] + ([run.ema] if run.ema else [])
        if run.map_evaluation is not None and not head_only:
            callbacks.append(run.map_evaluation)
        if self.cfg.tensorboard and keras.backend.backend() == "tensorflow":
            callbacks.append(keras.callbacks.TensorBoard(log_dir=self.log_dir,
                                                         write_graph=False))
        run.epoch_log.stage = stage.number
        callbacks += [run.checkpoint, run.epoch_log]
        if run.ema:
            callbacks.append(run.ema.restorer())
        if stage.number == 2 and self.cfg.lr_schedule == "plateau":
            callbacks += [run.reduce_lr, run.early_stopping]
        return callbacks + [self.resume_store.saver(stage.number)] + self.extra_callbacks

    def save(self, name):
        """The body's weights (with --ema the averaged ones) as NAME.weights.h5."""
        path = self.path(f"{name}.weights.h5")
        with self.callbacks.ema.applied() if self.callbacks.ema else contextlib.nullcontext():
            save_weights(self.body, path)
        self.outputs[name] = path


def run_training(cfg):
    """Run the whole schedule for a TrainConfig; returns a TrainResult."""
    return Trainer(cfg).run()


def describe_outputs(log_dir):
    """Lines naming what a run wrote into its log dir."""
    descriptions = {
        "trained_weights_stage_1.weights.h5": "body weights after stage 1",
        "trained_weights_final.weights.h5": "final body weights (use with yolo.py)",
        "interrupted.weights.h5": "body weights when interrupted",
        "last_good.weights.h5": "last weights before the loss became NaN",
        "best_map50.weights.h5": "body weights of the best validation mAP@0.5",
        "training_log.csv": "one row per epoch: loss, yolo_loss_metric, val_loss, lr",
        "loss.png": "loss plot, stage boundary marked",
        STATE_DIR: "resume state (--resume)",
    }
    lines = []
    names = sorted(os.listdir(log_dir))
    checkpoints = [n for n in names if n.startswith("ep") and n.endswith(".weights.h5")]
    if checkpoints:
        lines.append(f"  {os.path.join(log_dir, checkpoints[-1])}: the best of "
                     f"{len(checkpoints)} periodic checkpoints (ep*.weights.h5)")
    for name in names:
        if name in descriptions:
            lines.append(f"  {os.path.join(log_dir, name)}: {descriptions[name]}")
    if os.path.isdir(os.path.join(log_dir, "train")):
        lines.append(f"  {os.path.join(log_dir, 'train')}, validation: TensorBoard logs "
                     f"(tensorboard --logdir {log_dir})")
    return lines
