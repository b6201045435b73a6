"""Stage 1 on cached features: the features are the inputs of the body's output
convolutions, the head model's loss is the full model's, and the cache is reused
only while everything it depends on is unchanged (tiny-YOLOv3, 64x96 input)."""
import os

import keras
import numpy as np
import pytest

from yolo3.annotation_file import read_annotations
from yolo3.augment import get_random_data
from yolo3.bottleneck import MAX_BOXES, cached_features, feature_model, head_model
from yolo3.demo import DEMO_ANCHORS, make_dataset
from yolo3.model import preprocess_true_boxes, tiny_yolo_body
from yolo3.training import compile_model, create_tiny_model, detection_body

SHAPE = (64, 96)                      # (h, w): a non-square input
MASK = [[3, 4, 5], [1, 2, 3]]         # the tiny default
CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    paths = make_dataset(str(tmp_path_factory.mktemp("data")), num_images=4, size=64,
                         seed=2)
    return read_annotations(paths["annotations"], len(CLASSES))


def test_features_are_the_inputs_of_the_output_convolutions():
    """Each head's output is its 1x1 output convolution applied by hand (kernel and
    bias) to the features: they are exactly that convolution's inputs."""
    keras.utils.set_random_seed(4)
    body = tiny_yolo_body(keras.Input((*SHAPE, 3)), 3, len(CLASSES))
    images = np.random.default_rng(0).random((2, *SHAPE, 3), np.float32)
    features = feature_model(body).predict_on_batch(images)
    outputs = body.predict_on_batch(images)
    assert [f.shape[1:3] for f in features] == [(2, 3), (4, 6)]
    for feature, output, name in zip(features, outputs, ("conv_015", "conv_022")):
        kernel, bias = body.get_layer(name).get_weights()
        by_hand = np.einsum("bhwc,cd->bhwd", feature, kernel[0, 0]) + bias
        np.testing.assert_allclose(by_hand, output, rtol=1e-4, atol=1e-4)


def test_head_loss_is_the_full_models_loss_with_a_frozen_body(lines):
    keras.utils.set_random_seed(5)
    model = create_tiny_model(SHAPE, DEMO_ANCHORS, len(CLASSES), load_pretrained=False,
                              freeze_body=2, mask=MASK)
    body = detection_body(model)
    batch = [get_random_data(line, SHAPE, random=False) for line in lines]
    images = np.stack([image for image, _ in batch])
    y_true = preprocess_true_boxes(np.stack([boxes for _, boxes in batch]), SHAPE,
                                   DEMO_ANCHORS, len(CLASSES), mask=MASK)
    compile_model(model, 1e-3, jit_compile=False)
    full = model.evaluate([images, *y_true], np.zeros(len(lines)), verbose=0)[0]
    features = feature_model(body).predict_on_batch(images)
    head = head_model(body, DEMO_ANCHORS, len(CLASSES), MASK)
    compile_model(head, 1e-3, jit_compile=False)
    part = head.evaluate([*features, *y_true], np.zeros(len(lines)), verbose=0)[0]
    assert full > 0 and part == pytest.approx(full, rel=1e-4)


def test_cache_is_reused_only_for_the_same_key(lines, tmp_path, capsys):
    keras.utils.set_random_seed(6)
    body = tiny_yolo_body(keras.Input((*SHAPE, 3)), 3, len(CLASSES))
    extractor = feature_model(body)
    folder = str(tmp_path / "cache")

    def features(label="train", classes=CLASSES):
        arrays = cached_features(extractor, lines, SHAPE, classes, folder, label)
        out = capsys.readouterr().out
        return arrays, "reusing" in out, sorted(os.listdir(folder))

    first, reused, names = features()
    assert not reused and len(names) == 1
    assert first["f0"].shape == (4, 2, 3, 512) and first["f0"].dtype == np.float16
    assert first["boxes"].shape == (4, MAX_BOXES, 5)
    again, reused, same = features()
    assert reused and same == names
    assert all(np.array_equal(first[k], again[k]) for k in first)

    assert not features(classes=["a", "b", "c"])[1]       # other class names
    os.utime(lines[0].path, ns=(1, 1))                     # an image changed
    _, reused, names = features()
    assert not reused and len(names) == 1                  # the stale cache removed
    conv = body.get_layer("conv_000")                      # other frozen weights
    conv.set_weights([w + 0.01 for w in conv.get_weights()])
    assert not features()[1]
    _, reused, names = features(label="val")               # one cache per label
    assert not reused and len(names) == 2
