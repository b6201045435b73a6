"""Run an exported detector file (.tflite or .onnx, written by yolo3.export).

What such a file computes (the contract):
  input  'images': float32 (B, H, W, 3), RGB in [0, 1], letterboxed to the file's
         input size exactly as YOLO.preprocess does (an int8 .tflite takes int8:
         the runner quantises with the file's scale and zero point);
  output one raw head output per head, (B, H/32, W/32, A*(5+C)), (B, H/16, ...)
         [, (B, H/8, ...)]: the Keras body's outputs, before any sigmoid.
Decoding and per-class NMS run in the runner (YOLO), with the same code as for a
Keras model: one tested post-processing for every format, so a file gives the
Keras model's detections up to the network's own rounding. (TFLite's NMS builtins
are single-class; ONNX has a per-class NonMaxSuppression, but the letterbox undo
and decoding would then be a second implementation to keep equal.)

Each file carries what decoding needs as JSON under the metadata key 'yolo3'
(ONNX: metadata_props; TFLite: a named metadata buffer of the flatbuffer):
anchors, mask, class_names, input_size [h, w] and quantize.
"""
import json
import os

import numpy as np

from .errors import UserError

METADATA_KEY = "yolo3"
METADATA_VERSION = 1


def exported_suffix(path):
    """'.tflite' or '.onnx' when `path` names an exported file, else None."""
    suffix = os.path.splitext(str(path))[1].lower()
    return suffix if suffix in RUNTIMES else None


def metadata_text(anchors, mask, class_names, input_size, quantize):
    """The JSON a file carries under METADATA_KEY."""
    return json.dumps({"version": METADATA_VERSION,
                       "anchors": np.asarray(anchors, np.float32).reshape(-1, 2).tolist(),
                       "mask": [[int(i) for i in head] for head in mask],
                       "class_names": list(class_names),
                       "input_size": [int(v) for v in input_size],
                       "quantize": quantize})


def parse_metadata(path, text):
    """The metadata dict (anchors as an (n, 2) array, input_size as (h, w))."""
    if text is None:
        raise UserError(f"{path}: no '{METADATA_KEY}' metadata: not a file written by "
                        "yolo.py --export")
    try:
        meta = json.loads(text)
        meta["anchors"] = np.asarray(meta["anchors"], np.float32).reshape(-1, 2)
        meta["input_size"] = tuple(int(v) for v in meta["input_size"])
        meta["mask"] = [[int(i) for i in head] for head in meta["mask"]]
        meta["class_names"] = [str(c) for c in meta["class_names"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: bad '{METADATA_KEY}' metadata ({exc})") from None
    if meta.get("version") != METADATA_VERSION:
        raise UserError(f"{path}: metadata version {meta.get('version')} "
                        f"(this version reads {METADATA_VERSION})")
    return meta


def _require(module, package):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this needs the {package} package: pip install {package}") from None


def _ordered(outputs):
    """Head outputs coarsest grid first (the body's order: strides 32, 16, 8)."""
    return sorted(outputs, key=lambda o: o.shape[1] * o.shape[2])


def _quantize(x, detail):
    """float -> the tensor's integer type with its scale and zero point (as is for float)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(q, detail):
    if np.dtype(detail["dtype"]).kind == "f":
        return q.astype(np.float32)
    scale, zero = detail["quantization"]
    return (q.astype(np.float32) - zero) * np.float32(scale)


def tflite_metadata(content):
    """The METADATA_KEY buffer of a .tflite flatbuffer as text, or None."""
    schema = _require("ai_edge_litert.schema_py_generated", "ai-edge-litert")
    model = schema.Model.GetRootAsModel(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_KEY.encode():
            return bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode("utf-8")
    return None


def tflite_custom_ops(content):
    """Names of the custom (non-builtin) operators of a .tflite file, e.g. Flex ops."""
    schema = _require("ai_edge_litert.schema_py_generated", "ai-edge-litert")
    model = schema.Model.GetRootAsModel(content, 0)
    codes = (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))
    return sorted({c.CustomCode().decode() for c in codes if c.CustomCode()})


class TFLiteRuntime:
    """A .tflite file in the LiteRT interpreter (XNNPACK, its default CPU delegate)."""

    def __init__(self, path, num_threads=None):
        interpreter = _require("ai_edge_litert.interpreter", "ai-edge-litert")
        with open(path, "rb") as handle:
            content = handle.read()
        try:
            self.metadata = parse_metadata(path, tflite_metadata(content))
            self.interpreter = interpreter.Interpreter(
                model_content=content, num_threads=num_threads or os.cpu_count())
        except (ValueError, RuntimeError) as exc:   # not a flatbuffer, unknown op, ...
            raise UserError(f"{path}: cannot load the .tflite file ({exc})") from None
        self.runner = self.interpreter.get_signature_runner()
        self.input = self.runner.get_input_details()["images"]
        self.outputs = self.runner.get_output_details()

    def __call__(self, images):
        """Letterboxed float32 images (B, H, W, 3) -> raw head outputs (float32)."""
        out = self.runner(images=_quantize(np.asarray(images, np.float32), self.input))
        return _ordered([_dequantize(out[name], self.outputs[name]) for name in out])


class OnnxRuntime:
    """An .onnx file in ONNX Runtime (CPU execution provider)."""

    def __init__(self, path, num_threads=None):
        ort = _require("onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count()
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:   # ORT raises its own exception types for a foreign file
            raise UserError(f"{path}: cannot load the .onnx file ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = parse_metadata(path, meta.get(METADATA_KEY))
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images):
        """Letterboxed float32 images (B, H, W, 3) -> raw head outputs."""
        return _ordered(self.session.run(None, {self.input_name: np.asarray(images, np.float32)}))


def load_runtime(path, num_threads=None):
    """The runner of an exported file (by suffix); num_threads defaults to all cores."""
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: model file not found")
    suffix = exported_suffix(path)
    if suffix is None:
        raise UserError(f"{path}: not an exported file (expected .tflite or .onnx)")
    return RUNTIMES[suffix](path, num_threads)


RUNTIMES = {".tflite": TFLiteRuntime, ".onnx": OnnxRuntime}
