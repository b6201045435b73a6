"""The training model (body + y_true inputs + the `yolo_loss` layer), freezing by
meaning, and compilation, as keras-yolo3's train.py."""
import keras
import numpy as np
from keras import ops

from .anchors import anchor_masks
from .kinds import darknet_index, get_kind, kind_for_anchors, kind_of_body
from .model import YoloLoss
from .optimization import make_optimizer
from .weights import load_weights

def build_body(num_anchors, num_classes, input_shape=(None, None), kind=None):
    """The body of the model kind (by default the one `num_anchors` anchors mean:
    yolo_body for 9, tiny_yolo_body for 6) on an input named 'image'."""
    return kind_for_anchors(num_anchors, kind).build(num_classes, input_shape)


def freeze_body_layers(body, level):
    """Freeze by meaning and return the frozen layer names.
    level 1: the backbone (Darknet53; tiny: its layers up to the 256-channel map);
    level 2: everything except the output convolutions; 0: nothing."""
    if level not in (0, 1, 2):
        raise ValueError(f"freeze_body must be 0, 1 or 2 (got {level})")
    kind = kind_of_body(body)
    outputs = set(kind.output_convs)
    frozen = []
    for layer in body.layers:
        index = darknet_index(layer.name)
        if index is None:
            continue
        freeze = ((level == 1 and index <= kind.last_backbone_layer)
                  or (level == 2 and layer.name not in outputs))
        layer.trainable = not freeze
        if freeze:
            frozen.append(layer.name)
    return frozen


def unfreeze_all(model):
    """Make every layer trainable (stage 2)."""
    for layer in model.layers:
        layer.trainable = True


def create_training_model(kind, input_shape, anchors, num_classes, load_pretrained=True,
                          freeze_body=2, weights_path=None, mask=None, ignore_thresh=None,
                          loss_options=None):
    """The training model of a model kind (a ModelKind or its name):
    Model([image, *y_true], loss), not compiled. weights_path and ignore_thresh
    default to the kind's. loss_options: a dict of further YoloLoss arguments
    (box_loss, iou_normalizer, label_smoothing, ...); None: the original loss."""
    kind = get_kind(kind)
    anchors = np.asarray(anchors, "float32")
    num_anchors = len(anchors)
    kind_for_anchors(num_anchors, kind.name)      # the anchor count must fit the kind
    mask = anchor_masks(num_anchors, mask, kind.name)
    weights_path = kind.default_weights if weights_path is None else weights_path
    h, w = input_shape
    body = kind.build(num_classes, (h, w))
    print(f"Create {kind.label} model with {num_anchors} anchors and {num_classes} classes.")
    y_true = [keras.Input(shape=(h and h // s, w and w // s, len(mask[l]), num_classes + 5),
                          name=f"y_true_{l}")
              for l, s in enumerate(kind.strides)]
    if load_pretrained:
        loaded, skipped = load_weights(body, weights_path, output_layers=kind.output_convs)
        print(f"Load weights {weights_path}: {len(loaded)} layers loaded"
              + (f", {len(skipped)} skipped ({', '.join(n for n, _ in skipped)})" if skipped else ""))
    if freeze_body in (1, 2):
        frozen = set(freeze_body_layers(body, freeze_body))
        weighted = [l.name for l in body.layers if l.weights]
        print(f"Freeze {len(frozen.intersection(weighted))} of {len(weighted)} layers "
              f"with weights (freeze_body={freeze_body}).")
    if ignore_thresh is None:
        ignore_thresh = kind.ignore_thresh
    loss = YoloLoss(anchors, num_classes, ignore_thresh, mask, name="yolo_loss",
                    **(loss_options or {}))([*body.outputs, *y_true])
    return keras.Model([body.input, *y_true], loss, name="yolo_train")


def create_model(input_shape, anchors, num_classes, load_pretrained=True, freeze_body=2,
                 weights_path="model_data/yolo_weights.h5", mask=None, ignore_thresh=None,
                 loss_options=None):
    """YOLOv3 training model: Model([image, *y_true], loss) (not compiled)."""
    return create_training_model("yolov3", input_shape, anchors, num_classes,
                                 load_pretrained, freeze_body, weights_path, mask,
                                 ignore_thresh, loss_options)


def create_tiny_model(input_shape, anchors, num_classes, load_pretrained=True, freeze_body=2,
                      weights_path="model_data/tiny_yolo_weights.h5", mask=None,
                      ignore_thresh=None, loss_options=None):
    """tiny-YOLOv3 training model: Model([image, *y_true], loss) (not compiled)."""
    return create_training_model("yolov3-tiny", input_shape, anchors, num_classes,
                                 load_pretrained, freeze_body, weights_path, mask,
                                 ignore_thresh, loss_options)


def detection_body(training_model):
    """The detection body inside a training model, sharing its weights:
    Model(image, head outputs) with the layer and model names of its kind's body."""
    kind = kind_of_body(training_model)
    outputs = training_model.get_layer("yolo_loss").input[:kind.heads]
    return keras.Model(training_model.inputs[0], outputs, name=kind.network)


def yolo_loss_metric(y_true, y_pred):
    """The pure YOLO loss (the model's output) without the L2 regularisation."""
    return ops.mean(y_pred)


def compile_model(model, lr, jit_compile="auto", optimizer=None):
    """Compile with `optimizer` (a Keras optimizer; by default the original's
    Adam(lr), make_optimizer("adam", lr, model)); the model's output is the loss,
    so y_true is ignored. Logs the pure YOLO loss as `yolo_loss_metric` beside
    Keras's `loss` (which adds L2)."""
    if optimizer is None:
        optimizer = make_optimizer("adam", lr, model)
    model.compile(optimizer=optimizer,
                  loss={"yolo_loss": lambda y_true, y_pred: y_pred},
                  metrics={"yolo_loss": [yolo_loss_metric]},
                  jit_compile=jit_compile)
    return model
