"""A tiny-YOLOv3 model whose detections are known by hand (for the detector, CLI
and evaluation tests).

The output convolutions get zero kernels, so every cell outputs the bias: in head 1
(stride 32, mask 3,4,5) anchor slot 0 has t = 0 (box centred in its cell, size =
anchor 3), objectness +10 and class 1 +10; everything else is -10. On a 64x64
input (2x2 grid) that is one class-1 box of size ANCHORS[3] centred in each cell,
score sigmoid(10)^2.
"""
import numpy as np

from yolo3.training import build_body
from yolo3.weights import save_weights

ANCHORS = np.array([[10, 14], [23, 27], [37, 58], [20, 24], [135, 169], [344, 319]],
                   np.float32)
CLASSES = ["a", "b", "c"]
SCORE = 1 / (1 + np.exp(-10.0)) ** 2


def fixed_body(input_size=64, num_classes=3):
    body = build_body(6, num_classes, (input_size, input_size))
    channels = 5 + num_classes
    for name in ("conv_015", "conv_022"):
        kernel, bias = body.get_layer(name).get_weights()
        bias = np.full_like(bias, -10.0)
        if name == "conv_015":
            bias[0:4] = 0.0             # slot 0: tx, ty, tw, th
            bias[4] = 10.0              # objectness
            bias[5 + 1] = 10.0          # class 1
        assert bias.size == 3 * channels
        body.get_layer(name).set_weights([np.zeros_like(kernel), bias])
    return body


def expected_boxes(width, height, input_size=64, anchor=(20, 24)):
    """By hand (the YOLOv3 decoding): each cell centre and the anchor size in input
    pixels, mapped back through the letterbox to image pixels, clipped. The
    letterboxed image is round(size * min(in/w, in/h)) pixels, centred; each axis
    maps back by its own factor size / new_size."""
    grid = input_size // 32
    scale = min(input_size / width, input_size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    off_x, off_y = (input_size - new_w) / 2, (input_size - new_h) / 2
    fx, fy = width / new_w, height / new_h
    boxes = []
    for j in range(grid):
        for i in range(grid):
            cx = ((i + 0.5) * 32 - off_x) * fx
            cy = ((j + 0.5) * 32 - off_y) * fy
            bw, bh = anchor[0] * fx, anchor[1] * fy
            boxes.append([max(cx - bw / 2, 0), max(cy - bh / 2, 0),
                          min(cx + bw / 2, width), min(cy + bh / 2, height)])
    return np.array(sorted(boxes), np.float32)


def write_model_files(folder, input_size=64):
    """model.weights.h5, anchors.txt, classes.txt in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.weights.h5"
    save_weights(fixed_body(input_size), model)
    anchors = folder / "anchors.txt"
    anchors.write_text(",  ".join(f"{int(w)},{int(h)}" for w, h in ANCHORS) + "\n")
    classes = folder / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    return model, anchors, classes


def sorted_boxes(detections):
    return np.array(sorted(np.asarray(detections.boxes).tolist()), np.float32)
