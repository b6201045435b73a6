"""Benchmark (not a test): the input pipeline at 416x416 with augmentation.

Per-core images/s of get_random_data(random=True) against a plain transcription of
the original (PIL bicubic + matplotlib float64 HSV, numpy global random state), the
HSV step alone, and YoloDataset batches of 8 from 1 and 2 worker processes. Uses
../shared/data/raccoon when present, else generated JPEGs.

    python -m bench.bench_data [--quick] [--images 48] [--json out.json]
"""
import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from bench.original import original_get_random_data, original_hsv
from yolo3.atomic import atomic_open
from yolo3.annotation_file import format_line, read_annotations
from yolo3.batches import YoloDataset
from yolo3.errors import UserError, run_cli
from yolo3.augment import distort_hsv, get_random_data

RACCOON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "data", "raccoon", "train.txt")
ANCHORS = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]],
                   np.float32)
SIZE = (416, 416)


# ---- data ----

def generated_lines(folder, count):
    """`count` 640x480 JPEGs with smooth colours and noise, two boxes each."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    lines = []
    for index in range(count):
        base = np.stack([xx * 255 / 640, yy * 255 / 480, (xx + yy) % 256], -1)
        pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"gen{index}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        lines.append(format_line(path, [[50, 60, 300, 400, index % 3],
                                        [320, 100, 600, 380, 1]]))
    return lines


def load_lines(folder, count):
    """(annotation line strings with absolute paths, source description)."""
    if os.path.exists(RACCOON):
        annotated = read_annotations(RACCOON, num_classes=1)[:count]
        return [format_line(os.path.abspath(a.path), a.boxes) for a in annotated], \
            f"{len(annotated)} raccoon images (../shared/data/raccoon)"
    return generated_lines(folder, count), f"{count} generated 640x480 JPEGs"


# ---- measurements ----

def per_image(function, lines, repeats):
    """Median and spread of images/s over `repeats` passes through `lines`."""
    rates = []
    function(lines[0])  # warm-up
    for _ in range(repeats):
        start = time.perf_counter()
        for line in lines:
            function(line)
        rates.append(len(lines) / (time.perf_counter() - start))
    return {"images_per_s": statistics.median(rates), "min": min(rates), "max": max(rates)}


def hsv_rates(repeats):
    pixels = np.random.default_rng(1).integers(0, 256, (416, 416, 3), dtype=np.uint8)
    ours = per_image(lambda p: distort_hsv(p, .05, 1.3, .8), [pixels] * 10, repeats)
    original = per_image(lambda p: original_hsv(p / 255., .05, 1.3, .8), [pixels] * 3, repeats)
    return ours, original


_DATASET = None


def _init_worker(dataset):
    global _DATASET
    _DATASET = dataset


def _batch(index):
    images = _DATASET[index][0][0]
    return len(images)


def dataset_rate(lines, workers, batches):
    """images/s of YoloDataset batches of 8 from `workers` processes (the pool
    Keras's enqueuer uses with use_multiprocessing=True)."""
    dataset = YoloDataset(lines, 8, SIZE, ANCHORS, 3, seed=0)
    count = min(batches, len(dataset))
    if workers == 1:
        dataset[0]
        start = time.perf_counter()
        images = sum(len(dataset[i][0][0]) for i in range(count))
    else:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, _init_worker, (dataset,)) as pool:
            pool.map(_batch, range(workers))  # warm-up
            start = time.perf_counter()
            images = sum(pool.imap(_batch, range(count)))
    seconds = time.perf_counter() - start
    return {"workers": workers, "batches": count, "images_per_s": images / seconds}


def machine():
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [l.split(":", 1)[1].strip() for l in handle if l.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, no GPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer images and repeats (default: off)")
    parser.add_argument("--images", type=int, default=48,
                        help="images per pass (default: 48; 16 with --quick)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="passes per measurement, median reported (default: 3)")
    parser.add_argument("--json", help="also write the results to this JSON file "
                                       "(default: none)")
    args = parser.parse_args(argv)
    if args.images < 8 or args.repeats < 1:
        raise UserError("--images must be at least 8 and --repeats at least 1")
    count = 16 if args.quick and args.images == 48 else args.images
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as folder:
        lines, source = load_lines(folder, count)
        rng = np.random.default_rng(0)
        np.random.seed(0)
        original = per_image(lambda l: original_get_random_data(l, SIZE), lines, repeats)
        ours = per_image(lambda l: get_random_data(l, SIZE, rng=rng), lines, repeats)
        letterbox = per_image(lambda l: get_random_data(l, SIZE, random=False), lines, repeats)
        hsv_ours, hsv_original = hsv_rates(repeats)
        batches = max(2, count // 8)
        pipeline = [dataset_rate(lines, workers, batches) for workers in (1, 2)]
    result = {
        "machine": machine(), "data": source, "input": "416x416", "repeats": repeats,
        "get_random_data_original": original, "get_random_data": ours,
        "letterbox_no_augmentation": letterbox,
        "speedup": ours["images_per_s"] / original["images_per_s"],
        "hsv_original": hsv_original, "hsv": hsv_ours,
        "hsv_speedup": hsv_ours["images_per_s"] / hsv_original["images_per_s"],
        "dataset_batch8": pipeline,
    }
    rows = [
        ("get_random_data, original (1 core)", original["images_per_s"], ""),
        ("get_random_data, ours (1 core)", ours["images_per_s"],
         f"{result['speedup']:.1f}x the original"),
        ("no augmentation (validation, 1 core)", letterbox["images_per_s"], ""),
        ("HSV step, matplotlib float64", hsv_original["images_per_s"], ""),
        ("HSV step, ours float32", hsv_ours["images_per_s"],
         f"{result['hsv_speedup']:.1f}x matplotlib"),
    ] + [(f"YoloDataset batch 8, {p['workers']} worker(s)", p["images_per_s"],
          f"{p['batches']} batches") for p in pipeline]
    print(f"{result['machine']}; {source}; 416x416")
    print(f"{'measurement':40} {'images/s':>10}  note")
    for name, rate, note in rows:
        print(f"{name:40} {rate:10.1f}  {note}")
    if args.json:
        with atomic_open(args.json) as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
