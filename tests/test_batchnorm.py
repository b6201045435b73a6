"""FusedBatchNormalization against keras.layers.BatchNormalization: the same
weights, outputs, gradients and moving statistics (float32 tolerance)."""
import keras
import numpy as np
import pytest

from yolo3.batchnorm import BatchNormalization as FusedBatchNormalization

SHAPE = (3, 5, 4, 6)  # 60 values per channel


def pair(**kwargs):
    """A Keras BatchNormalization and a FusedBatchNormalization with the same
    random gamma, beta and moving statistics."""
    rng = np.random.default_rng(0)
    ref, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    ref.build(SHAPE)
    fused.build(SHAPE)
    weights = [rng.uniform(0.5, 2.0, 6), rng.normal(0, 1, 6), rng.normal(0, 1, 6),
               rng.uniform(0.5, 2.0, 6)]
    ref.set_weights(weights)
    fused.set_weights(weights)
    return ref, fused


def data(seed=1):
    return np.random.default_rng(seed).normal(3.0, 2.0, SHAPE).astype("float32")


def test_same_weight_names_and_shapes():
    ref, fused = pair()
    assert [(w.path.split("/")[-1], w.shape) for w in fused.weights] == \
        [(w.path.split("/")[-1], w.shape) for w in ref.weights]
    assert [w.path.split("/")[-1] for w in fused.weights] == \
        ["gamma", "beta", "moving_mean", "moving_variance"]


@pytest.mark.parametrize("training", [False, True])
def test_outputs_match_keras(training):
    ref, fused = pair()
    x = data()
    np.testing.assert_allclose(np.asarray(fused(x, training=training)),
                               np.asarray(ref(x, training=training)), rtol=1e-5, atol=1e-5)


def test_training_normalises_with_the_batch_moments():
    # worked independently: gamma (x - mean) / sqrt(biased var + eps) + beta per channel
    ref, fused = pair(epsilon=1e-3)
    x = data()
    gamma, beta = ref.get_weights()[:2]
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = gamma * (x - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(np.asarray(fused(x, training=True)), expected, rtol=1e-4,
                               atol=1e-4)


def test_moving_statistics_update_like_keras():
    ref, fused = pair(momentum=0.9)
    old_mean, old_var = ref.get_weights()[2:]
    for seed in (1, 2, 3):
        x = data(seed)
        ref(x, training=True)
        fused(x, training=True)
    np.testing.assert_allclose(fused.get_weights()[2], ref.get_weights()[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.get_weights()[3], ref.get_weights()[3], rtol=1e-5, atol=1e-6)
    # one step by hand: Keras averages the biased batch variance with momentum 0.9
    _, one = pair(momentum=0.9)
    x = data(1)
    one(x, training=True)
    np.testing.assert_allclose(one.get_weights()[3],
                               0.9 * old_var + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(one.get_weights()[2],
                               0.9 * old_mean + 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5,
                               atol=1e-6)


def test_frozen_layer_uses_moving_statistics_and_keeps_them():
    ref, fused = pair()
    ref.trainable = fused.trainable = False
    before = fused.get_weights()
    x = data()
    np.testing.assert_allclose(np.asarray(fused(x, training=True)),
                               np.asarray(ref(x, training=True)), rtol=1e-5, atol=1e-5)
    for a, b in zip(fused.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow gradients")
def test_gradients_match_keras():
    import tensorflow as tf
    ref, fused = pair()
    x = tf.constant(data())
    weights = tf.constant(np.random.default_rng(5).normal(size=SHAPE).astype("float32"))
    grads = []
    for layer in (ref, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * weights)
        grads.append(tape.gradient(loss, [x, layer.gamma.value, layer.beta.value]))
    for g_fused, g_ref in zip(grads[1], grads[0]):
        np.testing.assert_allclose(np.asarray(g_fused), np.asarray(g_ref), rtol=1e-4, atol=1e-4)


def test_small_epsilon_and_other_ranks_take_the_keras_path():
    ref, fused = pair(epsilon=1e-5)   # below what the fused kernel accepts
    x = data()
    np.testing.assert_allclose(np.asarray(fused(x, training=True)),
                               np.asarray(ref(x, training=True)), rtol=1e-5, atol=1e-5)
    flat = keras.layers.BatchNormalization(), FusedBatchNormalization()
    x2 = data().reshape(-1, 6)
    np.testing.assert_allclose(np.asarray(flat[1](x2, training=True)),
                               np.asarray(flat[0](x2, training=True)), rtol=1e-5, atol=1e-5)


def bn_model(layer_class):
    inputs = keras.Input((4, 4, 6))
    return keras.Model(inputs, layer_class(name="bn_001")(inputs))


def test_weight_files_interchange_with_keras_batchnorm(tmp_path):
    from yolo3.weights import load_weights, save_weights
    fused, plain = bn_model(FusedBatchNormalization), bn_model(keras.layers.BatchNormalization)
    rng = np.random.default_rng(2)
    fused.set_weights([rng.uniform(0.5, 2, 6).astype("float32") for _ in range(4)])
    save_weights(fused, tmp_path / "fused.h5")
    load_weights(plain, tmp_path / "fused.h5")
    for a, b in zip(plain.get_weights(), fused.get_weights()):
        np.testing.assert_array_equal(a, b)
    plain.set_weights([rng.uniform(0.5, 2, 6).astype("float32") for _ in range(4)])
    plain.save_weights(tmp_path / "plain.weights.h5")   # a Keras 3 file of plain layers
    load_weights(fused, tmp_path / "plain.weights.h5")
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    plain.load_weights(tmp_path / "plain.weights.h5")     # Keras's own loader, both ways
    fused.save_weights(tmp_path / "fused.weights.h5")
    plain.load_weights(tmp_path / "fused.weights.h5")
    for a, b in zip(plain.get_weights(), fused.get_weights()):
        np.testing.assert_array_equal(a, b)
    fused.save(tmp_path / "m.keras")
    assert isinstance(keras.models.load_model(tmp_path / "m.keras").layers[-1],
                      FusedBatchNormalization)
