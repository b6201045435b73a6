"""The original train.py's two-stage schedule as a function (`run_training`):
stage 1 trains the unfrozen layers with Adam 1e-3, stage 2 trains every layer with
Adam 1e-4 plus ReduceLROnPlateau and EarlyStopping; with resume state after every
epoch, an epoch CSV log and loss plot, a NaN guard and Ctrl-C handling."""
import dataclasses
import hashlib
import math
import os
import sys
from typing import Optional

import keras
import numpy as np

from .anchors import anchor_masks, get_anchors, parse_mask
from .atomic import remove_stale_temporaries
from .callbacks import (EpochLog, NaNGuard, PeriodCheckpoint,
                        ResumableEarlyStopping, ResumableReduceLROnPlateau,
                        ResumeState, read_state,
                        restore_optimizer, restore_weights, write_state)
from .annotation_file import get_classes, read_annotations
from .batches import YoloDataset
from .distribute import (check_batch, has_accelerator, make_distribution,
                         replica_multiple, use_xla)
from .errors import UserError
from .evaluation import MapEvaluation, evaluate_detector
from .training import (compile_model, create_model, create_tiny_model, detection_body,
                       unfreeze_all)
from .weights import save_weights

DEFAULT_WEIGHTS = {9: "model_data/yolo_weights.h5", 6: "model_data/tiny_yolo_weights.h5"}
STATE_DIR = "train_state"


@dataclasses.dataclass
class TrainConfig:
    """Every option of train.py (defaults of the original's train.py)."""
    annotations: str = "train.txt"
    classes: str = "model_data/voc_classes.txt"
    anchors: str = "model_data/yolo_anchors.txt"
    weights: Optional[str] = None        # None: DEFAULT_WEIGHTS; "none": from scratch
    log_dir: str = "logs/000/"
    input_size: int = 416
    batch_size: int = 32
    unfreeze_batch_size: int = 32
    freeze_epochs: int = 50
    epochs: int = 100
    lr: float = 1e-3
    unfreeze_lr: float = 1e-4
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
    verbose: object = "auto"
    callbacks: list = dataclasses.field(default_factory=list)   # extra (tests)


@dataclasses.dataclass
class Stage:
    number: int
    first_epoch: int      # Keras initial_epoch
    end_epoch: int        # Keras epochs
    lr: float
    batch_size: int


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
    if cfg.input_size <= 0 or cfg.input_size % 32:
        raise UserError(f"--input-size {cfg.input_size}: must be a positive multiple "
                        "of 32 (the network downsamples 5 times by 2)")
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


def _weights_choice(cfg, num_anchors):
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
    default = DEFAULT_WEIGHTS[num_anchors]
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


def _fingerprint(cfg, class_names, anchors, mask):
    """What a resumed run must share with the saved one."""
    return {"classes": list(class_names), "anchors": np.asarray(anchors).tolist(),
            "mask": mask, "input_size": cfg.input_size}


def data_fingerprint(lines):
    """A hash of the annotation lines and their image files' sizes and times."""
    digest = hashlib.sha256()
    for line in lines:
        stat = os.stat(line.path)
        digest.update(f"{line.path}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
        digest.update(np.ascontiguousarray(line.boxes, np.float32).tobytes())
    return digest.hexdigest()


class Trainer:
    """Everything one run of the schedule needs; `run()` returns a TrainResult."""

    def __init__(self, cfg):
        _check_config(cfg)
        self.cfg = cfg
        self.class_names = get_classes(cfg.classes)
        self.anchors = get_anchors(cfg.anchors)
        self.mask = anchor_masks(len(self.anchors),
                                 parse_mask(cfg.mask) if cfg.mask else None)
        self.tiny = len(self.anchors) == 6
        self.input_shape = (cfg.input_size, cfg.input_size)
        self.train_lines, self.val_lines, self.monitor = _read_data(
            cfg, len(self.class_names))
        self.weights_path, self.freeze_body = _weights_choice(cfg, len(self.anchors))
        self.bottleneck = cfg.bottleneck and self.freeze_body == 2
        if cfg.bottleneck and not self.bottleneck:
            print("note: --bottleneck needs --freeze-body 2 and pretrained weights; "
                  "stage 1 trains the whole model instead")
        self.log_dir = cfg.log_dir
        self.state_dir = os.path.join(self.log_dir, STATE_DIR)
        self.outputs = {}
        self.map_evaluation = None
        os.makedirs(self.log_dir, exist_ok=True)

    def path(self, name):
        return os.path.join(self.log_dir, name)

    # -- model -----------------------------------------------------------------
    def build(self):
        if self.cfg.mixed_precision:
            gpu = keras.backend.backend() == "tensorflow" and has_accelerator()
            keras.mixed_precision.set_global_policy(
                "mixed_float16" if gpu else "mixed_bfloat16")
        keras.utils.set_random_seed(self.cfg.seed)   # reproducible new layers
        create = create_tiny_model if self.tiny else create_model
        self.model = create(self.input_shape, self.anchors, len(self.class_names),
                            load_pretrained=self.weights_path is not None,
                            freeze_body=self.freeze_body,
                            weights_path=self.weights_path, mask=self.mask)
        self.body = detection_body(self.model)

    def dataset(self, lines, batch, augment, epoch=0, shuffle=None):
        return YoloDataset(lines, batch, self.input_shape, self.anchors,
                           len(self.class_names), mask=self.mask, augment=augment,
                           shuffle=augment if shuffle is None else shuffle,
                           seed=self.cfg.seed, initial_epoch=epoch,
                           exif_transpose=self.cfg.exif_transpose,
                           workers=self.cfg.workers,
                           use_multiprocessing=self.cfg.workers > 1)

    # -- callbacks -------------------------------------------------------------
    def make_callbacks(self, stage_boundary, rows):
        self.checkpoint = PeriodCheckpoint(self.body, self.log_dir, self.monitor,
                                           self.cfg.checkpoint_period)
        self.reduce_lr = ResumableReduceLROnPlateau(
            monitor=self.monitor, factor=0.1, patience=3, verbose=1)
        self.early_stopping = ResumableEarlyStopping(
            monitor=self.monitor, min_delta=0, patience=10, verbose=1)
        self.epoch_log = EpochLog(self.path("training_log.csv"),
                                  self.path("loss.png"), stage_boundary, rows=rows)
        self.nan_guard = NaNGuard(self.body, self.log_dir)
        self.carried = {"checkpoint": self.checkpoint, "reduce_lr": self.reduce_lr,
                        "early_stopping": self.early_stopping}

    def stage_callbacks(self, stage):
        # Order matters: the mAP is added to the logs before they are written.
        callbacks = [self.nan_guard] + self.eval_callbacks(stage)
        if self.cfg.tensorboard and keras.backend.backend() == "tensorflow":
            callbacks.append(keras.callbacks.TensorBoard(log_dir=self.log_dir,
                                                         write_graph=False))
        self.epoch_log.stage = stage.number
        callbacks += [self.checkpoint, self.epoch_log]
        if stage.number == 2:
            callbacks += [self.reduce_lr, self.early_stopping]
        callbacks.append(ResumeState(self.body, self.state_dir, stage.number,
                                     self.carried, self.fingerprint))
        return callbacks + list(self.cfg.callbacks)

    def eval_callbacks(self, stage):
        """yolo3.evaluation.MapEvaluation (val_mAP50 in the logs; the best weights
        by mAP kept), except on bottleneck features, which carry no images."""
        if not (self.cfg.eval_every and self.val_lines) or (
                stage.number == 1 and self.bottleneck):
            return []
        if self.map_evaluation is None:     # one object: the best mAP carries over
            self.map_evaluation = MapEvaluation(
                self.val_lines, self.anchors, self.class_names, self.input_shape,
                every=self.cfg.eval_every, mask=self.mask,
                best_path=self.path("best_map50.weights.h5"))
        return [self.map_evaluation]

    # -- resume ----------------------------------------------------------------
    def load_resume_state(self):
        """(first epoch, state or None)."""
        if not self.cfg.resume:
            return 0, None
        for folder in (self.log_dir, self.state_dir):  # a killed writer's leftovers
            for name in remove_stale_temporaries(folder):
                print(f"--resume: removed {os.path.join(folder, name)} (unfinished write)")
        state = read_state(self.state_dir)
        if state is None:
            print(f"--resume: no saved state in {self.state_dir}; starting fresh")
            return 0, None
        if state.get("fingerprint") != self.fingerprint:
            raise UserError(f"{self.state_dir}: the saved run used other classes, "
                            "anchors, mask or input size; drop --resume or use "
                            "another --log-dir")
        restore_weights(self.state_dir, state, self.body)
        for name, callback in self.carried.items():
            callback.set_state(state["callbacks"][name])
        print(f"--resume: continuing after epoch {state['epoch']} (stage "
              f"{state['stage']}, lr {state['lr']:g}) from {self.state_dir}")
        return int(state["epoch"]), state

    # -- the schedule ------------------------------------------------------------
    def run(self):
        cfg = self.cfg
        distribution = make_distribution(cfg.strategy)
        # several workers: only the chief writes into --log-dir
        self.log_dir = distribution.worker_log_dir(cfg.log_dir,
                                                   [STATE_DIR] if cfg.resume else [])
        self.state_dir = os.path.join(self.log_dir, STATE_DIR)
        self.fingerprint = _fingerprint(cfg, self.class_names, self.anchors, self.mask)
        stages = plan_stages(cfg.freeze_epochs, cfg.epochs, cfg.lr, cfg.unfreeze_lr,
                             cfg.batch_size, cfg.unfreeze_batch_size)
        with distribution.scope():
            self.build()
        distribution.synchronize_batch_norm(self.model)
        self.stage_boundary = cfg.freeze_epochs
        self.make_callbacks(self.stage_boundary, [])
        start, state = self.load_resume_state()
        if state is not None and state.get("finished"):
            print(f"--resume: the run in {self.log_dir} already finished "
                  f"({state['epoch']} epochs)")
            return TrainResult(0, state["epoch"], self.outputs)
        self.epoch_log.rows = EpochLog.read_rows(self.epoch_log.csv_path, start)
        print(f"Train on {len(self.train_lines)} samples, val on {len(self.val_lines)} "
              f"samples ({distribution.describe()}).")
        epochs_done = start
        try:
            for stage in stages:
                name = ("trained_weights_stage_1" if stage.number == 1
                        else "trained_weights_final")
                if start >= stage.end_epoch:
                    # Killed after the stage's last epoch but before its weights
                    # file was written: the restored state holds those weights.
                    if start == stage.end_epoch and not os.path.exists(
                            self.path(f"{name}.weights.h5")):
                        self.save(name)
                    continue
                epochs_done = self.run_stage(stage, start, state, distribution)
                if self.nan_guard.tripped:
                    return TrainResult(1, epochs_done, self.outputs,
                                       "training stopped: " + self.nan_guard.tripped)
                self.save(name)
                start = stage.end_epoch
            if stages and stages[-1].number == 1:   # --epochs <= --freeze-epochs
                self.save("trained_weights_final")
            self.mark_finished(epochs_done)
        except KeyboardInterrupt:
            self.save("interrupted")
            saved = read_state(self.state_dir)
            epochs_done = saved["epoch"] if saved else epochs_done
            return TrainResult(130, epochs_done, self.outputs,
                               "interrupted: weights saved to "
                               f"{self.outputs['interrupted']}; continue with --resume")
        return TrainResult(0, epochs_done, self.outputs)

    def run_stage(self, stage, start, state, distribution):
        cfg = self.cfg
        first = max(start, stage.first_epoch)
        if stage.number == 2:
            unfreeze_all(self.model)
            print("Unfreeze all of the layers.")
        batch = _clamp_batch(stage.batch_size, len(self.train_lines), "training")
        check_batch(batch, distribution)
        head_only = stage.number == 1 and self.bottleneck
        if head_only:
            from .bottleneck import prepare
            with distribution.scope():
                model, train, val = prepare(self, batch, first)
        else:
            model = self.model
            train = self.dataset(self.train_lines, batch, cfg.augment, first)
            val = None
            if self.val_lines:
                val_batch = replica_multiple(min(batch, len(self.val_lines)),
                                             distribution)
                val = self.dataset(self.val_lines, val_batch, cfg.augment_validation,
                                   shuffle=False)
        train, val = distribution.local_batches(train), distribution.local_batches(val)
        with distribution.scope():
            compile_model(model, stage.lr, jit_compile=use_xla(cfg.jit, head_only))
            resumed = state is not None and state["stage"] == stage.number
            if resumed and first > stage.first_epoch:
                if not restore_optimizer(self.state_dir, state, model):
                    print("note: the saved optimizer state does not fit; Adam starts "
                          "afresh")
                model.optimizer.learning_rate.assign(state["lr"])
        print(f"Stage {stage.number}: epochs {first + 1}..{stage.end_epoch}, batch size "
              f"{batch}, lr {stage.lr:g}.")
        verbose = cfg.verbose
        if verbose == "auto":   # progress bars on a terminal, one line per epoch in a log
            verbose = 1 if sys.stdout.isatty() else 2
        history = model.fit(train, validation_data=val, initial_epoch=first,
                            epochs=stage.end_epoch, verbose=verbose,
                            callbacks=self.stage_callbacks(stage))
        return first + len(history.epoch)

    def save(self, name):
        path = self.path(f"{name}.weights.h5")
        save_weights(self.body, path)
        self.outputs[name] = path

    def mark_finished(self, epochs_done):
        state = read_state(self.state_dir) or {
            "epoch": epochs_done, "stage": 2, "lr": 0.0, "callbacks": {},
            "fingerprint": self.fingerprint}
        state.update(finished=True, epoch=epochs_done)
        write_state(self.state_dir, self.body, None, state)


def validation_map50(trainer):
    """VOC mAP@0.5 of the trainer's body on its validation lines."""
    from .detector import YOLO
    detector = YOLO(body=trainer.body, class_names=trainer.class_names,
                    anchors=trainer.anchors, mask=trainer.mask,
                    model_image_size=trainer.input_shape, score=0.001, max_boxes=100)
    report, _ = evaluate_detector(detector, trainer.val_lines, coco=False)
    return report["mAP50"]


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

