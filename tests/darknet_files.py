"""Test fixtures in darknet's formats, written independently of yolo3.darknet:
cfg text from a list of sections, and .weights files with random values."""
import numpy as np

# A two-convolution network with one [yolo] head (2 classes) at 64 px: the
# darknet files of the bad-input and fuzz tests. Floats: conv 1 with batch norm
# (4 biases + 4 scales + 4 means + 4 variances, 4x3x3x3 kernel), conv 2 (21 biases,
# 21x4x1x1 kernel).
SMALL_CFG = """[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=leaky
[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear
[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""
SMALL_CFG_FLOATS = (4 * 4 + 4 * 3 * 9) + (21 + 21 * 4)


def cfg_text(sections, width=64, height=64, channels=3):
    """[net] plus sections given as (kind, {key: value}) pairs."""
    parts = [f"[net]\nbatch=1\nwidth={width}\nheight={height}\nchannels={channels}\n"]
    for kind, options in sections:
        parts.append(f"[{kind}]\n" + "".join(f"{k}={v}\n" for k, v in options.items()))
    return "\n".join(parts)


def conv_shapes(cfg_path):
    """(filters, in_channels, size, groups, batch_normalize) per convolution, by a
    minimal walk of the cfg (channel bookkeeping of route/shortcut/upsample/...)."""
    sections = []
    for raw in open(cfg_path, encoding="utf-8").read().splitlines():
        line = "".join(raw.split("#", 1)[0].split())
        if not line or line[0] == ";":
            continue
        if line.startswith("["):
            sections.append((line[1:-1], {}))
        else:
            key, _, value = line.partition("=")
            sections[-1][1][key] = value
    channels = [int(sections[0][1].get("channels", 3))]  # channels[i + 1] = layer i
    shapes = []
    for kind, opts in sections[1:]:
        c = channels[-1]
        if kind == "convolutional":
            groups = int(opts.get("groups", 1))
            shapes.append((int(opts["filters"]), c, int(opts.get("size", 1)), groups,
                           int(opts.get("batch_normalize", 0))))
            c = int(opts["filters"])
        elif kind == "route":
            here = len(channels) - 1
            refs = [int(v) for v in opts["layers"].split(",")]
            c = sum(channels[(here + r if r < 0 else r) + 1] for r in refs)
            c //= int(opts.get("groups", 1))  # yolov4-tiny: one channel group
        elif kind == "avgpool":
            pass
        channels.append(c)
    return shapes


def random_conv(rng, filters, in_channels, size, groups=1, bn=True, scale=None):
    """Darknet-order arrays for one convolution: biases, [scales, mean, variance],
    weights (filters, in/groups, size, size). BN statistics far from 0/1 so that a
    swapped or misplaced array changes the outputs."""
    fan_in = in_channels // groups * size * size
    scale = scale or 1.0 / np.sqrt(fan_in)
    arrays = [rng.uniform(-0.5, 0.5, filters)]
    if bn:
        arrays += [rng.uniform(0.5, 1.5, filters),       # scales (gamma)
                   rng.uniform(-0.3, 0.3, filters),       # rolling mean
                   rng.uniform(0.2, 2.0, filters)]        # rolling variance
    arrays.append(rng.normal(0, scale, (filters, in_channels // groups, size, size)))
    return [np.asarray(a, np.float32) for a in arrays]


def write_weights(path, convs, major=0, minor=2, revision=0, seen=32013312,
                  extra_floats=0, drop_floats=0):
    """A darknet .weights file: int32 major, minor, revision; seen as int64 when
    major*10+minor >= 2 (and both < 1000) else int32; then the float32 arrays."""
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    head = np.array([major, minor, revision], "<i4").tobytes()
    head += np.array([seen], "<i8" if wide else "<i4").tobytes()
    flat = np.concatenate([np.ravel(a) for conv in convs for a in conv]
                          + [np.ones(extra_floats, np.float32)]).astype("<f4")
    if drop_floats:
        flat = flat[:-drop_floats]
    with open(path, "wb") as handle:
        handle.write(head + flat.tobytes())
    return flat.size


def random_weights(path, cfg_path, seed=0, **kwargs):
    """Random weights for every convolution of cfg_path; returns the conv arrays."""
    rng = np.random.default_rng(seed)
    convs = [random_conv(rng, f, c, s, g, bool(bn)) for f, c, s, g, bn in conv_shapes(cfg_path)]
    write_weights(path, convs, **kwargs)
    return convs
