"""Benchmark (not a test): IoU k-means on 1,000,000 boxes, k=9, 10 restarts,
against a plain transcription of the original keras-yolo3 kmeans.py.

    python -m bench.bench_kmeans [--boxes 1000000] [--restarts 10] [--json out.json]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from yolo3.atomic import atomic_open
from yolo3.errors import run_cli
from yolo3.kmeans import (anchor_stats, iou_kmeans, letterbox_scale,
                          refine_integer)

IMAGE_SIZES = np.array([(640, 480), (640, 427), (500, 375), (375, 500), (480, 640),
                        (800, 600), (1280, 720), (1920, 1080)])


def synthetic_boxes(n, seed=0):
    """Annotation-like boxes: integer pixel sizes in images of common sizes, each
    scaled by its image's letterbox factor to 416x416 input pixels."""
    rng = np.random.default_rng(seed)
    image = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES), size=n)]
    side = np.exp(rng.uniform(np.log(4), np.log(image.min(axis=1))))     # sqrt(area)
    aspect = np.exp(rng.normal(0, 0.5, n))                                # w / h
    wh = np.stack([side * np.sqrt(aspect), side / np.sqrt(aspect)], axis=1)
    wh = np.clip(np.rint(wh), 1, image)
    return (wh * letterbox_scale(image, (416, 416))[:, None]).astype(np.float32)


# ---- plain transcription of the original (qqwweee/keras-yolo3 kmeans.py) ----
# Only changes: a seeded generator instead of np.random.seed() and an iteration
# cap (the original loops forever once an empty cluster turns NaN).

def original_iou(boxes, clusters):
    n = boxes.shape[0]
    k = clusters.shape[0]
    box_area = boxes[:, 0] * boxes[:, 1]
    box_area = box_area.repeat(k)
    box_area = np.reshape(box_area, (n, k))
    cluster_area = clusters[:, 0] * clusters[:, 1]
    cluster_area = np.tile(cluster_area, [1, n])
    cluster_area = np.reshape(cluster_area, (n, k))
    box_w_matrix = np.reshape(boxes[:, 0].repeat(k), (n, k))
    cluster_w_matrix = np.reshape(np.tile(clusters[:, 0], (1, n)), (n, k))
    min_w_matrix = np.minimum(cluster_w_matrix, box_w_matrix)
    box_h_matrix = np.reshape(boxes[:, 1].repeat(k), (n, k))
    cluster_h_matrix = np.reshape(np.tile(clusters[:, 1], (1, n)), (n, k))
    min_h_matrix = np.minimum(cluster_h_matrix, box_h_matrix)
    inter_area = np.multiply(min_w_matrix, min_h_matrix)
    return inter_area / (box_area + cluster_area - inter_area)


def original_kmeans(boxes, k, rng, dist=np.median, max_iter=1000):
    box_number = boxes.shape[0]
    last_nearest = np.zeros((box_number,))
    clusters = boxes[rng.choice(box_number, k, replace=False)]
    for _ in range(max_iter):
        distances = 1 - original_iou(boxes, clusters)
        current_nearest = np.argmin(distances, axis=1)
        if (last_nearest == current_nearest).all():
            break
        for cluster in range(k):
            clusters[cluster] = dist(boxes[current_nearest == cluster], axis=0)
        last_nearest = current_nearest
    return clusters


def original_avg_iou(boxes, clusters):
    return np.mean([np.max(original_iou(boxes, clusters), axis=1)])


def _plain(value):
    """numpy scalars -> Python numbers for JSON."""
    return value.item() if isinstance(value, np.generic) else value


class Clock:
    """Wall and CPU seconds since creation (CPU time is steadier on a shared machine)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def split(self):
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--boxes", type=int, default=1_000_000, help="number of boxes")
    parser.add_argument("-k", type=int, default=9, help="number of anchors")
    parser.add_argument("--restarts", type=int, default=10,
                        help="restarts of ours = runs of the original (best kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and runs")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    wh = synthetic_boxes(args.boxes, args.seed)
    distinct = len(np.unique(wh.view(np.uint64)))
    rows = []

    clock = Clock()
    ours = iou_kmeans(wh, args.k, restarts=args.restarts, seed=args.seed)
    whole = refine_integer(wh, ours.anchors)
    rows.append(("ours (kmeans.py)", args.restarts, *clock.split(),
                 anchor_stats(wh, ours.anchors).mean_iou, anchor_stats(wh, whole).mean_iou))

    rng = np.random.default_rng(args.seed)
    runs, nans = [], 0
    for _ in range(args.restarts):
        clock = Clock()
        clusters = original_kmeans(wh.copy(), args.k, rng)
        wall, cpu = clock.split()
        nans += int(np.isnan(clusters).any())
        written = np.trunc(clusters)          # the original wrote "%d,%d"
        runs.append((wall, cpu, original_avg_iou(wh, clusters), original_avg_iou(wh, written)))
    runs = np.nan_to_num(np.array(runs), nan=0.0)
    best = runs[np.argmax(runs[:, 2])]
    rows.append(("original, 1 run (median of runs)", 1, *np.median(runs, axis=0)))
    rows.append((f"original, best of {args.restarts} runs", args.restarts,
                 *runs[:, :2].sum(axis=0), *best[2:]))

    print(f"{args.boxes} boxes ({distinct} distinct sizes), k={args.k}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'method':34s} {'runs':>4s} {'wall s':>8s} {'CPU s':>8s} {'mean IoU':>9s} "
          f"{'as written':>10s}")
    for name, runs_, wall, cpu, iou, written in rows:
        print(f"{name:34s} {runs_:4d} {wall:8.2f} {cpu:8.2f} {iou * 100:8.2f}% "
              f"{written * 100:9.2f}%")
    speedup = rows[2][2] / rows[0][2]
    cpu_speedup = rows[2][3] / rows[0][3]
    print(f"speed-up (same number of runs): {speedup:.1f}x wall, {cpu_speedup:.1f}x CPU; "
          f"original runs that produced NaN anchors: {nans}")
    print("mean IoU: of the centroids; as written: of the anchors in the file (ours "
          "rounded and refined, the original truncated by its %d)")
    if args.json:
        with atomic_open(args.json, "w") as handle:
            json.dump({"boxes": args.boxes, "distinct": distinct, "k": args.k,
                       "restarts": args.restarts, "speedup": speedup,
                       "cpu_speedup": cpu_speedup, "nan_runs": nans,
                       "rows": [dict(zip(("method", "runs", "wall_s", "cpu_s", "mean_iou",
                                          "mean_iou_written"), map(_plain, r)))
                                for r in rows]}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
