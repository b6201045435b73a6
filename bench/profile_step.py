"""Where a training step's time goes: TensorFlow profiler trace of one step, op time
summed by category (conv forward / input gradient / filter gradient, BatchNorm,
LeakyReLU, loss, optimizer, other), with the convs' achieved GFLOP/s.

    python -m bench.profile_step --kind yolov3 --batch 4 --stage 2 --xla off

XLA off: every TensorFlow op is one event (oneDNN kernels `_MklNative*`).
XLA on: events are the compiled program's thunks (convolution, fusions).
Times are summed over the executor threads, so they can exceed the step's wall time.
"""
import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

from bench.flops import count_flops
from bench.train_step import build_model, make_batch

# (category, regex on the op's event name); first match wins
TF_CATEGORIES = [
    ("conv input grad", r"Conv2DBackpropInput"),
    ("conv filter grad", r"Conv2DBackpropFilter"),
    ("conv forward", r"Conv2D"),
    ("batchnorm", r"/bn_\d+"),
    ("leaky relu", r"/leaky_\d+"),
    ("loss", r"yolo_loss"),
    ("optimizer", r"(?i)adam|AssignVariable|ResourceApply"),
    ("pad/concat/upsample/add", r"/(pad|concat|upsample|add|maxpool)_\d+"),
]
XLA_CATEGORIES = [
    ("convolution", r"^convolution|conv"),
    ("library fusion (ynn/xnn/onednn)", r"ynn|xnn|onednn"),
    ("reduce-window (pooling)", r"reduce-window|select-and-scatter"),
    ("other fusions / elementwise", r"."),
]


def op_events(logdir):
    """[(name, duration_ms)] of the host's op events in the trace under `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    meta = plane.event_metadata
    skip = re.compile(r"ExecutorState::Process|ThunkExecutor::Execute|ThreadpoolListener")
    events = []
    for line in plane.lines:
        if line.name == "python":
            continue
        for e in line.events:
            name = meta[e.metadata_id].name
            if not skip.search(name):
                events.append((name, e.duration_ps / 1e9))
    return events


def categorise(events, categories):
    out = collections.OrderedDict((c, 0.0) for c, _ in categories)
    out["other"] = 0.0
    for name, ms in events:
        cat = next((c for c, rx in categories if re.search(rx, name)), "other")
        out[cat] += ms
    return out


def profile(kind="yolov3", size=416, batch=4, stage=2, xla=False, num_classes=80):
    import tensorflow as tf
    from yolo3.training import compile_model
    model, body = build_model(kind, size, num_classes, stage)
    compile_model(model, 1e-3, jit_compile=bool(xla))
    x, y = make_batch(kind, size, batch, num_classes)
    for _ in range(2):
        model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        wall = time.perf_counter() - t0
        tf.profiler.experimental.stop()
        events = op_events(logdir)
    cats = categorise(events, XLA_CATEGORIES if xla else TF_CATEGORIES)
    flops = count_flops(body)
    return {"wall_ms": wall * 1e3, "op_ms": cats, "train_gflop": flops["train"] * batch / 1e9,
            "conv_ms": sum(v for k, v in cats.items() if k.startswith("conv"))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["yolov3", "tiny"], default="yolov3", help="model (default: yolov3)")
    p.add_argument("--size", type=int, default=416, help="input size (default: 416)")
    p.add_argument("--batch", type=int, default=4, help="images per step (default: 4)")
    p.add_argument("--stage", type=int, choices=[1, 2], default=2, help="training stage (default: 2)")
    p.add_argument("--xla", choices=["on", "off"], default="off", help="jit_compile (default: off)")
    a = p.parse_args(argv)
    r = profile(a.kind, a.size, a.batch, a.stage, a.xla == "on")
    total = sum(r["op_ms"].values())
    print(f"{a.kind}-{a.size} batch {a.batch} stage {a.stage} XLA {a.xla}: step {r['wall_ms']:.0f} ms "
          f"wall, {total:.0f} ms op time over threads, {r['train_gflop']:.0f} GFLOP")
    for cat, ms in r["op_ms"].items():
        print(f"  {cat:34} {ms:9.1f} ms {ms / total:6.1%}")
    if r["conv_ms"]:
        print(f"  convolutions: {r['train_gflop'] / (r['conv_ms'] / 1e3):.0f} GFLOP/s of op time")
    return 0


if __name__ == "__main__":
    from yolo3.errors import run_cli
    sys.exit(run_cli(main))
