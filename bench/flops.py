"""Model FLOPs counted from the Keras layers, the way darknet counts them.

    python -m bench.flops [--size 416] [--classes 80]

Darknet's "BFLOPs" are 2 x multiply-adds of the convolutions only:
2 * k_h * k_w * (c_in / groups) * c_out * h_out * w_out per conv layer
(YOLOv3-416 with 80 classes: 65.86; tiny: 5.56). BN, activations, adds and
upsampling are a few percent more elementwise work and are left out, as darknet does.

Training cost per image: the forward pass, plus for every conv the weight gradient
(the same multiply-adds as forward) when the conv is trainable, plus the input
gradient (same again) when any trainable layer lies upstream of it. All trainable:
about 3x forward; stage 1 (only the output convs trainable): forward + their cost.
"""
import argparse
import sys

DARKNET_BFLOPS_416 = {"yolov3": 65.86, "tiny": 5.56}  # pjreddie.com/darknet/yolo, 80 classes


def _parents(layer):
    """Layers feeding `layer` in its (first) functional node."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return []
    return [n.operation for n in nodes[0].parent_nodes]


def conv_flops(layer):
    """Forward FLOPs (2 x multiply-adds) of one Conv2D layer for one image."""
    kh, kw = layer.kernel_size
    c_in = layer.kernel.shape[2]  # already c_in / groups
    _, h_out, w_out, c_out = layer.output.shape
    return 2 * kh * kw * c_in * c_out * h_out * w_out


def _is_conv(layer):
    import keras
    return isinstance(layer, keras.layers.Conv2D)


def _is_container(layer):
    import keras
    return isinstance(layer, keras.Model)


def count_flops(model):
    """Per-image FLOPs of `model` (a Keras functional model with static spatial size).

    Returns a dict: forward, train (forward + the gradients the current trainable
    flags need), convs (count), trainable_convs, and per_layer {name: forward}.
    """
    upstream_trainable = {}  # layer name -> a trainable layer is at or above it
    forward = train = 0
    per_layer = {}
    n_trainable = 0
    for layer in model.layers:
        if _is_container(layer):
            raise ValueError(f"nested model {layer.name!r}: pass a flat functional model")
        above = any(upstream_trainable.get(p.name, False) for p in _parents(layer))
        own = bool(layer.trainable_weights)
        upstream_trainable[layer.name] = above or own
        if not _is_conv(layer):
            continue
        f = conv_flops(layer)
        per_layer[layer.name] = f
        forward += f
        train += f + (f if own else 0) + (f if above else 0)
        n_trainable += own
    return {"forward": forward, "train": train, "convs": len(per_layer),
            "trainable_convs": n_trainable, "per_layer": per_layer}


def model_flops(kind="yolov3", size=416, num_classes=80, freeze_body=0):
    """count_flops of a freshly built yolo_body / tiny_yolo_body, with the layers
    frozen as create_model(freeze_body=...) does (2: stage 1, 0: stage 2)."""
    import keras
    from yolo3.model import tiny_yolo_body, yolo_body
    from yolo3.training import freeze_body_layers
    inputs = keras.Input((size, size, 3), name="image")
    body = (tiny_yolo_body(inputs, 3, num_classes) if kind == "tiny"
            else yolo_body(inputs, 3, num_classes))
    freeze_body_layers(body, freeze_body)
    return count_flops(body)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=416, help="input size, multiple of 32 (default: 416)")
    p.add_argument("--classes", type=int, default=80, help="number of classes (default: 80)")
    a = p.parse_args(argv)
    if a.size <= 0 or a.size % 32:
        from yolo3.errors import UserError
        raise UserError(f"--size must be a positive multiple of 32 (got {a.size})")
    print(f"{'model':8} {'convs':>5} {'forward GFLOP':>14} {'darknet':>8} "
          f"{'train stage 1':>14} {'train stage 2':>14}  (per image)")
    for kind in ("yolov3", "tiny"):
        r = model_flops(kind, a.size, a.classes)
        s1 = model_flops(kind, a.size, a.classes, freeze_body=2)
        ref = DARKNET_BFLOPS_416[kind] if (a.size, a.classes) == (416, 80) else float("nan")
        print(f"{kind:8} {r['convs']:5d} {r['forward'] / 1e9:14.2f} {ref:8.2f} "
              f"{s1['train'] / 1e9:14.2f} {r['train'] / 1e9:14.2f}")
    return 0


if __name__ == "__main__":
    from yolo3.errors import run_cli
    sys.exit(run_cli(main))
