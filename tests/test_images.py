"""yolo3.images: opening by content, every mode to RGB, damaged files, EXIF."""
import numpy as np
import pytest
from PIL import Image

from yolo3.errors import UserError
from yolo3.images import (check_image, image_size, open_image, to_rgb,
                          transpose_boxes)


def _save(path, image, fmt=None, **kw):
    image.save(path, fmt, **kw)
    return path


def _pixel(path):
    return open_image(path).getpixel((0, 0))


@pytest.mark.parametrize("mode, fmt, value, expected", [
    ("RGB", "PNG", (10, 20, 30), (10, 20, 30)),
    ("L", "PNG", 77, (77, 77, 77)),
    ("1", "PNG", 1, (255, 255, 255)),
    # Opaque alpha keeps the colour.
    ("LA", "PNG", (90, 255), (90, 90, 90)),
    ("RGBA", "PNG", (200, 100, 0, 255), (200, 100, 0)),
    # Fully transparent: the grey 128 background.
    ("RGBA", "PNG", (200, 100, 0, 0), (128, 128, 128)),
    ("LA", "PNG", (0, 0), (128, 128, 128)),
    # CMYK (c, m, y, k) = (0, 255, 0, 0) is magenta; no ink is white.
    ("CMYK", "TIFF", (0, 255, 0, 0), (255, 0, 255)),
    ("CMYK", "JPEG", (0, 0, 0, 0), (255, 255, 255)),
    # 16-bit samples scaled by 255/65535: 32896 -> 128.0, 65535 -> 255.
    ("I;16", "PNG", 32896, (128, 128, 128)),
    ("I;16", "PNG", 65535, (255, 255, 255)),
    ("I", "TIFF", 65535, (255, 255, 255)),
])
def test_every_mode_becomes_rgb(tmp_path, mode, fmt, value, expected):
    path = _save(tmp_path / f"img.{fmt.lower()}", Image.new(mode, (8, 6), value), fmt)
    image = open_image(path)
    assert image.mode == "RGB" and image.size == (8, 6)
    pixel = image.getpixel((0, 0))
    tolerance = 2 if fmt == "JPEG" else 0
    assert np.abs(np.subtract(pixel, expected)).max() <= tolerance


def test_half_transparent_is_composited_over_grey():
    # out = 128 + (c - 128) * 128/255: 200 -> 164.1, 100 -> 113.9, 0 -> 63.7
    image = to_rgb(Image.new("RGBA", (2, 2), (200, 100, 0, 128)))
    assert np.abs(np.subtract(image.getpixel((0, 0)), (164, 114, 64))).max() <= 1


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    image.putpixel((1, 0), 2)
    path = _save(tmp_path / "p.png", image)
    assert open_image(path).getpixel((0, 0)) == (255, 0, 0)
    assert open_image(path).getpixel((1, 0)) == (0, 0, 255)
    path = _save(tmp_path / "pt.png", image, transparency=1)  # index 1 transparent
    assert open_image(path).getpixel((0, 0)) == (128, 128, 128)
    assert open_image(path).getpixel((1, 0)) == (0, 0, 255)


def test_palette_alpha_mode():
    image = Image.new("PA", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), (1, 255))
    image.putpixel((1, 0), (1, 0))
    rgb = to_rgb(image)
    assert rgb.getpixel((0, 0)) == (0, 255, 0)
    assert rgb.getpixel((1, 0)) == (128, 128, 128)


def test_png_named_jpg_opens_by_content(tmp_path):
    path = _save(tmp_path / "photo.jpg", Image.new("RGBA", (5, 3), (1, 2, 3, 255)), "PNG")
    assert _pixel(path) == (1, 2, 3)
    assert image_size(path) == (5, 3)


def test_missing_empty_and_garbage_files(tmp_path):
    with pytest.raises(UserError, match="image not found"):
        open_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="empty image file"):
        open_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("not an image at all")
    with pytest.raises(UserError, match="not an image"):
        image_size(tmp_path / "text.jpg")


def test_truncated_jpeg_and_png(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for name in ("t.jpg", "t.png"):
        whole = tmp_path / ("whole_" + name)
        Image.fromarray(noise).save(whole)
        check_image(whole)  # the complete file passes
        data = whole.read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) // 2])
        assert image_size(cut) == (64, 64)  # the header alone is fine
        with pytest.raises(UserError, match="truncated"):
            check_image(cut)
        with pytest.raises(UserError, match="truncated"):
            open_image(cut)


def test_trailing_data_is_not_truncation(tmp_path):
    # A motion photo: a complete JPEG followed by a video far past its end marker.
    noise = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = tmp_path / "motion.jpg"
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes() + bytes(20000))
    assert check_image(path) == (32, 32)


def test_full_check_finds_damage_inside(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "damaged.png"
    Image.fromarray(noise).save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64  # inside IDAT
    path.write_bytes(bytes(data))
    assert check_image(path) == (64, 64)  # the cheap check reads header and end
    with pytest.raises(UserError):
        check_image(path, full=True)


def test_decompression_bomb_guard(tmp_path):
    path = _save(tmp_path / "big.png", Image.new("L", (100, 100)))
    with pytest.raises(UserError, match="too large"):
        open_image(path, max_pixels=5000)
    with pytest.raises(UserError, match="too large"):
        image_size(path, max_pixels=5000)
    assert image_size(path) == (100, 100)


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (no pixel data): a bomb's shape."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_header(tmp_path):
    # 200000 x 200000 pixels is far beyond Pillow's limit: refused before decoding.
    path = _png_header_only(tmp_path / "bomb.png", 200000, 200000)
    with pytest.raises(UserError, match="too large"):
        image_size(path)
    with pytest.raises(UserError, match="too large"):
        open_image(path)
    # 12000 x 10000 = 120 megapixels: over our limit (89.5), under Pillow's error.
    path = _png_header_only(tmp_path / "big.png", 12000, 10000)
    with pytest.raises(UserError, match="too large"):
        check_image(path)


def test_image_size_cache_sees_a_changed_file(tmp_path):
    path = _save(tmp_path / "a.png", Image.new("RGB", (7, 5)))
    assert image_size(path) == (7, 5)
    _save(path, Image.new("RGB", (9, 11)))
    assert image_size(path) == (9, 11)


def _marked(size, box):
    """White image with a black rectangle over box (x_min, y_min, x_max, y_max)."""
    image = np.full((size[1], size[0], 3), 255, np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 0
    return Image.fromarray(image)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_transpose_turns_boxes_with_the_image(tmp_path, orientation):
    size, box = (60, 40), (5, 8, 25, 18)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path / "o.png", _marked(size, box), exif=exif)
    # By default the stored pixel grid is kept.
    assert open_image(path).size == size
    image, applied = open_image(path, exif_transpose=True, return_orientation=True)
    assert applied == orientation
    turned = transpose_boxes(np.array([box + (3,)], np.float32), orientation, size)
    x0, y0, x1, y1 = turned[0, :4].astype(int)
    assert turned[0, 4] == 3
    dark = np.argwhere(np.asarray(image)[..., 0] < 128)  # (row, col) of the mark
    assert (dark[:, 1].min(), dark[:, 0].min()) == (x0, y0)
    assert (dark[:, 1].max() + 1, dark[:, 0].max() + 1) == (x1, y1)


def test_damaged_exif_counts_as_no_orientation(tmp_path):
    path = _save(tmp_path / "plain.png", Image.new("RGB", (6, 4)))
    image, applied = open_image(path, exif_transpose=True, return_orientation=True)
    assert applied == 1 and image.size == (6, 4)
