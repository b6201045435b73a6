"""YoloDataset and the original generators: shapes, targets, reproducibility."""
import pickle

import keras
import numpy as np
import pytest
from PIL import Image

import yolo3.batches
from yolo3.annotation_file import read_annotations
from yolo3.batches import YoloDataset, data_generator, data_generator_wrapper
from yolo3.errors import UserError
from yolo3.model import preprocess_true_boxes
from yolo3.mosaic import largest_boxes, mosaic
from yolo3.multiscale import input_size_at
from yolo3.utils import get_random_data

ANCHORS = np.array([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119],
                    [116, 90], [156, 198], [373, 326]], np.float32)
TINY = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float32)


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    """Six 64x64 noise images with one box (8, 8, 40, 40) each, class = index % 2."""
    folder = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(0)
    text = []
    for index in range(6):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        text.append(f"{index}.png 8,8,40,40,{index % 2}")
    (folder / "ann.txt").write_text("\n".join(text) + "\n")
    return read_annotations(folder / "ann.txt", num_classes=2)


def _equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))


def test_shapes_dtypes_and_targets_by_hand(lines):
    data = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, augment=False, shuffle=False)
    assert len(data) == 3
    (images, *y_true), zeros = data[0]
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    assert [y.shape for y in y_true] == [(2, 2, 2, 3, 7), (2, 4, 4, 3, 7), (2, 8, 8, 3, 7)]
    assert all(y.dtype == np.float32 for y in y_true)
    assert zeros.shape == (2,) and not zeros.any()
    # Box (8, 8)-(40, 40) unscaled: centre 24/64 = .375, size 32/64 = .5. Best anchor
    # by IoU of 32x32: (33, 23) -> 32*23 / (1024 + 759 - 736) = .703 (next: (30, 61)
    # .507), anchor 2 -> head 3 (stride 8, grid 8), slot 2, cell floor(.375*8) = 3.
    assert y_true[0].sum() == 0 and y_true[1].sum() == 0
    np.testing.assert_allclose(y_true[2][0, 3, 3, 2], [.375, .375, .5, .5, 1, 1, 0])
    np.testing.assert_allclose(y_true[2][1, 3, 3, 2], [.375, .375, .5, .5, 1, 0, 1])
    assert y_true[2][:, :, :, :, 4].sum() == 2
    # Validation images are the letterboxed ones.
    expected, _ = get_random_data(lines[0], (64, 64), random=False)
    np.testing.assert_array_equal(images[0], expected)


def _assert_targets_match(data, index):
    """Batch `index` of data: its y_true holds exactly the boxes of load_batch."""
    images, boxes = data.load_batch(index)
    (same_images, *y_true), _ = data[index]
    np.testing.assert_array_equal(images, same_images)
    h, w = images.shape[1:3]
    scale = np.array([w, h, w, h], np.float32)
    for b in range(len(images)):
        real = boxes[b][boxes[b, :, 2] > 0]
        # Each box as y_true holds it: floor-divided centre and size / (w, h).
        expected = {tuple(np.round(np.r_[(real[k, :2] + real[k, 2:4]) // 2,
                                         real[k, 2:4] - real[k, :2]] / scale, 5))
                    + (int(real[k, 4]),) for k in range(len(real))}
        found = set()
        for y in y_true:
            for cell in y[b][y[b][..., 4] == 1]:
                found.add(tuple(np.round(cell[:4], 5)) + (int(np.argmax(cell[5:])),))
        assert found == expected


def test_augmented_targets_match_the_boxes(lines):
    data = YoloDataset(lines * 2, 4, (96, 96), ANCHORS, 2, seed=11)
    for index in range(len(data)):
        _assert_targets_match(data, index)


def test_tiny_anchors_and_mask(lines):
    data = YoloDataset(lines, 3, (64, 64), TINY, 2, augment=False)
    (_, *y_true), _ = data[0]
    assert [y.shape for y in y_true] == [(3, 2, 2, 3, 7), (3, 4, 4, 3, 7)]
    # 32x32 against the tiny anchors: (23, 27) is best, 621/1024 = .606 (next: (37, 58)
    # .477): anchor 1 -> head 2 (stride 16, grid 4), slot 0, cell floor(.375*4) = 1.
    assert y_true[1][:, 1, 1, 0, 4].tolist() == [1, 1, 1]
    data = YoloDataset(lines, 3, (64, 64), TINY, 2, augment=False, mask=[[3, 4, 5], [0, 1, 2]])
    (_, *y_true), _ = data[0]
    assert y_true[1][:, 1, 1, 1, 4].tolist() == [1, 1, 1]


def test_reproducible_with_a_seed(lines):
    first = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=3)
    again = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=3)
    other = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=4)
    assert _equal(first[1], again[1])
    assert not _equal(first[1], other[1])
    # A worker process gets a pickled copy: it makes the same batch.
    assert _equal(pickle.loads(pickle.dumps(first))[2], again[2])


def test_batches_and_epochs_draw_differently(lines):
    same = [lines[0]] * 6  # identical lines: only the random draws differ
    data = YoloDataset(same, 2, (64, 64), ANCHORS, 2, seed=0)
    batches = [data[i][0][0] for i in range(3)]
    data.on_epoch_end()
    batches.append(data[0][0][0])
    flat = [image for batch in batches for image in batch]
    for a in range(len(flat)):
        for b in range(a):
            assert not np.array_equal(flat[a], flat[b])


def test_reshuffled_each_epoch(lines):
    data = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=1)
    orders = []
    for _ in range(3):
        order = [line.source for i in range(len(data)) for line in data.batch_lines(i)]
        assert sorted(order) == sorted(line.source for line in lines)
        orders.append(order)
        data.on_epoch_end()
    assert orders[0] != orders[1] or orders[1] != orders[2]
    data.set_epoch(0)
    assert [l.source for l in data.batch_lines(0)] == orders[0][:2]
    fixed = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, shuffle=False)
    assert [l.source for l in fixed.batch_lines(2)] == [lines[4].source, lines[5].source]


def test_small_data_wraps_and_strings_are_accepted(lines, monkeypatch):
    monkeypatch.chdir(lines[0].path.rsplit("/", 1)[0])
    data = YoloDataset(["0.png 8,8,40,40,1", "1.png"], 4, (32, 32), TINY, 2, seed=0)
    assert len(data) == 1
    (images, *_), _ = data[0]
    assert images.shape == (4, 32, 32, 3)
    with pytest.raises(IndexError):
        data[1]
    with pytest.raises(UserError):
        YoloDataset(["0.png 1,2,3"], 1, (32, 32), TINY, 2)
    with pytest.raises(UserError):
        YoloDataset([], 1, (32, 32), TINY, 2)


def test_fits_a_model_with_two_workers(lines):
    data = YoloDataset(lines, 2, (64, 64), TINY, 2, seed=0, workers=2)
    image = keras.Input((64, 64, 3), name="image")
    y1 = keras.Input((2, 2, 3, 7))
    y2 = keras.Input((4, 4, 3, 7))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(image))
    loss = keras.layers.Lambda(
        lambda t: keras.ops.sum(t[0], -1) ** 2 + keras.ops.sum(t[1]) * 0
        + keras.ops.sum(t[2]) * 0, name="yolo_loss")([features, y1, y2])
    model = keras.Model([image, y1, y2], loss)
    model.compile("sgd", loss={"yolo_loss": lambda y_true, y_pred: y_pred})
    history = model.fit(data, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert data.epoch >= 2  # Keras may also call on_epoch_end when fit starts


def test_original_generators(lines):
    generator = data_generator(lines, 4, (64, 64), ANCHORS, 2, rng=np.random.default_rng(0))
    (images, *y_true), zeros = next(generator)
    assert images.shape == (4, 64, 64, 3) and len(y_true) == 3 and zeros.shape == (4,)
    assert next(generator)[0][0].shape == (4, 64, 64, 3)  # wraps past the 6 lines
    assert data_generator_wrapper([], 4, (64, 64), ANCHORS, 2) is None
    assert data_generator_wrapper(lines, 0, (64, 64), ANCHORS, 2) is None


def _plain_batch(lines, batch_size, shape, seed, epoch, index, max_boxes=20):
    """Batch `index` of a shuffled augmenting YoloDataset built by hand from
    get_random_data and preprocess_true_boxes, as the original recipe makes it."""
    order = np.random.default_rng([seed, epoch]).permutation(len(lines))
    picks = order[(index * batch_size + np.arange(batch_size)) % len(lines)]
    rng = np.random.default_rng([seed, epoch, index])
    samples = [get_random_data(lines[i], shape, random=True, max_boxes=max_boxes, rng=rng)
               for i in picks]
    images = np.array([image for image, _ in samples])
    boxes = np.array([box for _, box in samples])
    return images, boxes, preprocess_true_boxes(boxes, shape, ANCHORS, 2)


def _assert_batch_is(batch, images, y_true):
    (got_images, *got_y_true), _ = batch
    np.testing.assert_array_equal(got_images, images)
    assert len(got_y_true) == len(y_true)
    for got, expected in zip(got_y_true, y_true):
        np.testing.assert_array_equal(got, expected)


def test_modern_options_off_give_the_original_batches(lines):
    off = dict(mosaic=0.0, mixup=0.0, mosaic_until=None, target_options=None, sizes=None,
               size_every=10)
    default = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=7)
    explicit = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=7, **off)
    # Mosaic and mixup certain, but only before epoch 0: never.
    ended = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=7, mosaic=1.0, mixup=1.0,
                        mosaic_until=0)
    for epoch in (0, 1):
        for data in (default, explicit, ended):
            data.set_epoch(epoch)
        for index in range(len(default)):
            images, _, y_true = _plain_batch(lines, 2, (64, 64), 7, epoch, index)
            for data in (default, explicit, ended):
                _assert_batch_is(data[index], images, y_true)


def test_mosaic_batch_replayed_by_hand(lines):
    # The documented draws: mosaic coin, 3 line indices, the 4 samples, the centre.
    data = YoloDataset(lines, 3, (64, 64), ANCHORS, 2, seed=2, mosaic=1.0, max_boxes=2)
    rng = np.random.default_rng([2, 0, 1])
    expected_images, expected_boxes = [], []
    for line in data.batch_lines(1):
        assert rng.random() < 1.0
        others = [lines[i] for i in rng.integers(len(lines), size=3)]
        samples = []
        for part in [line] + others:
            image, boxes = get_random_data(part, (64, 64), max_boxes=2, rng=rng)
            samples.append((image, boxes[boxes[:, 2] > 0]))
        image, boxes = mosaic(samples, (64, 64), rng)
        expected_images.append(image)
        expected_boxes.append(largest_boxes(boxes, 2))
    images, boxes = data.load_batch(1)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(boxes, expected_boxes)
    _assert_targets_match(data, 1)


def test_mosaic_joins_the_boxes_of_several_lines(lines):
    # Each line has one box: an image with two or more boxes is made of several lines.
    data = YoloDataset(lines * 2, 4, (64, 64), ANCHORS, 2, seed=0, mosaic=1.0)
    counts = []
    for index in range(len(data)):
        _, boxes = data.load_batch(index)
        counts += list((boxes[:, :, 2] > 0).sum(1))
        _assert_targets_match(data, index)
    assert max(counts) >= 2 and max(counts) <= 4
    plain = YoloDataset(lines * 2, 4, (64, 64), ANCHORS, 2, seed=0)
    assert max((plain.load_batch(i)[1][:, :, 2] > 0).sum() for i in range(len(plain))) <= 4


def test_mixup_batch_by_hand(lines):
    # The documented draws: the line's sample, the mixup coin, the partner's index,
    # the partner's sample, the Beta(32, 32) weight.
    data = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=4, mixup=1.0)
    rng = np.random.default_rng([4, 0, 0])
    images, boxes = data.load_batch(0)
    for j, line in enumerate(data.batch_lines(0)):
        a, boxes_a = get_random_data(line, (64, 64), rng=rng)
        assert rng.random() < 1.0
        partner = lines[rng.integers(len(lines))]
        b, boxes_b = get_random_data(partner, (64, 64), rng=rng)
        r = np.float32(rng.beta(32, 32))
        np.testing.assert_allclose(images[j], r * a + (1 - r) * b, atol=1e-6)
        real = np.concatenate([boxes_a[boxes_a[:, 2] > 0], boxes_b[boxes_b[:, 2] > 0]])
        np.testing.assert_array_equal(boxes[j, :len(real)], real)
        assert not boxes[j, len(real):].any()
    _assert_targets_match(data, 0)


def test_mosaic_until_and_validation(lines):
    plain = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=5)
    mixed = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=5, mosaic=1.0, mixup=0.5,
                        mosaic_until=1)
    assert not _equal(mixed[0], plain[0])
    for data in (plain, mixed):
        data.on_epoch_end()
    assert _equal(mixed[0], plain[0]) and _equal(mixed[2], plain[2])
    # Without augment (validation) there is no mosaic: the letterboxed images.
    val = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, augment=False, mosaic=1.0, mixup=1.0)
    expected, _ = get_random_data(val.batch_lines(0)[0], (64, 64), random=False)
    np.testing.assert_array_equal(val[0][0][0][0], expected)


def test_mosaic_reproducible_in_a_worker(lines):
    first = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=3, mosaic=0.5, mixup=0.5)
    again = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, seed=3, mosaic=0.5, mixup=0.5)
    assert _equal(first[1], again[1])
    assert _equal(pickle.loads(pickle.dumps(first))[2], again[2])


def test_target_options_are_forwarded(lines, monkeypatch):
    calls = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return preprocess_true_boxes(*args, mask=kwargs["mask"])

    monkeypatch.setattr(yolo3.batches, "preprocess_true_boxes", recording)
    data = YoloDataset(lines, 2, (64, 64), ANCHORS, 2, augment=False,
                       target_options={"iou_thresh": 0.3})
    data[0]
    assert calls == [{"mask": None, "iou_thresh": 0.3}]
    YoloDataset(lines, 2, (64, 64), ANCHORS, 2, augment=False)[0]
    assert calls[-1] == {"mask": None}


def test_multi_scale_batches(lines):
    sizes = [(32, 32), (64, 64), (96, 96)]
    data = YoloDataset(lines * 3, 2, (64, 64), ANCHORS, 2, seed=1, sizes=sizes,
                       size_every=3, mosaic=0.5)
    shapes = []
    for index in range(len(data)):
        shape = data.batch_shape(index)
        assert shape == input_size_at(sizes, 1, 0, index // 3)
        (images, *y_true), _ = data[index]
        assert images.shape == (2, *shape, 3)
        h, w = shape
        assert [y.shape[1:3] for y in y_true] == [(h // 32, w // 32), (h // 16, w // 16),
                                                 (h // 8, w // 8)]
        _assert_targets_match(data, index)
        shapes.append(shape)
    assert shapes[0::3] == shapes[1::3] == shapes[2::3]
    assert len(set(shapes)) >= 2


@pytest.mark.parametrize("options, word", [
    ({"mosaic": 1.5}, "mosaic probability 1.5"), ({"mixup": -0.1}, "mixup probability -0.1"),
    ({"sizes": [(64, 48)]}, r"\(64, 48\)"), ({"sizes": []}, r"\[\]"),
    ({"size_every": 0}, r"at least 1 \(0\)")])
def test_bad_modern_options(lines, options, word):
    with pytest.raises(UserError, match=word):
        YoloDataset(lines, 2, (64, 64), ANCHORS, 2, **options)
