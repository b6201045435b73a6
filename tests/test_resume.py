"""The resume state: its files, what --resume restores, the fingerprint check,
the sweep of leftover temporaries and the rule for a stage killed at its end."""
import json
import os

import keras
import numpy as np
import pytest

from tests.fixtures.models import small_model
from yolo3.callbacks import PeriodCheckpoint
from yolo3.ema import WeightEMA
from yolo3.errors import UserError
from yolo3.optimization import WarmupCosine
from yolo3.resume import (ResumeStore, read_state, restore_optimizer, restore_weights,
                          run_fingerprint, stage_end_unsaved, sweep_temporaries,
                          write_state)
from yolo3.trainer import Stage


def trained_model(seed=1, epochs=2, optimizer=None):
    model = small_model(seed)
    model.compile(optimizer or keras.optimizers.Adam(1e-2), "mse")
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    model.fit(x, x[:, :1], epochs=epochs, batch_size=4, verbose=0)
    return model


FINGERPRINT = run_fingerprint("yolov3-tiny", ["a", "b"], np.array([[10, 14], [23, 27]], np.float32),
                               [(1,), (0,)], (64, 96))


def test_fingerprint_survives_json():
    assert FINGERPRINT == {"model": "yolov3-tiny", "classes": ["a", "b"], "anchors": [[10, 14], [23, 27]],
                           "mask": [[1], [0]], "input_shape": [64, 96]}
    assert json.loads(json.dumps(FINGERPRINT)) == FINGERPRINT


def test_state_round_trip_with_optimizer(tmp_path):
    model = trained_model()
    write_state(str(tmp_path), model, model.optimizer,
                {"epoch": 2, "stage": 1, "lr": 1e-2, "callbacks": {}})
    write_state(str(tmp_path), model, model.optimizer,       # replaces epoch 2's files
                {"epoch": 3, "stage": 1, "lr": 1e-2, "callbacks": {}})
    assert sorted(os.listdir(tmp_path)) == [
        "optimizer-e0003-s1.npz", "state.json", "weights-e0003-s1.weights.h5"]
    state = read_state(str(tmp_path))
    assert state["epoch"] == 3

    other = small_model(2)
    other.compile(keras.optimizers.Adam(1e-2), "mse")
    restore_weights(str(tmp_path), state, other)
    assert restore_optimizer(str(tmp_path), state, other)
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(other.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(np.asarray(other.optimizer.iterations)) == 8      # 2 epochs x 4 steps


def test_read_state_missing_or_damaged_is_none(tmp_path):
    assert read_state(str(tmp_path)) is None
    (tmp_path / "state.json").write_text("{truncated")
    assert read_state(str(tmp_path)) is None
    (tmp_path / "state.json").write_text(json.dumps({"version": 1, "weights": "gone.h5"}))
    assert read_state(str(tmp_path)) is None


def test_sweep_removes_only_temporaries(tmp_path):
    for name in (".state.json.tmp-k1x", ".ep003.weights.h5.tmp-9", ".hidden",
                 "ep003.weights.h5", "notes.tmp-1"):
        (tmp_path / name).write_text("x")
    assert sorted(sweep_temporaries(str(tmp_path))) == [
        ".ep003.weights.h5.tmp-9", ".state.json.tmp-k1x"]
    assert sorted(os.listdir(tmp_path)) == [".hidden", "ep003.weights.h5", "notes.tmp-1"]
    assert sweep_temporaries(str(tmp_path / "absent")) == []


def store(log_dir, body, fingerprint=FINGERPRINT, ema=None):
    checkpoint = PeriodCheckpoint(body, str(log_dir), period=3, verbose=0)
    return ResumeStore(str(log_dir), body, fingerprint, {"checkpoint": checkpoint}, ema)


def test_restore_puts_weights_and_carried_states_back(tmp_path, capsys):
    assert store(tmp_path, small_model()).restore() == (0, None)
    assert "no saved state" in capsys.readouterr().out

    model = trained_model()
    saving = store(tmp_path, model)
    saving.carried["checkpoint"].set_state({"best": 0.5, "epochs_since_last_save": 2})
    saving.save(model, stage=2, epoch=7)
    (tmp_path / ".training_log.csv.tmp-x").write_text("half")         # a killed write
    (tmp_path / "train_state" / ".state.json.tmp-y").write_text("{")

    fresh = small_model(5)
    restoring = store(tmp_path, fresh)
    first, state = restoring.restore()
    out = capsys.readouterr().out
    assert first == 7 and state["stage"] == 2 and state["lr"] == pytest.approx(1e-2)
    assert "continuing after epoch 7 (stage 2, lr 0.01)" in out
    assert out.count("(unfinished write)") == 2
    assert not [n for n in os.listdir(tmp_path / "train_state") if ".tmp-" in n]
    assert restoring.carried["checkpoint"].get_state() == {
        "best": 0.5, "epochs_since_last_save": 2}
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)

    # the optimizer comes back only within the saved stage, after its first epoch
    fresh.compile(keras.optimizers.Adam(1e-3), "mse")
    restoring.restore_optimizer(state, Stage(2, 5, 10, 1e-4, 4), 5, fresh)
    assert int(np.asarray(fresh.optimizer.iterations)) == 0
    restoring.restore_optimizer(state, Stage(2, 5, 10, 1e-4, 4), 7, fresh)
    assert int(np.asarray(fresh.optimizer.iterations)) == 8
    assert float(np.asarray(fresh.optimizer.learning_rate)) == pytest.approx(1e-2)


def test_restore_refuses_another_runs_state(tmp_path):
    model = trained_model()
    store(tmp_path, model).save(model, stage=1, epoch=1)
    other = dict(FINGERPRINT, input_shape=[96, 64])
    with pytest.raises(UserError, match="another model, classes, anchors, mask or input size"):
        store(tmp_path, small_model(), other).restore()


def test_finish_marks_the_last_state_finished(tmp_path):
    model = trained_model()
    saving = store(tmp_path, model)
    assert saving.saved_epoch(4) == 4
    saving.save(model, stage=2, epoch=3)
    saving.finish(3)
    state = read_state(str(tmp_path / "train_state"))
    assert state["finished"] is True and state["epoch"] == 3 and state["stage"] == 2
    assert saving.saved_epoch(4) == 3


def test_a_stage_killed_at_its_end_writes_its_weights_on_resume(tmp_path):
    weights = tmp_path / "trained_weights_stage_1.weights.h5"
    assert stage_end_unsaved(2, 2, str(weights))        # killed before the write
    assert not stage_end_unsaved(3, 2, str(weights))    # stage 2 ran after it
    weights.write_text("")
    assert not stage_end_unsaved(2, 2, str(weights))


def test_the_weight_average_goes_with_the_state(tmp_path, capsys):
    model = trained_model()
    ema = WeightEMA(model, decay=0.5, ramp=1)
    model.set_weights([w + 1 for w in model.get_weights()])
    ema.update()
    ema.update()
    saving = store(tmp_path, model, ema=ema)
    saving.save(model, stage=1, epoch=1)
    saving.save(model, stage=1, epoch=2)         # replaces epoch 1's files
    assert sorted(os.listdir(tmp_path / "train_state")) == [
        "ema-e0002-s1.npz", "optimizer-e0002-s1.npz", "state.json",
        "weights-e0002-s1.weights.h5"]
    fresh = small_model(5)
    restored = WeightEMA(fresh)
    store(tmp_path, fresh, ema=restored).restore()
    assert restored.updates == 2
    for a, b in zip(restored.shadow, ema.shadow):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    saving.finish(2)                              # keeps the average's file
    assert "ema-e0002-s1.npz" in os.listdir(tmp_path / "train_state")

    # a state saved without an average: a new one starts at the restored weights
    store(tmp_path / "plain", model).save(model, stage=1, epoch=1)
    fresh = small_model(5)
    restored = WeightEMA(fresh)
    restored.updates = 9
    store(tmp_path / "plain", fresh, ema=restored).restore()
    assert "the average starts afresh" in capsys.readouterr().out
    assert restored.updates == 0
    for a, b in zip(restored.shadow, model.get_weights()):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_a_scheduled_rate_is_left_to_its_schedule(tmp_path):
    def sgd():
        return keras.optimizers.SGD(WarmupCosine(0.1, 100, 10), momentum=0.9)
    model = trained_model(optimizer=sgd())
    saving = store(tmp_path, model)
    saving.save(model, stage=2, epoch=7)
    fresh = small_model(5)
    fresh.compile(sgd(), "mse")
    saving.restore_optimizer(read_state(str(tmp_path / "train_state")),
                             Stage(2, 5, 10, 1e-4, 4), 7, fresh)
    assert int(np.asarray(fresh.optimizer.iterations)) == 8
    assert float(np.asarray(fresh.optimizer.learning_rate)) == pytest.approx(0.08)
