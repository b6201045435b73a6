"""`train.py --recipe modern` end to end on a tiny generated set (64 px,
tiny-YOLOv3 from scratch): every part switched on, killed mid-run and resumed;
with XLA, mixed precision and the mirrored strategy; and the combinations that are
refused."""
import csv
import math
import os

import pytest

from tests.fixtures import ROOT
from tests.test_kill_resume import check_files_load, make_data, run_killer

EVERY_PART = ["--recipe", "modern", "--mosaic", "1", "--mixup", "0.5", "--close-mosaic", "1",
              "--label-smoothing", "0.1", "--multi-scale", "64-96", "--scale-every", "1",
              "--accumulate", "2", "--eval-every", "1"]


def train(tmp_path, log_dir, *flags, kill=""):
    """train.py (through the killer wrapper) on the generated set: 8 training
    lines at batch 4, 1 frozen epoch then 2 more."""
    data = tmp_path / "data"
    argv = ["--annotations", str(data / "train.txt"), "--classes", str(data / "classes.txt"),
            "--anchors", str(ROOT / "model_data" / "tiny_yolo_anchors.txt"),
            "--weights", "none", "--freeze-body", "0", "--log-dir", str(log_dir),
            "--input-size", "64", "--batch-size", "4", "--unfreeze-batch-size", "4",
            "--freeze-epochs", "1", "--epochs", "3", "--val-split", "0.2",
            "--checkpoint-period", "1", "--no-tensorboard", *flags]
    return run_killer(tmp_path, argv, kill)


def warmup_cosine(step, base, total, warmup, final):
    """The rate by its definition: linear from 0 to base over `warmup` steps, then
    half a cosine down to base * final at `total`."""
    if step < warmup:
        return base * step / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_every_part_killed_and_resumed(tmp_path):
    make_data(tmp_path / "data")
    log_dir = tmp_path / "logs"
    # batch 3 is the first batch of epoch 2 (2 batches per epoch)
    killed = train(tmp_path, log_dir, *EVERY_PART, kill="batch:3")
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = train(tmp_path, log_dir, *EVERY_PART, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing after epoch 1" in resumed.stdout
    with open(log_dir / "training_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all("val_mAP50" in r and r["val_mAP50"] != "" for r in rows)
    # the rate at each epoch end: stage 1 = 2 batches (warmup 2), stage 2 = 4 (warmup 2)
    # (stage 1 ends where its warmup ends: the full rate)
    expected = [1e-3, warmup_cosine(2, 3e-4, 4, 2, 0.05),
                warmup_cosine(4, 3e-4, 4, 2, 0.05)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected, rel=1e-5)
    assert expected[2] == pytest.approx(1.5e-5)
    names = set(os.listdir(log_dir))
    assert {"trained_weights_final.weights.h5", "best_map50.weights.h5"} <= names
    assert any(n.startswith("ema-") for n in os.listdir(log_dir / "train_state"))
    check_files_load(log_dir)


def test_xla_mixed_precision_and_mirrored(tmp_path):
    make_data(tmp_path / "data")
    log_dir = tmp_path / "logs"
    run = train(tmp_path, log_dir, "--recipe", "modern", "--jit", "--mixed-precision",
                "--strategy", "mirrored")
    assert run.returncode == 0, run.stderr[-2000:]
    with open(log_dir / "training_log.csv", newline="") as handle:
        losses = [float(r["loss"]) for r in csv.DictReader(handle)]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("flags, message", [
    (["--bottleneck", "--weights", "w.h5", "--mosaic", "0.5"],
     "--bottleneck trains stage 1 on cached, un-augmented features: it cannot be "
     "combined with --mosaic"),
    (["--recipe", "modern", "--weight-decay", "0.01", "--optimizer", "adam"],
     "--weight-decay 0.01 with --optimizer adam"),
    (["--recipe", "modern", "--multi-scale", "64-90"], "--multi-scale 64-90: LOW <= HIGH"),
])
def test_refused_in_one_line(tmp_path, flags, message, capsys, monkeypatch):
    import train as train_py
    from yolo3.errors import run_cli
    data = make_data(tmp_path / "data")
    (tmp_path / "w.h5").write_bytes(b"")
    argv = ["--annotations", str(data / "train.txt"), "--classes", str(data / "classes.txt"),
            "--anchors", str(ROOT / "model_data" / "tiny_yolo_anchors.txt"),
            "--log-dir", str(tmp_path / "logs"), *flags]
    monkeypatch.chdir(tmp_path)
    assert run_cli(train_py.main, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "logs").exists()      # refused before anything is written
