"""Kill and resume: train.py in a subprocess on a tiny generated data set (64 px,
tiny-YOLOv3), killed with SIGKILL at several moments, resumed with --resume.

The kills are placed deterministically by a small wrapper around train.py that
counts events and SIGKILLs its own process: in the middle of an epoch (after a
training batch), in the middle of writing a checkpoint (the temporary file
half-written, before the rename) and between the stages (after the last stage-1
epoch, before trained_weights_stage_1 is written). After the last resume the run
must have done the whole schedule, every file in the log dir must load, the CSV
log must hold each epoch once, and no best checkpoint may be missing.
"""
import csv
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.fixtures import ROOT

# Runs train.py's main like `python train.py ...`, with one kill planted:
# KILL=batch:N    SIGKILL after the N-th training batch (counted over the process)
# KILL=sigint:N   SIGINT (Ctrl-C) after the N-th training batch
# KILL=write:PREFIX  SIGKILL while writing the first file whose name starts with
#                 PREFIX: its temporary is truncated to half, then the process dies
# KILL=before:PREFIX SIGKILL just before writing a file whose name starts with PREFIX
KILLER = r'''
import contextlib, os, signal, sys
kind, _, arg = os.environ.get("KILL", "").partition(":")

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "sigint":
    # Ctrl-C at a terminal reaches a program whose SIGINT is Python's handler. A
    # runner started in the background (`pytest &`) passes SIGINT on as ignored,
    # and Python then leaves it ignored: the interrupt would be lost (exit 0).
    signal.signal(signal.SIGINT, signal.default_int_handler)
if kind in ("batch", "sigint"):
    import keras
    seen = [0]
    original = keras.callbacks.CallbackList.on_train_batch_end
    def on_train_batch_end(self, batch, logs=None):
        original(self, batch, logs)
        seen[0] += 1
        if seen[0] == int(arg):
            if kind == "sigint":
                os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C
            else:
                die()
    keras.callbacks.CallbackList.on_train_batch_end = on_train_batch_end
elif kind in ("write", "before"):
    import yolo3.atomic as atomic
    original_path = atomic.atomic_path
    @contextlib.contextmanager
    def atomic_path(path):
        hit = os.path.basename(os.fspath(path)).startswith(arg)
        if hit and kind == "before":
            die()
        with original_path(path) as temp:
            yield temp
            if hit:
                with open(temp, "r+b") as handle:
                    handle.truncate(os.path.getsize(temp) // 2)
                die()
    atomic.atomic_path = atomic_path

import train
from yolo3.errors import run_cli
sys.exit(run_cli(train.main, sys.argv[1:]))
'''
FREEZE_EPOCHS, EPOCHS, LOG = 2, 4, "training_log.csv"


def make_data(folder, count=10, size=64, seed=0):
    """`count` images of one red or green rectangle on dark noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    lines = []
    for i in range(count):
        pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        w, h = (int(v) for v in rng.integers(12, 30, 2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        c = int(rng.integers(0, 2))
        pixels[y:y + h, x:x + w] = (220, 40, 40) if c == 0 else (40, 220, 40)
        path = folder / f"im{i}.png"
        Image.fromarray(pixels).save(path)
        lines.append(f"{path} {x},{y},{x + w},{y + h},{c}")
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("red\ngreen\n")
    return folder


def snapshot(folder):
    """{name: (size, mtime_ns, bytes)} of the data files (they must never change)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.iterdir())}


def train(tmp_path, log_dir, kill="", resume=False, freeze_epochs=FREEZE_EPOCHS,
          epochs=EPOCHS):
    data = tmp_path / "data"
    argv = ["--annotations", str(data / "train.txt"), "--classes",
            str(data / "classes.txt"), "--anchors",
            str(ROOT / "model_data" / "tiny_yolo_anchors.txt"), "--weights", "none",
            "--log-dir", str(log_dir), "--input-size", "64", "--batch-size", "4",
            "--unfreeze-batch-size", "4", "--freeze-epochs", str(freeze_epochs),
            "--epochs", str(epochs), "--val-split", "0.2", "--checkpoint-period", "1",
            "--no-jit"] + (["--resume"] if resume else [])
    return run_killer(tmp_path, argv, kill)


def run_killer(tmp_path, argv, kill=""):
    """`python train.py ARGV` through the KILLER wrapper, in tmp_path."""
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    env = dict(os.environ, KILL=kill, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3",
               MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(killer), *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)


def read_log(log_dir):
    with open(log_dir / LOG, newline="") as handle:
        return list(csv.DictReader(handle))


def checkpoints(log_dir):
    """{epoch: val_loss} from the checkpoint names epNNN-lossX-val_lossY.weights.h5."""
    found = {}
    for path in log_dir.glob("ep*.weights.h5"):
        match = re.fullmatch(r"ep(\d{3})-loss[-\d.]+-val_loss([-\d.]+)\.weights\.h5",
                             path.name)
        assert match, path.name
        found.setdefault(int(match.group(1)), []).append(float(match.group(2)))
    return found


def check_files_load(log_dir):
    """Every file the run wrote opens: weights into tiny_yolo_body, the optimizer
    arrays, the JSON state, the CSV and the PNG plot; no temporaries left."""
    import keras
    from yolo3.model import tiny_yolo_body
    from yolo3.weights import load_weights
    body = tiny_yolo_body(keras.Input((None, None, 3), name="image"), 3, 2)
    files = [p for p in log_dir.rglob("*") if p.is_file()]
    temporaries = [p.name for p in files if ".tmp-" in p.name]
    assert temporaries == []
    for path in files:
        if path.name.endswith(".h5"):
            loaded, skipped = load_weights(body, path, skip_mismatch=False)
            assert skipped == [] and len(loaded) == len(
                [layer for layer in body.layers if layer.weights]), path
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                assert all(np.all(np.isfinite(arrays[k])) for k in arrays.files
                           if arrays[k].dtype.kind == "f")
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
    return files


def test_kill_at_several_moments_then_resume(tmp_path):
    data = make_data(tmp_path / "data")
    before = snapshot(data)
    log_dir = tmp_path / "log"

    # 1. Mid-epoch: epochs have 2 batches, so batch 3 is the middle of epoch 2.
    run = train(tmp_path, log_dir, kill="batch:3")
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    assert [int(r["epoch"]) for r in read_log(log_dir)] == [1]

    # 2. While writing epoch 2's checkpoint: a half-written temporary, no ep002.
    run = train(tmp_path, log_dir, kill="write:ep002", resume=True)
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    assert "continuing after epoch 1" in run.stdout
    assert any(".tmp-" in p.name for p in log_dir.iterdir())
    assert 2 not in checkpoints(log_dir)

    # 3. Between the stages: stage 1 done and saved in the resume state, killed
    #    before trained_weights_stage_1 is written.
    run = train(tmp_path, log_dir, kill="before:trained_weights_stage_1", resume=True)
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    assert "continuing after epoch 1" in run.stdout
    assert not (log_dir / "trained_weights_stage_1.weights.h5").exists()

    # 4. The last resume runs stage 2 to the end.
    run = train(tmp_path, log_dir, resume=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"continuing after epoch {FREEZE_EPOCHS}" in run.stdout
    assert f"Done: {EPOCHS} epochs" in run.stdout

    # The full schedule, each epoch once, with the stages' learning rates.
    rows = read_log(log_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert [int(r["stage"]) for r in rows] == [1] * FREEZE_EPOCHS + [2] * (
        EPOCHS - FREEZE_EPOCHS)
    assert [float(r["lr"]) for r in rows] == pytest.approx(
        [1e-3] * FREEZE_EPOCHS + [1e-4] * (EPOCHS - FREEZE_EPOCHS))
    assert all(np.isfinite(float(r["val_loss"])) for r in rows)
    for name in ("trained_weights_stage_1", "trained_weights_final"):
        assert (log_dir / f"{name}.weights.h5").is_file(), name

    # Every epoch that improved val_loss (checked every epoch) has its checkpoint,
    # with the logged value; none is better than the best logged value.
    saved = checkpoints(log_dir)
    best = np.inf
    for row in rows:
        value = float(row["val_loss"])
        if value < best:
            best = value
            assert round(value, 3) in saved.get(int(row["epoch"]), []), (row, saved)
    assert min(min(v) for v in saved.values()) == pytest.approx(best, abs=1e-3)

    check_files_load(log_dir)
    # The annotation file and images were only read.
    assert snapshot(data) == before


def test_ctrl_c_saves_the_weights_and_exits_cleanly(tmp_path):
    """Ctrl-C in the middle of an epoch: the current weights are saved as
    `interrupted`, one error line says where and how to continue, exit status 130."""
    # 40 images: 8 batches an epoch, so the interrupt lands with batches to come
    make_data(tmp_path / "data", count=40)
    log_dir = tmp_path / "log"
    run = train(tmp_path, log_dir, kill="sigint:1", freeze_epochs=1, epochs=1)
    assert run.returncode == 130, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error:")]
    weights = log_dir / "interrupted.weights.h5"
    assert "interrupted" in line and str(weights) in line and "--resume" in line
    files = check_files_load(log_dir)
    assert weights in files
