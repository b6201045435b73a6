"""Several devices or machines with the engines Keras already has:
tf.distribute (MirroredStrategy, MultiWorkerMirroredStrategy) on TensorFlow and
keras.distribution.DataParallel on JAX. The batch size stays global: each step
splits it over the replicas.

With several workers (processes) every worker runs the same schedule on the same
lines; one, the chief, writes the outputs, the others write into a temporary
folder removed at the end (`Distribution.worker_log_dir`)."""
import atexit
import contextlib
import hashlib
import os
import shutil
import tempfile

import keras

from .errors import UserError

STRATEGIES = ("none", "mirrored", "multiworker")


class Distribution:
    """What train.py needs: a scope to build and compile the model in, and the
    number of replicas a global batch is split over."""

    def __init__(self, name, strategy=None, replicas=1, worker=0, workers=1):
        self.name, self.strategy, self.replicas = name, strategy, replicas
        self.worker, self.workers = worker, workers

    @property
    def is_chief(self):
        return self.worker == 0

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else \
            contextlib.nullcontext()

    def describe(self):
        if self.name == "none":
            return "one device"
        if self.workers > 1:
            return (f"{self.name}: {self.replicas} replicas on {self.workers} workers, "
                    f"this is worker {self.worker}"
                    + (" (chief)" if self.is_chief else ""))
        return f"{self.name}: {self.replicas} replicas"

    def synchronize_batch_norm(self, model):
        """TensorFlow strategies: BatchNormalization statistics over the global
        batch (summed over the replicas), as on one device. Without this each
        replica normalizes by its own share and the workers' moving averages
        drift apart. (JAX's DataParallel computes them over the global batch.)"""
        if self.strategy is None or self.replicas < 2:
            return
        for layer in _all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True

    def local_batches(self, batches):
        """The batches this process feeds. TensorFlow splits each global batch
        over the workers itself (auto-sharding by data); JAX's DataParallel
        assembles the global batch from every process's share, so with several
        processes each keeps its slice of the global batch (`ProcessShare`)."""
        if batches is None or self.strategy is not None or self.workers < 2:
            return batches
        return ProcessShare(batches, self.worker, self.workers)

    def worker_log_dir(self, log_dir, copy=()):
        """The folder this worker writes into: `log_dir` on the chief. On another
        worker a temporary folder, holding copies of the chief's `copy`
        subfolders (what --resume reads), removed when the process ends; a
        killed worker's folder is removed when it starts again."""
        if self.is_chief:
            return log_dir
        # named after the log dir and the worker, so that it is found again
        tag = hashlib.sha256(os.path.abspath(log_dir).encode()).hexdigest()[:12]
        prefix = f"yolo3-{tag}-worker{self.worker}-"
        temp_root = tempfile.gettempdir()
        for name in os.listdir(temp_root):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(temp_root, name), ignore_errors=True)
        folder = tempfile.mkdtemp(prefix=prefix)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        for name in copy:
            if os.path.isdir(os.path.join(log_dir, name)):
                shutil.copytree(os.path.join(log_dir, name), os.path.join(folder, name))
        return folder


class ProcessShare(keras.utils.PyDataset):
    """Process `index` of `count`'s slice of every batch of `batches` (a
    PyDataset of global batches): rows [b*index/count, b*(index+1)/count)."""

    def __init__(self, batches, index, count):
        super().__init__(workers=batches.workers,
                         use_multiprocessing=batches.use_multiprocessing,
                         max_queue_size=batches.max_queue_size)
        self.batches, self.index, self.count = batches, index, count

    def __len__(self):
        return len(self.batches)

    def _share(self, array):
        size = len(array)
        return array[size * self.index // self.count:
                     size * (self.index + 1) // self.count]

    def __getitem__(self, index):
        return keras.tree.map_structure(self._share, self.batches[index])

    def on_epoch_end(self):
        self.batches.on_epoch_end()


def _all_layers(layer):
    for inner in getattr(layer, "layers", ()):
        yield inner
        yield from _all_layers(inner)


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
            return Distribution(name, strategy, strategy.num_replicas_in_sync)
        strategy = _multi_worker_strategy()   # the cluster comes from TF_CONFIG
        resolver = strategy.cluster_resolver
        workers = len(resolver.cluster_spec().as_dict().get("worker", [])) or 1
        return Distribution(name, strategy, strategy.num_replicas_in_sync,
                            _tf_worker_index(resolver), workers)
    if backend == "jax":
        if name == "multiworker":  # the coordinator from the environment
            _initialize_jax()
        import jax
        found = devices or keras.distribution.list_devices()
        # several processes: each feeds its own share (local_batches)
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=found, auto_shard_dataset=False))
        return Distribution(name, None, len(found), jax.process_index(),
                            jax.process_count())
    raise UserError(f"--strategy {name} needs the tensorflow or jax backend "
                    f"(KERAS_BACKEND is {backend})")


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3's fit gives
    it on several workers (keras-team/keras#20585), where TensorFlow's reduce
    fails with "Attempt to convert a value (PerReplica...) to a Tensor" or
    "Invalid reduction dimension 0":
    - a nest (the first batch, reduced to build the model): each value by itself;
    - a scalar with axis=0 (each step's loss and metrics, averaged over the
      replicas): a scalar has no batch axis to average over, so axis=None."""
    import tensorflow as tf

    class NestedReduceStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            parent = super()

            def one(v):
                rank = self.experimental_local_results(v)[0].shape.rank
                return parent.reduce(reduce_op, v, None if rank == 0 else axis)
            return tf.nest.map_structure(one, value)

    return NestedReduceStrategy()


def _tf_worker_index(resolver):
    """0 for the chief: the 'chief' task, else worker 0 when there is none."""
    cluster = resolver.cluster_spec().as_dict()
    if resolver.task_type == "chief" or not cluster:
        return 0
    return int(resolver.task_id) + (1 if "chief" in cluster else 0)


def _initialize_jax():
    """jax.distributed through keras.distribution.initialize (the coordinator,
    process count and id from KERAS_DISTRIBUTION_* variables), with gloo as the
    CPU collectives so that CPU processes can all-reduce (set before any JAX
    computation; accelerators use their own collectives)."""
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize()


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


def replica_multiple(batch, distribution):
    """The smallest multiple of the replica count not below `batch`: a batch that
    gives every replica a share (a validation set smaller than the training
    batch; the batches wrap around the lines)."""
    return -(-batch // distribution.replicas) * distribution.replicas
