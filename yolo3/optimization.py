"""Optimizers for training: the faithful Adam, AdamW and Nesterov SGD with weight
decay on the kernels only, gradient accumulation, and a warmup + cosine
learning-rate schedule.

Weight decay and the original's L2 term. Every DarknetConv2D kernel carries an
L2 regulariser, c * sum(w**2) with c = 5e-4, that is added to the loss. Its
gradient is 2c * w, so with plain SGD at learning rate lr it shrinks each kernel
by 2c * lr * w per step: the same as a weight decay of 2c = 1e-3 per unit of
learning rate. Keras's `weight_decay` is decoupled (w -= weight_decay * lr * w,
applied before the update and outside the momentum), so with momentum the two
differ: the L2 gradient also passes through the velocity, making its effective
decay about 1 / (1 - momentum) times larger. With Adam the L2 gradient is
divided by the running root-mean-square of the gradients like any other, so it
is not a decay at all: large-gradient kernels are barely pulled towards zero.
AdamW's decoupled decay is the fix. With a decoupled decay (adamw, or sgd with
weight_decay > 0) the L2 regularisers should go (`remove_l2`), else both
shrink the kernels.

Gradient accumulation (`accumulate` N > 1) uses Keras's
gradient_accumulation_steps: the variables change once every N batches, by the
mean gradient of those N batches. `optimizer.iterations` then counts updates,
but learning-rate schedules are called with the batch count (Keras's internal
`_iterations`), so WarmupCosine's steps are batches, accumulated or not."""
import math

import keras
from keras import ops

from .adam import Adam, AdamW
from .errors import UserError
from .recipes import OPTIMIZERS


def _layers(model):
    """Every layer of a model, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def decayed_variables(model):
    """The variables that weight decay applies to: the kernels of the
    convolution (and dense) layers. Biases, BatchNorm's gamma and beta and its
    moving statistics are left alone."""
    return [layer.kernel for layer in _layers(model)
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def make_optimizer(name, learning_rate, model, weight_decay=0.0, momentum=0.937,
                   accumulate=1):
    """The optimizer `name` ("adam", "adamw" or "sgd") for `model`.
    learning_rate: a float or a LearningRateSchedule. "adam" is the original's
    Adam(learning_rate) (yolo3.adam's, Keras's numbers through TensorFlow's fused
    kernel); "sgd" uses Nesterov momentum. weight_decay (decoupled,
    see the module's docstring) applies to decayed_variables(model) only.
    accumulate: apply the mean gradient of that many batches at once."""
    if name not in OPTIMIZERS:
        raise UserError(f"--optimizer {name}: choose one of {', '.join(OPTIMIZERS)}")
    if weight_decay < 0:
        raise UserError(f"--weight-decay {weight_decay}: must not be negative")
    if name == "adam" and weight_decay > 0:
        raise UserError(f"--weight-decay {weight_decay} with --optimizer adam: Adam has no "
                        "decoupled weight decay; use --optimizer adamw")
    if not 0 <= momentum < 1:
        raise UserError(f"--momentum {momentum}: must be in [0, 1)")
    if int(accumulate) != accumulate or accumulate < 1:
        raise UserError(f"--accumulate {accumulate}: must be a whole number >= 1")
    options = {"learning_rate": learning_rate}
    if accumulate > 1:
        options["gradient_accumulation_steps"] = int(accumulate)
    if name == "adam":
        return Adam(**options)
    if name == "adamw":
        optimizer = AdamW(weight_decay=weight_decay, **options)
    else:
        optimizer = keras.optimizers.SGD(momentum=momentum, nesterov=True,
                                         weight_decay=weight_decay or None, **options)
    kernels = {id(v) for v in decayed_variables(model)}
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.weights if id(v) not in kernels])
    return optimizer


def remove_l2(model):
    """Drop the kernel regularisers (the original's L2 term) from every layer of
    `model`; returns how many were dropped. Call it before compiling."""
    removed = 0
    for layer in _layers(model):
        if getattr(layer, "kernel_regularizer", None) is not None:
            layer.kernel_regularizer = None
            layer.kernel.regularizer = None   # Keras reads it from the variable
            removed += 1
    return removed


@keras.saving.register_keras_serializable(package="yolo3")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to base_lr over warmup_steps, then a cosine from
    base_lr down to base_lr * final_fraction at total_steps, constant after.
    Steps are batches (also with gradient accumulation; see the module's
    docstring)."""

    def __init__(self, base_lr, total_steps, warmup_steps=0, final_fraction=0.01):
        if not base_lr > 0:
            raise UserError(f"learning rate {base_lr}: must be positive")
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise UserError(f"warmup steps {warmup_steps}, total steps {total_steps}: "
                            "need 0 <= warmup steps <= total steps and total steps >= 1")
        if not 0 <= final_fraction <= 1:
            raise UserError(f"final learning-rate fraction {final_fraction}: must be in "
                            "[0, 1]")
        self.base_lr, self.final_fraction = float(base_lr), float(final_fraction)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.base_lr * step / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps)
                            / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = self.base_lr * (self.final_fraction + (1 - self.final_fraction) * cosine)
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "final_fraction": self.final_fraction}
