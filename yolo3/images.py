"""Opening images for training: by content, any mode -> RGB, with clear errors.

Boxes in annotation files refer to the *stored* pixel grid. EXIF orientation is
ignored unless asked for (`exif_transpose=True`), and then image and boxes are
turned together (`exif_orientation` + `transpose_boxes`).
"""
import functools
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

# Decompression-bomb guard: Pillow's own default (about 89 megapixels).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
BACKGROUND = (128, 128, 128)
EXIF_ORIENTATION_TAG = 0x0112
# Modes holding 16-bit samples: scaled by 255/65535 (Pillow itself would clip).
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageError(UserError):
    """An unusable image file; `reason` says why, `path` which file."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def _check_file(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageError(path, "image not found")
    if os.path.getsize(path) == 0:
        raise ImageError(path, "empty image file")
    return path


def _check_pixels(path, size, max_pixels):
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(path, f"image has no pixels ({w}x{h})")
    if max_pixels and w * h > max_pixels:
        raise ImageError(path, f"image too large ({w}x{h} = {w * h} pixels > "
                         f"{max_pixels}; a decompression bomb?)")


def _open(path):
    """Image.open with Pillow's errors turned into UserError (header only)."""
    try:
        with warnings.catch_warnings():
            # Our own limit is checked by _check_pixels; Pillow's hard one stays.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"image too large: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unknown or damaged format)") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read image: {exc}") from None


def to_rgb(image):
    """Any Pillow mode -> RGB; transparency is composited over grey 128."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _WIDE_MODES or mode == "F":
        data = np.asarray(image, dtype=np.float64)
        if mode != "F":
            data = data * (255.0 / 65535.0)  # 16-bit range -> 8-bit
        grey = np.clip(np.rint(data), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def exif_orientation(image):
    """The EXIF orientation (1..8) of an open image; 1 when absent or invalid."""
    try:
        value = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # damaged EXIF blocks must not stop training
        return 1
    return value if 1 <= value <= 8 else 1


def transpose_boxes(boxes, orientation, size):
    """Map boxes (n, >=4) x_min,y_min,x_max,y_max on the stored grid of size
    (w, h) to the grid that `ImageOps.exif_transpose` shows for `orientation`."""
    boxes = np.array(boxes, dtype=np.float32, copy=True)
    if orientation == 1 or len(boxes) == 0:
        return boxes
    w, h = size
    x = boxes[:, [0, 2]]
    y = boxes[:, [1, 3]]
    # (x, y) -> displayed (x', y') for each EXIF orientation.
    new_x, new_y = {
        2: (w - x, y),          # mirror left-right
        3: (w - x, h - y),      # rotate 180
        4: (x, h - y),          # mirror top-bottom
        5: (y, x),              # transpose
        6: (h - y, x),          # rotate 90 clockwise
        7: (h - y, w - x),      # transverse
        8: (y, w - x),          # rotate 90 counter-clockwise
    }[orientation]
    boxes[:, 0], boxes[:, 2] = new_x.min(axis=1), new_x.max(axis=1)
    boxes[:, 1], boxes[:, 3] = new_y.min(axis=1), new_y.max(axis=1)
    return boxes


def open_image(path, exif_transpose=False, max_pixels=MAX_PIXELS, return_orientation=False):
    """Decode the image at `path` (format found by content) into an RGB image.

    Raises UserError for a missing, empty, truncated, undecodable or too large file.
    With exif_transpose, the image is turned as its EXIF orientation says; with
    return_orientation, returns (image, orientation applied) for turning boxes."""
    path = _check_file(path)
    image = _open(path)
    try:
        _check_pixels(path, image.size, max_pixels)
        orientation = exif_orientation(image) if exif_transpose else 1
        image.load()  # reads all pixels and closes the file (single-frame formats)
    except (OSError, SyntaxError, ValueError) as exc:
        image.close()
        raise ImageError(path, f"truncated or damaged image: {exc}") from None
    except BaseException:
        image.close()
        raise
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    rgb = to_rgb(image)
    if rgb is not image:
        image.close()
    elif getattr(image, "fp", None) is not None:  # multi-frame files stay open
        rgb = image.copy()
        image.close()
    return (rgb, orientation) if return_orientation else rgb


@functools.lru_cache(maxsize=65536)
def _cached_size(path, _mtime_ns, _length, max_pixels):
    image = _open(path)
    with image:
        _check_pixels(path, image.size, max_pixels)
        return image.size, image.format


def image_info(path, max_pixels=MAX_PIXELS):
    """((w, h), format) from the file's header (no decoding); cached per file
    version (path, mtime, size). UserError for missing, empty or non-image files."""
    path = _check_file(path)
    stat = os.stat(path)
    return _cached_size(os.path.abspath(path), stat.st_mtime_ns, stat.st_size, max_pixels)


def image_size(path, max_pixels=MAX_PIXELS):
    """(w, h) of the stored pixel grid, read from the header (cached)."""
    return image_info(path, max_pixels)[0]


def looks_truncated(path, image_format):
    """Cheap end-of-file check: a JPEG must hold its end marker (FF D9) near the end,
    a PNG its IEND chunk. Other formats are not checked (use a full decode)."""
    tail_length = 4096
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        length = handle.tell()
        handle.seek(max(0, length - tail_length))
        tail = handle.read()
    if image_format == "JPEG":
        return b"\xff\xd9" not in tail
    if image_format == "PNG":
        return b"IEND" not in tail
    return False


def check_image(path, full=False, max_pixels=MAX_PIXELS):
    """(w, h) of a usable image, or ImageError (a UserError) saying what is wrong.
    Reads the header and the file's end; a file whose end looks cut (or trailing data
    such as a motion photo's video) is decoded to be sure; full=True always decodes."""
    size, image_format = image_info(path, max_pixels)
    if full or looks_truncated(path, image_format):
        open_image(path, max_pixels=max_pixels).close()
    return size
