"""darknet files: cfg parser and checker, Keras model from a cfg, .weights reader
and writer (both directions, every float accounted for).

Layer names follow the darknet layer index: `conv_NNN`, `bn_NNN`, `leaky_NNN`,
`pad_NNN`, `add_NNN`, `concat_NNN`, `upsample_NNN`, `maxpool_NNN` where NNN is the
darknet layer index, so a model built from yolov3.cfg / yolov3-tiny.cfg has the
layer names of `yolo_body` / `tiny_yolo_body` and converted weights load by name.

Batch norm: darknet normalises with (x - mean) / (sqrt(var) + 1e-6) (normalize_cpu in
blas.c); Keras with (x - mean) / sqrt(var + epsilon). The reader folds the difference
into gamma, gamma_keras = gamma * sqrt(var + epsilon) / (sqrt(var) + 1e-6), so the
converted model computes darknet's numbers at any Keras epsilon; the writer undoes it.
"""
import contextlib
import dataclasses
import os
import re
import types
import warnings

import keras
import numpy as np

from .atomic import atomic_open, atomic_path
from .batchnorm import BatchNormalization
from .errors import UserError
from .progress import progress_bar

DARKNET_BN_EPS = 1e-6  # darknet: (x - mean) / (sqrt(var) + .000001f)
KERAS_BN_EPS = 1e-3  # keras.layers.BatchNormalization default, used by yolo_body
L2_DECAY = 5e-4
MAX_INT = 1 << 16  # filters, size, stride, width, ... above this are mistakes
ACTIVATIONS = {  # darknet name -> (Keras layer factory, layer name prefix)
    "leaky": (lambda name: keras.layers.LeakyReLU(negative_slope=0.1, name=name), "leaky"),
    "relu": (lambda name: keras.layers.ReLU(name=name), "relu"),
    "logistic": (lambda name: keras.layers.Activation("sigmoid", name=name), "logistic"),
    "mish": (lambda name: keras.layers.Activation("mish", name=name), "mish"),
    "swish": (lambda name: keras.layers.Activation("silu", name=name), "swish"),
    "tanh": (lambda name: keras.layers.Activation("tanh", name=name), "tanh"),
    "elu": (lambda name: keras.layers.Activation("elu", name=name), "elu"),
    "selu": (lambda name: keras.layers.Activation("selu", name=name), "selu"),
    "relu6": (lambda name: keras.layers.ReLU(max_value=6.0, name=name), "relu6"),
    "linear": (None, None),
}
# Options that change what a layer computes and that this converter does not model.
UNSUPPORTED_OPTIONS = {
    "convolutional": ("dilation", "stride_x", "stride_y", "binary", "xnor",
                      "share_index", "antialiasing", "deform", "assisted_excitation"),
    "maxpool": ("stride_x", "stride_y", "maxpool_depth", "antialiasing"),
    "shortcut": ("weights_type",),
    "upsample": ("scale",),
}
PASSTHROUGH = ("yolo", "cost", "dropout")
KNOWN = ("net", "network", "convolutional", "route", "shortcut", "upsample", "maxpool",
         "avgpool", "softmax") + PASSTHROUGH


# ---------------------------------------------------------------- cfg parsing
@dataclasses.dataclass
class Section:
    """One `[kind]` block: its 1-based number in the file and header line."""
    kind: str
    number: int
    line: int
    path: str
    options: dict = dataclasses.field(default_factory=dict)  # key -> (value, line)

    def where(self, key=None):
        line = self.options[key][1] if key in self.options else self.line
        return f"{self.path}:{line}: section {self.number} [{self.kind}]"

    def error(self, what, key=None):
        return UserError(f"{self.where(key)}: {what}")

    def text(self, key, default=None):
        return self.options[key][0] if key in self.options else default

    def int(self, key, default, minimum=1, maximum=MAX_INT):
        """An integer option in [minimum, maximum], or a UserError naming it."""
        if key not in self.options:
            return default
        value = self.options[key][0]
        number = _parse_int(value)
        if number is None or not minimum <= number <= maximum:
            raise self.error(f"{key} must be an integer in {minimum}..{maximum} "
                             f"({value!r})", key)
        return number

    def ints(self, key):
        """A comma-separated integer list option, or a UserError naming it."""
        value = self.options[key][0]
        numbers = [_parse_int(v) for v in value.split(",") if v != ""]
        if not numbers or None in numbers or any(abs(n) > MAX_INT for n in numbers):
            raise self.error(f"{key} must be a list of integers ({value!r})", key)
        return numbers

    def floats(self, key):
        value = self.options[key][0]
        try:
            numbers = [float(v) for v in value.split(",") if v != ""]
        except ValueError:
            numbers = []
        if not numbers or not all(np.isfinite(numbers)) or min(numbers) <= 0:
            raise self.error(f"{key} must be a list of positive numbers ({value!r})", key)
        return numbers


def _parse_int(text):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if np.isfinite(number) and number.is_integer() else None


def parse_cfg(path):
    """Read a darknet cfg -> list of Section in file order.

    As darknet's read_cfg: whitespace inside a line is removed, lines starting with
    '#' or ';' are comments (also ignored after a value here), `[kind]` opens a
    section, everything else is `key=value`.
    """
    path = str(path)
    try:
        with open(path, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a darknet cfg (not text)") from None
    sections = []
    for number, raw in enumerate(lines, 1):
        line = "".join(raw.split("#", 1)[0].split())
        if not line or line[0] == ";":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise UserError(f"{path}:{number}: bad section header ({raw.strip()!r})")
            sections.append(Section(line[1:-1].lower(), len(sections) + 1, number, path))
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise UserError(f"{path}:{number}: expected key=value ({raw.strip()!r})")
        if not sections:
            raise UserError(f"{path}:{number}: option before the first [section]")
        sections[-1].options[key] = (value, number)
    if not sections:
        raise UserError(f"{path}: no sections; not a darknet cfg")
    return sections


# ------------------------------------------------------- network description
@dataclasses.dataclass
class Layer:
    """A darknet layer with its checked parameters and output shape (h, w, c)."""
    index: int
    kind: str
    section: Section
    inputs: list  # darknet indexes; -1 is the network input
    shape: tuple
    params: dict

    @property
    def num_floats(self):
        """Floats this layer holds in a .weights file (0 unless convolutional)."""
        if self.kind != "convolutional":
            return 0
        p = self.params
        return (p["filters"] * (4 if p["bn"] else 1)
                + p["filters"] * (p["in_channels"] // p["groups"]) * p["size"] ** 2)


@dataclasses.dataclass
class Network:
    """A checked cfg: [net] values, layers in darknet order, yolo heads."""
    path: str
    width: int
    height: int
    channels: int
    layers: list
    heads: list  # per [yolo]: dict(index, source, mask, anchors, classes, section)

    @property
    def convs(self):
        return [layer for layer in self.layers if layer.kind == "convolutional"]

    @property
    def num_floats(self):
        return sum(layer.num_floats for layer in self.layers)

    def outputs(self):
        """Darknet indexes of the model outputs: the inputs of the [yolo] layers,
        else the last layer."""
        return [h["source"] for h in self.heads] or [len(self.layers) - 1]

    def anchors(self):
        """(N, 2) anchors shared by all [yolo] sections, or a UserError."""
        if not self.heads:
            raise UserError(f"{self.path}: no [yolo] sections, so no anchors")
        first = self.heads[0]
        for head in self.heads:
            if head["anchors"] is None:
                raise head["section"].error("no anchors= to write")
            if not np.array_equal(head["anchors"], first["anchors"]):
                raise head["section"].error("anchors differ from those of section "
                                            f"{first['section'].number}", "anchors")
        return first["anchors"]


def load_cfg(path):
    """Parse and check a cfg file -> Network."""
    return analyse(parse_cfg(path))


def analyse(sections):
    """Check every section's values and infer the shapes -> Network."""
    net = sections[0]
    if net.kind not in ("net", "network"):
        raise net.error("the first section must be [net]")
    width = net.int("width", 416)
    height = net.int("height", 416)
    channels = net.int("channels", 3)
    layers, heads = [], []
    for section in sections[1:]:
        index = len(layers)
        if section.kind not in KNOWN or section.kind in ("net", "network"):
            raise section.error("unsupported section type"
                                if section.kind not in ("net", "network")
                                else "[net] must be the first section only")
        for key in UNSUPPORTED_OPTIONS.get(section.kind, ()):
            if key in section.options and not (key == "groups" and section.int(key, 1) == 1):
                raise section.error(f"option {key} is not supported", key)
        previous = layers[-1].shape if layers else (height, width, channels)
        builder = globals()["_check_" + section.kind]
        inputs, shape, params = builder(section, index, layers, previous)
        layer = Layer(index, section.kind, section, inputs, shape, params)
        layers.append(layer)
        if section.kind == "yolo":
            heads.append(dict(params, index=index, source=index - 1, section=section))
    if not layers:
        raise net.error("the cfg has no layers")
    return Network(net.path, width, height, channels, layers, heads)


def _activation(section, default):
    name = section.text("activation", default)
    if name not in ACTIVATIONS:
        raise section.error(f"unsupported activation ({name!r}); supported: "
                            + ", ".join(ACTIVATIONS), "activation")
    return name


def _check_convolutional(section, index, layers, previous):
    h, w, c = previous
    filters = section.int("filters", 1)
    size = section.int("size", 1)
    stride = section.int("stride", 1)
    groups = section.int("groups", 1)
    padding = section.int("padding", 0, minimum=0)
    if section.int("pad", 0, minimum=0):
        padding = size // 2  # darknet: if (pad) padding = size/2
    if c % groups or filters % groups:
        raise section.error(f"groups={groups} must divide the input channels ({c}) "
                            f"and filters ({filters})", "groups")
    out_h = (h + 2 * padding - size) // stride + 1
    out_w = (w + 2 * padding - size) // stride + 1
    if out_h < 1 or out_w < 1:
        raise section.error(f"size {size} with padding {padding} does not fit the "
                            f"{h}x{w} input", "size")
    params = dict(filters=filters, size=size, stride=stride, padding=padding,
                  groups=groups, in_channels=c,
                  bn=bool(section.int("batch_normalize", 0, minimum=0, maximum=1)),
                  activation=_activation(section, "logistic"))
    return [index - 1], (out_h, out_w, filters), params


def _layer_ref(section, key, value, index, layers):
    """A route/shortcut reference (negative = relative) -> absolute index."""
    target = index + value if value < 0 else value
    if not 0 <= target < index:
        raise section.error(f"{key} refers to layer {value} -> {target}, outside "
                            f"0..{index - 1}", key)
    return target


def _check_route(section, index, layers, previous):
    if "layers" not in section.options:
        raise section.error("route needs layers=")
    inputs = [_layer_ref(section, "layers", v, index, layers)
              for v in section.ints("layers")]
    shapes = [layers[i].shape for i in inputs]
    if len({s[:2] for s in shapes}) > 1:
        raise section.error("routed layers differ in height x width ("
                            + ", ".join(f"{i}: {s[0]}x{s[1]}" for i, s in zip(inputs, shapes))
                            + ")", "layers")
    # groups/group_id (yolov4-tiny): keep channel group `group_id` of `groups`
    groups = section.int("groups", 1)
    group_id = section.int("group_id", 0, minimum=0, maximum=groups - 1)
    if groups > 1 and (len(inputs) > 1 or shapes[0][2] % groups):
        raise section.error(f"groups={groups} needs one routed layer whose channels "
                            f"({shapes[0][2]}) it divides", "groups")
    shape = shapes[0][:2] + (sum(s[2] for s in shapes) // groups,)
    return inputs, shape, dict(groups=groups, group_id=group_id)


def _check_shortcut(section, index, layers, previous):
    if "from" not in section.options or index == 0:
        raise section.error("shortcut needs from= and a previous layer")
    refs = section.ints("from")
    if len(refs) != 1:
        raise section.error("shortcut from= must be one layer", "from")
    source = _layer_ref(section, "from", refs[0], index, layers)
    if layers[source].shape != previous:
        raise section.error(f"shortcut shapes differ: layer {source} is "
                            f"{layers[source].shape}, layer {index - 1} is {previous}",
                            "from")
    return [index - 1, source], previous, dict(activation=_activation(section, "linear"))


def _check_upsample(section, index, layers, previous):
    stride = section.int("stride", 2)
    h, w, c = previous
    return [index - 1], (h * stride, w * stride, c), dict(stride=stride)


def _check_maxpool(section, index, layers, previous):
    stride = section.int("stride", 1)
    size = section.int("size", stride)
    padding = section.int("padding", size - 1, minimum=0)
    h, w, c = previous
    # darknet maxpool_layer.c: out = (w + padding - size) / stride + 1, first window
    # at -padding/2, padded cells ignored (-FLT_MAX)
    out_h = (h + padding - size) // stride + 1
    out_w = (w + padding - size) // stride + 1
    if out_h < 1 or out_w < 1:
        raise section.error(f"size {size} does not fit the {h}x{w} input", "size")
    return [index - 1], (out_h, out_w, c), dict(size=size, stride=stride, padding=padding)


def _check_avgpool(section, index, layers, previous):
    return [index - 1], (1, 1, previous[2]), {}


def _check_softmax(section, index, layers, previous):
    section.int("groups", 1, maximum=1)
    return [index - 1], previous, {}


def _check_passthrough(section, index, layers, previous):
    if index == 0:
        raise section.error("needs a previous layer")
    return [index - 1], previous, {}


_check_cost = _check_passthrough


def _check_dropout(section, index, layers, previous):
    inputs, shape, _ = _check_passthrough(section, index, layers, previous)
    rate = section.floats("probability")[0] if "probability" in section.options else 0.5
    if rate >= 1:
        raise section.error(f"probability must be below 1 ({rate})", "probability")
    return inputs, shape, dict(rate=rate)


def _check_yolo(section, index, layers, previous):
    _check_passthrough(section, index, layers, previous)
    classes = section.int("classes", 20)
    num = section.int("num", 1)
    anchors = None  # optional in darknet (parse_yolo)
    if "anchors" in section.options:
        anchors = np.array(section.floats("anchors"), np.float32)
    if anchors is not None and anchors.size != 2 * num:
        raise section.error(f"{anchors.size} anchor values for num={num} "
                            f"(need {2 * num})", "anchors")
    mask = section.ints("mask") if "mask" in section.options else list(range(num))
    if any(not 0 <= m < num for m in mask):
        raise section.error(f"mask {mask} outside 0..{num - 1}", "mask")
    expected = len(mask) * (classes + 5)
    if previous[2] != expected:
        raise section.error(f"the layer before has {previous[2]} filters; "
                            f"{len(mask)} anchors x ({classes} classes + 5) = {expected}")
    return [index - 1], previous, dict(
        mask=mask, classes=classes, anchors=None if anchors is None else anchors.reshape(-1, 2))


# ------------------------------------------------------------ Keras builder
@keras.saving.register_keras_serializable(package="yolo3")
class DarknetMaxPool(keras.layers.Layer):
    """darknet's maxpool where Keras 'same' differs: window i starts at
    i*stride - padding//2, cells outside the input never win."""

    def __init__(self, size, stride, padding, **kwargs):
        super().__init__(**kwargs)
        self.size, self.stride, self.padding = size, stride, padding

    def call(self, x):
        top = self.padding // 2
        pads = [[0, 0], [top, self.padding - top], [top, self.padding - top], [0, 0]]
        x = keras.ops.pad(x, pads, constant_values=float(np.finfo(np.float32).min))
        return keras.ops.max_pool(x, self.size, self.stride, padding="valid")

    def compute_output_shape(self, shape):
        def out(n):
            return None if n is None else (n + self.padding - self.size) // self.stride + 1
        return (shape[0], out(shape[1]), out(shape[2]), shape[3])

    def get_config(self):
        return dict(super().get_config(), size=self.size, stride=self.stride,
                    padding=self.padding)


@keras.saving.register_keras_serializable(package="yolo3")
class ChannelGroup(keras.layers.Layer):
    """darknet's [route] with groups: channel group `group_id` of `groups`."""

    def __init__(self, groups, group_id, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.group_id = groups, group_id

    def call(self, x):
        size = x.shape[-1] // self.groups
        return x[..., self.group_id * size:(self.group_id + 1) * size]

    def compute_output_shape(self, shape):
        return tuple(shape[:-1]) + (shape[-1] // self.groups,)

    def get_config(self):
        return dict(super().get_config(), groups=self.groups, group_id=self.group_id)


def _keras_conv(x, layer, bn_epsilon):
    p, name = layer.params, f"{layer.index:03d}"
    same = p["stride"] == 1 and 2 * p["padding"] == p["size"] - 1
    if not same and p["padding"]:
        x = keras.layers.ZeroPadding2D(p["padding"], name="pad_" + name)(x)
    x = keras.layers.Conv2D(p["filters"], p["size"], strides=p["stride"],
                            padding="same" if same else "valid", groups=p["groups"],
                            use_bias=not p["bn"], name="conv_" + name,
                            kernel_regularizer=keras.regularizers.l2(L2_DECAY))(x)
    if p["bn"]:
        x = BatchNormalization(epsilon=bn_epsilon, name="bn_" + name)(x)
    return _keras_activation(x, p["activation"], name)


def _keras_activation(x, activation, name):
    factory, prefix = ACTIVATIONS[activation]
    return factory(f"{prefix}_{name}")(x) if factory else x


def _keras_maxpool(x, layer):
    p, name = layer.params, f"maxpool_{layer.index:03d}"
    if p["padding"] == p["size"] - 1 and (p["stride"] == 1 or p["size"] <= 2):
        # Keras 'same' puts the same cells in each window as darknet here
        return keras.layers.MaxPooling2D(p["size"], p["stride"], padding="same",
                                         name=name)(x)
    return DarknetMaxPool(p["size"], p["stride"], p["padding"], name=name)(x)


def build_model(network, input_shape=None, bn_epsilon=KERAS_BN_EPS):
    """Keras Model of a checked cfg; input (None, None, channels) unless given."""
    shape = tuple(input_shape or (None, None)) + (network.channels,)
    image = keras.Input(shape=shape, name="image")
    outs = []
    for layer in network.layers:
        name = f"{layer.index:03d}"
        x = outs[layer.inputs[0]] if layer.index else image
        if layer.kind == "convolutional":
            x = _keras_conv(x, layer, bn_epsilon)
        elif layer.kind == "route" and layer.params["groups"] > 1:
            x = ChannelGroup(layer.params["groups"], layer.params["group_id"],
                             name="route_" + name)(x)
        elif layer.kind == "route" and len(layer.inputs) > 1:
            x = keras.layers.Concatenate(name="concat_" + name)(
                [outs[i] for i in layer.inputs])
        elif layer.kind == "shortcut":
            x = keras.layers.Add(name="add_" + name)([x, outs[layer.inputs[1]]])
            x = _keras_activation(x, layer.params["activation"], name)
        elif layer.kind == "upsample":
            x = keras.layers.UpSampling2D(layer.params["stride"], name="upsample_" + name)(x)
        elif layer.kind == "maxpool":
            x = _keras_maxpool(x, layer)
        elif layer.kind == "avgpool":
            x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="avgpool_" + name)(x)
        elif layer.kind == "softmax":
            x = keras.layers.Softmax(name="softmax_" + name)(x)
        elif layer.kind == "dropout":
            x = keras.layers.Dropout(layer.params["rate"], name="dropout_" + name)(x)
        outs.append(x)
    return keras.Model(image, [outs[i] for i in network.outputs()])


# ------------------------------------------------------------ weights reader
@dataclasses.dataclass
class WeightsFile:
    """What read_weights found: header, per-layer arrays, float accounting."""
    version: tuple
    seen: int
    arrays: dict  # Keras layer name -> list of arrays (Keras layout)
    loaded: list  # darknet indexes of the convolutions that got weights
    missing: list  # ... that did not (only with partial=True)
    floats_read: int
    floats_total: int

    @property
    def leftover(self):
        return self.floats_total - self.floats_read


def _read_header(path, handle):
    raw = handle.read(12)
    if len(raw) < 12:  # frombuffer would fail on a length not a multiple of 4
        raise UserError(f"{path}: too short for a darknet weights header (12 bytes)")
    head = np.frombuffer(raw, "<i4")
    major, minor, revision = (int(v) for v in head)
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000  # parser.c
    raw = handle.read(8 if wide else 4)
    if len(raw) < (8 if wide else 4):
        raise UserError(f"{path}: the header ends early")
    seen = int(np.frombuffer(raw, "<i8" if wide else "<i4")[0])
    return (major, minor, revision), seen, 12 + len(raw)


def count_floats(path):
    """Whole float32 values after the header of a darknet .weights file."""
    with open(path, "rb") as handle:
        _, _, offset = _read_header(str(path), handle)
        handle.seek(0, 2)
        return (handle.tell() - offset) // 4


def read_weights(path, network, bn_epsilon=KERAS_BN_EPS, partial=False, strict=False,
                 progress=None, model=None):
    """Read a darknet .weights file for `network` -> WeightsFile. With `model`, each
    layer's arrays go straight into it (by name) instead of into .arrays.

    Per convolution in order: biases (filters), then if batch_normalize scales,
    rolling mean, rolling variance (filters each), then weights (filters,
    in/groups, size, size). A file that ends early is an error naming the layer
    and the missing float count, unless `partial` and it ends between layers;
    leftover floats are a warning, or an error when `strict`. progress(1) is
    called after each convolution.
    """
    path = str(path)
    with open(path, "rb") as handle:
        version, seen, offset = _read_header(path, handle)
        handle.seek(0, 2)
        size = handle.tell()
    extra_bytes = (size - offset) % 4
    total = (size - offset) // 4
    data = (np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(total,))
            if total else np.zeros(0, np.float32))
    arrays, loaded, missing, pos = {}, [], [], 0
    convs = network.convs
    for layer in convs:
        need = layer.num_floats
        if pos + need > total and not (partial and pos == total):
            hint = (" (the file holds only the first layers: convert what is "
                    "present with --partial)" if pos == total else "")
            raise UserError(f"{path}: ends in layer {layer.index} (conv_{layer.index:03d}, "
                            f"{layer.section.where()}): {pos + need - total} of its "
                            f"{need} floats are missing{hint}")
        if pos == total and partial:
            missing.append(layer.index)
            continue
        converted = _conv_arrays(layer, data[pos:pos + need], bn_epsilon, path)
        if model is None:
            arrays.update(converted)
        else:
            for name, values in converted.items():
                model.get_layer(name).set_weights(values)
        loaded.append(layer.index)
        pos += need
        if progress:
            progress(1)
    del data
    leftover = total - pos
    if leftover or extra_bytes:
        what = (f"{path}: {leftover} floats" + (f" and {extra_bytes} bytes" if extra_bytes else "")
                + f" left over after the {len(loaded)} convolutions of "
                f"{network.path} ({pos} floats used)")
        if strict:
            raise UserError(what + " (--strict)")
        warnings.warn(what, stacklevel=2)
    return WeightsFile(version, seen, arrays, loaded, missing, pos, total)


def fold_gamma(gamma, var, epsilon):
    """darknet scale -> Keras gamma giving the same output at Keras `epsilon`."""
    var = var.astype(np.float64)
    return (gamma * np.sqrt(var + epsilon) / (np.sqrt(var) + DARKNET_BN_EPS)).astype(np.float32)


def unfold_gamma(gamma, var, epsilon):
    """Inverse of fold_gamma: Keras gamma -> darknet scale."""
    var = var.astype(np.float64)
    return (gamma * (np.sqrt(var) + DARKNET_BN_EPS) / np.sqrt(var + epsilon)).astype(np.float32)


def _conv_arrays(layer, flat, bn_epsilon, path):
    p, name = layer.params, f"{layer.index:03d}"
    f = p["filters"]
    biases = np.array(flat[:f])
    pos = f
    out = {}
    if p["bn"]:
        scales, mean, var = (np.array(flat[pos + i * f:pos + (i + 1) * f]) for i in range(3))
        pos += 3 * f
        if not np.all(var >= 0):
            raise UserError(f"{path}: layer {layer.index} ({layer.section.where()}): "
                            "negative or NaN rolling variance")
        out["bn_" + name] = [fold_gamma(scales, var, bn_epsilon), biases, mean, var]
    kernel = np.asarray(flat[pos:]).reshape(f, p["in_channels"] // p["groups"],
                                            p["size"], p["size"])
    kernel = np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))  # (h, w, in, out)
    out["conv_" + name] = [kernel] if p["bn"] else [kernel, biases]
    return out


def set_weights(model, weights):
    """Put read_weights' arrays into `model` (layers looked up by name)."""
    for name, arrays in weights.arrays.items():
        model.get_layer(name).set_weights(arrays)


# ------------------------------------------------------------ darknet writer
NAME = re.compile(r"^([a-z][a-z0-9]*)_(\d{3,})$")
MAIN_KINDS = {"conv": "convolutional", "add": "shortcut", "concat": "route", "route": "route",
              "upsample": "upsample", "maxpool": "maxpool", "avgpool": "avgpool",
              "softmax": "softmax", "dropout": "dropout"}
ACTIVATION_PREFIXES = {prefix: act for act, (_, prefix) in ACTIVATIONS.items() if prefix}
NET_OPTIONS = ("batch=1\nsubdivisions=1\nmomentum=0.9\ndecay=0.0005\nangle=0\n"
               "saturation=1.5\nexposure=1.5\nhue=.1\nlearning_rate=0.001\n"
               "burn_in=1000\nmax_batches=500200\npolicy=steps\nsteps=400000,450000\n"
               "scales=.1,.1\n")


def _producer(tensor):
    """Darknet index of the layer that made `tensor` (-1 for the model input)."""
    layer = tensor._keras_history[0]
    if isinstance(layer, keras.layers.InputLayer):
        return -1
    match = NAME.match(layer.name)
    if not match:
        raise UserError(f"layer {layer.name!r} does not follow the darknet naming "
                        "(conv_NNN, bn_NNN, ...); cannot write it as darknet")
    return int(match.group(2))


def _inputs(layer):
    tensors = layer.input
    return [_producer(t) for t in (tensors if isinstance(tensors, (list, tuple)) else [tensors])]


def _groups(model):
    """Darknet index -> {prefix: Keras layer} from the model's layer names."""
    groups = {}
    for layer in model.layers:
        match = NAME.match(layer.name)
        if match:
            groups.setdefault(int(match.group(2)), {})[match.group(1)] = layer
        elif not isinstance(layer, keras.layers.InputLayer):
            raise UserError(f"layer {layer.name!r} does not follow the darknet naming "
                            "(conv_NNN, bn_NNN, ...); cannot write it as darknet")
    return groups


def _conv_section(group):
    conv = group["conv"]
    size, stride = conv.kernel_size, conv.strides
    if size[0] != size[1] or stride[0] != stride[1]:
        raise UserError(f"{conv.name}: darknet needs square kernels and strides")
    size, stride = size[0], stride[0]
    if conv.padding == "same":
        if stride != 1 or size % 2 == 0:
            raise UserError(f"{conv.name}: 'same' padding with stride {stride} and size "
                            f"{size} has no darknet equivalent")
        padding = size // 2
    else:
        padding = 0
        if "pad" in group:
            (top, bottom), (left, right) = group["pad"].padding
            # top-left padding equals darknet's symmetric padding on even sizes
            if top != left or bottom != right or bottom not in (0, top) or \
                    (bottom == 0 and stride == 1):
                raise UserError(f"{group['pad'].name}: padding {group['pad'].padding} "
                                "has no darknet equivalent")
            padding = top
    lines = []
    if "bn" in group:
        lines.append("batch_normalize=1")
    lines += [f"filters={conv.filters}", f"size={size}", f"stride={stride}"]
    lines.append("pad=1" if padding == size // 2 else f"padding={padding}")
    if conv.groups != 1:
        lines.append(f"groups={conv.groups}")
    lines.append(f"activation={_group_activation(group)}")
    return lines


def _group_activation(group):
    acts = [ACTIVATION_PREFIXES[p] for p in group if p in ACTIVATION_PREFIXES]
    return acts[0] if acts else "linear"


def _section_lines(kind, group, index, inputs):
    """cfg lines of the layer group at `index` (its options, no header)."""
    if kind == "convolutional":
        return _conv_section(group)
    if kind == "shortcut":
        other = [i for i in inputs if i != index - 1] or [index - 1]
        return [f"from={other[0] - index}", f"activation={_group_activation(group)}"]
    if kind == "route":
        lines = ["layers=" + ", ".join(str(i - index) if i == index - 1 else str(i)
                                      for i in inputs)]
        if "route" in group:
            lines += [f"groups={group['route'].groups}", f"group_id={group['route'].group_id}"]
        return lines
    if kind == "upsample":
        size = group["upsample"].size
        return [f"stride={size[0]}"]
    if kind == "maxpool":
        layer = group["maxpool"]
        if isinstance(layer, DarknetMaxPool):
            return [f"size={layer.size}", f"stride={layer.stride}",
                    f"padding={layer.padding}"]
        if layer.padding != "same":
            raise UserError(f"{layer.name}: only 'same' max pooling has a darknet "
                            "equivalent")
        return [f"size={layer.pool_size[0]}", f"stride={layer.strides[0]}"]
    if kind == "dropout":
        return [f"probability={group['dropout'].rate}"]
    return []


def model_to_cfg(model, anchors, mask, num_classes):
    """darknet cfg text for a model built with the darknet layer names (yolo_body,
    tiny_yolo_body or build_model), with [yolo] sections for its outputs."""
    groups = _groups(model)
    outputs = [_producer(t) for t in model.outputs]
    if len(mask) != len(outputs):
        raise UserError(f"the model has {len(outputs)} outputs but the mask has "
                        f"{len(mask)} heads")
    shape = model.inputs[0].shape
    height, width = (v or 416 for v in shape[1:3])
    text = [f"[net]\n{NET_OPTIONS}width={width}\nheight={height}\nchannels={shape[3]}\n"]
    heads = dict(zip(outputs, mask))
    last = max(groups)
    alias = {}  # index of a [yolo] or single-layer [route] -> the layer it passes on
    index = 0
    while index <= last or index - 1 in heads:
        if index - 1 in heads:  # an output: darknet's [yolo] follows it
            head_mask = heads.pop(index - 1)
            if "conv" not in groups[index - 1]:
                raise UserError(f"output {index - 1} is not a convolution; darknet's "
                                "[yolo] needs one")
            text.append(_yolo_section(groups[index - 1]["conv"], anchors, head_mask,
                                      num_classes))
            alias[index] = index - 1
        elif index not in groups:  # a single-layer route (no Keras layer)
            source = _group_input(groups.get(index + 1), index + 1)
            text.append(f"[route]\nlayers={source - index}\n")
            alias[index] = source
        else:
            group = groups[index]
            kinds = [MAIN_KINDS[p] for p in group if p in MAIN_KINDS]
            if len(kinds) != 1:
                raise UserError(f"darknet layer {index}: cannot tell its type from "
                                f"{sorted(l.name for l in group.values())}")
            inputs = _group_inputs(group, kinds[0])
            follows = {index - 1, alias.get(index - 1)}
            if kinds[0] == "shortcut" and not follows & set(inputs) or \
                    kinds[0] not in ("route", "shortcut") and inputs[0] not in follows:
                raise UserError(f"darknet layer {index} reads layer {inputs[0]}, not "
                                f"{index - 1}; the model has no darknet layer order")
            lines = _section_lines(kinds[0], group, index, inputs)
            text.append(f"[{kinds[0]}]\n" + "".join(line + "\n" for line in lines))
        index += 1
    return "\n".join(text)


def _group_inputs(group, kind):
    first = {"convolutional": "pad" if "pad" in group else "conv"}.get(kind)
    first = first or next(p for p in group if MAIN_KINDS.get(p) == kind)
    return _inputs(group[first])


def _group_input(group, index):
    if group is None:
        raise UserError(f"darknet layer {index} is missing from the model")
    kind = next(MAIN_KINDS[p] for p in group if p in MAIN_KINDS)
    return _group_inputs(group, kind)[0]


def _yolo_section(conv, anchors, mask, num_classes):
    if conv.filters != len(mask) * (num_classes + 5):
        raise UserError(f"{conv.name} has {conv.filters} filters; {len(mask)} anchors x "
                        f"({num_classes} classes + 5) = {len(mask) * (num_classes + 5)}")
    flat = ",  ".join(f"{w:g},{h:g}" for w, h in np.asarray(anchors))
    return (f"[yolo]\nmask={','.join(str(m) for m in mask)}\nanchors={flat}\n"
            f"classes={num_classes}\nnum={len(anchors)}\njitter=.3\n"
            "ignore_thresh=.7\ntruth_thresh=1\nrandom=1\n")


def model_floats(model):
    """The model's weights in darknet .weights order, as float32 arrays."""
    groups = _groups(model)
    chunks = []
    for index in sorted(groups):
        group = groups[index]
        if "conv" not in group:
            continue
        conv = group["conv"]
        kernel, *bias = (np.asarray(w) for w in conv.get_weights())
        if "bn" in group:
            bn = group["bn"]
            gamma, beta, mean, var = (np.asarray(w) for w in bn.get_weights())
            chunks += [beta, unfold_gamma(gamma, var, bn.epsilon), mean, var]
        else:
            chunks.append(bias[0] if bias else np.zeros(conv.filters, np.float32))
        chunks.append(kernel.transpose(3, 2, 0, 1))  # (h, w, in, out) -> (out, in, h, w)
    return chunks


def write_darknet(model, prefix, anchors, mask, num_classes, progress=None):
    """Write `prefix`.cfg and `prefix`.weights (header 0.2.0, seen int64 0);
    a progress bar while writing when `progress` (None: on a terminal)."""
    cfg = model_to_cfg(model, anchors, mask, num_classes)
    chunks = model_floats(model)
    with atomic_open(f"{prefix}.cfg", "w", encoding="utf-8") as handle:
        handle.write(cfg)
    with atomic_open(f"{prefix}.weights", "wb") as handle, \
            progress_bar(len(chunks), "writing weights", progress, unit="array") as advance:
        handle.write(np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<i8").tobytes())
        for chunk in chunks:
            handle.write(np.ascontiguousarray(chunk, "<f4").tobytes())
            advance()
    return f"{prefix}.cfg", f"{prefix}.weights", sum(c.size for c in chunks)


# ------------------------------------------------- conversions (convert.py)
def darknet_to_keras(network, weights_path, bn_epsilon=KERAS_BN_EPS, partial=False,
                     strict=False, progress=None):
    """The Keras model of a checked cfg holding a darknet .weights file's values
    -> (model, WeightsFile); a progress bar while reading when `progress` (None:
    on a terminal). Arguments as read_weights."""
    if count_floats(weights_path) < network.num_floats and not partial:
        # fails fast, naming the layer, before the (slow) model build
        read_weights(weights_path, network, bn_epsilon)
    model = build_model(network, bn_epsilon=bn_epsilon)
    with progress_bar(len(network.convs), "reading weights", progress,
                      unit="layer") as advance:
        weights = read_weights(weights_path, network, bn_epsilon, partial=partial,
                               strict=strict, progress=advance, model=model)
    return model, weights


def save_converted(model, path, as_weights, missing=()):
    """Write `model` atomically as weights by layer name or as a .keras file. A
    weights file leaves out the convolutions (and their BN) at indexes `missing`
    (no darknet weights with --partial), so loading it never passes Keras'
    initial values off as pretrained ones."""
    from .weights import save_weights
    if as_weights:
        dropped = {f"{prefix}_{i:03d}" for i in missing for prefix in ("conv", "bn")}
        # save_weights reads only .layers: hand it the layers that got weights
        save_weights(types.SimpleNamespace(
            layers=[layer for layer in model.layers if layer.name not in dropped]), path)
        return
    with atomic_path(path) as temp:
        keras_temp = temp + ".keras"  # Keras wants the suffix
        try:
            model.save(keras_temp)
            os.replace(keras_temp, temp)
        finally:
            with contextlib.suppress(OSError):
                os.remove(keras_temp)


def load_yolo_model(path, anchors, mask, num_classes):
    """A detection body of any kind (yolo3.kinds) from a .keras file (a training model
    gives its detection body) or a weights file (every layer must get weights)."""
    from .kinds import kind_for_anchors, kind_of_names
    from .weights import load_weights, read_weights
    if path.endswith(".keras"):
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        if any(layer.name == "yolo_loss" for layer in model.layers):  # a training model
            from .training import detection_body
            model = detection_body(model)
        return model
    # the kind from the file's layer names (an SPP file is SPP), else the anchors'
    kind = kind_of_names(read_weights(path)) or kind_for_anchors(len(anchors))
    kind_for_anchors(len(anchors), kind.name)
    model = kind.builder(keras.Input((None, None, 3), name="image"), len(mask[0]),
                         num_classes)
    loaded, skipped = load_weights(model, path, skip_mismatch=False)
    if skipped:
        raise UserError(f"{path}: no weights for "
                        + ", ".join(name for name, _ in skipped[:5])
                        + (" ..." if len(skipped) > 5 else ""))
    return model
