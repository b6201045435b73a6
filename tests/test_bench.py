"""Smoke tests for bench/: the timing helper, FLOP counts against darknet's published
numbers, the GPU script on the CPU (--smoke, JAX backend) and cheap run.py parts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# ---- timing -----------------------------------------------------------------------

def fake_clock(durations):
    """A clock whose consecutive (start, stop) readings differ by the given durations."""
    ticks, now = [], 0.0
    for d in durations:
        ticks += [now, now + d]
        now += d + 1.0
    it = iter(ticks)
    return lambda: next(it)


def test_measure_warmup_median_min_max():
    from bench.timing import measure
    calls = []
    t = measure(lambda: calls.append(1), repeats=4, warmup=2,
                clock=fake_clock([3.0, 1.0, 2.0, 10.0]))
    assert len(calls) == 6                       # 2 untimed warm-up calls + 4 timed
    assert (t.n, t.min, t.max) == (4, 1.0, 10.0)
    assert t.median == pytest.approx(2.5)        # median of 1, 2, 3, 10
    med, best, worst = t.rate(5.0)               # 5 units per call
    assert (med, best, worst) == pytest.approx((2.0, 5.0, 0.5))
    d = t.as_dict(5.0, "images_per_s")
    assert d["images_per_s"] == pytest.approx(2.0) and d["images_per_s_max"] == pytest.approx(5.0)


def test_measure_stops_at_max_seconds_and_rejects_bad_counts():
    from bench.timing import measure
    t = measure(lambda: None, repeats=10, warmup=0, max_seconds=2.5,
                clock=fake_clock([1.0, 1.0, 1.0, 1.0]))
    assert t.n == 3                              # 1 + 1 + 1 >= 2.5 after the third
    with pytest.raises(ValueError):
        measure(lambda: None, repeats=0)


# ---- FLOPs ------------------------------------------------------------------------

def test_count_flops_small_model_by_hand():
    import keras
    from bench.flops import count_flops
    i = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(i)
    b = keras.layers.Conv2D(5, 1, name="b")(a)
    c = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c")(a)
    m = keras.Model(i, [b, c])
    fa, fb, fc = 2 * 9 * 3 * 4 * 64, 2 * 1 * 4 * 5 * 64, 2 * 9 * 4 * 6 * 16
    r = count_flops(m)
    assert r["per_layer"] == {"a": fa, "b": fb, "c": fc}
    # a: no trainable layer above it -> forward + weight grad only; b, c: 3x
    assert r["train"] == 2 * fa + 3 * fb + 3 * fc
    m.get_layer("a").trainable = False
    m.get_layer("b").trainable = False
    # only c trains: forward + c's weight gradient; nothing trainable above any conv
    assert count_flops(m)["train"] == fa + fb + fc + fc


@pytest.mark.parametrize("kind, convs, darknet", [("yolov3", 75, 65.86), ("tiny", 13, 5.56)])
def test_model_flops_match_darknet(kind, convs, darknet):
    from bench.flops import DARKNET_BFLOPS_416, model_flops
    assert DARKNET_BFLOPS_416[kind] == darknet   # pjreddie.com/darknet/yolo, 416, 80 classes
    r = model_flops(kind, 416, 80)
    assert r["convs"] == convs
    assert r["forward"] / 1e9 == pytest.approx(darknet, rel=0.01)
    # first conv has no trainable layer above it: 3x forward less its input gradient
    first = r["per_layer"]["conv_000"]
    assert r["train"] == 3 * r["forward"] - first


def test_stage1_train_flops_add_only_output_convs():
    import keras
    from bench.flops import count_flops
    from yolo3.model import yolo_body
    body = yolo_body(keras.Input((416, 416, 3)), 3, 80)
    for layer in body.layers:
        layer.trainable = layer.name in ("conv_081", "conv_093", "conv_105")
    r = count_flops(body)
    out = 2 * 255 * (13 * 13 * 1024 + 26 * 26 * 512 + 52 * 52 * 256)  # 1x1 output convs
    assert r["train"] - r["forward"] == out
    assert r["trainable_convs"] == 3
