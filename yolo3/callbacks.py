"""Training callbacks: the original's periodic best-only checkpoint, ReduceLROnPlateau
and EarlyStopping whose state survives a resume, an epoch CSV log and loss plot, and
a NaN guard. (The resume state itself: yolo3.resume.)

Every file is written atomically (temporary name, then rename), so a killed run
never leaves a truncated checkpoint behind."""
import csv
import math
import os

import keras
import numpy as np

from .atomic import atomic_open, atomic_path
from .weights import save_weights

CHECKPOINT_PATTERN = "ep{epoch:03d}-loss{loss:.3f}-val_loss{val_loss:.3f}.weights.h5"
CHECKPOINT_PATTERN_NO_VAL = "ep{epoch:03d}-loss{loss:.3f}.weights.h5"


def finite(logs, key="loss"):
    value = (logs or {}).get(key)
    return value is not None and math.isfinite(float(value))


def current_lr(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class PeriodCheckpoint(keras.callbacks.Callback):
    """Keras 2's ModelCheckpoint(save_weights_only=True, save_best_only=True,
    period=N) writing the detection body's weights. One instance serves both
    stages, so the best value and the period count carry over as in the original."""

    def __init__(self, body, folder, monitor="val_loss", period=3, verbose=1):
        super().__init__()
        self.body, self.folder, self.monitor = body, folder, monitor
        self.period, self.verbose = period, verbose
        self.pattern = CHECKPOINT_PATTERN if monitor == "val_loss" else \
            CHECKPOINT_PATTERN_NO_VAL
        self.best = math.inf
        self.epochs_since_last_save = 0
        self.saved = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not finite(logs):
            return
        self.epochs_since_last_save += 1
        if self.epochs_since_last_save < self.period:
            return
        self.epochs_since_last_save = 0
        current = logs.get(self.monitor)
        if current is None:
            print(f"\nEpoch {epoch + 1}: cannot check {self.monitor} (not logged); "
                  "no checkpoint written")
            return
        path = os.path.join(self.folder, self.pattern.format(epoch=epoch + 1, **logs))
        if current < self.best:
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from "
                      f"{self.best:.5f} to {current:.5f}, saving to {path}")
            self.best = float(current)
            save_weights(self.body, path)
            self.saved.append(path)
        elif self.verbose:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from "
                  f"{self.best:.5f}")

    def get_state(self):
        return {"best": self.best, "epochs_since_last_save": self.epochs_since_last_save}

    def set_state(self, state):
        self.best = float(state["best"])
        self.epochs_since_last_save = int(state["epochs_since_last_save"])


class _Resumable:
    """Mix-in: state saved at each epoch and put back after on_train_begin resets
    it (Keras resets these callbacks at the start of every fit)."""
    STATE_KEYS = ()

    def get_state(self):
        return {k: (None if getattr(self, k) is None else float(getattr(self, k)))
                for k in self.STATE_KEYS}

    def set_state(self, state):
        self._restore = dict(state)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        restore = getattr(self, "_restore", None)
        if restore:
            for key in self.STATE_KEYS:
                value = restore[key]
                setattr(self, key, value if value is None or key == "best"
                        else int(value))
            self._restore = None


class ResumableReduceLROnPlateau(_Resumable, keras.callbacks.ReduceLROnPlateau):
    STATE_KEYS = ("best", "wait", "cooldown_counter")


class ResumableEarlyStopping(_Resumable, keras.callbacks.EarlyStopping):
    STATE_KEYS = ("best", "wait")


class NaNGuard(keras.callbacks.Callback):
    """TerminateOnNaN that says why it stopped and keeps the last good weights
    (the body's weights at the start of the epoch in which the loss broke)."""

    def __init__(self, body, folder):
        super().__init__()
        self.body, self.folder = body, folder
        self.tripped = None
        self._good = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._good = self.body.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        if self.tripped is None and not finite(logs):
            self.model.stop_training = True
            self.body.set_weights(self._good)
            path = os.path.join(self.folder, "last_good.weights.h5")
            save_weights(self.body, path)
            self.tripped = (
                f"the loss became {float(logs['loss'])} at epoch {self._epoch + 1}, "
                f"batch {batch + 1}. Likely causes: a learning rate too high "
                "(try a smaller --lr / --unfreeze-lr), degenerate boxes (zero "
                "width or height) or wrong class ids in the annotations (check with "
                f"--full-check). The last good weights (start of epoch "
                f"{self._epoch + 1}) are in {path}")


class EpochLog(keras.callbacks.Callback):
    """Each epoch: one CSV row (epoch, stage, lr, every logged value: loss, its
    parts, val_loss, ...) and the loss plot redrawn with the stage boundary."""

    def __init__(self, csv_path, png_path, stage_boundary, stage=1, rows=None):
        super().__init__()
        self.csv_path, self.png_path = csv_path, png_path
        self.stage_boundary, self.stage = stage_boundary, stage
        self.rows = list(rows or [])

    @staticmethod
    def read_rows(csv_path, up_to_epoch):
        """Rows of an earlier run (for --resume) up to a completed epoch."""
        if not os.path.exists(csv_path):
            return []
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = [{k: (float(v) if v not in ("", None) else None)
                     for k, v in row.items()} for row in csv.DictReader(handle)]
        return [r for r in rows if r.get("epoch") and r["epoch"] <= up_to_epoch]

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs.pop("learning_rate", None)
        row = {"epoch": epoch + 1, "stage": self.stage, "lr": current_lr(self.model)}
        row.update({k: float(v) for k, v in logs.items()})
        self.rows = [r for r in self.rows if r["epoch"] < epoch + 1] + [row]
        self.write()

    def write(self):
        keys = ["epoch", "stage", "lr"]
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        with atomic_open(self.csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if row.get(k) is None else
                                     (int(row[k]) if k in ("epoch", "stage") else row[k]))
                                 for k in keys})
        plot_losses(self.rows, self.stage_boundary, self.png_path)


def plot_losses(rows, stage_boundary, path):
    """loss and val_loss against the epoch, a dashed line where stage 2 starts."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    epochs = [r["epoch"] for r in rows]
    for key, style in (("loss", "-o"), ("val_loss", "-s"), ("yolo_loss", "--")):
        values = [r.get(key) for r in rows]
        if any(v is not None and math.isfinite(v) for v in values):
            axes.plot(epochs, [np.nan if v is None else v for v in values], style,
                      markersize=3, label=key)
    if 0 < stage_boundary < (max(epochs) if epochs else 0):
        axes.axvline(stage_boundary + 0.5, color="grey", linestyle=":",
                     label="stage 2 (all layers trainable)")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    positive = [r.get(k) for r in rows for k in ("loss", "val_loss")
                if r.get(k) is not None and r.get(k) > 0]
    if positive and max(positive) / min(positive) > 30:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=90)
