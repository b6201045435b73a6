"""Resume state: what a run saves after every completed epoch, how `--resume`
puts it back, and the sweep of temporaries a killed writer left behind.

Saved in <log dir>/train_state/: the body's weights, the optimizer's variables,
with --ema the averaged weights (yolo3.ema), and state.json (epoch, stage, learning rate, the states of the callbacks that
carry over between stages, and a fingerprint of the run: model kind, classes, anchors,
mask, input shape). The weights and optimizer files are written first under
epoch-numbered names, then the JSON naming them, each atomically, so a kill at
any moment leaves a consistent state behind."""
import contextlib
import json
import os

import keras
import numpy as np

from .atomic import TEMP_MARK, atomic_open, atomic_path
from .callbacks import current_lr, finite
from .errors import UserError
from .weights import load_weights, save_weights

STATE_DIR = "train_state"
STATE_FILE = "state.json"


def run_fingerprint(kind, class_names, anchors, mask, input_shape):
    """What a resumed run must share with the saved one (JSON types, so that it
    compares equal to the fingerprint read back from state.json)."""
    return {"model": kind, "classes": list(class_names), "anchors": np.asarray(anchors).tolist(),
            "mask": [[int(i) for i in head] for head in mask],
            "input_shape": [int(v) for v in input_shape]}


def write_state(folder, body, optimizer, state, ema=None):
    """Write the weights, the optimizer's variables (when it has any), the
    WeightEMA `ema` (when given) and then state.json naming them; remove the
    files of earlier epochs."""
    os.makedirs(folder, exist_ok=True)
    tag = f"e{state['epoch']:04d}-s{state['stage']}"
    state = dict(state, version=1, weights=f"weights-{tag}.weights.h5")
    save_weights(body, os.path.join(folder, state["weights"]))
    if optimizer is not None and optimizer.variables:
        state["optimizer"] = f"optimizer-{tag}.npz"
        arrays = {f"v{i:05d}": keras.ops.convert_to_numpy(v)
                  for i, v in enumerate(optimizer.variables)}
        arrays["paths"] = np.array([v.path for v in optimizer.variables])
        with atomic_path(os.path.join(folder, state["optimizer"])) as temp:
            with open(temp, "wb") as handle:
                np.savez(handle, **arrays)
    if ema is not None:
        state["ema"] = f"ema-{tag}.npz"
        ema.save_state(os.path.join(folder, state["ema"]))
    with atomic_open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=1)
    keep = {state["weights"], state.get("optimizer"), state.get("ema"), STATE_FILE}
    for name in os.listdir(folder):
        if name not in keep and name.startswith(("weights-", "optimizer-", "ema-")):
            os.remove(os.path.join(folder, name))


def read_state(folder):
    """The saved state dict, or None when there is none (or it is unreadable)."""
    path = os.path.join(folder, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != 1:
        return None
    if not os.path.exists(os.path.join(folder, state.get("weights", ""))):
        return None
    return state


def restore_weights(folder, state, body):
    load_weights(body, os.path.join(folder, state["weights"]), skip_mismatch=False)


def restore_optimizer(folder, state, model):
    """Put the saved optimizer variables back; False when they do not fit."""
    name = state.get("optimizer")
    if not name:
        return False
    with np.load(os.path.join(folder, name), allow_pickle=False) as data:
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        variables = optimizer.variables
        if len(data.files) - 1 != len(variables):
            return False
        arrays = [data[f"v{i:05d}"] for i in range(len(variables))]
        if any(tuple(a.shape) != tuple(v.shape) for a, v in zip(arrays, variables)):
            return False
        for array, variable in zip(arrays, variables):
            variable.assign(array)
    return True


def sweep_temporaries(folder):
    """Delete the temporaries (yolo3.atomic's names) a killed writer left in
    `folder`; return their names."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.startswith(".") and TEMP_MARK in name:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
                    removed.append(name)
    return removed


def stage_end_unsaved(first_epoch, stage_end, weights_path):
    """A run killed after a stage's last epoch but before the stage's weights file
    was written: the restored state holds those weights, to be written now."""
    return first_epoch == stage_end and not os.path.exists(weights_path)


class SaveState(keras.callbacks.Callback):
    """After every completed epoch with a finite loss: the resume state."""

    def __init__(self, store, stage):
        super().__init__()
        self.store, self.stage = store, stage

    def on_epoch_end(self, epoch, logs=None):
        if finite(logs):
            self.store.save(self.model, self.stage, epoch + 1)


class ResumeStore:
    """The resume state of one run in <log_dir>/train_state: `carried` maps names
    to the callbacks (get_state/set_state) whose state is saved with it; `ema`:
    the run's WeightEMA or None."""

    def __init__(self, log_dir, body, fingerprint, carried, ema=None):
        self.log_dir, self.folder = log_dir, os.path.join(log_dir, STATE_DIR)
        self.body, self.fingerprint, self.carried = body, fingerprint, carried
        self.ema = ema

    def saver(self, stage):
        """The callback that saves the state after each epoch of `stage`."""
        return SaveState(self, stage)

    def save(self, model, stage, epoch):
        write_state(self.folder, self.body, model.optimizer, {
            "epoch": epoch, "stage": stage, "lr": current_lr(model),
            "callbacks": {k: cb.get_state() for k, cb in self.carried.items()},
            "fingerprint": self.fingerprint, "finished": False}, self.ema)

    def restore(self):
        """For --resume: remove leftover temporaries, read the state, check that it
        belongs to this run, put the body's weights and the carried callbacks'
        states back. Returns (first epoch to train, state or None)."""
        for folder in (self.log_dir, self.folder):
            for name in sweep_temporaries(folder):
                print(f"--resume: removed {os.path.join(folder, name)} (unfinished write)")
        state = read_state(self.folder)
        if state is None:
            print(f"--resume: no saved state in {self.folder}; starting fresh")
            return 0, None
        if state.get("fingerprint") != self.fingerprint:
            raise UserError(f"{self.folder}: the saved run used another model, classes, anchors, "
                            "mask or input size; drop --resume or use another --log-dir")
        restore_weights(self.folder, state, self.body)
        if self.ema is not None:
            self.restore_ema(state)
        for name, callback in self.carried.items():
            callback.set_state(state["callbacks"][name])
        print(f"--resume: continuing after epoch {state['epoch']} (stage "
              f"{state['stage']}, lr {state['lr']:g}) from {self.folder}")
        return int(state["epoch"]), state

    def restore_ema(self, state):
        """The saved average, or (none saved, or it does not fit) a new average
        starting at the restored weights."""
        name = state.get("ema")
        if name and self.ema.load_state(os.path.join(self.folder, name)):
            return
        print("note: no fitting saved weight average; the average starts afresh")
        self.ema.reset()

    def restore_optimizer(self, state, stage, first_epoch, model):
        """Within a resumed stage (not at its start): Adam's moments and the
        learning rate (ReduceLROnPlateau may have lowered it) as saved."""
        if state is None or state["stage"] != stage.number or (
                first_epoch <= stage.first_epoch):
            return
        if not restore_optimizer(self.folder, state, model):
            print("note: the saved optimizer state does not fit; Adam starts afresh")
        if isinstance(model.optimizer.learning_rate, keras.Variable):   # not a schedule
            model.optimizer.learning_rate.assign(state["lr"])

    def saved_epoch(self, default):
        """The last epoch in the saved state (`default` when there is none)."""
        state = read_state(self.folder)
        return state["epoch"] if state else default

    def finish(self, epochs_done):
        """Mark the run finished: a later --resume has nothing to do."""
        state = read_state(self.folder) or {
            "epoch": epochs_done, "stage": 2, "lr": 0.0, "callbacks": {},
            "fingerprint": self.fingerprint}
        state.update(finished=True, epoch=epochs_done)
        write_state(self.folder, self.body, None, state)
