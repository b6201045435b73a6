"""yolo3.adam: the fused update against Adam worked out in float64 numpy and
against Keras's own Adam and AdamW, in eager steps and in compiled training;
TensorFlow's kernel is in the traced step where it applies and Keras's update
where it does not (amsgrad, a distribution strategy). test_backends runs this
file under JAX too, where every update is Keras's."""
import keras
import numpy as np
import pytest

from yolo3.adam import Adam, AdamW, fused_update_applies

TENSORFLOW = keras.backend.backend() == "tensorflow"
SHAPES = [(3, 3, 2, 4), (4,), (1, 1, 4, 6)]


def gradients(steps, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.normal(0, 0.1, shape).astype("float32") for shape in SHAPES]
            for _ in range(steps)]


def start_values(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, shape).astype("float32") for shape in SHAPES]


def numpy_adam(values, steps, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, decay=0.0):
    """Adam (Kingma & Ba, with Keras's epsilon placement) in float64; `decay` is
    AdamW's decoupled w -= decay * lr * w, taken before the update."""
    values = [v.astype("float64") for v in values]
    m = [np.zeros_like(v) for v in values]
    s = [np.zeros_like(v) for v in values]
    for t, grads in enumerate(steps, 1):
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        for i, g in enumerate(grads):
            values[i] -= decay * lr * values[i]
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            s[i] = beta_2 * s[i] + (1 - beta_2) * g * g
            values[i] -= alpha * m[i] / (np.sqrt(s[i]) + epsilon)
    return values


def run_eager(optimizer, steps):
    variables = [keras.Variable(v) for v in start_values()]
    for grads in steps:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    return [keras.ops.convert_to_numpy(v) for v in variables]


@pytest.mark.parametrize("optimizer, decay", [
    (Adam(learning_rate=1e-3), 0.0),
    (Adam(learning_rate=0.05), 0.0),
    (AdamW(learning_rate=1e-2, weight_decay=0.1), 0.1),
])
def test_update_is_adam_worked_out_in_float64(optimizer, decay):
    steps = gradients(4)
    lr = float(optimizer.learning_rate)
    expected = numpy_adam(start_values(), steps, lr, decay=decay)
    # float32 rounding of values near 1 (ulp 1.2e-7), plus beta_2 = 0.999 in float32
    # (1 - beta_2 off by 1.3e-5 relative, so each step's size by up to about 1e-5)
    tolerance = 1e-6 + 3e-5 * lr * len(steps)
    for got, want in zip(run_eager(optimizer, steps), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)


@pytest.mark.parametrize("ours, keras_class, options", [
    (Adam, keras.optimizers.Adam, {"learning_rate": 3e-3}),
    (Adam, keras.optimizers.Adam, {"learning_rate": 3e-3, "amsgrad": True}),
    (Adam, keras.optimizers.Adam, {"learning_rate": 3e-3, "gradient_accumulation_steps": 2}),
    (AdamW, keras.optimizers.AdamW, {"learning_rate": 3e-3, "weight_decay": 0.05}),
])
def test_same_numbers_as_keras(ours, keras_class, options):
    steps = gradients(5, seed=3)
    mine, theirs = ours(**options), keras_class(**options)
    # values up to |2.5|: two float32 ulps there are 5e-7 (a wrong formula is 1e-5 off)
    for got, want in zip(run_eager(mine, steps), run_eager(theirs, steps)):
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-7)
    for got, want in zip(mine.variables, theirs.variables):   # m, v and the step count
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got),
                                   keras.ops.convert_to_numpy(want), rtol=1e-4, atol=1e-9)


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.LeakyReLU(0.1)(x)
    x = keras.layers.Conv2D(2, 1)(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("jit", [False, True])
def test_compiled_training_matches_keras(jit):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    targets = rng.normal(size=(8, 8, 8, 2)).astype("float32")
    weights = {}
    for name, optimizer in [("ours", Adam(1e-2)), ("keras", keras.optimizers.Adam(1e-2))]:
        model = small_model()
        model.compile(optimizer, "mse", jit_compile=jit)
        model.fit(images, targets, batch_size=4, epochs=3, shuffle=False, verbose=0)
        weights[name] = model.get_weights()
    for got, want in zip(weights["ours"], weights["keras"]):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert not np.allclose(weights["ours"][0], small_model().get_weights()[0], atol=1e-3)


def traced_op_types(optimizer):
    """The op types of one apply() traced by tf.function."""
    import tensorflow as tf
    variables = [keras.Variable(v) for v in start_values()]
    optimizer.build(variables)
    grads = [tf.constant(g) for g in gradients(1)[0]]
    step = tf.function(lambda: optimizer.apply(grads, variables))
    return {op.type for op in step.get_concrete_function().graph.get_operations()}


@pytest.mark.skipif(not TENSORFLOW, reason="the fused kernel is TensorFlow's")
def test_the_kernel_is_in_the_traced_step_where_it_applies():
    assert "ResourceApplyAdam" in traced_op_types(Adam(1e-3))
    assert "ResourceApplyAdam" in traced_op_types(AdamW(1e-3, weight_decay=0.01))
    assert "ResourceApplyAdam" not in traced_op_types(Adam(1e-3, amsgrad=True))
    assert "ResourceApplyAdam" not in traced_op_types(keras.optimizers.Adam(1e-3))


@pytest.mark.skipif(not TENSORFLOW, reason="tf.distribute is TensorFlow's")
def test_a_strategy_takes_keras_update():
    import tensorflow as tf
    variable = keras.Variable(np.ones(3, "float32"))
    grad = tf.ones(3)
    assert fused_update_applies(Adam(), grad, variable.value)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        assert not fused_update_applies(Adam(), grad, variable.value)
        model = small_model()
        model.compile(Adam(1e-2), "mse")
    images = np.ones((4, 8, 8, 3), "float32")
    history = model.fit(images, np.zeros((4, 8, 8, 2), "float32"), epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]


def test_not_applied_off_tensorflow_or_with_amsgrad():
    variable = keras.Variable(np.ones(3, "float32"))
    grad = keras.ops.ones(3)
    assert not fused_update_applies(Adam(amsgrad=True), grad, variable.value)
    assert fused_update_applies(Adam(), grad, variable.value) == TENSORFLOW


def test_serialised_and_back():
    optimizer = AdamW(learning_rate=2e-3, weight_decay=0.03, beta_2=0.99)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is AdamW
    assert again.get_config() == optimizer.get_config()
