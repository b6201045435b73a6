"""yolo3.ema.WeightEMA: the update against a hand computation, the ramp, applied()
restoring the live weights exactly, the saved state, and the callback in fit."""
import math

import keras
import numpy as np
import pytest

from yolo3.ema import WeightEMA
from yolo3.errors import UserError
from yolo3.optimization import make_optimizer


def bn_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="d1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="d2")(x))


def weights(variables):
    return [np.array(v, "float64") for v in variables]


def test_update_follows_the_formula_by_hand():
    model = bn_model()
    ema = WeightEMA(model, decay=0.9, ramp=2)
    assert len(ema.variables) == len(model.weights) == 8     # BN: gamma, beta, mean, var
    expected = weights(model.weights)
    rng = np.random.default_rng(0)
    for n in (1, 2, 3):
        new = [rng.normal(size=v.shape) for v in model.weights]
        model.set_weights(new)
        d = 0.9 * (1 - math.exp(-n / 2))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, new)]
        ema.update()
        assert ema.updates == n
        for got, want in zip(weights(ema.shadow), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_ramp():
    ema = WeightEMA(bn_model())
    assert ema.current_decay() == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    ema.updates = 299                          # the 300th update
    assert ema.current_decay() == pytest.approx(0.13928, abs=1e-5)
    ema.updates = 10 ** 6
    assert ema.current_decay() == pytest.approx(0.9999)
    assert WeightEMA(bn_model(), ramp=200, decay=0.9999).current_decay() < 0.005
    for kwargs, message in (({"decay": 1.0}, "--ema-decay 1.0"), ({"ramp": 0}, "EMA ramp 0")):
        with pytest.raises(UserError, match=message):
            WeightEMA(bn_model(), **kwargs)


def test_an_unchanged_weight_keeps_its_shadow_exactly():
    model = bn_model()
    ema = WeightEMA(model, decay=0.7, ramp=1)
    frozen = weights(model.weights)
    for _ in range(3):
        ema.update()
    for got, want in zip(weights(ema.shadow), frozen):
        np.testing.assert_array_equal(got, want)


def test_applied_puts_the_average_in_and_the_live_weights_back_exactly():
    model = bn_model()
    ema = WeightEMA(model, decay=0.5, ramp=1)
    model.set_weights([w + 1.0 for w in model.get_weights()])
    ema.update()
    live, shadow = weights(model.weights), weights(ema.shadow)
    assert not np.array_equal(live[0], shadow[0])
    with pytest.raises(RuntimeError):
        with ema.applied():
            for got, want in zip(weights(model.weights), shadow):
                np.testing.assert_array_equal(got, want)
            with ema.applied():                     # nested: stays in
                pass
            np.testing.assert_array_equal(weights(model.weights)[0], shadow[0])
            raise RuntimeError("inside the block")
    for got, want in zip(weights(model.weights), live):
        np.testing.assert_array_equal(got, want)


def test_save_and_load(tmp_path):
    model = bn_model()
    ema = WeightEMA(model, decay=0.5, ramp=1)
    model.set_weights([w * 2 for w in model.get_weights()])
    ema.update()
    ema.update()
    ema.save_state(tmp_path / "ema.npz")
    other = WeightEMA(bn_model(seed=5))
    assert other.load_state(tmp_path / "ema.npz")
    assert other.updates == 2
    for got, want in zip(weights(other.shadow), weights(ema.shadow)):
        np.testing.assert_array_equal(got, want)
    inputs = keras.Input((3,))
    different = WeightEMA(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    assert not different.load_state(tmp_path / "ema.npz") and different.updates == 0


def fit_data(n=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, x[:, :1] * 2 - x[:, 1:2]


@pytest.mark.parametrize("accumulate, updates", [(1, 8), (2, 4)])
def test_the_callback_updates_per_optimizer_step_and_validates_the_average(
        accumulate, updates):
    model = bn_model()
    model.compile(make_optimizer("sgd", 0.05, model, accumulate=accumulate), "mse",
                  jit_compile=False)
    ema = WeightEMA(model, decay=0.9, ramp=1)
    x, y = fit_data()
    history = model.fit(x, y, batch_size=2, epochs=2, validation_data=(x, y),
                        shuffle=False, verbose=0, callbacks=[ema, ema.restorer()])
    assert ema.updates == updates
    live = weights(model.weights)                  # the live weights are back
    assert not np.allclose(live[0], weights(ema.shadow)[0])
    with ema.applied():
        averaged = model.evaluate(x, y, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(averaged, rel=1e-6)
    assert model.evaluate(x, y, verbose=0) != pytest.approx(averaged, rel=1e-4)


# -- in a training run (tiny-YOLOv3, 64 px, as tests/test_train.py) --------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from yolo3.demo import make_dataset
    return make_dataset(str(tmp_path_factory.mktemp("data")), num_images=24, size=64,
                        seed=3)


class ShadowProbe(keras.callbacks.Callback):
    """Records the average by layer name at each epoch end and stage end; Ctrl-C
    at the end of epoch `stop` (after the resume state is written)."""

    def __init__(self, trainer, stop=None):
        super().__init__()
        self.trainer, self.stop, self.epochs, self.stages = trainer, stop, {}, []

    def averaged(self):
        ema = self.trainer.callbacks.ema
        index = {id(v): i for i, v in enumerate(ema.variables)}
        return {layer.name: [np.array(ema.shadow[index[id(v)]]) for v in layer.weights]
                for layer in self.trainer.body.layers if layer.weights}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch + 1] = self.averaged()
        if epoch + 1 == self.stop:
            raise KeyboardInterrupt

    def on_train_end(self, logs=None):
        self.stages.append(self.averaged())


def train(data, log_dir, stop=None):
    from yolo3.trainer import TrainConfig, Trainer
    cfg = TrainConfig(annotations=data["annotations"], classes=data["classes"],
                      anchors=data["anchors"], weights="none", log_dir=str(log_dir),
                      input_shape=(64, 64), batch_size=4, unfreeze_batch_size=4,
                      freeze_epochs=0, epochs=2, val_split=0.25, checkpoint_period=1,
                      jit=False, tensorboard=False, resume=True, ema=True, ema_decay=0.9)
    trainer = Trainer(cfg, verbose=0)
    probe = ShadowProbe(trainer, stop)
    trainer.extra_callbacks.append(probe)
    return trainer, probe, trainer.run()


def assert_file_holds(path, expected):
    from yolo3.weights import read_weights
    saved = read_weights(path)
    assert set(saved) == set(expected)
    for name, arrays in expected.items():
        for got, want in zip(saved[name], arrays):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_a_run_saves_the_average_and_resume_continues_it(data, tmp_path):
    trainer, probe, result = train(data, tmp_path, stop=1)
    assert result.status == 130 and result.epochs_done == 1
    assert trainer.callbacks.ema.updates == 4        # 18 lines // batch size 4
    assert_file_holds(tmp_path / "interrupted.weights.h5", probe.epochs[1])
    checkpoints = sorted(tmp_path.glob("ep*.weights.h5"))
    assert [p.name[:5] for p in checkpoints] == ["ep001"]
    assert_file_holds(checkpoints[0], probe.epochs[1])
    # the model and the resume state hold the live weights, not the average
    live = {l.name: l.get_weights() for l in trainer.body.layers if l.weights}
    assert not np.array_equal(live["conv_000"][0], probe.epochs[1]["conv_000"][0])
    assert_file_holds(tmp_path / "train_state" / "weights-e0001-s2.weights.h5", live)
    assert (tmp_path / "train_state" / "ema-e0001-s2.npz").exists()

    resumed, probe, result = train(data, tmp_path)
    assert result.status == 0 and result.epochs_done == 2
    assert resumed.callbacks.ema.updates == 8        # the count goes on
    # the final weights (written at the end of the stage) are the average
    final = probe.stages[-1]
    assert_file_holds(tmp_path / "trained_weights_final.weights.h5", final)
    assert not np.array_equal(final["conv_000"][0],
                              resumed.body.get_layer("conv_000").get_weights()[0])
