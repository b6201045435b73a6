"""letterbox_image, get_random_data and the HSV distortion against hand-worked
values, matplotlib and a plain transcription of the original."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from bench.original import original_get_random_data, original_hsv
from yolo3.annotation_file import AnnotationLine
from yolo3.augment import distort_hsv, get_random_data
from yolo3.utils import compose, letterbox_image

GREY = 128 / 255


def _solid(path, size, colour):
    Image.new("RGB", size, colour).save(path)
    return str(path)


def _line(path, boxes):
    return AnnotationLine(str(path), np.array(boxes, np.float32).reshape(-1, 5))


def test_compose():
    assert compose(lambda x: x + 1, lambda x: x * 10)(2) == 30
    with pytest.raises(ValueError):
        compose()


def test_letterbox_by_hand():
    # 4x2 into 8x8: scale min(8/4, 8/2) = 2 -> 8x4 pasted at (0, 2).
    out = np.asarray(letterbox_image(Image.new("RGB", (4, 2), (10, 200, 30)), (8, 8)))
    assert out.shape == (8, 8, 3)
    assert (out[:2] == 128).all() and (out[6:] == 128).all()
    assert (out[2:6] == (10, 200, 30)).all()


def test_not_random_by_hand(tmp_path):
    # 200x100 into 64x64: scale = min(64/200, 64/100) = 0.32, 64x32 at dx=0, dy=16.
    path = _solid(tmp_path / "a.png", (200, 100), (10, 20, 30))
    image, boxes = get_random_data(_line(path, [[50, 25, 150, 75, 1]]), (64, 64),
                                   random=False, max_boxes=3)
    assert image.shape == (64, 64, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[:16], GREY, atol=1e-7)
    np.testing.assert_allclose(image[48:], GREY, atol=1e-7)
    np.testing.assert_allclose(image[16:48], np.broadcast_to(
        np.array([10, 20, 30]) / 255, (32, 64, 3)), atol=1e-7)
    # x: 50*.32 = 16, 150*.32 = 48; y: 25*.32 + 16 = 24, 75*.32 + 16 = 40.
    assert boxes.dtype == np.float32 and boxes.shape == (3, 5)
    np.testing.assert_allclose(boxes, [[16, 24, 48, 40, 1], [0] * 5, [0] * 5], atol=1e-5)


def test_not_random_keeps_fractions(tmp_path):
    # The original truncated 33 * 0.32 = 10.56 to 10; float32 keeps 10.56.
    path = _solid(tmp_path / "a.png", (200, 100), (0, 0, 0))
    _, boxes = get_random_data(_line(path, [[33, 10, 101, 60, 0]]), (64, 64),
                               random=False)
    np.testing.assert_allclose(boxes[0], [10.56, 19.2, 32.32, 35.2, 0], atol=1e-5)


def test_not_random_clips_and_drops(tmp_path):
    # 100x100 into 50x50: scale 0.5. A box past the right edge is clipped to 50,
    # one entirely outside the image disappears.
    path = _solid(tmp_path / "a.png", (100, 100), (0, 0, 0))
    line = _line(path, [[80, 0, 130, 20, 0], [120, 10, 140, 30, 0]])
    _, boxes = get_random_data(line, (50, 50), random=False, max_boxes=4)
    np.testing.assert_allclose(boxes[0], [40, 0, 50, 10, 0])
    assert not boxes[1:].any()


def test_not_random_max_boxes_and_proc_img(tmp_path):
    path = _solid(tmp_path / "a.png", (64, 64), (0, 0, 0))
    line = _line(path, [[i, i, i + 10, i + 10, i % 3] for i in range(25)])
    image, boxes = get_random_data(line, (64, 64), random=False, proc_img=False,
                                   rng=np.random.default_rng(0))
    assert image == 0
    assert boxes.shape == (20, 5) and (boxes[:, 2] > 0).all()
    # Shuffled: a subset of the input rows, each unchanged (scale 1).
    rows = {tuple(r) for r in line.boxes.tolist()}
    assert all(tuple(r) in rows for r in boxes.tolist())


def test_accepts_line_text_with_spaces(tmp_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    path = _solid(folder / "a b.png", (64, 64), (0, 0, 0))
    _, boxes = get_random_data(f"{path} 1,2,30,40,0", (64, 64), random=False)
    np.testing.assert_allclose(boxes[0], [1, 2, 30, 40, 0])


@pytest.fixture(scope="module")
def noise_image(tmp_path_factory):
    pixels = np.random.default_rng(7).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    pixels[30:60, 40:80] = (200, 60, 20)
    path = tmp_path_factory.mktemp("img") / "noise.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    return str(path)


@pytest.mark.parametrize("random", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_same_as_the_original_with_the_global_state(noise_image, random, seed):
    line = f"{noise_image} 10,12,100,80,1 40,30,80,60,0 0,0,119,89,2"
    np.random.seed(seed)
    expected_image, expected_boxes = original_get_random_data(line, (64, 96), random=random)
    np.random.seed(seed)
    image, boxes = get_random_data(line, (64, 96), random=random)
    np.testing.assert_allclose(image, expected_image, atol=1e-6, rtol=0)
    # The original truncated every box coordinate to int; ours keeps the fraction.
    # The kept boxes are large, so both keep the same boxes in the same order.
    assert np.abs(boxes - expected_boxes).max() < 1
    assert (boxes[:, 4] == expected_boxes[:, 4]).all()


def test_not_random_pixels_equal_the_original_exactly(noise_image):
    expected, _ = original_get_random_data(f"{noise_image}", (128, 80), random=False)
    image, _ = get_random_data(f"{noise_image}", (128, 80), random=False)
    assert (np.round(image * 255) == np.round(expected * 255)).all()
    np.testing.assert_allclose(image, expected, atol=1e-7, rtol=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), hue=st.floats(-1, 1),
       sat=st.floats(1 / 1.5, 1.5), val=st.floats(1 / 1.5, 1.5))
def test_hsv_matches_matplotlib(seed, hue, sat, val):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    pixels[:5] = pixels[:5, :, :1]  # grey pixels
    pixels[5:10, :, 1] = pixels[5:10, :, 0]  # ties between channels
    pixels[10:12] = [[0, 0, 0], [255, 255, 255]] * 25
    pixels[12:14] = (rng.integers(0, 2, (2, 50, 3)) * 255).astype(np.uint8)
    out = distort_hsv(pixels, hue, sat, val)
    assert out.dtype == np.float32 and out.shape == pixels.shape
    np.testing.assert_allclose(out, original_hsv(pixels / 255., hue, sat, val), atol=1e-6, rtol=0)


def test_hsv_identity_and_hue_limit():
    pixels = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(distort_hsv(pixels, 0, 1, 1), pixels / 255., atol=1e-6)
    with pytest.raises(ValueError):
        distort_hsv(pixels, 1.5, 1, 1)


@pytest.fixture(scope="module")
def marked_image(tmp_path_factory):
    """White 160x120 image, black object at (40, 30)-(120, 90) = its box."""
    pixels = np.full((120, 160, 3), 255, np.uint8)
    pixels[30:90, 40:120] = 0
    path = tmp_path_factory.mktemp("img") / "marked.png"
    Image.fromarray(pixels).save(path)
    return str(path)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), size=st.sampled_from([(64, 64), (96, 64), (64, 128)]))
def test_random_invariants_and_boxes_follow_the_image(marked_image, seed, size):
    h, w = size
    extra = [[0, 0, 20, 20, 1], [150, 110, 160, 120, 2], [10, 100, 30, 119, 3]]
    line = _line(marked_image, [[40, 30, 120, 90, 0]] + extra * 3)
    image, boxes = get_random_data(line, size, max_boxes=5, hue=0, sat=1, val=1,
                                   rng=np.random.default_rng(seed))
    assert image.shape == (h, w, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1
    assert boxes.shape == (5, 5) and boxes.dtype == np.float32
    kept = boxes[boxes[:, 2] > 0]
    assert len(kept) <= 5 and not boxes[len(kept):].any()
    assert (kept[:, :2] >= 0).all() and (kept[:, 2] <= w).all() and (kept[:, 3] <= h).all()
    assert (kept[:, 2] - kept[:, 0] > 1).all() and (kept[:, 3] - kept[:, 1] > 1).all()
    # With hue/sat/val neutral the object stays black: the centre of its box is
    # dark, wherever jitter, scale, placement and flip put it.
    for x0, y0, x1, y1, cls in kept:
        if cls == 0 and x1 - x0 > 4 and y1 - y0 > 4:
            cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
            assert image[cy, cx].max() < 0.2


def test_random_uses_the_generator(marked_image):
    line = _line(marked_image, [[40, 30, 120, 90, 0]])
    first = get_random_data(line, (64, 64), rng=np.random.default_rng(5))
    again = get_random_data(line, (64, 64), rng=np.random.default_rng(5))
    other = get_random_data(line, (64, 64), rng=np.random.default_rng(6))
    assert (first[0] == again[0]).all() and (first[1] == again[1]).all()
    assert not (first[0] == other[0]).all()


def test_grey_image_is_converted(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (32, 32), 200).save(path)
    image, _ = get_random_data(_line(path, []), (32, 32), random=False)
    np.testing.assert_allclose(image, 200 / 255, atol=1e-7)
