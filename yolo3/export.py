"""Export a detector: a TensorFlow SavedModel with letterbox, network, decoding and
per-class NMS inside one fixed signature, and the body as a .keras file.

SavedModel signatures (all images of one call share one size):
  serving_default: images uint8 (B, H, W, 3), RGB 0..255
  serving_float:   images float32 (B, H, W, 3), RGB 0..1
  -> boxes (B, K, 4) float32 x_min, y_min, x_max, y_max in image pixels (clipped),
     scores (B, K), classes (B, K) int32, valid_detections (B,) int32;
     rows past valid_detections are padding (zeros).
"""
import os
import shutil
import tempfile

import keras
import numpy as np

from .errors import UserError
from .model import decode_batch

GREY = 128 / 255.0   # the letterbox background (128, 128, 128)


def _replace_dir(temp, path):
    """Move the finished folder `temp` to `path`, replacing an older export."""
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(os.path.abspath(path)))
        os.replace(path, os.path.join(old, "x"))
    os.replace(temp, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _letterbox(tf, images, size):
    """As yolo3.utils.letterbox_image: scale = min(w/iw, h/ih), bicubic resize to
    (int(iw*scale), int(ih*scale)), centred on grey."""
    h, w = size
    shape = tf.shape(images)
    ih, iw = tf.cast(shape[1], tf.float64), tf.cast(shape[2], tf.float64)
    scale = tf.minimum(w / iw, h / ih)
    nw = tf.cast(tf.floor(iw * scale), tf.int32)
    nh = tf.cast(tf.floor(ih * scale), tf.int32)
    resized = tf.image.resize(images, tf.stack([nh, nw]), method="bicubic", antialias=True)
    resized = tf.clip_by_value(resized, 0.0, 1.0)
    top, left = (h - nh) // 2, (w - nw) // 2
    padded = tf.pad(resized - GREY, [[0, 0], [top, h - nh - top], [left, w - nw - left], [0, 0]])
    return tf.ensure_shape(padded + GREY, [None, h, w, 3])


def detection_function(detector, max_total=100):
    """fn(float images (B,H,W,3) in [0,1]) -> dict of the signature's outputs."""
    import tensorflow as tf

    body, size = detector.body, detector.model_image_size
    num_classes = len(detector.class_names)

    def detect(images):
        shape = tf.shape(images)
        hw = tf.cast(tf.stack([shape[1], shape[2]]), tf.float32)
        outputs = body(_letterbox(tf, images, size), training=False)
        shapes = tf.tile(hw[None], [shape[0], 1])
        boxes, scores = decode_batch(list(outputs), detector.anchors, num_classes, shapes,
                                     detector.mask)
        nms = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :], scores, max_output_size_per_class=detector.max_boxes,
            max_total_size=max_total, iou_threshold=detector.iou,
            score_threshold=detector.score, pad_per_class=False, clip_boxes=False)
        yxyx = nms.nmsed_boxes
        limit = tf.concat([hw[::-1], hw[::-1]], 0)
        xyxy = tf.clip_by_value(tf.gather(yxyx, [1, 0, 3, 2], axis=-1), 0.0, limit)
        valid = nms.valid_detections
        keep = tf.sequence_mask(valid, max_total, dtype=tf.float32)
        return {"boxes": xyxy * keep[..., None], "scores": nms.nmsed_scores,
                "classes": tf.cast(nms.nmsed_classes, tf.int32), "valid_detections": valid}
    return detect


def export_saved_model(detector, path, max_total=100):
    """Write the SavedModel folder `path` (atomically: built aside, then renamed)."""
    if keras.backend.backend() != "tensorflow":
        raise UserError("SavedModel export needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    import tensorflow as tf

    detect = detection_function(detector, max_total)
    archive = keras.export.ExportArchive()
    archive.track(detector.body)
    archive.add_endpoint("serving_default", lambda images: detect(tf.cast(images, tf.float32) / 255.0),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    archive.add_endpoint("serving_float", detect,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(path))
    try:
        archive.write_out(temp, verbose=False)
        _replace_dir(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return path


def export_keras(detector, path):
    """Save the detection body as a .keras file (atomically)."""
    path = os.path.abspath(path)
    if not path.endswith(".keras"):
        raise UserError(f"{path}: a Keras model file name must end in .keras")
    temp = tempfile.mkdtemp(prefix=".keras.tmp-", dir=os.path.dirname(path))
    try:
        detector.body.save(os.path.join(temp, "body.keras"))
        os.replace(os.path.join(temp, "body.keras"), path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return path


def export(detector, folder, max_total=100):
    """`folder`/saved_model (SavedModel) and `folder`/body.keras; returns both paths."""
    os.makedirs(folder, exist_ok=True)
    return (export_saved_model(detector, os.path.join(folder, "saved_model"), max_total),
            export_keras(detector, os.path.join(folder, "body.keras")))


def load_saved_model(path):
    """The exported serving functions: (uint8 fn, float fn), each images -> dict of numpy."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))

    def wrap(fn, dtype):
        def call(images):
            out = fn(images=tf.convert_to_tensor(np.asarray(images), dtype))
            return {k: v.numpy() for k, v in out.items()}
        call.saved_model = loaded   # keep the variables alive
        return call
    return (wrap(loaded.signatures["serving_default"], tf.uint8),
            wrap(loaded.signatures["serving_float"], tf.float32))
