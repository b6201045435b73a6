"""Benchmark (not a test) of the deployment exports against the Keras model:
parity, accuracy and speed of .tflite (float32, float16, int8), .onnx and the
SavedModel, for tiny-YOLOv3 (the darknet COCO weights) and YOLOv3 (random weights,
speed only) at 416x416.

    python -m bench.bench_export [--models tiny,full] [--repeats 20]
        [--keep DIR] [--json bench/results/export.json]

Every file is written by `python yolo.py --export` in a process of its own (int8
calibrated on the coco128 images) and measured by the project's own tools:
  parity    raw head outputs of each file vs the Keras body on the raccoon test
            images and the coco128 images (max abs difference), and whether the
            detections after NMS (score 0.3) are the Keras detections;
  accuracy  COCO AP and AP50 of `evaluate.py --model FILE` on coco128 (score
            0.001, 100 boxes per class, evaluate.py's defaults);
  speed     batch-1 latency, one letterboxed 416x416 image -> raw head outputs
            (SavedModel: its serving_float signature, which also letterboxes,
            decodes and runs NMS), and end to end (YOLO.detect on one photo:
            letterbox, network, decoding, NMS; SavedModel: serving_default on
            the photo); the runners are called in turn, round after round, so
            that each round compares them under the same machine load.
Needs ../shared (coco128, raccoon, yolov3-tiny weights).
"""
import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
COCO = os.path.join(SHARED, "data", "coco128-train")
RACCOON = os.path.join(SHARED, "data", "raccoon")
TINY = os.path.join(SHARED, "pretrained", "yolov3-tiny")

from yolo3.atomic import atomic_open  # noqa: E402
from yolo3.errors import UserError, run_cli  # noqa: E402

# (label, file name, extra yolo.py flags); {cal} is the calibration file
FILES = [("SavedModel", "saved", []),
         ("TFLite float32", "f32.tflite", []),
         ("TFLite float16", "f16.tflite", ["--quantize", "float16"]),
         ("TFLite int8", "int8.tflite", ["--quantize", "int8", "--calibration", "{cal}"]),
         ("ONNX Runtime", "f32.onnx", [])]
FULL_CALIBRATION = 16   # YOLOv3 has random weights: its int8 file is for speed only


def quiet(fn, *args):
    """fn(*args) with its stdout swallowed (yolo.py / evaluate.py print lines)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def cpu_name():
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def file_size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path)
                   for n in names)
    return os.path.getsize(path)


def model_files(kind, folder):
    """yolo.py's model flags for tiny (darknet weights) or full (random weights),
    and the YOLO keyword arguments of the same model; writes the weights file."""
    from yolo3 import darknet
    from yolo3.anchors import get_anchors
    from yolo3.training import build_body
    from yolo3.weights import save_weights

    tiny = kind == "tiny"
    anchors = os.path.join(ROOT, "model_data", "tiny_yolo_anchors.txt" if tiny
                           else "yolo_anchors.txt")
    classes = os.path.join(COCO, "classes.txt")
    body = build_body(len(get_anchors(anchors)), 80, (416, 416))
    if tiny:
        network = darknet.load_cfg(os.path.join(TINY, "yolov3-tiny.cfg"))
        darknet.set_weights(body, darknet.read_weights(
            os.path.join(TINY, "yolov3-tiny.weights"), network))
    weights = os.path.join(folder, f"{kind}.weights.h5")
    save_weights(body, weights)
    flags = ["--model", weights, "--anchors", anchors, "--classes", classes]
    return flags, {"model_path": weights, "anchors_path": anchors, "classes_path": classes,
                   "model_image_size": 416}


def export_all(kind, flags, folder, calibration, skip=()):
    """The FILES entries not in `skip`, each written by its own `python yolo.py
    --export` process (one export's memory never adds to another's or to this
    process's); {name: (path, size, seconds)}, seconds including the process start."""
    out = {}
    for label, name, extra in FILES:
        if f"{kind}:{name}" in skip:
            continue
        path = os.path.join(folder, f"{kind}-{name}")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, os.path.join(ROOT, "yolo.py"), *flags,
                               "--export", path, *[e.format(cal=calibration) for e in extra]],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{kind} {label} export failed (exit status {done.returncode}):"
                               f" {done.stderr.strip().splitlines()[-1:]}")
        seconds = time.perf_counter() - started
        if name == "saved":
            path = os.path.join(path, "saved_model")
        out[name] = (path, file_size(path), seconds)
        print(f"  {kind} {label}: {file_size(path) / 2**20:.1f} MiB in {seconds:.0f} s",
              flush=True)
    return out


def first_lines(annotation_file, count, folder):
    """An annotation file of the first `count` lines of `annotation_file` (absolute
    image paths): enough calibration for a speed-only int8 file."""
    from yolo3.annotation_file import format_line, read_annotations
    lines = read_annotations(annotation_file, progress=False)[:count]
    path = os.path.join(folder, f"first-{count}.txt")
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.writelines(format_line(line.path, line.boxes) + "\n" for line in lines)
    return path


def images_of(annotation_file):
    from yolo3.annotation_file import read_annotations
    return [line.path for line in read_annotations(annotation_file, progress=False)]


def _same(a, b, box_tol=0.01, score_tol=1e-4):
    """Detections equal: same classes in the same order of score, boxes and scores close."""
    import numpy as np
    if len(a.scores) != len(b.scores):
        return False
    oa, ob = np.lexsort((a.classes, -a.scores)), np.lexsort((b.classes, -b.scores))
    return (a.classes[oa].tolist() == b.classes[ob].tolist()
            and np.abs(a.boxes[oa] - b.boxes[ob]).max(initial=0) <= box_tol
            and np.abs(a.scores[oa] - b.scores[ob]).max(initial=0) <= score_tol)


def parity(keras_detector, files, image_paths):
    """{name: {max_abs, same_detections}} over `image_paths`, batch 1."""
    import numpy as np

    from yolo3.detector import YOLO
    from yolo3.images import open_image

    images = [open_image(p) for p in image_paths]
    batches = [keras_detector.preprocess(i)[None] for i in images]
    reference = [[np.asarray(o) for o in keras_detector.body(b, training=False)]
                 for b in batches]
    keras_detections = keras_detector.detect(images, batch_size=1)
    out = {}
    for name in ("f32.tflite", "f16.tflite", "int8.tflite", "f32.onnx"):
        detector = YOLO(model_path=files[name][0])
        diff = max(float(np.abs(g - e).max())
                   for b, ref in zip(batches, reference)
                   for g, e in zip(detector.runtime(b), ref))
        same = sum(_same(g, e) for g, e in zip(detector.detect(images, batch_size=1),
                                               keras_detections))
        out[name] = {"max_abs": diff, "same_detections": int(same), "images": len(images)}
    return out


def accuracy(flags, files, annotations, folder):
    """{name: {AP, AP50}} from evaluate.py on `annotations` (Keras first)."""
    import evaluate

    out = {}
    for name, model_flags in [("keras", flags)] + [
            (n, ["--model", files[n][0]]) for n in ("f32.tflite", "f16.tflite",
                                                    "int8.tflite", "f32.onnx")]:
        target = os.path.join(folder, f"metrics-{name}.json")
        quiet(evaluate.main, model_flags + ["--annotations", annotations, "--no-progress",
                                            "--json", target])
        with open(target, encoding="utf-8") as handle:
            coco = json.load(handle)["coco"]
        out[name] = {"AP": coco["AP"], "AP50": coco["AP50"]}
        print(f"  {name}: AP {coco['AP']:.4f}, AP50 {coco['AP50']:.4f}", flush=True)
    return out


def runners(keras_detector, files, photo):
    """{label: (forward(), detect())}: batch 1, one letterboxed image / one photo."""
    import numpy as np
    import tensorflow as tf

    from yolo3.detector import YOLO
    from yolo3.export import load_saved_model

    x = keras_detector.preprocess(photo)[None]
    body = keras_detector.body

    @tf.function(input_signature=[tf.TensorSpec(x.shape, tf.float32)])
    def forward(images):
        return body(images, training=False)

    out = {"Keras": (lambda: [o.numpy() for o in forward(x)],
                     lambda: keras_detector.detect([photo], batch_size=1))}
    serve_uint8, serve_float = load_saved_model(files["saved"][0])
    pixels = np.asarray(photo)[None]
    out["SavedModel"] = (lambda: serve_float(x), lambda: serve_uint8(pixels))
    for label, name, _ in FILES[1:]:
        if name not in files:
            continue
        detector = YOLO(model_path=files[name][0])
        out[label] = (lambda d=detector: d.runtime(x),
                      lambda d=detector: d.detect([photo], batch_size=1))
    return out


def speed(calls, repeats):
    """{label: {forward_ms, detect_ms, forward_vs_keras}}: medians over rounds in
    which every runner is called once in turn (ratios per round)."""
    times = {label: {"forward": [], "detect": []} for label in calls}
    for fns in calls.values():   # warm-up: traces, allocations, XNNPACK packing
        for fn in fns:
            fn()
            fn()
    for _ in range(repeats):
        for label, fns in calls.items():
            for kind, fn in zip(("forward", "detect"), fns):
                started = time.perf_counter()
                fn()
                times[label][kind].append(time.perf_counter() - started)
    keras = times["Keras"]
    return {label: {"forward_ms": 1e3 * statistics.median(t["forward"]),
                    "detect_ms": 1e3 * statistics.median(t["detect"]),
                    "keras_forward_over_this": statistics.median(
                        k / s for k, s in zip(keras["forward"], t["forward"])),
                    "keras_detect_over_this": statistics.median(
                        k / s for k, s in zip(keras["detect"], t["detect"]))}
            for label, t in times.items()}


def bench(kind, folder, repeats, skip=()):
    from yolo3.images import open_image

    from yolo3.detector import YOLO

    print(f"{kind}: exporting", flush=True)
    flags, model = model_files(kind, folder)
    calibration = os.path.join(COCO, "train.txt")
    files = export_all(kind, flags, folder, calibration if kind == "tiny"
                       else first_lines(calibration, FULL_CALIBRATION, folder), skip)
    keras_detector = YOLO(**model)
    result = {"files": {name: {"bytes": size, "export_s": seconds}
                        for name, (_, size, seconds) in files.items()}}
    result["files"]["keras"] = {"bytes": file_size(flags[1])}
    if kind == "tiny":
        print("tiny: parity", flush=True)
        result["parity"] = {
            "raccoon test": parity(keras_detector, files,
                                   images_of(os.path.join(RACCOON, "test.txt"))),
            "coco128": parity(keras_detector, files, images_of(calibration))}
        print("tiny: accuracy (evaluate.py on coco128)", flush=True)
        result["accuracy"] = accuracy(flags, files, calibration, folder)
    print(f"{kind}: speed", flush=True)
    photo = open_image(images_of(calibration)[0])
    result["speed"] = speed(runners(keras_detector, files, photo), repeats)
    return result


def table(results):
    """The markdown tables of docs/deployment.md."""
    names = {"keras": "Keras", **{name: label for label, name, _ in FILES}}
    keys = {label: name for name, label in names.items()}
    lines = []
    tiny = results["models"].get("tiny")
    if tiny:
        lines += [("| tiny-YOLOv3 file | max abs diff, raccoon test | max abs diff, coco128 "
                   "| same detections (score 0.3) | COCO AP | AP50 |"),
                  "|---|---|---|---|---|---|"]
        acc = tiny["accuracy"]
        lines.append(f"| Keras | - | - | - | {100 * acc['keras']['AP']:.2f} "
                     f"| {100 * acc['keras']['AP50']:.2f} |")
        for name in ("f32.tflite", "f16.tflite", "int8.tflite", "f32.onnx"):
            r, c = tiny["parity"]["raccoon test"][name], tiny["parity"]["coco128"][name]
            lines.append(
                f"| {names[name]} | {r['max_abs']:.2e} | {c['max_abs']:.2e} | "
                f"{r['same_detections'] + c['same_detections']}/{r['images'] + c['images']} | "
                f"{100 * acc[name]['AP']:.2f} | {100 * acc[name]['AP50']:.2f} |")
        lines.append("")
    lines += [("| model | runner | file MiB | forward ms | Keras / this | detect ms "
               "| Keras / this |"), "|---|---|---|---|---|---|---|"]
    for kind, r in results["models"].items():
        for label, s in r["speed"].items():
            key = keys[label]
            lines.append(
                f"| {'tiny-YOLOv3' if kind == 'tiny' else 'YOLOv3'} | {label} | "
                f"{r['files'][key]['bytes'] / 2**20:.1f} | {s['forward_ms']:.1f} | "
                f"{s['keras_forward_over_this']:.2f} | {s['detect_ms']:.1f} | "
                f"{s['keras_detect_over_this']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,full",
                   help="comma-separated: tiny, full (default: tiny,full)")
    p.add_argument("--repeats", type=int, default=20,
                   help="timed rounds after two warm-up calls (default: 20)")
    p.add_argument("--skip", default="", metavar="MODEL:FILE,...",
                   help="files not to export or time, e.g. full:f32.onnx (tiny needs all; "
                        "default: none)")
    p.add_argument("--keep", metavar="DIR", help="write the exported files here and keep them "
                   "(default: a temporary folder)")
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "export.json"),
                   help="write the results here (default: bench/results/export.json)")
    a = p.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if not models or any(m not in ("tiny", "full") for m in models):
        raise UserError(f"--models: expected tiny and/or full ({a.models})")
    if not os.path.isdir(COCO) or not os.path.isdir(TINY) or not os.path.isdir(RACCOON):
        raise UserError(f"{SHARED}: needs data/coco128-train, data/raccoon and "
                        "pretrained/yolov3-tiny")
    import keras
    results = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs, load average "
                          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the start",
               "backend": keras.backend.backend(), "input": 416, "repeats": a.repeats,
               "models": {}}
    with (contextlib.nullcontext(a.keep) if a.keep
          else tempfile.TemporaryDirectory(prefix="bench-export-")) as folder:
        os.makedirs(folder, exist_ok=True)
        for kind in models:
            results["models"][kind] = bench(kind, folder, a.repeats, a.skip.split(","))
            results["load_average_end"] = os.getloadavg()
            with atomic_open(a.json, "w", encoding="utf-8") as handle:
                json.dump(results, handle, indent=2)
    print(table(results))
    print(f"results written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
