"""The original's data augmentation, get_random_data: random scale and aspect
jitter, placement on a grey canvas, horizontal flip and an HSV distortion, with the
boxes moved alongside.

It keeps the original's operations, order and ranges; it differs in
(1) box arithmetic in float32 (the original truncated to int at every step),
(2) every image mode is converted to RGB, (3) the random=False path clips boxes to
the canvas and drops empty ones, (4) the random draws come from `rng` (a numpy
Generator) when given, else from numpy's global state exactly as the original, and
(5) a float32 HSV distortion equal to matplotlib's float64 one within 1e-6.
"""
import numpy as np
from PIL import Image

from .annotation_file import parse_line
from .images import BACKGROUND, image_size, open_image, transpose_boxes


class _GlobalRandom:
    """The original's draws: numpy's global random state."""

    @staticmethod
    def random():
        return np.random.rand()

    @staticmethod
    def shuffle(array):
        np.random.shuffle(array)


def _uniform(rng, a=0.0, b=1.0):
    """The original's rand(a, b) = random() * (b - a) + a."""
    return rng.random() * (b - a) + a


# Pixels per block in distort_hsv: small blocks keep the temporaries in the CPU
# cache and below malloc's mmap threshold (fresh pages for every array are slow).
_HSV_BLOCK = 16384


def distort_hsv(image, hue, sat, val):
    """uint8 or [0,1] RGB (h, w, 3) -> float32 RGB (h, w, 3) in [0, 1] after the
    original's distortion in HSV: hue += hue (|hue| <= 1, wrapped once into [0, 1]),
    saturation *= sat and value *= val (both clipped to [0, 1]).

    matplotlib's rgb_to_hsv / hsv_to_rgb maths, in float32 without masked indexing.
    Hue in sixths H = 6h = sector + q: red max -> 0 + (g-b)/d, green -> 2 + (b-r)/d,
    blue -> 4 + (r-g)/d (ties give equal values). Back: channel = v - v*s*clip(
    min(k, 4-k), 0, 1), k = (H + n) mod 6, n = 5, 3, 1 for r, g, b. k is formed as
    (q + 6*hue) + integer so that it is rounded once, at its own magnitude (< 6).
    """
    if not -1 <= hue <= 1:
        raise ValueError(f"hue shift must be within [-1, 1] ({hue})")
    image = np.asarray(image)
    out = np.empty(image.shape, np.float32)
    rows = max(1, _HSV_BLOCK // max(1, image.shape[1]))
    for top in range(0, image.shape[0], rows):
        _distort_block(image[top:top + rows], hue, sat, val, out[top:top + rows])
    return out


def _distort_block(image, hue, sat, val, out):
    """distort_hsv on a block of rows, written into `out`."""
    planes = image.transpose(2, 0, 1).astype(np.float32)
    if image.dtype == np.uint8:
        planes *= np.float32(1 / 255)
    r, g, b = planes
    v = np.maximum(np.maximum(r, g), b)
    delta = v - np.minimum(np.minimum(r, g), b)
    red = v == r
    green = (v == g) & ~red
    blue = ~(red | green)
    numerator = (g - b) * red + (b - r) * green + (r - g) * blue
    q = numerator / (delta + (delta == 0))  # grey pixels: q = 0, hue 0
    sector = np.float32(2) * green + np.float32(4) * blue
    sector += np.float32(6) * ((sector + q) < 0)  # matplotlib's (H / 6) % 1
    x = q + np.float32(6 * hue)
    # Wrap the shifted hue once into [0, 6] (the original's -1 / +1 on h).
    shifted = sector + x
    sector -= np.float32(6) * (shifted > 6)
    sector += np.float32(6) * (shifted < 0)
    shifted = sector + x
    s = delta / (v + (v == 0))
    s *= np.float32(sat)
    np.clip(s, 0, 1, out=s)
    v *= np.float32(val)
    np.clip(v, 0, 1, out=v)
    vs = v * s
    for channel, n in enumerate((5, 3, 1)):
        whole = sector + np.float32(n)
        whole -= np.float32(6) * (shifted >= 6 - n)  # (H + n) mod 6
        k = x + whole
        weight = np.minimum(k, 4 - k)
        np.clip(weight, 0, 1, out=weight)
        weight *= vs
        np.subtract(v, weight, out=out[..., channel])


def _read_annotation(annotation_line):
    """(path, boxes float32 (n, 5)) from an AnnotationLine or a line string."""
    if isinstance(annotation_line, str):
        annotation_line = parse_line(annotation_line)
    path, boxes = annotation_line[0], annotation_line[1]
    return path, np.array(boxes, dtype=np.float32).reshape(-1, 5)


def get_random_data(annotation_line, input_shape, random=True, max_boxes=20, jitter=.3,
                    hue=.1, sat=1.5, val=1.5, proc_img=True, rng=None,
                    exif_transpose=False):
    """Random preprocessing for real-time data augmentation (the original's).

    annotation_line: a line `path x_min,y_min,x_max,y_max,class ...` or an
    AnnotationLine; input_shape: (h, w). Returns (image float32 (h, w, 3) in [0, 1],
    boxes float32 (max_boxes, 5) zero padded). proc_img=False (random=False only)
    returns 0 instead of the image and reads only the image header.
    rng: numpy Generator for the draws (default: numpy's global state, as the
    original). exif_transpose: turn image and boxes by the EXIF orientation.
    """
    rng = _GlobalRandom if rng is None else rng
    path, box = _read_annotation(annotation_line)
    h, w = input_shape
    if proc_img or random:
        image, orientation = open_image(path, exif_transpose, return_orientation=True)
        if orientation != 1:
            box = transpose_boxes(box, orientation, image_size(path))
        iw, ih = image.size
    else:
        iw, ih = image_size(path)
        if exif_transpose:
            image, orientation = open_image(path, True, return_orientation=True)
            box = transpose_boxes(box, orientation, (iw, ih))
            iw, ih = image.size

    if not random:
        scale = min(w / iw, h / ih)
        nw = max(int(iw * scale), 1)  # the original crashed on a sliver (0 px side)
        nh = max(int(ih * scale), 1)
        dx = (w - nw) // 2
        dy = (h - nh) // 2
        image_data = 0
        if proc_img:
            image = image.resize((nw, nh), Image.BICUBIC)
            new_image = Image.new('RGB', (w, h), BACKGROUND)
            new_image.paste(image, (dx, dy))
            image_data = np.asarray(new_image, dtype=np.float32) / np.float32(255)
        box_data = np.zeros((max_boxes, 5), np.float32)
        if len(box) > 0:
            rng.shuffle(box)
            box = box[:max_boxes]
            box[:, [0, 2]] = box[:, [0, 2]] * np.float32(scale) + np.float32(dx)
            box[:, [1, 3]] = box[:, [1, 3]] * np.float32(scale) + np.float32(dy)
            box = _clip_boxes(box, w, h, min_size=0)
            box_data[:len(box)] = box
        return image_data, box_data

    # resize image
    new_ar = w / h * _uniform(rng, 1 - jitter, 1 + jitter) / _uniform(rng, 1 - jitter, 1 + jitter)
    scale = _uniform(rng, .25, 2)
    if new_ar < 1:
        nh = int(scale * h)
        nw = int(nh * new_ar)
    else:
        nw = int(scale * w)
        nh = int(nw / new_ar)
    nw, nh = max(nw, 1), max(nh, 1)  # the original crashed on an empty size
    image = image.resize((nw, nh), Image.BICUBIC)

    # place image
    dx = int(_uniform(rng, 0, w - nw))
    dy = int(_uniform(rng, 0, h - nh))
    new_image = Image.new('RGB', (w, h), BACKGROUND)
    new_image.paste(image, (dx, dy))
    image = new_image

    # flip image or not
    flip = _uniform(rng) < .5
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)

    # distort image
    hue = _uniform(rng, -hue, hue)
    sat = _uniform(rng, 1, sat) if _uniform(rng) < .5 else 1 / _uniform(rng, 1, sat)
    val = _uniform(rng, 1, val) if _uniform(rng) < .5 else 1 / _uniform(rng, 1, val)
    image_data = distort_hsv(np.asarray(image), hue, sat, val)

    # correct boxes
    box_data = np.zeros((max_boxes, 5), np.float32)
    if len(box) > 0:
        rng.shuffle(box)
        box[:, [0, 2]] = box[:, [0, 2]] * np.float32(nw / iw) + np.float32(dx)
        box[:, [1, 3]] = box[:, [1, 3]] * np.float32(nh / ih) + np.float32(dy)
        if flip:
            box[:, [0, 2]] = w - box[:, [2, 0]]
        box = _clip_boxes(box, w, h, min_size=1)
        box = box[:max_boxes]
        box_data[:len(box)] = box
    return image_data, box_data


def _clip_boxes(box, w, h, min_size):
    """Clip x to [0, w], y to [0, h]; keep boxes wider and taller than min_size."""
    box[:, 0:2] = np.maximum(box[:, 0:2], 0)
    box[:, 2] = np.minimum(box[:, 2], w)
    box[:, 3] = np.minimum(box[:, 3], h)
    keep = (box[:, 2] - box[:, 0] > min_size) & (box[:, 3] - box[:, 1] > min_size)
    return box[keep]
