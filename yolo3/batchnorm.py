"""BatchNormalization with TensorFlow's fused kernel.

Keras 3's BatchNormalization computes the batch moments and the normalisation as
separate elementwise ops; on TensorFlow one FusedBatchNormV3 (oneDNN on CPU,
cuDNN on GPU) does both, forward and backward, in a fraction of the time. The
layer below is keras.layers.BatchNormalization (same arguments, weights, outputs
and moving statistics) taking that kernel where it applies; elsewhere (JAX,
torch, masks, renorm, ...) it is the Keras layer unchanged. It keeps Keras's
class name, so Keras 3 weight files name its variables as they name Keras's
(layers/batch_normalization_N/vars) and files of either layer load into the other.
"""
import keras
from keras import ops

# tf.compat.v1.nn.fused_batch_norm raises smaller epsilons to this one
FUSED_MIN_EPSILON = 1.001e-5
FUSED_DTYPES = ("float16", "bfloat16", "float32")


def fused_batch_norm(x, gamma, beta, moving_mean, moving_variance, epsilon, training):
    """TensorFlow's fused batch norm over the last axis of a 4-D float32 x ->
    (y, batch mean, biased batch variance); in inference (training False) the
    moving statistics normalise and come back as the "batch" ones.

    The kernel returns the Bessel-corrected variance (the one it would average);
    Keras averages the biased one, so it is scaled back by (n - 1) / n."""
    import tensorflow as tf
    if not training:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, mean=moving_mean, variance=moving_variance, epsilon=epsilon,
            is_training=False)
        return y, moving_mean, moving_variance
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=epsilon,
                                                        is_training=True)
    n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
    return y, mean, variance * ((n - 1.0) / tf.maximum(n, 1.0))


@keras.saving.register_keras_serializable(package="yolo3")
class BatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization, through TensorFlow's fused kernel when the
    backend is TensorFlow and the layer is plain (4-D input, last axis, scale and
    center, no mask, no renorm, not synchronized, epsilon the kernel accepts)."""

    def _fusable(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and self.scale and self.center and not self.renorm
                and not getattr(self, "synchronized", False)
                and keras.backend.standardize_dtype(inputs.dtype) in FUSED_DTYPES
                and self.epsilon > FUSED_MIN_EPSILON)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        # as Keras: float32 (or wider) statistics whatever the compute dtype
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        moving_mean = ops.cast(self.moving_mean, dtype)
        moving_variance = ops.cast(self.moving_variance, dtype)
        update = bool(training) and self.trainable
        y, mean, variance = fused_batch_norm(
            x, ops.cast(self.gamma, dtype), ops.cast(self.beta, dtype), moving_mean,
            moving_variance, self.epsilon, update)
        if update:
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(y, self.compute_dtype)
