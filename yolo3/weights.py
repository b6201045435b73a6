"""Weight files: save by layer name, load by layer name from this project's files,
Keras 3 `.weights.h5` / `.keras` files and the original tool's Keras 2 `.h5` files.

This project's format is HDF5: one group per layer (named as the layer), holding
datasets "0", "1", ... in the order of `layer.weights`. Any file name works
(`yolo_weights.h5`, `trained_weights_final.weights.h5`).
"""
import io
import re
import zipfile

import h5py
import numpy as np

from .atomic import atomic_open
from .errors import UserError

FORMAT = "yolo3-keras3-weights"


class _BytesFile(io.BytesIO):
    """An in-memory file for h5py, so that a disk error surfaces as one OSError
    from a plain write, never from inside HDF5."""


def save_weights(model, path):
    """Write every layer's weights, keyed by layer name, atomically."""
    buffer = _BytesFile()
    with h5py.File(buffer, "w") as f:
        f.attrs["format"] = FORMAT
        names = []
        for layer in model.layers:
            values = layer.get_weights()
            if not values:
                continue
            names.append(layer.name)
            group = f.create_group(layer.name)
            for i, value in enumerate(values):
                group.create_dataset(str(i), data=value)
        f.attrs["layer_names"] = np.array(names, dtype="S")
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _decode(names):
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_ours(f):
    return {name: [np.asarray(f[name][str(i)]) for i in range(len(f[name]))]
            for name in _decode(f.attrs["layer_names"])}


def _read_keras3(f):
    """Keras 3 weights files: layers/<name>/vars/<i> (functional models)."""
    weights = {}
    for name, group in f["layers"].items():
        if "vars" in group and len(group["vars"]):
            weights[name] = [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]
    return weights


def _read_keras2(f):
    """Keras 2 HDF5 (the original tool's .h5), weights file or whole model."""
    if "model_weights" in f:
        f = f["model_weights"]
    weights = {}
    for name in _decode(f.attrs["layer_names"]):
        group = f[name]
        weight_names = _decode(group.attrs.get("weight_names", []))
        if weight_names:
            weights[name] = [np.asarray(group[w]) for w in weight_names]
    return weights


def _keras2_kind(name):
    """Keras 2 auto names: conv2d_12 -> ('conv', 12), batch_normalization_3 -> ('bn', 3)."""
    match = re.fullmatch(r"(conv2d|batch_normalization)(?:_(\d+))?", name)
    if not match:
        return None
    return ("conv" if match.group(1) == "conv2d" else "bn", int(match.group(2) or 0))


def _map_by_order(stored, model, darknet_order):
    """Pair auto-named layers (conv2d_N / batch_normalization_N) with this model's
    conv_NNN / bn_NNN, kind by kind, by order: Keras 2 numbered layers in creation
    order, which is darknet order; Keras 3 files follow the model's layer order."""
    by_kind = {"conv": [], "bn": []}
    for name in stored:
        kind = _keras2_kind(name)
        if kind:
            by_kind[kind[0]].append((kind[1], name))
    ours = {"conv": [], "bn": []}
    for position, layer in enumerate(model.layers):
        for kind in ours:
            if re.fullmatch(kind + r"_\d{3}", layer.name):
                key = int(layer.name[-3:]) if darknet_order else position
                ours[kind].append((key, layer.name))
    mapped = {}
    for kind in ours:
        theirs, mine = sorted(by_kind[kind]), sorted(ours[kind])
        if len(theirs) != len(mine):
            raise UserError(f"the weights file has {len(theirs)} {kind} layers, "
                            f"the model has {len(mine)}: another model")
        for (_, their_name), (_, my_name) in zip(theirs, mine):
            mapped[my_name] = stored[their_name]
    return mapped


def _by_name_or_order(stored, model, darknet_order):
    if model is not None and not any(n in stored for n in (l.name for l in model.layers)) \
            and any(_keras2_kind(n) for n in stored):
        return _map_by_order(stored, model, darknet_order)
    return stored


def read_weights(path, model=None):
    """Weights stored in `path` as {layer name: [arrays]} in this project's names."""
    path = str(path)
    try:
        if zipfile.is_zipfile(path):     # .keras: weights inside the archive
            with zipfile.ZipFile(path) as archive:
                data = io.BytesIO(archive.read("model.weights.h5"))
            with h5py.File(data, "r") as f:
                return _by_name_or_order(_read_keras3(f), model, darknet_order=False)
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") == FORMAT:
                return _read_ours(f)
            if "layers" in f:
                return _by_name_or_order(_read_keras3(f), model, darknet_order=False)
            if "layer_names" in f.attrs or "model_weights" in f:
                return _by_name_or_order(_read_keras2(f), model, darknet_order=True)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a weights file") from None
    # h5py reports damaged metadata as RuntimeError (and TypeError for some
    # damaged attributes), not only OSError.
    except (OSError, KeyError, ValueError, RuntimeError, TypeError,
            zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable weights file ({exc})") from None
    raise UserError(f"{path}: HDF5 file without Keras weights")


def load_weights(model, path, skip_mismatch=True, output_layers=()):
    """Load weights by layer name. Layers whose shapes differ are skipped when
    skip_mismatch (reported); a mismatch outside `output_layers` means the file
    belongs to another model and raises UserError. Returns (loaded, skipped) with
    skipped a list of (layer name, reason)."""
    stored = read_weights(path, model)
    loaded, skipped = [], []
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        if layer.name not in stored:
            skipped.append((layer.name, "not in the file"))
            continue
        values = stored[layer.name]
        shapes = [v.shape for v in values]
        wanted = [w.shape for w in current]
        if shapes != wanted:
            reason = f"shape {shapes} in the file, {wanted} in the model"
            if not skip_mismatch or (output_layers and layer.name not in output_layers):
                raise UserError(f"{path}: layer {layer.name}: {reason}; "
                                "the file belongs to another model")
            skipped.append((layer.name, reason))
            continue
        if not all(np.isfinite(v).all() for v in values if v.dtype.kind == "f"):
            raise UserError(f"{path}: layer {layer.name}: NaN or infinite values "
                            "(a damaged file, or saved from a diverged run)")
        layer.set_weights(values)
        loaded.append(layer.name)
    if not loaded:
        raise UserError(f"{path}: no layer of this model found in the file")
    return loaded, skipped
