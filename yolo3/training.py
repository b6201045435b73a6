"""The training model (body + y_true inputs + the `yolo_loss` layer), freezing by
meaning, and compilation, as keras-yolo3's train.py."""
import keras
import numpy as np
from keras import ops

from .anchors import anchor_masks
from .model import (DARKNET53_LAST_LAYER, TINY_BODY_LAST_LAYER, TINY_OUTPUT_CONVS,
                    YOLO_OUTPUT_CONVS, YoloLoss, darknet_index, tiny_yolo_body, yolo_body)
from .weights import load_weights

IGNORE_THRESH = {False: 0.5, True: 0.7}   # YOLOv3, tiny
HEAD_STRIDES = (32, 16, 8)


def is_tiny(body):
    """True for a tiny-YOLOv3 body (two heads)."""
    return len(body.outputs) == 2


def output_conv_names(body):
    """The output convolutions (the layers that depend on the class count)."""
    return TINY_OUTPUT_CONVS if is_tiny(body) else YOLO_OUTPUT_CONVS


def build_body(num_anchors, num_classes, input_shape=(None, None)):
    """yolo_body for 9 anchors, tiny_yolo_body for 6, on an input named 'image'."""
    image = keras.Input(shape=(*input_shape, 3), name="image")
    builder = yolo_body if num_anchors == 9 else tiny_yolo_body
    return builder(image, len(anchor_masks(num_anchors)[0]), num_classes)


def freeze_body_layers(body, level):
    """Freeze by meaning and return the frozen layer names.
    level 1: the Darknet53 body (tiny: its layers up to the 256-channel map);
    level 2: everything except the output convolutions; 0: nothing."""
    if level not in (0, 1, 2):
        raise ValueError(f"freeze_body must be 0, 1 or 2 (got {level})")
    last = TINY_BODY_LAST_LAYER if is_tiny(body) else DARKNET53_LAST_LAYER
    outputs = set(output_conv_names(body))
    frozen = []
    for layer in body.layers:
        index = darknet_index(layer.name)
        if index is None:
            continue
        freeze = (level == 1 and index <= last) or (level == 2 and layer.name not in outputs)
        layer.trainable = not freeze
        if freeze:
            frozen.append(layer.name)
    return frozen


def unfreeze_all(model):
    """Make every layer trainable (stage 2)."""
    for layer in model.layers:
        layer.trainable = True


def _create(input_shape, anchors, num_classes, load_pretrained, freeze_body,
            weights_path, mask, ignore_thresh, tiny):
    anchors = np.asarray(anchors, "float32")
    num_anchors = len(anchors)
    mask = anchor_masks(num_anchors, mask)
    h, w = input_shape
    body = build_body(num_anchors, num_classes, (h, w))
    kind = "tiny-YOLOv3" if tiny else "YOLOv3"
    print(f"Create {kind} model with {num_anchors} anchors and {num_classes} classes.")
    y_true = [keras.Input(shape=(h // s, w // s, len(mask[l]), num_classes + 5),
                          name=f"y_true_{l}")
              for l, s in enumerate(HEAD_STRIDES[:len(mask)])]
    if load_pretrained:
        loaded, skipped = load_weights(body, weights_path, output_layers=output_conv_names(body))
        print(f"Load weights {weights_path}: {len(loaded)} layers loaded"
              + (f", {len(skipped)} skipped ({', '.join(n for n, _ in skipped)})" if skipped else ""))
    if freeze_body in (1, 2):
        frozen = set(freeze_body_layers(body, freeze_body))
        weighted = [l.name for l in body.layers if l.weights]
        print(f"Freeze {len(frozen.intersection(weighted))} of {len(weighted)} layers "
              f"with weights (freeze_body={freeze_body}).")
    if ignore_thresh is None:
        ignore_thresh = IGNORE_THRESH[tiny]
    loss = YoloLoss(anchors, num_classes, ignore_thresh, mask, name="yolo_loss")(
        [*body.outputs, *y_true])
    return keras.Model([body.input, *y_true], loss, name="yolo_train")


def create_model(input_shape, anchors, num_classes, load_pretrained=True, freeze_body=2,
                 weights_path="model_data/yolo_weights.h5", mask=None, ignore_thresh=None):
    """YOLOv3 training model: Model([image, *y_true], loss) (not compiled)."""
    return _create(input_shape, anchors, num_classes, load_pretrained, freeze_body,
                   weights_path, mask, ignore_thresh, tiny=False)


def create_tiny_model(input_shape, anchors, num_classes, load_pretrained=True, freeze_body=2,
                      weights_path="model_data/tiny_yolo_weights.h5", mask=None,
                      ignore_thresh=None):
    """tiny-YOLOv3 training model: Model([image, *y_true], loss) (not compiled)."""
    return _create(input_shape, anchors, num_classes, load_pretrained, freeze_body,
                   weights_path, mask, ignore_thresh, tiny=True)


def detection_body(training_model):
    """The detection body inside a training model, sharing its weights:
    Model(image, head outputs) with the layer names of yolo_body/tiny_yolo_body."""
    heads = len(training_model.inputs) - 1
    outputs = training_model.get_layer("yolo_loss").input[:heads]
    return keras.Model(training_model.inputs[0], outputs,
                       name="tiny_yolo_body" if heads == 2 else "yolo_body")


def yolo_loss_metric(y_true, y_pred):
    """The pure YOLO loss (the model's output) without the L2 regularisation."""
    return ops.mean(y_pred)


def compile_model(model, lr, jit_compile="auto"):
    """Adam(lr); the model's output is the loss, so y_true is ignored. Logs the
    pure YOLO loss as `yolo_loss_metric` beside Keras's `loss` (which adds L2)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss={"yolo_loss": lambda y_true, y_pred: y_pred},
                  metrics={"yolo_loss": [yolo_loss_metric]},
                  jit_compile=jit_compile)
    return model
