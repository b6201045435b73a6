"""Training-step throughput: forward, loss, backward and Adam on random data.

    python -m bench.train_step --kind tiny --batch 8 --stage 2 --xla on

Reports images/s and the achieved GFLOP/s (model FLOPs from bench/flops.py:
forward plus the gradients the stage needs) for one configuration per run.
Stage 1 = create_model(freeze_body=2): only the output convolutions train;
stage 2 = every layer trainable.
"""
import argparse
import os
import sys

from bench.flops import count_flops
from bench.timing import Timing, measure, measure_paired

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHORS = {"yolov3": "model_data/yolo_anchors.txt", "tiny": "model_data/tiny_yolo_anchors.txt"}


def anchors_for(kind):
    from yolo3.anchors import get_anchors
    return get_anchors(os.path.join(ROOT, ANCHORS[kind]))


def random_boxes(size, count, num_classes, boxes_per_image=6, max_boxes=20, seed=0):
    """(count, max_boxes, 5) zero-padded boxes x_min, y_min, x_max, y_max, class in
    input pixels: boxes_per_image random boxes per image."""
    import numpy as np
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size * 0.6, (count, boxes_per_image, 2))
    wh = rng.uniform(size * 0.05, size * 0.4, (count, boxes_per_image, 2))
    cls = rng.integers(0, num_classes, (count, boxes_per_image, 1))
    boxes = np.zeros((count, max_boxes, 5), np.float32)
    boxes[:, :boxes_per_image] = np.concatenate([xy, np.minimum(xy + wh, size - 1), cls], -1)
    return boxes


def make_batch(kind, size, batch, num_classes, seed=0):
    """Random images in [0,1] and y_true from random boxes: ([image, *y_true], zeros)."""
    import numpy as np
    from yolo3.model import preprocess_true_boxes
    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    boxes = random_boxes(size, batch, num_classes, seed=seed)
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


def fit_step_timing(model, data, epochs):
    """Timing of model.fit's steps in the steady state: the time between
    consecutive batch ends within an epoch (fetching the batch included)."""
    import time
    import keras
    samples = []

    class StepClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.last = None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if self.last is not None:
                samples.append(now - self.last)
            self.last = now
    model.fit(data, epochs=epochs, verbose=0, callbacks=[StepClock()])
    return Timing.of(samples)


def bench_bottleneck(kind="yolov3", size=416, batch=4, xla="auto", num_classes=80,
                     repeats=3, warmup=1, steps=8):
    """Stage 1 per batch, plain (the whole network with its frozen body) against
    bottleneck (yolo3/bottleneck.py: the output convolutions on cached features),
    each as train.py runs it: model.fit, steady-state steps (bench.fit_step_timing),
    plain stage 1 on augmented JPEGs from YoloDataset (raccoon when present, else
    generated), the bottleneck on FeatureBatches of float16 features; XLA as
    train.py's "auto" picks it for each, or True/False for both.

    speedup_per_epoch: plain epoch step / bottleneck step. speedup_compute: the same
    with plain stage 1 on one batch already in memory (train_on_batch, no input
    pipeline), a lower bound. Also the one-off feature cost per image."""
    import tempfile
    import numpy as np
    from bench.bench_data import load_lines
    from yolo3.anchors import anchor_masks
    from yolo3.bottleneck import FeatureBatches, feature_model, head_model
    from yolo3.batches import YoloDataset
    from yolo3.distribute import use_xla
    from yolo3.training import compile_model
    anchors = anchors_for(kind)
    mask = anchor_masks(len(anchors))
    model, body = build_model(kind, size, num_classes, 1)
    compile_model(model, 1e-3, jit_compile=use_xla(xla))
    x, y = make_batch(kind, size, batch, num_classes)
    in_memory = measure(lambda: model.train_on_batch(x, y), repeats=repeats, warmup=warmup)
    count = batch * steps
    with tempfile.TemporaryDirectory() as folder:
        lines, source = load_lines(folder, count)
        images = YoloDataset(lines, batch, (size, size), anchors, num_classes, mask=mask,
                             augment=True, seed=0)
        model.fit(images, epochs=warmup, verbose=0)
        plain = fit_step_timing(model, images, epochs=max(repeats, 2))
    extractor = feature_model(body)
    features = measure(lambda: extractor.predict_on_batch(x[0]), repeats=repeats, warmup=1)
    feats = extractor.predict_on_batch(x[0])
    feats = feats if isinstance(feats, (list, tuple)) else [feats]
    # the batch's features repeated to an epoch of `steps` batches
    arrays = {f"f{i}": np.resize(f.astype(np.float16), (count, *f.shape[1:]))
              for i, f in enumerate(feats)}
    arrays["boxes"] = random_boxes(size, count, num_classes)
    head = head_model(body, anchors, num_classes, mask)
    compile_model(head, 1e-3, jit_compile=use_xla(xla, head_only=True))
    cached_batches = FeatureBatches(arrays, batch, (size, size), anchors, num_classes, mask)
    head.fit(cached_batches, epochs=warmup, verbose=0)                      # compiles
    cached = fit_step_timing(head, cached_batches, epochs=max(repeats, 2))
    return {"kind": kind, "size": size, "batch": batch, "images": source,
            "xla_plain": use_xla(xla), "xla_bottleneck": use_xla(xla, head_only=True),
            "plain_stage1": plain.as_dict(batch, "images_per_s"),
            "plain_stage1_in_memory": in_memory.as_dict(batch, "images_per_s"),
            "bottleneck_stage1": cached.as_dict(batch, "images_per_s"),
            "feature_extraction": features.as_dict(batch, "images_per_s"),
            "speedup_per_epoch": plain.median / cached.median,
            "speedup_compute": in_memory.median / cached.median,
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
