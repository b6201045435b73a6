"""Multi-scale training: the input sizes to train at, and the size of each batch."""
import numpy as np

from .errors import UserError

# A fixed last seed word that separates the size draws from the batches' own
# Generators (seeded by seed, epoch, index).
_SIZE_STREAM = 0x5153


def _round32(value):
    """The nearest multiple of 32 (halves up), at least 32."""
    return max(32, 32 * int(np.floor(value / 32 + 0.5)))


def scale_sizes(input_shape, low, high):
    """The (h, w) input sizes for multi-scale training, in increasing order.

    The longer side takes every multiple of 32 in [low, high]; the shorter side
    follows the aspect ratio of input_shape (h, w), rounded to the nearest multiple of
    32 (at least 32). A square input gives the squares (s, s), s = low, low + 32, ...,
    high; e.g. (416, 416), 320, 608 -> (320, 320), (352, 352), ..., (608, 608), and
    (320, 640), 320, 416 -> (160, 320), (192, 352), (192, 384), (224, 416).
    A UserError when low or high is not a multiple of 32, low < 32 or low > high.
    """
    h, w = (int(v) for v in input_shape)
    for name, value in (("low", low), ("high", high)):
        if value % 32:
            raise UserError(f"multi-scale {name} size {value}: not a multiple of 32")
    if low < 32:
        raise UserError(f"multi-scale low size {low}: below 32")
    if low > high:
        raise UserError(f"multi-scale sizes {low}..{high}: low above high")
    longer = max(h, w)
    sizes = [(_round32(h * side / longer), _round32(w * side / longer))
             for side in range(int(low), int(high) + 1, 32)]
    return sorted(set(sizes))


def input_size_at(sizes, seed, epoch, group):
    """The (h, w) input size of batch group `group` (batch index // size_every) of
    `epoch`: one of `sizes`, drawn uniformly with a numpy Generator seeded by
    (seed, epoch, group), so it is the same in every worker and for every batch of
    the group."""
    rng = np.random.default_rng([int(seed), int(epoch), int(group), _SIZE_STREAM])
    return tuple(sizes[rng.integers(len(sizes))])
