"""The YOLO detector (the original's yolo.py class): load a model, detect objects
in images in batches, draw labelled boxes.

The forward pass and the decoding (yolo3.model.decode_batch) are compiled once per
detector (tf.function, or jax.jit on the JAX backend); per-class non-max suppression
then runs per image on numpy (yolo3.model.non_max_suppression). A .tflite or .onnx
file from yolo3.export runs the forward pass in its runtime (yolo3.runtimes) with
the same preprocessing, decoding and NMS.
"""
import colorsys
import importlib
import os
import warnings
from typing import NamedTuple

import keras
import numpy as np
from PIL import ImageDraw, ImageFont

from .anchors import anchor_masks, get_anchors
from .annotation_file import get_classes
from .detector_options import DEFAULTS
from .errors import UserError
from .images import open_image
from .kinds import KINDS, kind_for_anchors, kind_of_body, kind_of_names
from .model import decode_batch, non_max_suppression
from .runtimes import exported_suffix, load_runtime
from .training import detection_body
from .utils import letterbox_image
from .weights import load_weights, read_weights

class Detections(NamedTuple):
    """One image's detections: boxes (n, 4) float32 as x_min, y_min, x_max, y_max
    in image pixels (clipped to the image), scores (n,), classes (n,) int32."""
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def model_input_size(value):
    """model_image_size as the original took it: N -> (N, N), or an (h, w) pair;
    each side a positive multiple of 32. (Text such as '608x416' is read by the
    CLIs' --input-size, yolo3.cli.input_size.)"""
    if isinstance(value, (str, bytes)):
        raise UserError(f"model_image_size must be an int or an (height, width) pair, "
                        f"not {value!r}")
    parts = [int(v) for v in np.atleast_1d(value)]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or any(p <= 0 or p % 32 for p in parts):
        raise UserError(f"input size {value} must be a multiple of 32 (e.g. 416 or "
                        "(320, 416) as height, width)")
    return tuple(parts)


def _describe(num_anchors, num_classes):
    heads = kind_for_anchors(num_anchors).heads
    return heads, num_anchors // heads * (num_classes + 5)


def _describe_file(path, body):
    """'it has 2 heads of 255 channels' from the output convolutions in the file."""
    stored = read_weights(path, body)
    kind = kind_of_names(name for name, values in stored.items() if values)
    if kind is None:
        return f"its layers differ from a {' or '.join(k.label for k in KINDS.values())} body"
    return (f"it has {kind.heads} heads of "
            f"{stored[kind.output_convs[0]][0].shape[-1]} channels")


def _mismatch(model_path, found, anchors_path, num_anchors, classes_path, num_classes):
    heads, channels = _describe(num_anchors, num_classes)
    return UserError(
        f"{model_path}: the model does not match the anchors and classes: {found}; "
        f"{anchors_path} has {num_anchors} anchors and {classes_path} has {num_classes} "
        f"classes, which need {heads} heads of {num_anchors // heads} x "
        f"({num_classes} + 5) = {channels} channels")


def load_body(model_path, anchors_path, num_anchors, classes_path, num_classes,
              input_shape=(None, None), kind=None):
    """The detection body from a .keras file (safe mode) or a weights file of any
    format yolo3.weights reads; checks it against the anchors and classes. The
    model kind comes from the file's layer names; for a file without darknet
    names (the original's Keras 2 .h5), `kind` or the one the anchor count means."""
    path = str(model_path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: model file not found")
    args = (anchors_path, num_anchors, classes_path, num_classes)
    if path.endswith(".keras"):
        importlib.import_module("yolo3.darknet")   # registers convert.py's custom layers
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:   # Keras raises many types for a foreign file
            raise UserError(f"{path}: cannot load the .keras model ({exc})") from None
        if any(layer.name == "yolo_loss" for layer in model.layers):
            model = detection_body(model)
        heads, channels = _describe(num_anchors, num_classes)
        found = sorted({o.shape[-1] for o in model.outputs})
        if len(model.outputs) != heads or found != [channels]:
            found = f"it has {len(model.outputs)} heads of {'/'.join(map(str, found))} channels"
            raise _mismatch(path, found, *args)
        if tuple(model.input_shape[1:3]) in ((None, None), tuple(input_shape)):
            return model
        # A body saved at another fixed size: same layers (by name) at this size.
        body = kind_of_body(model).build(num_classes, input_shape)
        for layer in body.layers:
            if layer.weights:
                layer.set_weights(model.get_layer(layer.name).get_weights())
        return body
    stored_kind = kind_of_names(read_weights(path))
    if stored_kind is not None and stored_kind.num_anchors != num_anchors:
        raise _mismatch(path, _describe_file(path, None), *args)
    body = (stored_kind or kind_for_anchors(num_anchors, kind)).build(num_classes, input_shape)
    _, skipped = load_weights(body, path, skip_mismatch=True)
    if skipped:   # a layer absent from the file or of another shape
        raise _mismatch(path, _describe_file(path, body), *args)
    return body


def class_colors(num_classes):
    """One colour per class: hues evenly spaced, shuffled with seed 10101 (as the original)."""
    hsv = [(x / num_classes, 1.0, 1.0) for x in range(num_classes)]
    colors = [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(*t)) for t in hsv]
    order = np.random.default_rng(10101).permutation(num_classes)
    return [colors[i] for i in order]


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):   # Pillow built without FreeType
        return ImageFont.load_default()


def _compile(body, anchors, num_classes, mask):
    """fn(images (B,h,w,3) float32, image_shapes (B,2)) -> (boxes (B,N,4) y_min, x_min,
    y_max, x_max, box scores (B,N,C)) as numpy, traced once."""
    def forward(images, shapes):
        outputs = body(images, training=False)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        return decode_batch(outputs, anchors, num_classes, shapes, mask)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        h, w = body.input_shape[1:3]
        fn = tf.function(forward, input_signature=[
            tf.TensorSpec((None, h, w, 3), tf.float32), tf.TensorSpec((None, 2), tf.float32)])
    elif backend == "jax":
        import jax

        def stateless(trainable, non_trainable, images, shapes):
            outputs, _ = body.stateless_call(trainable, non_trainable, images, training=False)
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            return decode_batch(outputs, anchors, num_classes, shapes, mask)

        jitted = jax.jit(stateless)

        def fn(images, shapes):   # current weights passed in: training updates are seen
            return jitted([v.value for v in body.trainable_variables],
                          [v.value for v in body.non_trainable_variables], images, shapes)
    else:
        fn = forward

    def run(images, shapes):
        boxes, scores = fn(images, shapes)
        return keras.ops.convert_to_numpy(boxes), keras.ops.convert_to_numpy(scores)
    run.compiled = fn
    return run


def _compile_runtime(runtime, anchors, num_classes, mask, input_size):
    """As _compile for an exported file: its runtime gives the raw head outputs,
    decode_batch (traced once on TensorFlow) decodes them."""
    def decode(outputs, shapes):
        return decode_batch(list(outputs), anchors, num_classes, shapes, mask)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        h, w = input_size
        heads = [tf.TensorSpec((None, h // s, w // s, len(m) * (5 + num_classes)), tf.float32)
                 for s, m in zip((32, 16, 8), mask)]
        decode = tf.function(decode, input_signature=[
            heads, tf.TensorSpec((None, 2), tf.float32)])

    def run(images, shapes):
        boxes, scores = decode(runtime(images), shapes)
        return keras.ops.convert_to_numpy(boxes), keras.ops.convert_to_numpy(scores)
    return run


FROM_FILE = ("anchors_path", "classes_path", "mask", "model_image_size")


class YOLO:
    """Detector with the original's defaults; any of DEFAULTS can be overridden by
    keyword (e.g. YOLO(model_path=..., score=0.5)). `body` gives an in-memory model
    instead of model_path (used during training). A .tflite or .onnx model_path
    carries its anchors, mask, classes and input size (FROM_FILE options are then
    an error); `body` is None and `runtime` runs the file.

    The original's attributes keep working: model_path, anchors_path, classes_path,
    score, iou, model_image_size, gpu_num, class_names, anchors, colors,
    yolo_model (the Keras model, also called body), and YOLO.get_defaults(name);
    score, iou and max_boxes may be changed between calls."""
    _defaults = DEFAULTS

    @classmethod
    def get_defaults(cls, name):
        """The original's class method: a default by name."""
        if name in cls._defaults:
            return cls._defaults[name]
        return "Unrecognized attribute name '" + name + "'"

    def __init__(self, body=None, class_names=None, anchors=None, **kwargs):
        unknown = set(kwargs) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown YOLO option(s): {sorted(unknown)}")
        self.__dict__.update(DEFAULTS)
        self.__dict__.update(kwargs)
        if self.gpu_num != 1:
            warnings.warn(f"gpu_num={self.gpu_num}: detection runs on one device "
                          "(the original replicated the model with multi_gpu_model)",
                          stacklevel=2)
        self.runtime = None
        if body is None and exported_suffix(self.model_path):
            self._load_exported(kwargs, class_names, anchors)
            return
        self.model_image_size = model_input_size(self.model_image_size)
        self.class_names = (list(class_names) if class_names is not None
                            else get_classes(self.classes_path))
        self.anchors = (np.asarray(anchors, np.float32).reshape(-1, 2) if anchors is not None
                        else get_anchors(self.anchors_path))
        self.mask = anchor_masks(len(self.anchors), self.mask)
        self.colors = class_colors(len(self.class_names))
        if body is None:
            self.generate()
        else:
            self.body = body

    def generate(self):
        """The original's method: load the model from model_path, checked against
        the anchors and classes (__init__ calls it unless given a body)."""
        self.body = load_body(self.model_path, self.anchors_path, len(self.anchors),
                              self.classes_path, len(self.class_names),
                              self.model_image_size)

    @property
    def body(self):
        """The Keras detection model (the original's `yolo_model`); setting it
        compiles the detection function anew."""
        return self._body

    @body.setter
    def body(self, body):
        fixed = tuple(body.input_shape[1:3])
        if None not in fixed and fixed != self.model_image_size:
            raise UserError(f"the model's input is {fixed[0]}x{fixed[1]} but the input size "
                            f"is {self.model_image_size[0]}x{self.model_image_size[1]}")
        self._body = body
        self._run = _compile(body, self.anchors, len(self.class_names), self.mask)

    yolo_model = body

    def _load_exported(self, kwargs, class_names, anchors):
        given = sorted(set(kwargs) & set(FROM_FILE)) + [
            name for name, value in (("class_names", class_names), ("anchors", anchors))
            if value is not None]
        if given:
            raise UserError(f"{self.model_path}: an exported file carries its anchors, mask, "
                            f"classes and input size; do not pass {', '.join(given)}")
        self.runtime = load_runtime(self.model_path)
        meta = self.runtime.metadata
        self.anchors = meta["anchors"]
        self.mask = anchor_masks(len(self.anchors), meta["mask"])
        self.class_names, self.model_image_size = meta["class_names"], meta["input_size"]
        self._body = None
        self.colors = class_colors(len(self.class_names))
        self._run = _compile_runtime(self.runtime, self.anchors, len(self.class_names),
                                     self.mask, self.model_image_size)

    def preprocess(self, image):
        """PIL image -> letterboxed float32 (h, w, 3) in [0, 1] (the original's input)."""
        h, w = self.model_image_size
        boxed = letterbox_image(image.convert("RGB"), (w, h))
        return np.asarray(boxed, dtype=np.float32) / 255.0

    def _postprocess(self, boxes, scores, size):
        w, h = size
        out_boxes, out_scores, out_classes = non_max_suppression(
            boxes, scores, self.max_boxes, self.score, self.iou)
        # y_min, x_min, y_max, x_max -> x_min, y_min, x_max, y_max, clipped to the image
        xyxy = out_boxes[:, [1, 0, 3, 2]].astype(np.float32)
        xyxy = np.clip(xyxy, 0, np.array([w, h, w, h], np.float32))
        return Detections(xyxy, out_scores.astype(np.float32), out_classes.astype(np.int32))

    def detect(self, images, batch_size=None, progress=None):
        """Detections for each image (PIL images or paths), in batches of
        batch_size (default self.batch_size). progress(n) is called per batch."""
        batch_size = batch_size or self.batch_size
        images = list(images)
        results = []
        for start in range(0, len(images), batch_size):
            chunk = [open_image(i) if isinstance(i, (str, os.PathLike)) else i
                     for i in images[start:start + batch_size]]
            batch = np.stack([self.preprocess(i) for i in chunk])
            shapes = np.array([(i.size[1], i.size[0]) for i in chunk], np.float32)
            boxes, scores = self._run(batch, shapes)
            results += [self._postprocess(b, s, i.size) for b, s, i in zip(boxes, scores, chunk)]
            if progress:
                progress(len(chunk))
        return results

    def draw(self, image, detections):
        """A copy of `image` with a box and a `class score` label per detection."""
        image = image.convert("RGB")
        w, h = image.size
        font = _font(max(10, int(3e-2 * h + 0.5)))
        thickness = max(1, (w + h) // 300)   # the original's line width
        draw = ImageDraw.Draw(image)
        for box, score, c in zip(*detections):
            left, top, right, bottom = (int(np.floor(v + 0.5)) for v in box)
            right, bottom = min(right, w - 1), min(bottom, h - 1)
            color = self.colors[c]
            label = f"{self.class_names[c]} {score:.2f}"
            x0, y0, x1, y1 = draw.textbbox((0, 0), label, font=font)
            label_w, label_h = x1 - x0, y1 - y0 + 2
            # label above the box when it fits, else just inside its top edge
            text_y = top - label_h if top - label_h >= 0 else top + 1
            text_x = min(max(left, 0), max(w - label_w - 2, 0))
            draw.rectangle([left, top, right, bottom], outline=color, width=thickness)
            draw.rectangle([text_x, text_y, text_x + label_w + 2, text_y + label_h], fill=color)
            draw.text((text_x + 1, text_y - y0 + 1), label, fill=(0, 0, 0), font=font)
        return image

    def detect_image(self, image, return_detections=False):
        """The original's API: the image with labelled boxes drawn; with
        return_detections, (image, Detections)."""
        detections = self.detect([image], batch_size=1)[0]
        drawn = self.draw(image, detections)
        return (drawn, detections) if return_detections else drawn

    def close_session(self):
        """The original's API; nothing to close in Keras 3."""


def make_detector(args):
    """A YOLO detector from the flags of yolo3.detector_options.add_model_arguments."""
    if not 0 <= args.score <= 1 or not 0 <= args.iou <= 1:
        raise UserError(f"--score and --iou must be in [0, 1] (got {args.score}, {args.iou})")
    if exported_suffix(args.model):     # the file carries anchors, mask, classes, size
        return YOLO(model_path=args.model, score=args.score, iou=args.iou,
                    max_boxes=args.max_boxes, batch_size=args.batch_size)
    return YOLO(model_path=args.model, anchors_path=args.anchors, classes_path=args.classes,
                score=args.score, iou=args.iou, model_image_size=args.input_size,
                mask=args.mask, max_boxes=args.max_boxes, batch_size=args.batch_size)
