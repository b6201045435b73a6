"""Detection speed, end to end: image files -> JPEG decode, letterbox, network,
box decoding, per-class NMS -> detections. Images/s for tiny-YOLOv3 and YOLOv3 at
416x416, batch 1 and batch 8.

    python -m bench.bench_detect [--models tiny,full] [--images 8] [--repeats 3]
        [--json bench/results/detect.json]

Images: ../shared/data/coco128-train when present (real photos), else generated.
Weights: the converted darknet yolov3-tiny when ../shared has it (real NMS load);
otherwise, and always for YOLOv3, random weights with the score threshold lowered
to 0.2 so that NMS has boxes to work on.
"""
import argparse
import functools
import json
import os
import platform
import sys
import tempfile

from bench.timing import measure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def bench_images(count, folder):
    """`count` image paths: real COCO photos when available, else generated JPEGs."""
    coco = os.path.join(SHARED, "data", "coco128-train", "images", "train2017")
    if os.path.isdir(coco):
        names = sorted(os.listdir(coco))[:count]
        return [os.path.join(coco, n) for n in names], "coco128-train photos"
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i}.jpg")
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), np.uint8)).save(path)
        paths.append(path)
    return paths, "generated 640x480 JPEGs"


def make_detector(kind):
    """(YOLO detector at 416, description of its weights)."""
    from yolo3.anchors import get_anchors
    from yolo3.annotation_file import get_classes
    from yolo3.detector import YOLO
    from yolo3.training import build_body

    tiny = kind == "tiny"
    anchors = get_anchors(os.path.join(ROOT, "model_data",
                                       "tiny_yolo_anchors.txt" if tiny else "yolo_anchors.txt"))
    classes = get_classes(os.path.join(ROOT, "model_data", "coco_classes.txt"))
    body = build_body(len(anchors), len(classes), (416, 416))
    darknet_dir = os.path.join(SHARED, "pretrained", "yolov3-tiny")
    score, weights = 0.2, "random weights, score 0.2"
    if tiny and os.path.isdir(darknet_dir):
        from yolo3 import darknet
        network = darknet.load_cfg(os.path.join(darknet_dir, "yolov3-tiny.cfg"))
        darknet.set_weights(body, darknet.read_weights(
            os.path.join(darknet_dir, "yolov3-tiny.weights"), network))
        score, weights = 0.3, "darknet yolov3-tiny weights, score 0.3"
    return YOLO(body=body, class_names=classes, anchors=anchors, model_image_size=416,
                score=score), weights


def run(models, count, repeats, batches):
    import keras
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "backend": keras.backend.backend(), "input": 416, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        paths, source = bench_images(count, folder)
        results["images"] = f"{len(paths)} {source}"
        for kind in models:
            detector, weights = make_detector(kind)
            for batch in batches:
                t = measure(functools.partial(detector.detect, paths, batch_size=batch),
                            repeats=repeats, warmup=1)
                row = {"model": "tiny-YOLOv3" if kind == "tiny" else "YOLOv3",
                       "weights": weights, "batch": batch,
                       **t.as_dict(len(paths), "images_per_s")}
                results["runs"].append(row)
                print(f"{row['model']:<12} batch {batch}: {row['images_per_s']:6.2f} images/s "
                      f"(range {row['images_per_s_min']:.2f}-{row['images_per_s_max']:.2f}, "
                      f"{t.n} x {len(paths)} images)", flush=True)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,full",
                   help="comma-separated: tiny, full (default: tiny,full)")
    p.add_argument("--images", type=int, default=8,
                   help="images per timed pass (default: 8)")
    p.add_argument("--batches", default="1,8", help="batch sizes (default: 1,8)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed passes per setting after one warm-up pass (default: 3)")
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "detect.json"),
                   help="write the results here (default: bench/results/detect.json)")
    a = p.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if any(m not in ("tiny", "full") for m in models):
        from yolo3.errors import UserError
        raise UserError(f"--models: expected tiny and/or full ({a.models})")
    results = run(models, a.images, a.repeats, [int(b) for b in a.batches.split(",")])
    from yolo3.atomic import atomic_open
    with atomic_open(a.json, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    print(f"results written to {a.json}")
    return 0


if __name__ == "__main__":
    from yolo3.errors import run_cli
    sys.exit(run_cli(main))
