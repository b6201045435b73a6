"""Export a detector: a TensorFlow SavedModel with letterbox, network, decoding and
per-class NMS inside one fixed signature, and the body as a .keras file; or the
network alone as a .tflite (float32, float16 or full-integer int8) or .onnx file
that yolo3.runtimes runs (its docstring states what those files compute).

SavedModel signatures (all images of one call share one size):
  serving_default: images uint8 (B, H, W, 3), RGB 0..255
  serving_float:   images float32 (B, H, W, 3), RGB 0..1
  -> boxes (B, K, 4) float32 x_min, y_min, x_max, y_max in image pixels (clipped),
     scores (B, K), classes (B, K) int32, valid_detections (B,) int32;
     rows past valid_detections are padding (zeros).
"""
import os
import shutil
import subprocess
import sys
import tempfile
from typing import NamedTuple

import keras
import numpy as np

from .atomic import atomic_open, atomic_path
from .errors import UserError
from .model import decode_batch
from .runtimes import METADATA_KEY, metadata_text

GREY = 128 / 255.0   # the letterbox background (128, 128, 128)
FORMATS = ("savedmodel", "tflite", "onnx")
SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}
QUANTIZE = ("none", "float16", "int8")
CALIBRATION_IMAGES = 300   # int8: at most this many calibration images


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


# ---------------------------------------------------------------------------
# One exported file: .tflite, .onnx, or a SavedModel folder

class ExportRequest(NamedTuple):
    """A checked export: where, which format, which quantisation, and for int8 the
    calibration image paths."""
    path: str
    format: str
    quantize: str
    calibration: tuple = ()

    @property
    def label(self):
        """'SavedModel', 'TFLite int8', 'ONNX', ..."""
        if self.format == "tflite":
            return f"TFLite {'float32' if self.quantize == 'none' else self.quantize}"
        return {"savedmodel": "SavedModel and .keras body", "onnx": "ONNX"}[self.format]


def _format_of(path, format):
    suffix = os.path.splitext(os.path.normpath(str(path)))[1].lower()
    implied = SUFFIXES.get(suffix)
    if format is None:
        if implied or not suffix or os.path.isdir(path):
            return implied or "savedmodel"
        raise UserError(f"{path}: unknown export suffix {suffix!r}: use .tflite, .onnx, or a "
                        "folder name for a SavedModel (or --format)")
    if format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)} (got {format!r})")
    if implied and implied != format:
        raise UserError(f"{path}: the suffix {suffix} says {implied}, --format says {format}")
    return format


def _calibration_paths(path, count):
    """Up to `count` image paths spread evenly over the annotation file `path`."""
    from .annotation_file import read_annotations

    lines = read_annotations(path, progress=False)
    step = max(1, len(lines) // count)
    return tuple(line.path for line in lines[::step][:count])


def export_request(path, format=None, quantize=None, calibration=None,
                   calibration_images=CALIBRATION_IMAGES):
    """Check the export options before anything is built or written: the format
    (from --format or the suffix), --quantize (.tflite only; int8 needs a
    calibration annotation file, read here)."""
    format = _format_of(path, format)
    if quantize is not None and quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)} (got {quantize!r})")
    if quantize not in (None, "none") and format != "tflite":
        raise UserError(f"--quantize {quantize} is for .tflite files ({path} is {format})")
    quantize = quantize or "none"
    if quantize == "int8" and not calibration:
        raise UserError("--quantize int8 needs --calibration FILE (an annotation file whose "
                        "images calibrate the int8 ranges)")
    if calibration and quantize != "int8":
        raise UserError("--calibration is only used with --quantize int8")
    images = _calibration_paths(calibration, calibration_images) if calibration else ()
    return ExportRequest(str(path), format, quantize, images)


def _check_keras(detector):
    if detector.body is None:
        raise UserError(f"{detector.model_path}: already an exported file; export from the "
                        "Keras model (weights or .keras file)")


def _metadata(detector, quantize):
    return metadata_text(detector.anchors, detector.mask, detector.class_names,
                         detector.model_image_size, quantize)


def _input_spec(tf, detector):
    h, w = detector.model_image_size
    return tf.TensorSpec((None, h, w, 3), tf.float32, name="images")


def _traced_body(detector, folder):
    """The body's forward pass at the export's input size (batch size free) as a
    SavedModel in `folder`, signature serving_default(images): what the TFLite and
    ONNX converters read."""
    import tensorflow as tf

    body = detector.body
    archive = keras.export.ExportArchive()
    archive.track(body)
    archive.add_endpoint("serving_default", lambda images: body(images, training=False),
                         input_signature=[_input_spec(tf, detector)])
    archive.write_out(folder, verbose=False)


def _representative(detector, paths):
    """The int8 calibration data: each image letterboxed exactly as at inference."""
    from .images import open_image

    def batches():
        for path in paths:
            yield [detector.preprocess(open_image(path))[None]]
    return batches


def tflite_bytes(detector, quantize="none", calibration=()):
    """The body as a .tflite flatbuffer of builtin operators only (no Flex ops):
    float32, float16 weights, or full integer (int8 weights per channel, int8
    activations, int8 input and outputs) calibrated on the `calibration` images."""
    if keras.backend.backend() != "tensorflow":
        raise UserError("TFLite export needs the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="yolo3-tflite-") as folder:
        _traced_body(detector, folder)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = _representative(detector, calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        content = converter.convert()
    return _with_tflite_metadata(content, _metadata(detector, quantize))


def _with_tflite_metadata(content, text):
    """The flatbuffer with a metadata buffer named METADATA_KEY holding `text`."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def onnx_model(detector):
    """The body as an ONNX model (tf2onnx) with the metadata.

    tf2onnx runs in a child Python on protobuf's pure-Python implementation. Under
    the default (upb) implementation the converting process grows by about one
    copy of the weights per tf2onnx optimiser pass (tf2onnx rewrites the nodes'
    protobufs after each pass; upb frees replaced sub-messages only with the whole
    message): a 3.1 GB peak for tiny-YOLOv3, 24 GB for YOLOv3 (248 MB of weights),
    against 1.7 and 5.7 GB in the child. Its memory is returned when it exits."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="yolo3-onnx-") as folder:
        saved, target = os.path.join(folder, "saved_model"), os.path.join(folder, "model.onnx")
        _traced_body(detector, saved)
        _in_pure_python_protobuf("onnx_from_saved_model", saved, target)
        model = onnx.load(target)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, _metadata(detector, "none")
    return model


def onnx_from_saved_model(saved, target):
    """Convert the serving_default signature of the SavedModel `saved` (written by
    _traced_body) to the ONNX file `target` with tf2onnx (its default opset and
    graph optimisers)."""
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(saved)
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["images"]
    tf2onnx.convert.from_function(loaded.serving_default, [spec], output_path=target)


def _in_pure_python_protobuf(name, *args):
    """Call yolo3.export.`name`(*args) (string arguments) in a child Python whose
    protobuf is the pure-Python implementation."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    code = f"import sys; from yolo3.export import {name}; {name}(*sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"{name} failed in the child Python (exit status "
                           f"{done.returncode}): {tail[0]}")


def export_file(detector, request):
    """Write what `request` (from export_request) asks for; returns the paths written."""
    _check_keras(detector)
    if request.format == "savedmodel":
        return list(export(detector, request.path))
    if request.format == "tflite":
        content = tflite_bytes(detector, request.quantize, request.calibration)
        with atomic_open(request.path, "wb") as handle:
            handle.write(content)
    else:
        import onnx
        model = onnx_model(detector)
        with atomic_path(request.path) as temp:
            onnx.save(model, temp)
    return [os.path.abspath(request.path)]
