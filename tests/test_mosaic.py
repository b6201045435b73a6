"""mosaic, mixup and largest_boxes against hand-worked pixels and coordinates."""
import numpy as np
import pytest

from yolo3.mosaic import largest_boxes, mixup, mosaic

H, W = 10, 16


def _pattern(k, h=H, w=W):
    """An image whose pixel (y, x) holds (k / 10, y / 100, x / 100): it says where
    it came from."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.full((h, w), k / 10), y / 100, x / 100], -1).astype(np.float32)


def _samples(boxes):
    return [(_pattern(k), np.array(b, np.float32).reshape(-1, 5)) for k, b in enumerate(boxes)]


def test_quadrant_pixels_by_hand():
    # Centre (6, 4) on a 16x10 canvas. Each quadrant shows the corner of its sample
    # that touches the centre: canvas (y, x) <- sample (y + sy, x + sx).
    image, boxes = mosaic(_samples([[], [], [], []]), (H, W), rng=None, centre=(6, 4))
    assert image.shape == (H, W, 3) and image.dtype == np.float32
    assert boxes.shape == (0, 5)
    quadrants = [  # canvas rows, canvas columns, sample k, row and column offsets
        (slice(0, 4), slice(0, 6), 0, 10 - 4, 16 - 6),   # sample 0's bottom-right
        (slice(0, 4), slice(6, 16), 1, 10 - 4, -6),      # sample 1's bottom-left
        (slice(4, 10), slice(0, 6), 2, -4, 16 - 6),      # sample 2's top-right
        (slice(4, 10), slice(6, 16), 3, -4, -6),         # sample 3's top-left
    ]
    for rows, cols, k, sy, sx in quadrants:
        y, x = np.mgrid[rows, cols]
        np.testing.assert_array_equal(image[rows, cols, 0], np.float32(k / 10))
        np.testing.assert_array_equal(image[rows, cols, 1], ((y + sy) / 100).astype(np.float32))
        np.testing.assert_array_equal(image[rows, cols, 2], ((x + sx) / 100).astype(np.float32))


def test_boxes_shifted_clipped_and_slivers_dropped():
    # Shifts (dx, dy) from sample to canvas with centre (6, 4) on 16x10:
    # sample 0 (-10, -6), sample 1 (6, -6), sample 2 (-10, 4), sample 3 (6, 4).
    samples = _samples([
        [[11, 7, 15, 9, 3],      # -> (1, 1, 5, 3) inside the top-left quadrant
         [2, 2, 8, 8, 1]],       # -> x (-8, -2) clipped to (0, 0): zero width, dropped
        [[0, 0, 4, 8, 2],        # -> (6, -6, 10, 2) clipped to (6, 0, 10, 2): 8 of 32 px^2
         [6, 0, 10, 7.5, 0]],    # -> (12, 0, 16, 1.5): 1.5 px high < 2, dropped
        [[4, 0, 16, 6, 4],       # -> (-6, 4, 6, 10) clipped to (0, 4, 6, 10): 36 of 72
         [0, 7, 5, 9, 6]],       # -> y 11..13 clipped to 10..10: outside, dropped
        [[1, 1, 3, 5, 7],        # -> (7, 5, 9, 9)
         [8, 4, 16, 10, 5]],     # -> (14, 8, 22, 14) clipped to (14, 8, 16, 10): 4 of 48
    ])
    _, boxes = mosaic(samples, (H, W), rng=None, centre=(6, 4))
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, [[1, 1, 5, 3, 3], [6, 0, 10, 2, 2],
                                          [0, 4, 6, 10, 4], [7, 5, 9, 9, 7]])
    # 4 / 48 = 0.083 < 0.1 of the area is a sliver; with min_area 0.05 it stays.
    _, boxes = mosaic(samples, (H, W), rng=None, centre=(6, 4), min_area=0.05)
    np.testing.assert_array_equal(boxes[-1], [14, 8, 16, 10, 5])
    # min_size 1: the 1.5 px high box of sample 1 stays (6 of 30 px^2).
    _, boxes = mosaic(samples, (H, W), rng=None, centre=(6, 4), min_size=1)
    np.testing.assert_array_equal(boxes[2], [12, 0, 16, 1.5, 0])
    # The input boxes are not changed in place.
    np.testing.assert_array_equal(samples[0][1][0], [11, 7, 15, 9, 3])


def test_centre_at_the_edge_gives_one_sample():
    # Centre (16, 10): the top-left quadrant is the whole canvas, sample 0 unchanged.
    samples = _samples([[[1, 2, 5, 6, 1]], [[0, 0, 4, 4, 2]], [], []])
    image, boxes = mosaic(samples, (H, W), rng=None, centre=(W, H))
    np.testing.assert_array_equal(image, _pattern(0))
    np.testing.assert_array_equal(boxes, [[1, 2, 5, 6, 1]])


def test_drawn_centre_stays_in_the_middle_half():
    # The top-left pixel shows sample 0's pixel (h - cy, w - cx): the centre is read
    # back from the image.
    h, w = 40, 64
    samples = [(_pattern(k, h, w), np.zeros((0, 5), np.float32)) for k in range(4)]
    centres = set()
    for seed in range(60):
        image, _ = mosaic(samples, (h, w), np.random.default_rng(seed))
        cx = w - round(image[0, 0, 2] * 100)
        cy = h - round(image[0, 0, 1] * 100)
        assert 16 <= cx < 48 and 10 <= cy < 30
        centres.add((cx, cy))
        again, _ = mosaic(samples, (h, w), np.random.default_rng(seed))
        np.testing.assert_array_equal(image, again)
    assert len(centres) > 30


def test_mosaic_rejects_wrong_inputs():
    with pytest.raises(ValueError, match="4 samples"):
        mosaic(_samples([[], [], []]), (H, W), rng=None, centre=(6, 4))
    with pytest.raises(ValueError, match="sample 2"):
        mosaic(_samples([[], [], [], []])[:2] + [(np.zeros((H, W + 1, 3)), []),
                                                 (_pattern(3), [])], (H, W), None, centre=(6, 4))
    with pytest.raises(ValueError, match="outside"):
        mosaic(_samples([[], [], [], []]), (H, W), rng=None, centre=(17, 4))


class _FixedBeta:
    """A stand-in Generator whose beta draw is fixed; it records the parameters."""

    def __init__(self, r):
        self.r, self.calls = r, []

    def beta(self, a, b):
        self.calls.append((a, b))
        return self.r


def test_mixup_blend_by_hand():
    a = np.zeros((2, 3, 3), np.float32)
    a[0] = 1
    b = np.full((2, 3, 3), 0.5, np.float32)
    rng = _FixedBeta(0.25)
    image, boxes = mixup((a, [[1, 1, 2, 2, 0]]), (b, [[0, 0, 3, 2, 4], [1, 0, 2, 1, 1]]), rng)
    assert rng.calls == [(32.0, 32.0)]
    # r = 1/4: row 0 is 1/4 * 1 + 3/4 * 1/2 = 5/8, row 1 is 0 + 3/4 * 1/2 = 3/8.
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image[0], 0.625)
    np.testing.assert_array_equal(image[1], 0.375)
    np.testing.assert_array_equal(boxes, [[1, 1, 2, 2, 0], [0, 0, 3, 2, 4], [1, 0, 2, 1, 1]])
    mixup((a, []), (b, []), rng, alpha=8.0)
    assert rng.calls[-1] == (8.0, 8.0)


def test_mixup_weight_is_numpys_beta_draw():
    ones, zeros = np.ones((1, 1, 3), np.float32), np.zeros((1, 1, 3), np.float32)
    image, boxes = mixup((ones, []), (zeros, []), np.random.default_rng(7))
    r = np.random.default_rng(7).beta(32.0, 32.0)
    np.testing.assert_allclose(image, r, rtol=1e-6)
    assert 0.2 < r < 0.8 and boxes.shape == (0, 5)
    with pytest.raises(ValueError, match="shapes"):
        mixup((ones, []), (np.zeros((1, 2, 3)), []), np.random.default_rng(0))


def test_largest_boxes():
    boxes = np.array([[0, 0, 2, 2, 0],     # area 4
                      [0, 0, 5, 1, 1],     # area 5
                      [0, 0, 1, 1, 2],     # area 1
                      [0, 0, 3, 3, 3],     # area 9
                      [1, 1, 3, 3, 4]],    # area 4, ties with the first: the first stays
                     np.float32)
    np.testing.assert_array_equal(largest_boxes(boxes, 3),
                                  [[0, 0, 2, 2, 0], [0, 0, 5, 1, 1], [0, 0, 3, 3, 3]])
    padded = largest_boxes(boxes[:2], 4)
    assert padded.shape == (4, 5) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded, [[0, 0, 2, 2, 0], [0, 0, 5, 1, 1], [0] * 5, [0] * 5])
    assert not largest_boxes(np.zeros((0, 5)), 2).any()
