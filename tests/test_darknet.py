"""yolo3.darknet: cfg parser and checks, model from cfg, weights reader and writer.

References are independent of the code under test: OpenCV's darknet importer
(cv2.dnn.readNetFromDarknet), a slow numpy forward pass with darknet's formulas,
counts of the public cfg files, and the project's own yolo_body/tiny_yolo_body.
"""
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.fixtures.darknet import cfg_text, random_conv, random_weights, write_weights
from yolo3 import darknet
from yolo3.errors import UserError
from tests.fixtures import SHARED

CFG = Path(__file__).resolve().parent / "cfg"
TINY = SHARED / "pretrained" / "yolov3-tiny"

# A small cfg with every supported layer kind: stride-2 convs on odd sizes, grouped
# conv, shortcut, maxpools (Keras 'same' and darknet-only padding), upsample, a
# two-layer route, one-layer routes, all activations, 2 [yolo] heads (2 classes).
ANCHORS = "4,5, 8,9, 12,10, 16,20, 30,25, 40,44"
FEATURES = [
    ("convolutional", dict(batch_normalize=1, filters=8, size=3, stride=1, pad=1, activation="leaky")),
    ("convolutional", dict(batch_normalize=1, filters=16, size=3, stride=2, pad=1, activation="leaky")),
    ("convolutional", dict(batch_normalize=1, filters=8, size=1, stride=1, pad=1, activation="relu")),
    ("convolutional", dict(batch_normalize=1, filters=16, size=3, stride=1, pad=1, activation="mish")),
    ("shortcut", dict(**{"from": -3}, activation="linear")),
    ("convolutional", dict(batch_normalize=1, filters=16, size=3, stride=1, pad=1, groups=4, activation="swish")),
    ("maxpool", dict(size=3, stride=2)),
    ("convolutional", dict(batch_normalize=1, filters=32, size=3, stride=2, pad=1, activation="logistic")),
    ("maxpool", dict(size=2, stride=1)),
    ("convolutional", dict(filters=21, size=1, stride=1, pad=1, activation="linear")),
    ("yolo", dict(mask="3,4,5", anchors=ANCHORS, classes=2, num=6)),
    ("route", dict(layers=-3)),
    ("convolutional", dict(batch_normalize=1, filters=8, size=1, stride=1, pad=1, activation="leaky")),
    ("upsample", dict(stride=2)),
    ("route", dict(layers="-1, 6")),
    ("convolutional", dict(batch_normalize=1, filters=16, size=5, stride=1, pad=1, activation="leaky")),
    ("maxpool", dict(size=2, stride=2)),
    ("upsample", dict(stride=2)),
    ("convolutional", dict(filters=21, size=1, stride=1, pad=1, activation="linear")),
    ("yolo", dict(mask="0,1,2", anchors=ANCHORS, classes=2, num=6)),
]
FEATURE_HEADS = [9, 18]
# yolov4-tiny's building block: [route] groups=2 group_id=1 (half the channels).
CSP = [
    ("convolutional", dict(batch_normalize=1, filters=16, size=3, stride=2, pad=1, activation="leaky")),
    ("convolutional", dict(batch_normalize=1, filters=32, size=3, stride=1, pad=1, activation="leaky")),
    ("route", dict(layers=-1, groups=2, group_id=1)),
    ("convolutional", dict(batch_normalize=1, filters=16, size=3, stride=1, pad=1, activation="leaky")),
    ("convolutional", dict(batch_normalize=1, filters=16, size=3, stride=1, pad=1, activation="tanh")),
    ("route", dict(layers="-1,-2")),
    ("convolutional", dict(batch_normalize=1, filters=32, size=1, stride=1, pad=1, activation="leaky")),
    ("route", dict(layers="-6,-1")),
    ("maxpool", dict(size=2, stride=2)),
    ("convolutional", dict(filters=21, size=1, stride=1, pad=1, activation="linear")),
    ("yolo", dict(mask="3,4,5", anchors=ANCHORS, classes=2, num=6, scale_x_y=1.05)),
]


def write_cfg(tmp_path, sections, name="net.cfg", **net):
    path = tmp_path / name
    path.write_text(cfg_text(sections, **net))
    return path


def keras_outputs(cfg_path, weights_path, x, bn_epsilon=1e-3):
    network = darknet.load_cfg(cfg_path)
    model = darknet.build_model(network, bn_epsilon=bn_epsilon)
    darknet.set_weights(model, darknet.read_weights(weights_path, network, bn_epsilon))
    outs = model(x, training=False)
    return [np.asarray(o) for o in (outs if isinstance(outs, list) else [outs])]


def opencv_outputs(cfg_path, weights_path, x, conv_indexes):
    """Raw outputs (NHWC) of the convolutions feeding the [yolo] layers, by OpenCV."""
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    outs = net.forward([f"conv_{i}" for i in conv_indexes])
    return [o.transpose(0, 2, 3, 1) for o in outs]


def max_rel_diff(a, b):
    return max(float(np.abs(x - y).max() / max(1.0, np.abs(y).max())) for x, y in zip(a, b))


# ----------------------------------------------------------------- cfg files
@pytest.mark.parametrize("name, layers, convs, floats, outputs", [
    ("yolov3", 107, 75, 62_001_757, [81, 93, 105]),       # yolov3.weights: 248,007,048 bytes
    # + 6 SPP layers and a 1x1 conv 2048 -> 512 with BN (2048 * 512 + 4 * 512 floats);
    # yolov3-spp.weights: 20 + 4 * 63,052,381 = 252,209,544 bytes
    ("yolov3-spp", 114, 76, 63_052_381, [88, 100, 112]),
    ("yolov3-tiny", 24, 13, 8_858_734, [15, 22]),          # pretrained/README.md
    ("darknet53", 79, 53, 41_645_640, [78]),               # 52 backbone convs + 1000-way
])
def test_public_cfg_counts(name, layers, convs, floats, outputs):
    network = darknet.load_cfg(CFG / f"{name}.cfg")
    assert (len(network.layers), len(network.convs)) == (layers, convs)
    assert network.num_floats == floats
    assert network.outputs() == outputs


def test_parser_syntax(tmp_path):
    path = tmp_path / "x.cfg"
    path.write_text("# comment\n[net]\n width = 32 \nheight=32 # trailing\n;other comment\n"
                    "\n[convolutional]\nfilters = 4\nsize=3\npad=1\nactivation=leaky\n"
                    "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
                    "[route]\nlayers = -1, -2\n")
    sections = darknet.parse_cfg(path)
    assert [s.kind for s in sections] == ["net", "convolutional", "convolutional", "route"]
    assert sections[1].options["filters"] == ("4", 8)
    assert sections[3].ints("layers") == [-1, -2]
    network = darknet.analyse(sections)
    assert network.layers[2].inputs == [1, 0] and network.layers[2].shape == (32, 32, 8)
    assert network.layers[0].params["activation"] == "leaky"


@pytest.mark.parametrize("body, cfg", [("yolo_body", "yolov3"), ("tiny_yolo_body", "yolov3-tiny"),
                                       ("yolo_spp_body", "yolov3-spp")])
def test_names_types_and_shapes_match_project_model(body, cfg):
    from yolo3 import model as project
    network = darknet.load_cfg(CFG / f"{cfg}.cfg")
    ours = darknet.build_model(network)
    theirs = getattr(project, body)(keras.Input((None, None, 3), name="image"),
                                    len(network.heads[0]["mask"]), 80)

    def layers(m):
        """name -> type, weight shapes and the names of the layers it reads (in order
        but for the commutative Add)."""
        def sources(layer):
            inputs = layer.input if isinstance(layer.input, list) else [layer.input]
            names = [t._keras_history[0].name for t in inputs]
            return sorted(names) if isinstance(layer, keras.layers.Add) else names
        return {layer.name: (type(layer).__name__, [tuple(w.shape) for w in layer.weights],
                             sources(layer) if layer.name != "image" else [])
                for layer in m.layers}
    assert layers(ours) == layers(theirs)


def test_tiny_cfg_model_equals_tiny_yolo_body(tmp_path):
    """Converted weights give identical outputs in tiny_yolo_body (loaded by name)."""
    from yolo3.model import tiny_yolo_body
    from yolo3.weights import load_weights, save_weights
    random_weights(tmp_path / "t.weights", CFG / "yolov3-tiny.cfg", seed=1)
    network = darknet.load_cfg(CFG / "yolov3-tiny.cfg")
    ours = darknet.build_model(network)
    darknet.set_weights(ours, darknet.read_weights(tmp_path / "t.weights", network))
    save_weights(ours, tmp_path / "t.h5")
    theirs = tiny_yolo_body(keras.Input((None, None, 3), name="image"), 3, 80)
    loaded, skipped = load_weights(theirs, tmp_path / "t.h5")
    assert skipped == [] and len(loaded) == 13 + 11
    x = np.random.default_rng(0).uniform(0, 1, (1, 96, 96, 3)).astype(np.float32)
    for a, b in zip(ours(x), theirs(x)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


# ------------------------------------------------------- numbers vs darknet
# darknet's activations.h, transcribed
DARKNET_ACTIVATIONS = {
    "leaky": lambda y: np.where(y > 0, y, 0.1 * y),
    "relu": lambda y: np.maximum(y, 0),
    "logistic": lambda y: 1 / (1 + np.exp(-y)),
    "tanh": lambda y: (np.exp(2 * y) - 1) / (np.exp(2 * y) + 1),
    "elu": lambda y: (y >= 0) * y + (y < 0) * (np.exp(y) - 1),
    "selu": lambda y: (y >= 0) * 1.0507 * y + (y < 0) * 1.0507 * 1.6732 * (np.exp(y) - 1),
    "relu6": lambda y: np.minimum(np.maximum(y, 0), 6),
    "mish": lambda y: y * np.tanh(np.log1p(np.exp(y))),
    "swish": lambda y: y / (1 + np.exp(-y)),
    "linear": lambda y: y,
}


def darknet_conv_reference(x, kernel, biases, scales, mean, var, stride, pad,
                           activation="leaky"):
    """Slow darknet forward of one conv + BN + activation: (x - mean) / (sqrt(var) +
    1e-6) (normalize_cpu), scale, add bias. x (H, W, C); kernel (out, in, k, k)."""
    k = kernel.shape[2]
    xp = np.pad(x.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)))
    out_h = (x.shape[0] + 2 * pad - k) // stride + 1
    out_w = (x.shape[1] + 2 * pad - k) // stride + 1
    y = np.zeros((out_h, out_w, kernel.shape[0]))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[i * stride:i * stride + k, j * stride:j * stride + k, :]
            y[i, j] = np.einsum("hwc,ochw->o", patch, kernel)
    y = (y - mean) / (np.sqrt(var) + 1e-6) * scales + biases
    return DARKNET_ACTIVATIONS[activation](y)


@pytest.mark.parametrize("activation", sorted(DARKNET_ACTIVATIONS))
def test_activations_match_darknet_formulas(tmp_path, activation):
    """Tolerance 1e-4: darknet's selu constants are rounded (1.0507, 1.6732)."""
    rng = np.random.default_rng(12)
    cfg = write_cfg(tmp_path, [("convolutional", dict(
        batch_normalize=1, filters=5, size=3, stride=1, pad=1, activation=activation))],
        width=6, height=5, channels=2)
    biases, scales, mean, var, kernel = random_conv(rng, 5, 2, 3, scale=1.5)
    write_weights(tmp_path / "w.weights", [[biases, scales, mean, var, kernel]])
    x = rng.uniform(-2, 2, (1, 5, 6, 2)).astype(np.float32)
    want = darknet_conv_reference(x[0], kernel, biases, scales, mean, var, 1, 1, activation)
    got = keras_outputs(cfg, tmp_path / "w.weights", x)[0][0]
    linear = darknet_conv_reference(x[0], kernel, biases, scales, mean, var, 1, 1, "linear")
    assert linear.max() > 6 and linear.min() < -2  # every branch of each formula
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 2])
def test_bn_matches_darknet_formula_at_keras_epsilon(tmp_path, stride):
    """Small rolling variances (1e-4..1e-2), where sqrt(var + 1e-3) and sqrt(var) +
    1e-6 differ by up to 5x: the converted model still follows darknet's formula."""
    rng = np.random.default_rng(2)
    cfg = write_cfg(tmp_path, [("convolutional", dict(batch_normalize=1, filters=6, size=3,
                                                      stride=stride, pad=1, activation="leaky"))],
                    width=9, height=9, channels=2)
    biases, scales, mean, _, kernel = random_conv(rng, 6, 2, 3)
    var = np.geomspace(1e-4, 1e-2, 6).astype(np.float32)
    write_weights(tmp_path / "w.weights", [[biases, scales, mean, var, kernel]])
    x = rng.uniform(-1, 1, (1, 9, 9, 2)).astype(np.float32)
    want = darknet_conv_reference(x[0], kernel, biases, scales, mean, var, stride, 1)
    for eps in (1e-3, 1e-5):
        got = keras_outputs(cfg, tmp_path / "w.weights", x, bn_epsilon=eps)[0][0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Without the gamma adjustment, Keras' epsilon 1e-3 would be far off here.
    unadjusted = want / (np.sqrt(var) + 1e-6) * np.sqrt(var + 1e-3)
    assert np.abs(unadjusted - want).max() > 0.1


def darknet_maxpool_reference(x, size, stride, padding):
    """forward_maxpool_layer (maxpool_layer.c): out = (w + padding - size) / stride
    + 1, window origin i * stride - padding / 2, cells outside the input skipped."""
    h, w, c = x.shape
    out_h, out_w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    y = np.full((out_h, out_w, c), np.finfo(np.float32).min)  # -FLT_MAX
    for i in range(out_h):
        for j in range(out_w):
            for n in range(size):
                for m in range(size):
                    r, q = i * stride - padding // 2 + n, j * stride - padding // 2 + m
                    if 0 <= r < h and 0 <= q < w:
                        y[i, j] = np.maximum(y[i, j], x[r, q])
    return y


@pytest.mark.parametrize("size, stride, padding", [
    (s, t, None) for s in (1, 2, 3, 4, 5) for t in (1, 2, 3)] + [(3, 2, 0), (2, 2, 3)])
def test_maxpool_matches_darknet_for_every_size_and_stride(tmp_path, size, stride, padding):
    options = dict(size=size, stride=stride)
    if padding is not None:
        options["padding"] = padding
    cfg = write_cfg(tmp_path, [("maxpool", options)], width=7, height=6, channels=2)
    network = darknet.load_cfg(cfg)
    x = np.random.default_rng(size * 10 + stride).normal(size=(1, 6, 7, 2)).astype(np.float32)
    want = darknet_maxpool_reference(x[0], size, stride, size - 1 if padding is None else padding)
    assert network.layers[0].shape == want.shape
    got = np.asarray(darknet.build_model(network)(x))[0]
    np.testing.assert_array_equal(got, want)


def test_generated_cfg_matches_opencv(tmp_path):
    """Every layer kind, random weights with non-trivial BN statistics, odd sizes
    (72x56 input: 36x28, 18x14, 9x7 maps). Tolerance 1e-4 relative to the output
    range: float32 rounding; OpenCV's sqrt(var + 1e-6) vs darknet's sqrt(var) +
    1e-6 differ by < 1e-6 relative for these variances (0.2..2)."""
    cfg = write_cfg(tmp_path, FEATURES, width=72, height=56)
    random_weights(tmp_path / "w.weights", cfg, seed=3)
    x = np.random.default_rng(4).uniform(0, 1, (1, 56, 72, 3)).astype(np.float32)
    ours = keras_outputs(cfg, tmp_path / "w.weights", x)
    ref = opencv_outputs(cfg, tmp_path / "w.weights", x, FEATURE_HEADS)
    assert [o.shape for o in ours] == [o.shape for o in ref] == [(1, 7, 9, 21), (1, 14, 18, 21)]
    assert max_rel_diff(ours, ref) < 1e-4


def test_route_groups_match_opencv_and_write_back(tmp_path):
    cfg = write_cfg(tmp_path, CSP, width=32, height=32)
    random_weights(tmp_path / "w.weights", cfg, seed=13)
    x = np.random.default_rng(14).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    ref = opencv_outputs(cfg, tmp_path / "w.weights", x, [9])
    assert max_rel_diff(keras_outputs(cfg, tmp_path / "w.weights", x), ref) < 1e-4
    network = darknet.load_cfg(cfg)
    model = darknet.build_model(network)
    darknet.read_weights(tmp_path / "w.weights", network, model=model)
    darknet.write_darknet(model, tmp_path / "o", np.ones((6, 2)), [[3, 4, 5]], 2)
    assert "groups=2\ngroup_id=1" in (tmp_path / "o.cfg").read_text()
    assert max_rel_diff(opencv_outputs(tmp_path / "o.cfg", tmp_path / "o.weights", x, [9]),
                        ref) < 1e-6


def test_swapped_bn_arrays_would_be_caught(tmp_path):
    """The random BN statistics are far enough apart that reading the arrays in a
    wrong order (here: biases and scales, i.e. beta and gamma) breaks the match."""
    cfg = write_cfg(tmp_path, FEATURES[:10] + [FEATURES[10]], width=32, height=32)
    convs = random_weights(tmp_path / "w.weights", cfg, seed=5)
    for conv in convs:
        if len(conv) == 5:
            conv[0], conv[1] = conv[1], conv[0]
    write_weights(tmp_path / "swapped.weights", convs)
    x = np.random.default_rng(6).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    ref = opencv_outputs(cfg, tmp_path / "w.weights", x, [9])
    assert max_rel_diff(keras_outputs(cfg, tmp_path / "swapped.weights", x), ref) > 1e-2


@pytest.fixture(scope="module")
def real_tiny():
    if not (TINY / "yolov3-tiny.weights").is_file():
        pytest.skip("../shared/pretrained/yolov3-tiny is absent")
    network = darknet.load_cfg(TINY / "yolov3-tiny.cfg")
    model = darknet.build_model(network)
    darknet.set_weights(model, darknet.read_weights(TINY / "yolov3-tiny.weights", network))
    return model


def test_real_tiny_matches_opencv(real_tiny):
    """Real weights: max |difference| 3e-4 on outputs up to ~20. OpenCV normalises
    with sqrt(var + 1e-6) instead of darknet's sqrt(var) + 1e-6; with the smallest
    variance here (0.013) that is ~1e-5 relative per layer. Tolerance 2e-3."""
    x = np.random.default_rng(7).uniform(0, 1, (1, 416, 416, 3)).astype(np.float32)
    ref = opencv_outputs(TINY / "yolov3-tiny.cfg", TINY / "yolov3-tiny.weights", x, [15, 22])
    ours = [np.asarray(o) for o in real_tiny(x)]
    assert np.abs(ours[0] - ref[0]).max() < 2e-3 and np.abs(ours[1] - ref[1]).max() < 2e-3


def letterbox(path, size=416):
    from PIL import Image
    image = Image.open(path).convert("RGB")
    scale = min(size / image.width, size / image.height)
    nw, nh = int(image.width * scale), int(image.height * scale)
    canvas = Image.new("RGB", (size, size), (128, 128, 128))
    canvas.paste(image.resize((nw, nh), Image.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, np.float32)[None] / 255.0, (image.height, image.width)


def test_real_tiny_detects_coco_objects(real_tiny, tmp_path):
    """The converted weights, loaded by name into tiny_yolo_body and decoded with
    the project's default mask 3,4,5/1,2,3, find the annotated objects."""
    from yolo3.model import tiny_yolo_body, yolo_eval
    from yolo3.weights import load_weights, save_weights
    data = SHARED / "data" / "coco128-train"
    if not (data / "train.txt").is_file():
        pytest.skip("../shared/data/coco128-train is absent")
    save_weights(real_tiny, tmp_path / "tiny.h5")
    body = tiny_yolo_body(keras.Input((416, 416, 3), name="image"), 3, 80)
    load_weights(body, tmp_path / "tiny.h5")
    anchors = np.array([10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319], np.float32)
    lines = (data / "train.txt").read_text().splitlines()
    for line in lines[:4]:  # a bowl, giraffes, a vase, a zebra: each is found
        path, *boxes = line.split()
        x, shape = letterbox(data / path)
        outs = body(x)
        for a, b in zip(outs, real_tiny(x)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
        got, scores, classes = yolo_eval(outs, anchors.reshape(-1, 2), 80, shape,
                                         score_threshold=0.3, iou_threshold=0.45,
                                         mask=[[3, 4, 5], [1, 2, 3]])
        truth = np.array([[int(v) for v in b.split(",")] for b in boxes])
        hits = 0
        for (y0, x0, y1, x1), cls in zip(np.asarray(got), np.asarray(classes)):
            for tx0, ty0, tx1, ty1, tcls in truth:
                inter = max(0, min(x1, tx1) - max(x0, tx0)) * max(0, min(y1, ty1) - max(y0, ty0))
                union = (x1 - x0) * (y1 - y0) + (tx1 - tx0) * (ty1 - ty0) - inter
                hits += cls == tcls and inter / union > 0.5
        assert hits >= 1, (path, classes, truth)


# ---------------------------------------------------------- weights reader
def two_convs(tmp_path):
    cfg = write_cfg(tmp_path, FEATURES[:2], width=16, height=16)
    rng = np.random.default_rng(8)
    return cfg, [random_conv(rng, 8, 3, 3), random_conv(rng, 16, 8, 3)]


def test_truncated_file_names_layer_and_missing_floats(tmp_path):
    cfg, convs = two_convs(tmp_path)
    write_weights(tmp_path / "w.weights", convs, drop_floats=10)
    network = darknet.load_cfg(cfg)
    with pytest.raises(UserError, match=r"ends in layer 1 \(conv_001, .*net.cfg:\d+: "
                                        r"section 3 \[convolutional\]\): 10 of its 1216 floats"):
        darknet.read_weights(tmp_path / "w.weights", network)


def test_leftover_floats_warn_or_fail_when_strict(tmp_path):
    cfg, convs = two_convs(tmp_path)
    write_weights(tmp_path / "w.weights", convs, extra_floats=7)
    network = darknet.load_cfg(cfg)
    with pytest.warns(UserWarning, match="7 floats left over"):
        result = darknet.read_weights(tmp_path / "w.weights", network)
    assert (result.floats_read, result.leftover) == (8 * 4 + 8 * 27 + 16 * 4 + 16 * 72, 7)
    with pytest.raises(UserError, match="7 floats left over.*--strict"):
        darknet.read_weights(tmp_path / "w.weights", network, strict=True)


def test_partial_file_converts_first_layers(tmp_path):
    cfg, convs = two_convs(tmp_path)
    write_weights(tmp_path / "w.weights", convs[:1])
    network = darknet.load_cfg(cfg)
    with pytest.raises(UserError, match="use --partial|with --partial"):
        darknet.read_weights(tmp_path / "w.weights", network)
    result = darknet.read_weights(tmp_path / "w.weights", network, partial=True)
    assert (result.loaded, result.missing) == ([0], [1])
    np.testing.assert_array_equal(result.arrays["bn_000"][1], convs[0][0])  # beta = biases
    np.testing.assert_array_equal(result.arrays["bn_000"][2:], convs[0][2:4])
    np.testing.assert_array_equal(result.arrays["conv_000"][0],
                                  convs[0][4].transpose(2, 3, 1, 0))
    write_weights(tmp_path / "mid.weights", convs, drop_floats=5)  # ends inside a layer
    with pytest.raises(UserError, match="5 of its 1216 floats are missing"):
        darknet.read_weights(tmp_path / "mid.weights", network, partial=True)


@pytest.mark.parametrize("major, minor", [(0, 1), (0, 2), (1, 0), (1000, 2)])
def test_header_seen_width(tmp_path, major, minor):
    """seen is int64 when major*10+minor >= 2 and both < 1000 (darknet parser.c)."""
    cfg, convs = two_convs(tmp_path)
    write_weights(tmp_path / "w.weights", convs, major=major, minor=minor, seen=12345)
    result = darknet.read_weights(tmp_path / "w.weights", darknet.load_cfg(cfg), strict=True)
    assert (result.version[:2], result.seen, result.leftover) == ((major, minor), 12345, 0)


def test_short_header_and_negative_variance(tmp_path):
    cfg, convs = two_convs(tmp_path)
    network = darknet.load_cfg(cfg)
    (tmp_path / "short.weights").write_bytes(b"\0" * 8)
    with pytest.raises(UserError, match="too short"):
        darknet.read_weights(tmp_path / "short.weights", network)
    convs[1][3][0] = -1
    write_weights(tmp_path / "neg.weights", convs)
    with pytest.raises(UserError, match="layer 1 .*negative"):
        darknet.read_weights(tmp_path / "neg.weights", network)


# ------------------------------------------------------------ cfg checking
BAD_CFGS = [  # (cfg text, section number, line, message part)
    ("[net]\nwidth=32\nheight=32\n[conv]\nfilters=4\n", 2, 4, "unsupported section"),
    ("[net]\n[convolutional]\nfilters=4\nactivation=gelu\n", 2, 4, "unsupported activation"),
    ("[net]\n[convolutional]\nfilters=0\n", 2, 3, "filters must be an integer"),
    ("[net]\n[convolutional]\nfilters=-3\n", 2, 3, "filters must be an integer"),
    ("[net]\n[convolutional]\nfilters=abc\n", 2, 3, "filters must be an integer"),
    ("[net]\n[convolutional]\nfilters=1e30\n", 2, 3, "filters must be an integer"),
    ("[net]\n[convolutional]\nfilters=nan\n", 2, 3, "filters must be an integer"),
    ("[net]\n[convolutional]\nfilters=4\nsize=inf\n", 2, 4, "size must be an integer"),
    ("[net]\nwidth=0\n[convolutional]\n", 1, 2, "width must be an integer"),
    ("[net]\nwidth=8\nheight=8\n[convolutional]\nsize=11\n", 2, 5, "does not fit"),
    ("[net]\n[convolutional]\nfilters=4\n[route]\nlayers=-2\n", 3, 5, "outside 0..0"),
    ("[net]\n[convolutional]\nfilters=4\n[route]\nlayers=1\n", 3, 5, "outside 0..0"),
    ("[net]\n[convolutional]\nfilters=4\n[route]\nlayers=a\n", 3, 5, "list of integers"),
    ("[net]\n[convolutional]\nfilters=4\n[convolutional]\nfilters=8\n[shortcut]\nfrom=-2\n",
     4, 7, "shortcut shapes differ"),
    ("[net]\n[convolutional]\nfilters=4\n[convolutional]\nfilters=4\nstride=2\n"
     "[route]\nlayers=-1,-2\n", 4, 8, "differ in height x width"),
    ("[net]\n[convolutional]\nfilters=20\n[yolo]\nclasses=2\nnum=3\nanchors=1,2,3,4,5,6\n",
     3, 4, "3 anchors x (2 classes + 5) = 21"),
    ("[net]\n[convolutional]\nfilters=7\n[yolo]\nclasses=2\nnum=3\nanchors=1,2\n",
     3, 7, "2 anchor values for num=3"),
    ("[net]\n[convolutional]\nfilters=7\n[yolo]\nclasses=2\nnum=3\nanchors=1,2,3,-4,5,6\n",
     3, 7, "anchors must be a list of positive numbers"),
    ("[net]\n[convolutional]\nfilters=7\n[yolo]\nmask=5\nclasses=2\nnum=3\n"
     "anchors=1,2,3,4,5,6\n", 3, 5, "mask [5] outside"),
    ("[net]\n[convolutional]\nfilters=4\ngroups=3\n", 2, 4, "groups=3 must divide"),
    ("[net]\n[convolutional]\nfilters=4\ndilation=2\n", 2, 4, "dilation is not supported"),
    ("[net]\n[convolutional]\nfilters=4\n[route]\nlayers=-1\ngroups=3\n", 3, 6,
     "groups=3 needs one routed layer"),
    ("[net]\n[convolutional]\nfilters=4\n[route]\nlayers=-1\ngroups=2\ngroup_id=2\n", 3, 7,
     "group_id must be an integer in 0..1"),
    ("[net]\n[maxpool]\nsize=2\nstride=0\n", 2, 4, "stride must be an integer"),
    ("[net]\n[upsample]\nstride=99999999999\n", 2, 3, "stride must be an integer"),
    ("[convolutional]\nfilters=4\n", 1, 1, "first section must be [net]"),
    ("[net]\n[convolutional]\n[net]\n", 3, 3, "first section only"),
]


@pytest.mark.parametrize("text, number, line, message", BAD_CFGS)
def test_bad_cfg_values_are_user_errors(tmp_path, text, number, line, message):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        darknet.load_cfg(path)
    assert str(info.value).startswith(f"{path}:{line}: section {number} [")
    assert message in str(info.value)


KINDS = ["convolutional", "route", "shortcut", "upsample", "maxpool", "yolo", "avgpool",
         "dropout", "softmax", "cost", "region"]
KEYS = ["filters", "size", "stride", "pad", "padding", "groups", "batch_normalize",
        "activation", "layers", "from", "mask", "anchors", "classes", "num", "probability",
        "group_id"]
VALUES = ["0", "1", "2", "3", "-1", "-3", "1.5", "1e30", "nan", "inf", "-inf", "", "leaky",
          "linear", "1,2", "-1,-2", "99999999999999999999", "0x10", " ", "6,7,8", "1e-400"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KINDS),
                          st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES),
                                          max_size=5)), max_size=8),
       st.sampled_from(["8", "1", "0", "7", "1e9"]))
def test_any_cfg_is_checked_or_a_user_error(tmp_path_factory, sections, width):
    """Random sections and values: a Network whose shapes are positive, or a
    UserError naming file:line: section -- never another exception."""
    path = tmp_path_factory.mktemp("fuzz") / "f.cfg"
    path.write_text(f"[net]\nwidth={width}\nheight=8\n" + "".join(
        f"[{kind}]\n" + "".join(f"{k}={v}\n" for k, v in options.items())
        for kind, options in sections))
    try:
        network = darknet.load_cfg(path)
    except UserError as exc:
        assert str(exc).startswith(f"{path}:") and "section" in str(exc)
        return
    assert all(min(layer.shape) >= 1 for layer in network.layers)
    assert network.num_floats >= 0


@pytest.mark.parametrize("text, message", [
    ("width=3\n[net]\n", "option before the first"),
    ("[net]\nwidth\n", "expected key=value"),
    ("[net\n", "bad section header"),
    ("", "no sections"),
])
def test_bad_cfg_syntax(tmp_path, text, message):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        darknet.parse_cfg(path)


# ------------------------------------------------------------ darknet writer
def test_writer_round_trip_generated_model(tmp_path):
    """Keras (built from a cfg, random weights) -> darknet -> OpenCV and -> reader."""
    cfg = write_cfg(tmp_path, FEATURES, width=72, height=56)
    random_weights(tmp_path / "w.weights", cfg, seed=9)
    network = darknet.load_cfg(cfg)
    model = darknet.build_model(network)
    darknet.set_weights(model, darknet.read_weights(tmp_path / "w.weights", network))
    anchors = np.array([float(v) for v in ANCHORS.split(",")]).reshape(-1, 2)
    darknet.write_darknet(model, tmp_path / "out", anchors, [[3, 4, 5], [0, 1, 2]], 2)
    x = np.random.default_rng(10).uniform(0, 1, (1, 56, 72, 3)).astype(np.float32)
    want = [np.asarray(o) for o in model(x)]
    ref = opencv_outputs(tmp_path / "out.cfg", tmp_path / "out.weights", x, FEATURE_HEADS)
    assert max_rel_diff(want, ref) < 1e-4
    again = keras_outputs(tmp_path / "out.cfg", tmp_path / "out.weights", x)
    assert max_rel_diff(again, want) < 1e-6
    assert (tmp_path / "out.weights").stat().st_size == (tmp_path / "w.weights").stat().st_size


def test_writer_yolo_body_with_own_classes(tmp_path):
    """A yolo_body with 3 classes (as train.py makes) -> .cfg + .weights: the cfg has
    yolov3.cfg's layers with 24 output filters, and OpenCV reproduces the outputs."""
    from yolo3.model import yolo_body
    model = yolo_body(keras.Input((None, None, 3), name="image"), 3, 3)
    rng = np.random.default_rng(11)
    for layer in model.layers:
        if layer.name.startswith("bn_"):
            n = layer.weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(-.2, .2, n),
                               rng.uniform(-.2, .2, n), rng.uniform(0.5, 2, n)])
    anchors = np.array([10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156,
                        198, 373, 326], np.float32).reshape(-1, 2)
    darknet.write_darknet(model, tmp_path / "y", anchors, [[6, 7, 8], [3, 4, 5], [0, 1, 2]], 3)
    written = darknet.load_cfg(tmp_path / "y.cfg")
    public = darknet.load_cfg(CFG / "yolov3.cfg")
    assert [(l.kind, l.inputs) for l in written.layers] == [(l.kind, l.inputs) for l in public.layers]
    assert [h["classes"] for h in written.heads] == [3, 3, 3]
    x = rng.uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    want = [np.asarray(o) for o in model(x)]
    ref = opencv_outputs(tmp_path / "y.cfg", tmp_path / "y.weights", x, [81, 93, 105])
    assert max_rel_diff(want, ref) < 1e-4
    # back through the public yolov3.cfg (3 classes): the same outputs as yolo_body
    text = (CFG / "yolov3.cfg").read_text().replace("filters=255", "filters=24")
    (tmp_path / "v3.cfg").write_text(text.replace("classes=80", "classes=3"))
    for a, b in zip(keras_outputs(tmp_path / "v3.cfg", tmp_path / "y.weights", x), want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_writer_rejects_foreign_models(tmp_path):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="dense")(inputs))
    with pytest.raises(UserError, match="darknet naming"):
        darknet.write_darknet(model, tmp_path / "x", np.ones((6, 2)), [[0]], 1)
    assert not (tmp_path / "x.cfg").exists()
