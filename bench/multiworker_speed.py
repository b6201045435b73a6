"""Benchmark (not a test): training speed with 1 process against 2 worker
processes (--strategy multiworker, TensorFlow, localhost) for the same global
batch: tiny-YOLOv3 on generated images, the steady-state epoch time (the
median of the epochs after the first) in images per second.

    python -m bench.multiworker_speed [--images 64] [--batch 8] [--input-size 96]

On one machine both workers share its cores, so this shows the cost of the
collectives and the duplicated input work, not the gain of a second machine."""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = """
import json, os, sys, time
import keras
from yolo3.trainer import TrainConfig, Trainer
data, log_dir, batch, size, epochs, strategy = sys.argv[1:7]
times = []
class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.start)
cfg = TrainConfig(annotations=os.path.join(data, "annotations.txt"),
                  classes=os.path.join(data, "classes.txt"),
                  anchors=os.path.join(data, "anchors.txt"), weights="none",
                  log_dir=log_dir, input_shape=(int(size), int(size)), batch_size=int(batch),
                  unfreeze_batch_size=int(batch), freeze_epochs=0, epochs=int(epochs),
                  val_split=0, strategy=strategy, tensorboard=False)
Trainer(cfg, callbacks=[Clock()], verbose=0).run()
print("TIMES " + json.dumps(times))
"""


def free_ports(count):
    """`count` ports free on localhost now (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run(workers, data, work, args):
    """Epoch times (s) of worker 0 with `workers` processes."""
    ports = free_ports(workers)
    procs = []
    for index in range(workers):
        env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="",
                   TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": [f"localhost:{p}" for p in ports]},
                "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, data, os.path.join(work, f"log{workers}"),
             str(args.batch), str(args.input_size), str(args.epochs),
             "multiworker" if workers > 1 else "none"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate() for p in procs]
    out, err = outputs[0]
    line = [l for l in out.splitlines() if l.startswith("TIMES ")]
    if procs[0].returncode or not line:
        raise RuntimeError(err[-3000:])
    return json.loads(line[0][6:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64, help="training images (default: 64)")
    p.add_argument("--batch", type=int, default=8, help="global batch (default: 8)")
    p.add_argument("--input-size", type=int, default=96, help="input size (default: 96)")
    p.add_argument("--epochs", type=int, default=4, help="epochs (default: 4)")
    args = p.parse_args(argv)
    from yolo3.demo import make_dataset
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "data")
        make_dataset(data, num_images=args.images, size=128, seed=0)
        results = {}
        for workers in (1, 2, 1, 2):          # interleaved: the load drifts
            start = time.perf_counter()
            times = run(workers, data, work, args)
            steady = statistics.median(times[1:])
            results.setdefault(workers, []).append(steady)
            print(f"{workers} process(es): epochs {[round(t, 2) for t in times]} s, "
                  f"steady {args.images / steady:.1f} images/s "
                  f"(wall {time.perf_counter() - start:.0f} s)", flush=True)
    one, two = (statistics.median(results[w]) for w in (1, 2))
    print(f"global batch {args.batch}, {args.images} images at {args.input_size} px: "
          f"1 process {args.images / one:.1f} images/s, 2 processes "
          f"{args.images / two:.1f} images/s (ratio {one / two:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
