"""train.py and the two-stage schedule on a generated data set (tiny-YOLOv3, 64 px)."""
import csv
import dataclasses
import json
import os
import sys

import h5py
import keras
import numpy as np
import pytest

import train
from yolo3.demo import make_dataset
from yolo3.distribute import has_accelerator, use_xla
from yolo3.errors import UserError, run_cli
from yolo3.kinds import KINDS
from yolo3.model import tiny_yolo_body
from yolo3.trainer import TrainConfig, Trainer, _weights_choice, plan_stages, split_lines
from yolo3.weights import load_weights, read_weights, save_weights

TINY_OUTPUTS = {"conv_015", "conv_022"}   # tiny-YOLOv3's output convolutions


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    paths = make_dataset(str(folder), num_images=24, size=64, seed=3)
    keras.utils.set_random_seed(0)
    body = tiny_yolo_body(keras.Input((64, 64, 3)), 3, 3)
    paths["weights"] = str(folder / "pretrained.weights.h5")
    save_weights(body, paths["weights"])
    return paths


def config(data, log_dir, **kw):
    base = dict(annotations=data["annotations"], classes=data["classes"],
                anchors=data["anchors"], weights=data["weights"], log_dir=str(log_dir),
                input_shape=(64, 64), batch_size=4, unfreeze_batch_size=4, freeze_epochs=1,
                epochs=2, val_split=0.25, checkpoint_period=1, jit=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def two_stage(data, tmp_path_factory):
    """Both stages on a non-square input: --input-size 96x64 (64 high, 96 wide)."""
    log_dir = tmp_path_factory.mktemp("run")
    shape = train.build_parser().parse_args(["--input-size", "96x64"]).input_shape
    assert shape == (64, 96)
    trainer = Trainer(config(data, log_dir, eval_every=2, jit="auto", input_shape=shape),
                      verbose=0)
    result = trainer.run()
    return trainer, result, log_dir


def test_two_stage_run_writes_every_file(two_stage):
    trainer, result, log_dir = two_stage
    assert result.status == 0 and result.epochs_done == 2
    names = set(os.listdir(log_dir))
    assert {"trained_weights_stage_1.weights.h5", "trained_weights_final.weights.h5",
            "training_log.csv", "loss.png", "train_state", "train",
            "validation"} <= names
    checkpoints = [n for n in names if n.startswith("ep")]
    assert checkpoints and all(
        n.startswith(("ep001-loss", "ep002-loss")) and "-val_loss" in n
        and n.endswith(".weights.h5") for n in checkpoints)
    assert not [n for n in names if ".tmp-" in n]
    with open(log_dir / "training_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["epoch"], r["stage"]) for r in rows] == [("1", "1"), ("2", "2")]
    assert float(rows[0]["lr"]) == pytest.approx(1e-3)
    assert float(rows[1]["lr"]) == pytest.approx(1e-4)
    assert {"loss", "val_loss", "yolo_loss_metric"} <= set(rows[0])
    assert rows[0]["val_mAP50"] == "nan" and 0 <= float(rows[1]["val_mAP50"]) <= 1
    assert (log_dir / "best_map50.weights.h5").exists()
    assert tuple(trainer.body.input_shape[1:3]) == (64, 96)
    assert [tuple(o.shape[1:3]) for o in trainer.body.outputs] == [(2, 3), (4, 6)]
    state = json.loads((log_dir / "train_state" / "state.json").read_text())
    assert state["fingerprint"]["input_shape"] == [64, 96]


def test_xla_by_default_only_on_accelerators(two_stage):
    trainer = two_stage[0]
    if has_accelerator() or keras.backend.backend() != "tensorflow":
        pytest.skip("the CPU-only TensorFlow case is checked here")
    assert trainer.model.jit_compile is False     # oneDNN without XLA is faster on CPU
    parse = train.build_parser().parse_args
    assert parse([]).jit == "auto"
    assert parse(["--jit"]).jit is True and parse(["--no-jit"]).jit is False
    assert use_xla(True) is True and use_xla(False) is False and use_xla("auto") is False
    # the bottleneck head (small convolutions, the loss's elementwise ops) gains from it
    assert use_xla("auto", head_only=True) is True and use_xla(False, head_only=True) is False
    with pytest.raises(UserError, match="not allowed with"):
        parse(["--jit", "--no-jit"])


def test_stage_one_trains_only_the_output_convolutions(data, two_stage):
    _, _, log_dir = two_stage
    before = read_weights(data["weights"])
    stage1 = read_weights(log_dir / "trained_weights_stage_1.weights.h5")
    final = read_weights(log_dir / "trained_weights_final.weights.h5")
    assert set(stage1) == set(before)
    for name in before:
        same = all(np.array_equal(a, b) for a, b in zip(before[name], stage1[name]))
        assert same == (name not in TINY_OUTPUTS), name
    # stage 2 trains every layer (BatchNorm statistics included)
    for name in ("conv_000", "bn_000", "conv_013", "conv_022"):
        assert not all(np.array_equal(a, b) for a, b in zip(stage1[name], final[name]))


def test_saved_body_loads_into_tiny_yolo_body_with_same_outputs(two_stage):
    trainer, _, log_dir = two_stage
    fresh = tiny_yolo_body(keras.Input((64, 96, 3)), 3, 3)
    loaded, skipped = load_weights(fresh, log_dir / "trained_weights_final.weights.h5")
    assert not skipped
    images = np.random.default_rng(1).random((2, 64, 96, 3), np.float32)
    for mine, theirs in zip(fresh(images), trainer.body(images)):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), atol=1e-5)


class StopAfter(keras.callbacks.Callback):
    """Ctrl-C at the end of a given epoch (after the resume state is written)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


def test_interrupt_then_resume_gives_the_same_schedule(data, tmp_path, capsys):
    cfg = config(data, tmp_path, weights="none", freeze_epochs=2, epochs=4,
                 checkpoint_period=2, resume=True, tensorboard=False)
    first = Trainer(cfg, callbacks=[StopAfter(3)], verbose=0).run()
    assert "no saved state" in capsys.readouterr().out
    (tmp_path / "train_state" / ".state.json.tmp-x").write_text("{")   # killed write
    assert first.status == 130 and first.epochs_done == 3   # broke after epoch 3
    assert (tmp_path / "interrupted.weights.h5").exists()
    assert "trained_weights_final.weights.h5" not in os.listdir(tmp_path)

    trainer = Trainer(cfg, verbose=0)
    second = trainer.run()
    assert "continuing after epoch 3 (stage 2" in capsys.readouterr().out
    assert second.status == 0 and second.epochs_done == 4
    # optimizer state came back: stage 2 ran 2 epochs of 4 steps on one Adam
    assert int(np.asarray(trainer.model.optimizer.iterations)) == 8
    with open(tmp_path / "training_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["epoch"], r["stage"]) for r in rows] == [
        ("1", "1"), ("2", "1"), ("3", "2"), ("4", "2")]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert ".state.json.tmp-x" not in os.listdir(tmp_path / "train_state")
    for name in os.listdir(tmp_path):
        if name.endswith(".h5"):
            with h5py.File(tmp_path / name) as f:
                assert len(f.keys())
    third = Trainer(cfg, verbose=0).run()
    assert third.status == 0 and "already finished" in capsys.readouterr().out


def test_loss_goes_down_on_a_fixed_batch_without_validation(data, tmp_path, capsys):
    lines = open(data["annotations"]).read().splitlines()[:4]
    annotations = tmp_path / "four.txt"
    annotations.write_text("\n".join(lines) + "\n")
    cfg = config(data, tmp_path / "log", annotations=str(annotations), weights="none",
                 val_split=0, augment=False, batch_size=8, freeze_epochs=8, epochs=8,
                 checkpoint_period=4, tensorboard=False)
    result = Trainer(cfg, verbose=0).run()
    out = capsys.readouterr().out
    assert "monitor the training loss" in out and "using 4" in out
    assert result.status == 0
    with open(tmp_path / "log" / "training_log.csv", newline="") as handle:
        losses = [float(r["loss"]) for r in csv.DictReader(handle)]
    # only stage 1 ran (--epochs 8 = --freeze-epochs 8): its weights are final too
    assert (tmp_path / "log" / "trained_weights_final.weights.h5").exists()
    assert losses[-1] < 0.5 * losses[0]
    assert any(n.startswith("ep008-loss") and "val" not in n
               for n in os.listdir(tmp_path / "log"))


def test_bottleneck_stage_one_caches_the_features_and_reuses_them(data, tmp_path, capsys):
    cfg = config(data, tmp_path, bottleneck=True, epochs=1, tensorboard=False)
    assert Trainer(cfg, verbose=0).run().status == 0
    assert "computing train features" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "bottleneck")) == 2      # train and val caches
    Trainer(cfg, verbose=0).run()
    assert "reusing cached train features" in capsys.readouterr().out


def test_split_is_the_originals():
    lines = [f"img{i}.jpg 1,1,5,5,0" for i in range(23)]
    expected = list(lines)
    np.random.seed(47)
    np.random.shuffle(expected)
    np.random.seed(None)
    train_lines, val_lines = split_lines(lines, 0.1, 47)
    assert train_lines == expected[:21] and val_lines == expected[21:]


def test_default_plan_is_the_seeds():
    one, two = plan_stages(50, 100, 1e-3, 1e-4, 32, 32)
    assert (one.first_epoch, one.end_epoch, one.lr, one.batch_size) == (0, 50, 1e-3, 32)
    assert (two.first_epoch, two.end_epoch, two.lr, two.batch_size) == (50, 100, 1e-4, 32)
    assert [s.number for s in plan_stages(0, 5, 1e-3, 1e-4, 2, 2)] == [2]


def test_missing_default_weights_trains_from_scratch_unfrozen(tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)
    assert _weights_choice(TrainConfig(), KINDS["yolov3-tiny"]) == (None, 0)
    assert "model_data/tiny_yolo_weights.h5 not found" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--input-size", "100"], "multiple of 32"),
    (["--weights", "missing.h5"], "missing.h5"),
    (["--annotations", "nowhere.txt"], "nowhere.txt"),
    (["--bogus"], "unrecognized arguments"),
    (["--freeze-body", "3"], "invalid choice"),
    (["--strategy", "ring"], "invalid choice"),
    (["--epochs", "-1"], "negative"),
    (["--val-split", "0.04"], "at least 25 lines"),
])
def test_cli_errors_exit_2_with_one_line(data, tmp_path, capsys, argv, message):
    args = ["--annotations", data["annotations"], "--classes", data["classes"],
            "--anchors", data["anchors"], "--log-dir", str(tmp_path), "--weights",
            data["weights"]] + argv
    assert run_cli(train.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_model_flag_chooses_the_kind_and_must_fit_the_anchors(data, tmp_path, capsys):
    # 6 anchors: tiny by default and when named; naming a 9-anchor kind is an error
    trainer = Trainer(config(data, tmp_path, model="yolov3-tiny"), verbose=0)
    assert trainer.kind is KINDS["yolov3-tiny"]
    assert trainer.resume_store.fingerprint["model"] == "yolov3-tiny"
    args = ["--annotations", data["annotations"], "--classes", data["classes"],
            "--anchors", data["anchors"], "--log-dir", str(tmp_path / "spp"),
            "--model", "yolov3-spp"]
    assert run_cli(train.main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "6 anchors" in err
    assert "yolov3-spp" in train.build_parser().format_help()


def test_flags_are_the_config_fields_with_its_defaults():
    args = vars(train.build_parser().parse_args([]))
    assert args.pop("demo") is False
    assert args == dataclasses.asdict(TrainConfig())
    assert train.config_from_args(train.build_parser().parse_args(
        ["--no-augment", "--input-size", "320", "--no-tensorboard"])) == TrainConfig(
        augment=False, input_shape=(320, 320), tensorboard=False)


def test_train_py_reexports_the_originals_helpers():
    for name in ("get_classes", "get_anchors", "create_model", "create_tiny_model",
                 "data_generator", "data_generator_wrapper"):
        assert callable(getattr(train, name))
    assert "--demo" in train.build_parser().format_help()
    assert sys.modules["train"] is train


def test_validation_is_not_augmented_unless_asked(data, tmp_path, monkeypatch):
    import yolo3.trainer as trainer_module
    made = []
    original = trainer_module.YoloDataset

    def recording(lines, batch, *args, **kwargs):
        made.append((len(lines), kwargs["augment"], kwargs["shuffle"],
                     kwargs["exif_transpose"]))
        return original(lines, batch, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "YoloDataset", recording)
    for flags, expected_val in (([], False), (["--augment-validation"], True)):
        made.clear()
        args = train.build_parser().parse_args(
            ["--annotations", data["annotations"], "--classes", data["classes"],
             "--anchors", data["anchors"], "--weights", data["weights"],
             "--log-dir", str(tmp_path / str(expected_val)), "--input-size", "64",
             "--batch-size", "4", "--freeze-epochs", "1", "--epochs", "1",
             "--val-split", "0.25", "--no-jit", "--exif-transpose", *flags])
        Trainer(train.config_from_args(args), verbose=0).run()
        train_set, val_set = made[0], made[1]
        assert train_set[0] == 18 and train_set[1:] == (True, True, True)
        assert val_set[0] == 6 and val_set[1:] == (expected_val, False, True)
