"""One worker of the two-process tests (tests/test_multiworker.py): trains with
yolo3.trainer on --strategy multiworker and writes what the test checks into
OUT/worker<i>.npz: the body's final weights and, per training step, a
fingerprint (the pixel sum) of every image this worker's replica trained on.

    python tests/multiworker_run.py DATA_DIR LOG_DIR OUT [--resume] [--stop-after N]

The cluster comes from TF_CONFIG (TensorFlow) or KERAS_DISTRIBUTION_* (JAX); the
repository root must be on PYTHONPATH."""
import os
import sys
import time

if os.environ.get("KERAS_BACKEND") == "jax":
    # As where TensorFlow is not installed: Keras would import it (10 s here, on
    # each start) only to seed its random generator; the JAX path needs none of it.
    sys.modules["tensorflow"] = None

import keras
import numpy as np

import yolo3.networks
import yolo3.trainer
from yolo3.networks import DarknetConv2D, DarknetConv2D_BN_Leaky
from yolo3.trainer import TrainConfig, Trainer
from yolo3.training import detection_body


class Record(keras.callbacks.Callback):
    """The body's weights at the end; with --stop-after N, after epoch N's resume
    state is written: the record, a file `stopped` beside it, then a wait for
    the test to kill the process."""

    def __init__(self, path, stop_after):
        super().__init__()
        self.path, self.stop_after = path, stop_after
        self.body = None     # the trainer's detection body, set once it is built

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.stop_after:
            self.save()
            with open(self.path + ".stopped", "w"):
                pass
            time.sleep(3600)

    def save(self):
        arrays = {f"w{i:03d}": w for i, w in enumerate(self.body.get_weights())}
        arrays["seen"] = np.array(SEEN, np.float64).reshape(-1)
        np.savez(self.path, **arrays)

    def on_train_end(self, logs=None):
        self.save()


SEEN = []


class Probe(keras.layers.Layer):
    """Identity that records the pixel sum of each image of a training step
    (inside the compiled step, through the backend's host callback)."""

    def call(self, images, training=None):
        if not training:
            return images
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            def note(sums):
                SEEN.extend(sums.numpy().tolist())
                return np.float32(0)
            zero = tf.py_function(note, [tf.reduce_sum(images, [1, 2, 3])], tf.float32)
            zero.set_shape(())
            return images + zero
        import jax

        def note(sums):
            SEEN.extend(np.asarray(sums).tolist())
        jax.debug.callback(note, images.sum((1, 2, 3)), partitioned=True)
        return images

    def compute_output_shape(self, shape):
        return shape


class ProbedTrainer(Trainer):
    """The trainer with the Probe between the image input and the training model."""

    def _build_model(self):
        model = super()._build_model()
        image = model.inputs[0]
        loss = model([Probe(name="probe")(image), *model.inputs[1:]])
        return keras.Model([image, *model.inputs[1:]],
                           keras.layers.Identity(name="yolo_loss")(loss))


def small_tiny_body(inputs, num_anchors, num_classes):
    """Three convolutions in tiny-YOLOv3's shape (heads at strides 32 and 16,
    its output layers' names), with one BatchNormalization: the workers build,
    trace and all-reduce it in a fraction of the real body's time."""
    out_filters = num_anchors * (num_classes + 5)
    x = DarknetConv2D_BN_Leaky(8, (3, 3), index=0)(inputs)
    stride16 = keras.layers.MaxPooling2D(16, name="maxpool_001")(x)
    stride32 = keras.layers.MaxPooling2D(2, name="maxpool_002")(stride16)
    return keras.Model(inputs, [DarknetConv2D(out_filters, (1, 1), index=15)(stride32),
                                DarknetConv2D(out_filters, (1, 1), index=22)(stride16)],
                       name="tiny_yolo_body")


yolo3.networks.tiny_yolo_body = small_tiny_body
# The saved body is the one inside the wrapped training model ("yolo_train").
yolo3.trainer.detection_body = lambda model: detection_body(model.get_layer("yolo_train"))


def main(data, log_dir, out, resume=False, stop_after=0):
    cfg = TrainConfig(annotations=os.path.join(data, "annotations.txt"),
                      classes=os.path.join(data, "classes.txt"),
                      anchors=os.path.join(data, "anchors.txt"), weights="none",
                      log_dir=log_dir, input_shape=(32, 32), batch_size=4,
                      unfreeze_batch_size=4, freeze_epochs=0, epochs=2, val_split=0.25,
                      checkpoint_period=1, strategy="multiworker", resume=resume,
                      augment=False)
    worker = int(os.environ.get("WORKER", "0"))
    record = Record(os.path.join(out, f"worker{worker}.npz"), stop_after)
    trainer = ProbedTrainer(cfg, callbacks=[record], verbose=0)
    record.body = trainer.body
    result = trainer.run()
    print("STATUS", result.status, result.epochs_done)
    return result.status

if __name__ == "__main__":
    args = sys.argv[1:]
    stop = int(args[args.index("--stop-after") + 1]) if "--stop-after" in args else 0
    sys.exit(main(args[0], args[1], args[2], "--resume" in args, stop))
