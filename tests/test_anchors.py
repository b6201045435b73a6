"""yolo3.anchors: reading anchors files (formats and errors), writing them, and
the anchor masks of each model kind."""
import numpy as np
import pytest

from yolo3.anchors import (TINY_MASK, YOLO_MASK, anchor_masks, check_mask, format_anchors,
                           get_anchors, parse_mask, write_anchors)
from yolo3.errors import UserError

SIX = [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]]


@pytest.mark.parametrize("text", [
    "10,14, 23,27, 37,58, 81,82, 135,169, 344,319\n",          # the original's files
    "10,14,23,27,37,58,81,82,135,169,344,319",                  # no spaces, no newline
    "10,14\n23,27\n37,58\n81,82\n135,169\n344,319\n",          # one pair per line
    "\ufeff10, 14,  23, 27, 37,58, 81,82, 135,169, 344,319,\n\n",  # BOM, trailing comma
])
def test_formats_read_the_same(tmp_path, text):
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    anchors = get_anchors(tmp_path / "a.txt")
    assert anchors.dtype == np.float32 and anchors.shape == (6, 2)
    np.testing.assert_array_equal(anchors, SIX)


def test_fractional_anchors_are_kept(tmp_path):
    (tmp_path / "a.txt").write_text(", ".join(["1.5,2.25"] * 9))
    np.testing.assert_array_equal(get_anchors(tmp_path / "a.txt"), [[1.5, 2.25]] * 9)


@pytest.mark.parametrize("content, message", [
    (b"10,14, 23,x\n", "anchors must be numbers ('x')"),
    (b"10,14, 23,-27, 37,58, 81,82, 135,169, 344,319", "anchors must be positive (-27)"),
    (b"10,14, 23,0, 37,58, 81,82, 135,169, 344,319", "anchors must be positive (0)"),
    (b"10,14, 23,nan, 37,58, 81,82, 135,169, 344,319", "anchors must be positive (nan)"),
    (b"10,14, 23", "odd number of values (3); anchors are w,h pairs"),
    (b"10,14, 23,27, 37,58, 81,82",
     "4 anchors; expected 9 (YOLOv3, YOLOv3-SPP) or 6 (tiny-YOLOv3)"),
    (b"", "0 anchors; expected 9"),
    (b"10,14\xff\xfe", "not a UTF-8 text file (invalid start byte at byte 5)"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "a.txt"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        get_anchors(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_write_rounds_to_the_originals_format_and_reads_back(tmp_path):
    anchors = np.array(SIX, np.float32) + 0.4
    assert format_anchors(anchors) == "10,14,  23,27,  37,58,  81,82,  135,169,  344,319"
    write_anchors(tmp_path / "out.txt", anchors)
    assert (tmp_path / "out.txt").read_text() == format_anchors(anchors) + "\n"
    np.testing.assert_array_equal(get_anchors(tmp_path / "out.txt"), SIX)
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]     # no temporary left


def test_default_masks_by_anchor_count_and_kind():
    assert anchor_masks(9) == YOLO_MASK == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert anchor_masks(6) == TINY_MASK == [[3, 4, 5], [1, 2, 3]]
    assert anchor_masks(9, kind="yolov3-spp") == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    anchor_masks(9).append([0])                 # a caller's change stays its own
    assert anchor_masks(9) == YOLO_MASK
    with pytest.raises(UserError, match="^4 anchors; expected 9"):
        anchor_masks(4)
    with pytest.raises(UserError, match="^6 anchors; YOLOv3-SPP takes 9$"):
        anchor_masks(6, kind="yolov3-spp")


def test_parse_and_check_masks():
    assert parse_mask("3,4,5/0,1,2") == [[3, 4, 5], [0, 1, 2]]
    assert anchor_masks(6, parse_mask("3,4,5/0,1,2")) == [[3, 4, 5], [0, 1, 2]]
    assert check_mask([[8], [0, 1], [2, 3, 4, 5]], 9) == [[8], [0, 1], [2, 3, 4, 5]]
    with pytest.raises(UserError, match=r"^bad mask '3,4,a': expected e\.g\. 3,4,5/1,2,3$"):
        parse_mask("3,4,a")
    with pytest.raises(UserError, match=r"^mask \[\[3, 4, 5\]\] has 1 heads; 6 anchors need 2$"):
        anchor_masks(6, [[3, 4, 5]])
    with pytest.raises(UserError, match="has 2 heads; 9 anchors need 3"):
        anchor_masks(9, [[0, 1, 2], [3, 4, 5]])
    with pytest.raises(UserError, match="has 2 heads"):
        anchor_masks(6, [[3, 4, 5], []])              # an empty head
    with pytest.raises(UserError, match=r"^mask index 6 outside 0\.\.5$"):
        anchor_masks(6, [[3, 4, 6], [0, 1, 2]])
    with pytest.raises(UserError, match=r"^mask index -1 outside 0\.\.5$"):
        anchor_masks(6, [[3, 4, 5], [-1, 1, 2]])
