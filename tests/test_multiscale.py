"""scale_sizes against hand-listed sizes; input_size_at's grouping and spread."""
import pytest

from yolo3.errors import UserError
from yolo3.multiscale import input_size_at, scale_sizes


def test_square_sizes():
    assert scale_sizes((416, 416), 320, 608) == [
        (320, 320), (352, 352), (384, 384), (416, 416), (448, 448), (480, 480),
        (512, 512), (544, 544), (576, 576), (608, 608)]
    assert scale_sizes((416, 416), 416, 416) == [(416, 416)]
    # The input size itself need not be in the range.
    assert scale_sizes((416, 416), 32, 64) == [(32, 32), (64, 64)]


def test_non_square_sizes():
    # 320x640 (h, w): the width takes 320..416, the height is half of it, rounded to
    # 32: 160, 176 -> 192 (5.5 rounds up), 192, 208 -> 224.
    assert scale_sizes((320, 640), 320, 416) == [(160, 320), (192, 352), (192, 384),
                                                (224, 416)]
    # Portrait 480x288 (h, w): the height is the longer side; w = 0.6 h: 96 -> 96,
    # 115.2 -> 128, 134.4 -> 128, 153.6 -> 160.
    assert scale_sizes((480, 288), 160, 256) == [(160, 96), (192, 128), (224, 128),
                                                (256, 160)]
    # A very flat input: the shorter side never drops below 32.
    assert scale_sizes((32, 416), 64, 96) == [(32, 64), (32, 96)]


@pytest.mark.parametrize("low, high, word", [(330, 608, "330"), (320, 600, "600"),
                                             (0, 64, "below 32"), (640, 320, "low above")])
def test_bad_ranges(low, high, word):
    with pytest.raises(UserError, match=word):
        scale_sizes((416, 416), low, high)


def test_sizes_shared_within_a_group_and_spread_across_groups():
    sizes = [(32, 32), (64, 64), (96, 96)]
    drawn = [input_size_at(sizes, 5, 0, group) for group in range(40)]
    assert all(size in sizes for size in drawn)
    assert set(drawn) == set(sizes)
    assert drawn == [input_size_at(sizes, 5, 0, group) for group in range(40)]
    assert drawn != [input_size_at(sizes, 5, 1, group) for group in range(40)]
    assert drawn != [input_size_at(sizes, 6, 0, group) for group in range(40)]
