"""Benchmark (not a test): how the data steps grow with the number of annotation
lines. For each size (default 1k, 10k, 100k lines) every step runs in a fresh
process, which reports its wall time and peak resident memory (ru_maxrss, and
the resident memory after its imports, so the step's own share shows):

  validate  read_annotations with the image checks (header + end of file per
            line) and the train/validation split
  epoch     YoloDataset over the lines: construction, epoch order, and the
            batches of one epoch (augmented, --input-size). With more than
            --batches batches, that many batches spread over the epoch are
            loaded and the epoch time is extrapolated from their mean.
  cache     the bottleneck cache of tiny-YOLOv3 (random weights, --input-size)
            built in chunks on disk, then one epoch of FeatureBatches read
            back (its size on disk reported)
  kmeans    kmeans.py on the annotation file (k=6, letterbox scaled)
  evaluate  evaluate.py's path without the network: a fake detector (ground
            truth jittered, plus one false positive per image) through
            detect_annotations, then evaluate_packed (VOC and COCO mAP)

The lines point at a pool of small generated images (--pool, --image-size),
each line with its own random boxes (so the box sizes are distinct, as in a
real data set). Writes a markdown table (--out) with the time per 1000 lines
and each step's growth from the second size to the last (1.0 = linear).

    python -m bench.scale [--sizes 1000,10000,100000] [--out scale.md] [--json r.json]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STEPS = ("validate", "epoch", "cache", "kmeans", "evaluate")
NUM_CLASSES = 3


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- data ----

def make_pool(folder, count, size):
    """`count` generated size x size PNG images; their paths."""
    from yolo3.demo import make_image
    rng = np.random.default_rng(0)
    paths = []
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        image, _ = make_image(rng, size=size, min_side=size // 8, max_side=size // 3)
        path = os.path.join(folder, f"{index:04d}.png")
        image.save(path)
        paths.append(path)
    return paths


def write_annotations(path, pool, lines, size, seed=0):
    """`lines` lines over the pool, each with 1-3 random boxes (decimals) inside
    the size x size image."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(lines):
            count = int(rng.integers(1, 4))
            x0 = rng.uniform(0, size * 0.6, count)
            y0 = rng.uniform(0, size * 0.6, count)
            w = rng.uniform(size * 0.05, size * 0.4, count)
            h = rng.uniform(size * 0.05, size * 0.4, count)
            boxes = " ".join(f"{a:.2f},{b:.2f},{a + c:.2f},{b + d:.2f},{k}" for a, b, c, d, k
                             in zip(x0, y0, w, h, rng.integers(0, NUM_CLASSES, count)))
            handle.write(f"{pool[index % len(pool)]} {boxes}\n")


# ---- the steps (each in its own process) ----

def step_validate(annotations, args):
    from yolo3.annotation_file import read_annotations
    from yolo3.trainer import split_lines
    lines = read_annotations(annotations, NUM_CLASSES, progress=False)
    train, val = split_lines(lines, 0.1)
    return {"lines": len(train) + len(val)}


def step_epoch(annotations, args):
    from yolo3.annotation_file import read_annotations
    from yolo3.batches import YoloDataset
    from yolo3.demo import DEMO_ANCHORS
    lines = read_annotations(annotations, NUM_CLASSES, check_images=False, progress=False)
    size = (args.input_size, args.input_size)
    start = time.perf_counter()
    data = YoloDataset(lines, 8, size, DEMO_ANCHORS, NUM_CLASSES, augment=True, seed=0)
    data.order(0)
    setup = time.perf_counter() - start
    count = len(data)
    picks = np.unique(np.linspace(0, count - 1, min(count, args.batches)).astype(int))
    start = time.perf_counter()
    for index in picks:
        data[int(index)]
    per_batch = (time.perf_counter() - start) / len(picks)
    return {"seconds": setup + per_batch * count, "setup_s": setup,
            "batches": count, "batches_loaded": len(picks), "per_batch_s": per_batch}


def step_cache(annotations, args):
    import keras

    from yolo3.annotation_file import read_annotations
    from yolo3.bottleneck import FeatureBatches, cached_features, feature_model
    from yolo3.demo import DEMO_ANCHORS
    from yolo3.training import build_body
    lines = read_annotations(annotations, NUM_CLASSES, check_images=False, progress=False)
    size = (args.input_size, args.input_size)
    keras.utils.set_random_seed(0)
    extractor = feature_model(build_body(6, NUM_CLASSES, size))
    folder = tempfile.mkdtemp(dir=args.work)
    arrays = cached_features(extractor, lines, size, [str(i) for i in range(NUM_CLASSES)],
                             folder, "train")
    built = time.perf_counter()
    batches = FeatureBatches(arrays, 8, size, DEMO_ANCHORS, NUM_CLASSES,
                             [[3, 4, 5], [1, 2, 3]])
    for index in range(len(batches)):
        batches[index]
    read = time.perf_counter() - built
    disk = sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(folder) for name in names)
    return {"disk_bytes": disk, "read_epoch_s": read}


def step_kmeans(annotations, args):
    import contextlib
    import io
    import kmeans
    with contextlib.redirect_stdout(io.StringIO()) as out:
        kmeans.main([annotations, "-k", "6", "--input-size", str(args.input_size),
                     "--out", os.path.join(args.work, "anchors.txt")])
    return {"boxes": int(out.getvalue().split()[0])}


class FakeDetector:
    """Detections from the ground truth of the lines, asked for in line order:
    boxes moved by up to 2 pixels, score 0.5-1, plus one false positive per
    image. The truth is kept packed (one array), as a real detector keeps
    nothing per image."""
    class_names = tuple(str(i) for i in range(NUM_CLASSES))

    def __init__(self, lines):
        self.truth = np.concatenate([line.boxes for line in lines])
        self.offsets = np.cumsum([0] + [len(line.boxes) for line in lines])
        self.done = 0
        self.rng = np.random.default_rng(0)

    def detect(self, paths, progress=None):
        results = []
        for _ in paths:
            truth = self.truth[self.offsets[self.done]:self.offsets[self.done + 1]]
            self.done += 1
            boxes = np.concatenate([truth[:, :4] + self.rng.uniform(-2, 2, (len(truth), 4)),
                                    [[1, 1, 9, 9]]])
            scores = self.rng.uniform(0.5, 1, len(boxes))
            classes = np.concatenate([truth[:, 4], [0]]).astype(int)
            results.append((boxes, scores, classes))
        return results


def step_evaluate(annotations, args):
    from yolo3.annotation_file import read_annotations
    from yolo3.evaluation import detect_annotations, evaluate_packed
    lines = read_annotations(annotations, NUM_CLASSES, progress=False)
    detector = FakeDetector(lines)
    data = detect_annotations(detector, lines)
    del lines       # as evaluate.py does
    report, _ = evaluate_packed(data, detector.class_names)
    return {"mAP50": report["mAP50"], "mAP": report["mAP"]}


def run_step(name, annotations, args):
    """In this process: the step's result with seconds, peak and base RSS."""
    import keras  # noqa: F401  (the imports are not part of the step)

    from yolo3 import annotation_file, trainer  # noqa: F401
    base = current_rss()
    start = time.perf_counter()
    result = globals()[f"step_{name}"](annotations, args)
    result.setdefault("seconds", time.perf_counter() - start)
    result.update(peak_rss=peak_rss(), base_rss=base)
    return result


# ---- the driver ----

def measure(name, annotations, args):
    done = subprocess.run(
        [sys.executable, __file__, "--step", name, "--annotations", annotations,
         "--work", args.work, "--input-size", str(args.input_size),
         "--batches", str(args.batches)],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="",
                 TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"step {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def growth(results, step, sizes):
    """(time per line, peak RSS) at the last size over the second size: a time
    ratio of 1.0 is linear growth, an RSS ratio of 1.0 flat memory."""
    first, last = sizes[-2] if len(sizes) > 1 else sizes[0], sizes[-1]
    a, b = results[str(first)][step], results[str(last)][step]
    return (b["seconds"] / last) / (a["seconds"] / first), b["peak_rss"] / a["peak_rss"]


def table(results, sizes, args):
    mib = 2 ** 20
    head = ["step"] + [f"{n:,} lines: s (s/1k) / peak MiB (+step)" for n in sizes] + \
        [f"time/line {sizes[-2] if len(sizes) > 1 else sizes[0]:,}->{sizes[-1]:,}",
         "peak RSS ratio"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for step in STEPS:
        if step not in results[str(sizes[0])]:
            continue
        cells = [step]
        for n in sizes:
            r = results[str(n)][step]
            cells.append(f"{r['seconds']:.1f} ({1000 * r['seconds'] / n:.2f}) / "
                         f"{r['peak_rss'] / mib:.0f} (+{(r['peak_rss'] - r['base_rss']) / mib:.0f})")
        time_ratio, rss_ratio = growth(results, step, sizes)
        cells += [f"{time_ratio:.2f}", f"{rss_ratio:.2f}"]
        rows.append("| " + " | ".join(cells) + " |")
    last = results[str(sizes[-1])]
    notes = [(f"Pool of {args.pool} generated {args.image_size}x{args.image_size} PNG "
              f"images, input size {args.input_size}, {os.cpu_count()} CPUs.")]
    if "cache" in last:
        notes.append(f"Bottleneck cache at {sizes[-1]:,} lines: "
                     f"{last['cache']['disk_bytes'] / mib:.0f} MiB on disk, one epoch read "
                     f"back in {last['cache']['read_epoch_s']:.1f} s.")
    if "epoch" in last:
        e = last["epoch"]
        notes.append(f"Epoch at {sizes[-1]:,} lines: {e['batches']} batches of 8, "
                     f"{e['batches_loaded']} loaded ({e['per_batch_s'] * 1000:.1f} ms each), "
                     f"setup {e['setup_s']:.2f} s; the rest extrapolated.")
    return "\n".join(rows) + "\n\n" + "\n".join(notes) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000",
                   help="line counts, comma-separated (default: 1000,10000,100000)")
    p.add_argument("--steps", default=",".join(STEPS), help="steps to run (default: all)")
    p.add_argument("--pool", type=int, default=64, help="distinct images (default: 64)")
    p.add_argument("--image-size", type=int, default=96, help="image side (default: 96)")
    p.add_argument("--input-size", type=int, default=64,
                   help="network input for epoch, cache, kmeans (default: 64)")
    p.add_argument("--batches", type=int, default=300,
                   help="batches loaded per epoch at most (default: 300)")
    p.add_argument("--out", help="markdown table to write (default: print)")
    p.add_argument("--json", help="all results as JSON")
    p.add_argument("--work", help="working folder (default: a temporary one)")
    p.add_argument("--step", help=argparse.SUPPRESS)
    p.add_argument("--annotations", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step:
        print("RESULT " + json.dumps(run_step(args.step, args.annotations, args)))
        return 0
    sizes = [int(v) for v in args.sizes.split(",")]
    steps = [s for s in args.steps.split(",") if s]
    with tempfile.TemporaryDirectory() as temp:
        args.work = args.work or temp
        pool = make_pool(os.path.join(args.work, "pool"), args.pool, args.image_size)
        results = {}
        for n in sizes:
            annotations = os.path.join(args.work, f"lines{n}.txt")
            write_annotations(annotations, pool, n, args.image_size)
            results[str(n)] = {}
            for step in steps:
                r = measure(step, annotations, args)
                results[str(n)][step] = r
                print(f"{n:>7} lines  {step:9s} {r['seconds']:8.2f} s  peak "
                      f"{r['peak_rss'] / 2**20:6.0f} MiB (step +"
                      f"{(r['peak_rss'] - r['base_rss']) / 2**20:.0f})", flush=True)
                if args.json:
                    with open(args.json, "w", encoding="utf-8") as handle:
                        json.dump(results, handle, indent=1)
        text = table(results, sizes, args)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
