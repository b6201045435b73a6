"""Adam and AdamW whose update runs as TensorFlow's fused kernel.

Keras 3's Adam writes its update as about ten elementwise ops per variable, each
a pass over the whole variable:

    alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
    m += (g - m) * (1 - beta_1)
    v += (g * g - v) * (1 - beta_2)
    var -= alpha * m / (sqrt(v) + epsilon)

TensorFlow's ResourceApplyAdam kernel (what tf.compat.v1's AdamOptimizer and
tf_keras's legacy Adam call) computes the same four lines in one pass. With
YOLOv3's 62 million weights that saves a CPU about 0.1 s of every stage-2 step
(docs/performance-vs-original.md). The classes below call the kernel where it
applies: the TensorFlow backend, dense gradients, no amsgrad, no distribution
strategy (a strategy's mirrored variables have no single handle). Everywhere
else (JAX, torch, ...) they run Keras's own update_step, unchanged.

The only numeric difference is rounding: the kernel forms 1 - beta_1 and
1 - beta_2 in float32, Keras in float64 before the cast, so the two differ by a
few float32 ulps per step."""
import keras
from keras import ops


def fused_update_applies(optimizer, gradient, variable):
    """True when `optimizer` can update `variable` by `gradient` with TensorFlow's
    ResourceApplyAdam kernel (see the module's docstring)."""
    if keras.backend.backend() != "tensorflow" or optimizer.amsgrad:
        return False
    import tensorflow as tf
    return (not tf.distribute.has_strategy() and hasattr(variable, "handle")
            and not isinstance(gradient, tf.IndexedSlices))


class _FusedAdamUpdate:
    """update_step through ResourceApplyAdam, Keras's update_step otherwise."""

    def update_step(self, gradient, variable, learning_rate):
        if not fused_update_applies(self, gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf
        dtype = variable.dtype
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=ops.power(beta_1, step), beta2_power=ops.power(beta_2, step),
            lr=ops.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=ops.cast(self.epsilon, dtype), grad=ops.cast(gradient, dtype))


@keras.saving.register_keras_serializable(package="yolo3")
class Adam(_FusedAdamUpdate, keras.optimizers.Adam):
    """keras.optimizers.Adam (same arguments, variables and numbers), updating
    through TensorFlow's fused kernel where it applies."""


@keras.saving.register_keras_serializable(package="yolo3")
class AdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """keras.optimizers.AdamW (its decoupled decay is applied before the update,
    as Keras does), updating through TensorFlow's fused kernel where it applies."""
