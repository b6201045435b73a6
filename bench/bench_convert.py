"""Benchmark (not a test): convert.py on a yolov3.cfg-sized weights file
(62,001,757 random floats, 248 MB): wall time and peak memory.

    python -m bench.bench_convert [--cfg tests/cfg/yolov3.cfg] [--json out.json]

Each measurement runs convert.main in a fresh process (after the imports):
  time:       wall time of convert.main (build the model, read, write the .h5),
              and the three stages timed separately in another process
  tracemalloc peak: Python + numpy allocations during convert.main
  RSS:        peak resident memory of the process (ru_maxrss) minus that of a process
              that only did the imports and built nothing (TensorFlow's own footprint)
Goal: under 10 s and under 3x the weights file size.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from yolo3 import darknet
from yolo3.atomic import atomic_open
from yolo3.errors import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run with the repository root on the import path (PYTHONPATH).
CHILD = """
import json, os, resource, sys, time, tracemalloc
import convert, keras, yolo3.darknet, yolo3.weights
mode, argv = sys.argv[1], sys.argv[2:]
result = {}
if mode == "stages":  # the same steps as convert.main, timed one by one
    from yolo3 import darknet
    t0 = time.perf_counter()
    network = darknet.load_cfg(argv[0])
    model = darknet.build_model(network)
    t1 = time.perf_counter()
    darknet.read_weights(argv[1], network, model=model)
    t2 = time.perf_counter()
    yolo3.weights.save_weights(model, argv[2])
    t3 = time.perf_counter()
    result.update(build=t1 - t0, read_and_set=t2 - t1, save_h5=t3 - t2)
elif mode != "imports":
    if mode == "trace":
        tracemalloc.start()
    start = time.perf_counter()
    code = convert.main(argv)
    result["seconds"] = time.perf_counter() - start
    if mode == "trace":
        result["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
result["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT " + json.dumps(result))
"""


def random_weights(path, cfg, seed=0):
    """A darknet .weights file for `cfg`: the version 0.2 header (major, minor,
    revision as int32, images seen as int64), then as many random float32 values
    as the cfg's layers hold, all in [0.5, 1.5) so that every rolling variance
    is valid."""
    count = darknet.load_cfg(cfg).num_floats
    floats = np.random.default_rng(seed).uniform(0.5, 1.5, count).astype("<f4")
    with open(path, "wb") as handle:
        handle.write(np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<i8").tobytes())
        handle.write(floats.tobytes())


def child(mode, argv=()):
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
    run = subprocess.run([sys.executable, "-c", CHILD, mode, *argv],
                         capture_output=True, text=True, env=env, check=True)
    line = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default=os.path.join(ROOT, "tests", "cfg", "yolov3.cfg"),
                        help="darknet cfg to fill with random weights (default: "
                             "tests/cfg/yolov3.cfg)")
    parser.add_argument("--json", help="also write the results here (default: none)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "random.weights")
        random_weights(weights, args.cfg, seed=0)
        size = os.path.getsize(weights)
        out = os.path.join(folder, "out.h5")
        base = child("imports")["maxrss"]
        timed = child("time", [args.cfg, weights, out])
        traced = child("trace", [args.cfg, weights, out])
        stages = child("stages", [args.cfg, weights, out])
    result = dict(file_bytes=size, seconds=round(timed["seconds"], 2),
                  stages={k: round(stages[k], 2) for k in ("build", "read_and_set", "save_h5")},
                  tracemalloc_peak=traced["tracemalloc_peak"],
                  rss_peak=timed["maxrss"], rss_imports=base,
                  rss_extra=timed["maxrss"] - base, cpus=os.cpu_count(),
                  load_average=os.getloadavg()[0], date=time.strftime("%Y-%m-%d"))
    mb = 1 << 20
    print(f"load average        {result['load_average']:8.1f} on {result['cpus']} CPUs")
    print(f"weights file        {size / mb:8.1f} MiB")
    print(f"convert time        {result['seconds']:8.2f} s")
    print("  stages            " + ", ".join(f"{k} {v:.2f} s" for k, v in result["stages"].items()))
    print(f"tracemalloc peak    {result['tracemalloc_peak'] / mb:8.1f} MiB "
          f"({result['tracemalloc_peak'] / size:.2f}x file)")
    print(f"RSS peak            {result['rss_peak'] / mb:8.1f} MiB "
          f"(imports alone {base / mb:.1f} MiB; extra {result['rss_extra'] / mb:.1f} MiB "
          f"= {result['rss_extra'] / size:.2f}x file)")
    if args.json:
        with atomic_open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
