"""The model kinds (YOLOv3, tiny-YOLOv3, YOLOv3-SPP): one record each, holding
everything that differs between them, and the lookups from an anchor count, from
a body and from layer names. Adding a kind is one row of KINDS plus its builder
(yolo3.networks). The table loads without Keras: the builders are imported when
a body is built."""
import dataclasses
import re

from .errors import UserError

_DARKNET_NAME = re.compile(r"(conv|bn|leaky|pad|add|concat|upsample|maxpool)_(\d{3})")


def darknet_index(layer_name):
    """The darknet layer index in a deterministic layer name ('conv_081' -> 81);
    None for other layers (the input, Keras's automatic names)."""
    match = _DARKNET_NAME.fullmatch(layer_name)
    return int(match.group(2)) if match else None


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """One network: `builder(inputs, anchors_per_head, num_classes)` makes its
    body; the other fields say how the rest of the project treats it."""
    name: str                  # darknet's cfg name; the choice on a command line
    label: str                 # for messages
    num_anchors: int           # in the anchors file
    strides: tuple             # per head, first output first
    default_mask: tuple        # anchor indexes per head
    output_convs: tuple        # the output convolutions (class count dependent)
    last_backbone_layer: int   # freeze_body=1 freezes darknet layers up to this one
    ignore_thresh: float       # the loss's default
    default_weights: str       # pretrained weights, as convert.py names them
    network: str               # its builder's name in yolo3.networks

    def __post_init__(self):
        heads = len(self.strides)
        if not len(self.default_mask) == len(self.output_convs) == heads:
            raise ValueError(f"{self.name}: strides, mask and outputs disagree on heads")

    @property
    def builder(self):
        """`builder(inputs, anchors_per_head, num_classes)` -> the body."""
        from . import networks
        return getattr(networks, self.network)

    @property
    def heads(self):
        return len(self.strides)

    @property
    def anchors_per_head(self):
        return self.num_anchors // self.heads

    def mask(self):
        """The default mask as a fresh list of lists."""
        return [list(head) for head in self.default_mask]

    def build(self, num_classes, input_shape=(None, None)):
        """The body on an input named 'image' of (height, width, 3)."""
        import keras
        image = keras.Input(shape=(*input_shape, 3), name="image")
        return self.builder(image, self.anchors_per_head, num_classes)


_YOLO_MASK = ((6, 7, 8), (3, 4, 5), (0, 1, 2))   # head 1 (stride 32): largest anchors

# The first row with an anchor count is the kind that count means by default.
KINDS = {kind.name: kind for kind in (
    ModelKind("yolov3", "YOLOv3", 9, (32, 16, 8), _YOLO_MASK,
              ("conv_081", "conv_093", "conv_105"), 74, 0.5,
              "model_data/yolo_weights.h5", "yolo_body"),
    # Mask: the original keras-yolo3's (anchor 0 unused, anchor 3 shared); darknet's
    # yolov3-tiny weights were trained with it. Layer 8 ends the original's 20
    # frozen layers (the 256-channel map).
    ModelKind("yolov3-tiny", "tiny-YOLOv3", 6, (32, 16), ((3, 4, 5), (1, 2, 3)),
              ("conv_015", "conv_022"), 8, 0.7,
              "model_data/tiny_yolo_weights.h5", "tiny_yolo_body"),
    ModelKind("yolov3-spp", "YOLOv3-SPP", 9, (32, 16, 8), _YOLO_MASK,
              ("conv_088", "conv_100", "conv_112"), 74, 0.5,
              "model_data/yolo_spp_weights.h5", "yolo_spp_body"),
)}
NAMES = tuple(KINDS)


def counts_text():
    """'9 (YOLOv3, YOLOv3-SPP) or 6 (tiny-YOLOv3)': the valid anchor counts."""
    counts = {}
    for kind in KINDS.values():
        counts.setdefault(kind.num_anchors, []).append(kind.label)
    return " or ".join(f"{n} ({', '.join(labels)})" for n, labels in counts.items())


def get_kind(kind):
    """A ModelKind from itself or its name, or a UserError listing the names."""
    if isinstance(kind, ModelKind):
        return kind
    if kind not in KINDS:
        raise UserError(f"unknown model {kind!r}; choose one of {', '.join(NAMES)}")
    return KINDS[kind]


def kind_for_anchors(num_anchors, name=None):
    """The kind of a model with `num_anchors` anchors: the named one (which must
    take that many), else the first row with that count (9: YOLOv3)."""
    if name is not None:
        kind = get_kind(name)
        if kind.num_anchors != num_anchors:
            raise UserError(f"{num_anchors} anchors; {kind.label} takes {kind.num_anchors}")
        return kind
    for kind in KINDS.values():
        if kind.num_anchors == num_anchors:
            return kind
    raise UserError(f"{num_anchors} anchors; expected {counts_text()}")


def kind_of_names(names):
    """The kind whose body has these layer names, or None: its output convolutions
    are all there and the last of them is the highest-numbered convolution (a
    YOLOv3 body also holds conv_015 and conv_022, tiny's outputs)."""
    names = set(names)
    convs = [darknet_index(n) for n in names if n.startswith("conv_")]
    last = max((i for i in convs if i is not None), default=None)
    for kind in KINDS.values():
        if set(kind.output_convs) <= names and darknet_index(kind.output_convs[-1]) == last:
            return kind
    return None


def kind_of_body(body):
    """The kind of a body (or of a training model holding one), from its layer
    names; a UserError for another network."""
    kind = kind_of_names(layer.name for layer in body.layers)
    if kind is None:
        raise UserError(f"the model {body.name!r} is none of the model kinds "
                        f"({', '.join(NAMES)}): its layer names differ")
    return kind
