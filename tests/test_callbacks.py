"""Training callbacks: periodic best checkpoint, resumable Keras callbacks, the
epoch log and plot, the NaN guard."""
import csv
import math
import os

import h5py
import keras
import numpy as np
import pytest

from tests.fixtures.models import small_model
from yolo3.callbacks import (EpochLog, NaNGuard, PeriodCheckpoint,
                             ResumableEarlyStopping, ResumableReduceLROnPlateau)


def test_period_checkpoint_saves_best_every_third_epoch_and_carries_over(tmp_path):
    body = small_model()
    checkpoint = PeriodCheckpoint(body, str(tmp_path), period=3, verbose=0)
    # val_loss by epoch (1-based): checked at epochs 3, 6, 9, 12 only.
    val_losses = [9, 1, 5, 7, 7, 6, 2, 2, 8, 0.5, 9, 3]
    for epoch, value in enumerate(val_losses[:5]):       # "stage 1": epochs 1..5
        checkpoint.on_epoch_end(epoch, {"loss": 1.0, "val_loss": value})
    carried = checkpoint.get_state()
    assert carried == {"best": 5.0, "epochs_since_last_save": 2}
    stage2 = PeriodCheckpoint(body, str(tmp_path), period=3, verbose=0)
    stage2.set_state(carried)
    for epoch in range(5, 12):                            # "stage 2": epochs 6..12
        stage2.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_losses[epoch]})
    # epoch 3: 5 < inf saved; 6: 6 > 5 no; 9: 8 no; 12: 3 < 5 saved.
    names = sorted(os.listdir(tmp_path))
    assert names == ["ep003-loss1.000-val_loss5.000.weights.h5",
                     "ep012-loss1.000-val_loss3.000.weights.h5"]
    with h5py.File(tmp_path / names[1]) as f:     # body weights, by layer name
        assert sorted(f.keys()) == ["conv_001", "conv_002"]


def test_period_checkpoint_ignores_nan_epochs_and_monitors_loss(tmp_path):
    checkpoint = PeriodCheckpoint(small_model(), str(tmp_path), monitor="loss",
                                  period=1, verbose=0)
    checkpoint.on_epoch_end(0, {"loss": math.nan})
    checkpoint.on_epoch_end(1, {"loss": 2.5})
    assert os.listdir(tmp_path) == ["ep002-loss2.500.weights.h5"]


@pytest.mark.parametrize("cls,keys", [(ResumableReduceLROnPlateau, ("best", "wait")),
                                      (ResumableEarlyStopping, ("best", "wait"))])
def test_resumable_callbacks_keep_state_through_on_train_begin(cls, keys):
    callback = cls(monitor="val_loss", patience=3)
    callback.set_model(small_model())
    callback.set_state({"best": 0.25, "wait": 2, "cooldown_counter": 0})
    callback.on_train_begin()
    assert callback.best == 0.25 and callback.wait == 2
    assert callback.get_state()["wait"] == 2
    callback.on_train_begin()      # a later fit without saved state resets
    assert callback.wait == 0


def test_restored_reduce_lr_reduces_on_schedule():
    """patience 3, 2 epochs without improvement saved: one more reduces the lr."""
    model = small_model()
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    callback = ResumableReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=3,
                                          verbose=0)
    callback.set_model(model)
    callback.set_state({"best": 1.0, "wait": 2, "cooldown_counter": 0})
    callback.on_train_begin()
    callback.on_epoch_end(10, {"val_loss": 1.5})
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)


def test_epoch_log_writes_csv_and_plot(tmp_path):
    model = small_model()
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    log = EpochLog(str(tmp_path / "log.csv"), str(tmp_path / "loss.png"),
                   stage_boundary=2)
    log.set_model(model)
    for epoch in range(4):
        log.stage = 1 if epoch < 2 else 2
        log.on_epoch_end(epoch, {"loss": 10.0 - epoch, "val_loss": 11.0 - epoch,
                                 "yolo_loss_metric": 9.0 - epoch})
    with open(tmp_path / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["stage"] for r in rows] == ["1", "1", "2", "2"]
    assert float(rows[3]["loss"]) == 7.0 and float(rows[0]["lr"]) == pytest.approx(1e-3)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["epoch"] for r in EpochLog.read_rows(str(tmp_path / "log.csv"), 2)] == [1, 2]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_nan_guard_stops_and_keeps_last_good_weights(tmp_path, capsys):
    model = small_model()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.ones((8, 3), np.float32)
    y = np.zeros((8, 1), np.float32)
    y[5] = np.nan                       # the 6th batch (batch size 1) breaks the loss
    good = model.get_weights()
    guard = NaNGuard(model, str(tmp_path))
    history = model.fit(x, y, batch_size=1, epochs=3, verbose=0, shuffle=False,
                        callbacks=[guard])
    assert len(history.epoch) == 1
    assert "epoch 1, batch 6" in guard.tripped and "learning rate" in guard.tripped
    saved = tmp_path / "last_good.weights.h5"
    with h5py.File(saved) as f:
        np.testing.assert_array_equal(f["conv_001"]["0"][()], good[0])
    for now, before in zip(model.get_weights(), good):   # the model is put back too
        np.testing.assert_array_equal(now, before)
