"""Several devices or machines with the engines Keras already has:
tf.distribute (MirroredStrategy, MultiWorkerMirroredStrategy) on TensorFlow and
keras.distribution.DataParallel on JAX. The batch size stays global: each step
splits it over the replicas."""
import contextlib

import keras

from .errors import UserError

STRATEGIES = ("none", "mirrored", "multiworker")


class Distribution:
    """What train.py needs: a scope to build and compile the model in, and the
    number of replicas a global batch is split over."""

    def __init__(self, name, strategy=None, replicas=1):
        self.name, self.strategy, self.replicas = name, strategy, replicas

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else \
            contextlib.nullcontext()

    def describe(self):
        if self.name == "none":
            return "one device"
        return f"{self.name}: {self.replicas} replicas"


def make_distribution(name="none", devices=None):
    """`name` in STRATEGIES; `devices` (e.g. ['/cpu:0', '/cpu:1']) for mirrored."""
    if name not in STRATEGIES:
        raise UserError(f"--strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "none":
        return Distribution(name)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        if name == "mirrored":
            strategy = tf.distribute.MirroredStrategy(devices)
        else:  # the cluster comes from the TF_CONFIG environment variable
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return Distribution(name, strategy, strategy.num_replicas_in_sync)
    if backend == "jax":
        if name == "multiworker":  # jax.distributed set up from the environment
            keras.distribution.initialize()
        found = devices or keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=found))
        return Distribution(name, None, len(found))
    raise UserError(f"--strategy {name} needs the tensorflow or jax backend "
                    f"(KERAS_BACKEND is {backend})")


def has_accelerator():
    """True when the Keras backend sees a GPU or TPU (not only CPUs)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        return any(tf.config.list_physical_devices(kind) for kind in ("GPU", "TPU"))
    if backend == "jax":
        import jax
        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch
        return torch.cuda.is_available()
    return False


def use_xla(jit, head_only=False):
    """train.py's XLA choice: True/False as given. "auto": on accelerators and
    always on JAX, whose steps only run fast compiled; on a TensorFlow CPU only
    for a head_only model (bottleneck stage 1: small convolutions and the loss's
    many elementwise ops, which XLA fuses), since for whole networks oneDNN
    without XLA measured faster."""
    if jit != "auto":
        return bool(jit)
    return head_only or keras.backend.backend() == "jax" or has_accelerator()


def check_batch(batch_size, distribution):
    """A global batch must split evenly over the replicas."""
    if batch_size % distribution.replicas:
        raise UserError(f"batch size {batch_size} does not split over "
                        f"{distribution.replicas} replicas; use a multiple of "
                        f"{distribution.replicas}")
