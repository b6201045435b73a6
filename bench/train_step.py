"""Training-step throughput: forward, loss, backward and Adam on random data.

    python bench/train_step.py --kind tiny --batch 8 --stage 2 --xla on

Reports images/s and the achieved GFLOP/s (model FLOPs from bench/flops.py:
forward plus the gradients the stage needs) for one configuration per run.
Stage 1 = create_model(freeze_body=2): only the output convolutions train;
stage 2 = every layer trainable.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.flops import count_flops  # noqa: E402
from bench.timing import measure, measure_paired  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHORS = {"yolov3": "model_data/yolo_anchors.txt", "tiny": "model_data/tiny_yolo_anchors.txt"}


def anchors_for(kind):
    from yolo3.anchors import get_anchors
    return get_anchors(os.path.join(ROOT, ANCHORS[kind]))


def make_batch(kind, size, batch, num_classes, boxes_per_image=6, seed=0):
    """Random images in [0,1] and y_true from random boxes: ([image, *y_true], zeros)."""
    import numpy as np
    from yolo3.model import preprocess_true_boxes
    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    xy = rng.uniform(0, size * 0.6, (batch, boxes_per_image, 2))
    wh = rng.uniform(size * 0.05, size * 0.4, (batch, boxes_per_image, 2))
    cls = rng.integers(0, num_classes, (batch, boxes_per_image, 1))
    boxes = np.concatenate([xy, np.minimum(xy + wh, size - 1), cls], -1).astype(np.float32)
    y_true = preprocess_true_boxes(boxes, (size, size), anchors_for(kind), num_classes)
    return [images, *y_true], np.zeros((batch,), np.float32)


def build_model(kind, size, num_classes, stage):
    """Uncompiled training model (loss layer 'yolo_loss') and its detection body."""
    from yolo3.training import (create_model, create_tiny_model, detection_body,
                                unfreeze_all)
    make = create_tiny_model if kind == "tiny" else create_model
    model = make((size, size), anchors_for(kind), num_classes,
                 load_pretrained=False, freeze_body=2)
    if stage == 2:
        unfreeze_all(model)
    return model, detection_body(model)


def step_flops(body, batch):
    """FLOPs of one training step: per-image forward + needed gradients, x batch."""
    return count_flops(body)["train"] * batch


def bench_train_step(kind="tiny", size=416, batch=8, stage=2, xla=True, num_classes=80,
                     repeats=3, warmup=1, matmul_gflops=None, paired=False):
    """Time model.train_on_batch (TensorFlow or any backend Keras runs on) -> dict.

    ratio_to_matmul: achieved GFLOP/s over `matmul_gflops` (measured once per run).
    With paired=True each step is preceded by 3 float32 2048^3 matmuls and
    ratio_paired is the median over pairs of (step GFLOP/s) / (those matmuls' GFLOP/s):
    both under the same momentary load of a shared machine.
    """
    import statistics
    from bench.matmul import matmul_fn
    from yolo3.training import compile_model
    model, body = build_model(kind, size, num_classes, stage)
    compile_model(model, 1e-3, jit_compile=bool(xla))
    x, y = make_batch(kind, size, batch, num_classes)
    flops = step_flops(body, batch)

    def step():
        model.train_on_batch(x, y)
    out = {"kind": kind, "size": size, "batch": batch, "stage": stage, "xla": bool(xla),
           "step_gflop": flops / 1e9}
    if paired:
        ref, ref_flops = matmul_fn(2048, times=3)
        t, tr, ratios = measure_paired(step, ref, repeats=repeats, warmup=warmup)
        # (flops / t_step) / (ref_flops / t_ref) = flops / ref_flops / (t_step / t_ref)
        out["ratio_paired"] = statistics.median(flops / ref_flops / r for r in ratios)
        out["matmul_paired_gflops"] = tr.rate(ref_flops / 1e9)[0]
    else:
        t = measure(step, repeats=repeats, warmup=warmup)
    out.update(t.as_dict(batch, "images_per_s"))
    out["gflops"] = flops / 1e9 / t.median
    if matmul_gflops:
        out["ratio_to_matmul"] = out["gflops"] / matmul_gflops
    return out


def bench_bottleneck(kind="yolov3", size=416, batch=4, xla=True, num_classes=80,
                     repeats=3, warmup=1):
    """Stage 1 per batch: plain (whole network, frozen body) vs bottleneck (output
    convs on cached features, yolo3/bottleneck.py). Per-epoch speed-up = ratio of
    the step times, both measured here; also the one-off feature cost per image."""
    from yolo3.anchors import anchor_masks
    from yolo3.bottleneck import feature_model, head_model
    from yolo3.training import compile_model
    model, body = build_model(kind, size, num_classes, 1)
    compile_model(model, 1e-3, jit_compile=bool(xla))
    x, y = make_batch(kind, size, batch, num_classes)
    plain = measure(lambda: model.train_on_batch(x, y), repeats=repeats, warmup=warmup)
    extractor = feature_model(body)
    features = measure(lambda: extractor.predict_on_batch(x[0]), repeats=repeats, warmup=1)
    feats = extractor.predict_on_batch(x[0])
    feats = feats if isinstance(feats, (list, tuple)) else [feats]
    anchors = anchors_for(kind)
    head = head_model(body, anchors, num_classes, anchor_masks(len(anchors)))
    compile_model(head, 1e-3, jit_compile=bool(xla))
    hx = [*[f.astype("float16").astype("float32") for f in feats], *x[1:]]
    cached = measure(lambda: head.train_on_batch(hx, y), repeats=max(repeats, 5), warmup=warmup)
    return {"kind": kind, "size": size, "batch": batch, "xla": bool(xla),
            "plain_stage1": plain.as_dict(batch, "images_per_s"),
            "bottleneck_stage1": cached.as_dict(batch, "images_per_s"),
            "feature_extraction": features.as_dict(batch, "images_per_s"),
            "speedup_per_epoch": plain.median / cached.median,
            "speedup_first_epoch": plain.median / (cached.median + features.median)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["yolov3", "tiny"], default="tiny", help="model (default: tiny)")
    p.add_argument("--size", type=int, default=416, help="input size, multiple of 32 (default: 416)")
    p.add_argument("--batch", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--stage", type=int, choices=[1, 2], default=2,
                   help="1: only output convs train; 2: all layers train (default: 2)")
    p.add_argument("--xla", choices=["on", "off"], default="on", help="jit_compile (default: on)")
    p.add_argument("--classes", type=int, default=80, help="number of classes (default: 80)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps after warm-up (default: 3)")
    a = p.parse_args(argv)
    if a.size <= 0 or a.size % 32 or a.batch < 1:
        from yolo3.errors import UserError
        raise UserError(f"--size must be a positive multiple of 32 and --batch >= 1 "
                        f"(got {a.size}, {a.batch})")
    r = bench_train_step(a.kind, a.size, a.batch, a.stage, a.xla == "on", a.classes, a.repeats)
    print(f"{a.kind}-{a.size} batch {a.batch} stage {a.stage} XLA {a.xla}: "
          f"{r['images_per_s']:.2f} images/s (range {r['images_per_s_min']:.2f}-"
          f"{r['images_per_s_max']:.2f}), {r['gflops']:.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    from yolo3.errors import run_cli
    sys.exit(run_cli(main))
