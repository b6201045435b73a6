"""Miscellaneous utilities of the original (its yolo3/utils.py): compose,
letterbox_image and get_random_data (which lives in yolo3.augment)."""
from functools import reduce

from PIL import Image

from .augment import get_random_data
from .images import BACKGROUND

__all__ = ["compose", "letterbox_image", "get_random_data"]


def compose(*funcs):
    """Compose functions left to right: compose(f, g)(x) == g(f(x))."""
    if funcs:
        return reduce(lambda f, g: lambda *a, **kw: g(f(*a, **kw)), funcs)
    raise ValueError('Composition of empty sequence not supported.')


def letterbox_image(image, size):
    """Resize keeping the aspect ratio (bicubic) and pad with grey to size (w, h)."""
    iw, ih = image.size
    w, h = size
    scale = min(w / iw, h / ih)
    nw = max(int(iw * scale), 1)  # the original crashed on a sliver (0 px side)
    nh = max(int(ih * scale), 1)
    image = image.resize((nw, nh), Image.BICUBIC)
    new_image = Image.new('RGB', size, BACKGROUND)
    new_image.paste(image, ((w - nw) // 2, (h - nh) // 2))
    return new_image
