"""yolo3.optimization: which variables decay, gradient accumulation against a hand
computation, remove_l2, the warmup + cosine schedule and the callbacks reading it."""
import math

import keras
import numpy as np
import pytest

from tests.fixtures import TINY_ANCHORS
from yolo3.adam import Adam
from yolo3.callbacks import EpochLog, current_lr
from yolo3.errors import UserError
from yolo3.optimization import (WarmupCosine, decayed_variables, make_optimizer,
                                remove_l2)
from yolo3.training import compile_model, create_training_model


def conv_model():
    """conv (bias, L2) -> BatchNorm -> conv (no bias, L2) -> dense: every kind of
    variable the detector has."""
    keras.utils.set_random_seed(0)
    l2 = keras.regularizers.L2(5e-4)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 3, padding="same", kernel_regularizer=l2, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(2, 1, use_bias=False, kernel_regularizer=l2, name="c2")(x)
    x = keras.layers.Dense(1, name="d")(keras.layers.Flatten()(x))
    return keras.Model(inputs, x)


def test_adam_is_the_original_adam():
    optimizer = make_optimizer("adam", 1e-3, conv_model())
    assert type(optimizer) is Adam   # keras.optimizers.Adam with the fused update
    expected = keras.optimizers.Adam(learning_rate=1e-3).get_config()
    assert optimizer.get_config() == dict(expected, name=optimizer.name)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "rmsprop"}, "--optimizer rmsprop"),
    ({"weight_decay": 1e-4}, "use --optimizer adamw"),
    ({"name": "sgd", "weight_decay": -1.0}, "--weight-decay -1.0"),
    ({"name": "sgd", "momentum": 1.0}, "--momentum 1.0"),
    ({"accumulate": 0}, "--accumulate 0"),
    ({"accumulate": 1.5}, "--accumulate 1.5"),
])
def test_bad_settings_are_user_errors(kwargs, message):
    kwargs = {"name": "adam", **kwargs}
    with pytest.raises(UserError, match=message):
        make_optimizer(kwargs.pop("name"), 1e-3, conv_model(), **kwargs)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_shrinks_only_the_kernels(name):
    """One step with zero gradients: SGD's velocity and Adam's moments stay 0,
    so only the decoupled decay moves a variable: w -> w * (1 - lr * decay)."""
    model = conv_model()
    assert [v.path for v in decayed_variables(model)] == ["c1/kernel", "c2/kernel",
                                                           "d/kernel"]
    lr, decay = 0.5, 0.1
    optimizer = make_optimizer(name, lr, model, weight_decay=decay)
    before = {v.path: np.array(v) for v in model.weights}
    optimizer.apply_gradients([(np.zeros(v.shape, "float32"), v)
                               for v in model.trainable_variables])
    for v in model.weights:
        factor = 0.95 if v.path.endswith("/kernel") else 1.0
        np.testing.assert_allclose(np.array(v), before[v.path] * factor, rtol=1e-6,
                                   err_msg=v.path)


def test_accumulated_sgd_applies_the_mean_gradient_of_n_batches():
    """Dense(1) on 4 samples, batch size 1, accumulate 2, Nesterov momentum 0.5:
    two updates, each with the mean squared-error gradient of two samples taken
    at the same weights."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    lr, m = 0.1, 0.5
    model.compile(make_optimizer("sgd", lr, model, momentum=m, accumulate=2), "mse")
    x = np.array([[1, 2], [0, -1], [3, 1], [-2, 0.5]], "float32")
    y = np.array([[1], [2], [-1], [0.5]], "float32")
    w, b = (np.array(v, "float64") for v in model.get_weights())
    velocity = [np.zeros_like(w), np.zeros_like(b)]
    for pair in ((0, 1), (2, 3)):
        error = [2 * (x[i] @ w + b - y[i]) for i in pair]          # d(y - t)^2 / dy
        grads = [np.mean([np.outer(x[i], e) for i, e in zip(pair, error)], axis=0),
                 np.mean(error, axis=0)]
        for k, (param, g) in enumerate(zip((w, b), grads)):
            velocity[k] = m * velocity[k] - lr * g
            param += m * velocity[k] - lr * g                          # Nesterov
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=1e-5)
    np.testing.assert_allclose(model.get_weights()[1], b, rtol=1e-5)
    assert int(model.optimizer.iterations) == 2            # updates, not batches


def test_remove_l2_drops_only_the_regularisation():
    model = create_training_model("yolov3-tiny", (64, 64), TINY_ANCHORS, 2,
                                  load_pretrained=False, freeze_body=0)
    rng = np.random.default_rng(0)
    inputs = [rng.random((1, *i.shape[1:]), "float32") * (i.name == "image")
              for i in model.inputs]
    loss = np.array(model(inputs))
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    expected = sum(5e-4 * np.sum(np.square(np.array(l.kernel))) for l in convs)
    assert float(sum(np.array(v) for v in model.losses)) == pytest.approx(expected,
                                                                          rel=1e-5)
    assert remove_l2(model) == len(convs) == 13
    assert model.losses == [] and remove_l2(model) == 0
    np.testing.assert_array_equal(np.array(model(inputs)), loss)


def test_warmup_cosine_rates():
    schedule = WarmupCosine(0.1, total_steps=10, warmup_steps=2, final_fraction=0.1)
    # warmup 0, 0.05; cosine over steps 2..10: 0.1 * (0.1 + 0.9 * (1 + cos(pi p)) / 2)
    expected = {0: 0.0, 1: 0.05, 2: 0.1, 3: 0.0965746, 4: 0.0868198, 6: 0.055,
                10: 0.01, 25: 0.01}
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, abs=1e-6), step
    assert float(WarmupCosine(0.2, 4)(0)) == pytest.approx(0.2)    # no warmup
    copy = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert type(copy) is WarmupCosine and copy.get_config() == schedule.get_config()
    with pytest.raises(UserError, match="warmup steps 5, total steps 4"):
        WarmupCosine(0.1, 4, 5)


def test_compile_model_takes_the_optimizer_and_the_epoch_log_reads_its_schedule(tmp_path):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="yolo_loss")(inputs))
    schedule = WarmupCosine(0.1, total_steps=10, warmup_steps=2, final_fraction=0.1)
    optimizer = make_optimizer("sgd", schedule, model)
    compile_model(model, None, jit_compile=False, optimizer=optimizer)
    assert model.optimizer is optimizer
    log = EpochLog(str(tmp_path / "log.csv"), str(tmp_path / "loss.png"), 0)
    model.fit(np.ones((3, 2), "float32"), np.zeros(3, "float32"), batch_size=1,
              verbose=0, callbacks=[log])
    rate = 0.1 * (0.1 + 0.9 * (1 + math.cos(math.pi / 8)) / 2)    # step 3
    assert current_lr(model) == pytest.approx(rate, rel=1e-6)
    assert log.rows[0]["lr"] == pytest.approx(rate, rel=1e-6)
