"""This project's training step against the original keras-yolo3's, interleaved.

    python -m bench.vs_original --original ~/src/keras-yolo3 --rounds 3

The original runs from the user's own checkout (its train.py create_model /
create_tiny_model and yolo_loss, unchanged) under tf_keras (`pip install
tf_keras`), this project under Keras 3, each in its own worker process; both get
the same batch (random images, y_true from random boxes) and are timed the same
way: model.fit on that batch repeated, XLA off, Adam(1e-3), the time between
consecutive batch ends. Per row (model, stage, batch) the two alternate for
`rounds` rounds of `steps` steps, so each ratio compares measurements taken
moments apart under the same machine load. Stage 1: all but the output
convolutions frozen (the original's freeze_body=2); stage 2: all trainable.

With --profile each worker also records one step under the TensorFlow profiler
and prints the op time summed by op type.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (kind, size, batch, stage): the rows of the comparison
ROWS = [("tiny", 416, 8, 2), ("tiny", 416, 8, 1), ("yolov3", 416, 4, 2), ("yolov3", 416, 4, 1)]
ANCHORS = {"yolov3": "model_data/yolo_anchors.txt", "tiny": "model_data/tiny_yolo_anchors.txt"}
REPLY = "@@vs_original "  # prefix of a worker's reply line (the models print too)


# ---- the original, imported from the user's checkout under tf_keras ----

def keras2_shims():
    """Let Keras-2-era `import keras` code run on tf_keras: alias the modules it
    imports from (including two Keras 2.2 paths) and K.control_flow_ops."""
    import tensorflow as tf
    import tf_keras
    layers = tf_keras.layers
    aliases = {"keras": tf_keras, "keras.backend": tf_keras.backend, "keras.layers": layers,
               "keras.layers.advanced_activations": layers,
               "keras.layers.normalization": layers, "keras.models": tf_keras.models,
               "keras.regularizers": tf_keras.regularizers,
               "keras.optimizers": tf_keras.optimizers, "keras.callbacks": tf_keras.callbacks}
    sys.modules.update(aliases)
    tf_keras.backend.control_flow_ops = types.SimpleNamespace(while_loop=tf.while_loop)
    return tf_keras


def import_original(path):
    """The original's train.py module (create_model, create_tiny_model)."""
    import importlib
    if not os.path.isfile(os.path.join(path, "yolo3", "model.py")):
        raise FileNotFoundError(f"{path}: no yolo3/model.py (not a keras-yolo3 checkout)")
    keras2_shims()
    sys.path.insert(0, os.path.abspath(path))
    return importlib.import_module("train")


class OriginalTool:
    """The original's training model, compiled as its train.py does (Adam, the loss
    layer's output as the loss), under tf_keras."""

    def __init__(self, path):
        self.train = import_original(path)
        import tf_keras
        self.keras = tf_keras

    def build(self, kind, size, num_classes, stage, anchors):
        import contextlib
        import io

        import numpy as np
        make = self.train.create_tiny_model if kind == "tiny" else self.train.create_model
        with contextlib.redirect_stdout(io.StringIO()):
            model = make((size, size), np.asarray(anchors), num_classes, load_pretrained=False)
        if stage == 1:  # freeze_body=2: all but the layers giving the loss its outputs
            heads = model.get_layer("yolo_loss").input[:len(model.inputs) - 1]
            outputs = {id(t._keras_history.layer) for t in heads}
            for layer in model.layers:
                layer.trainable = id(layer) in outputs or layer.name == "yolo_loss"
        model.compile(optimizer=self.keras.optimizers.Adam(learning_rate=1e-3),
                      loss={"yolo_loss": lambda y_true, y_pred: y_pred})
        return model


class ProjectTool:
    """This project's training model, compiled by yolo3.training.compile_model."""

    def __init__(self):
        import keras
        self.keras = keras

    def build(self, kind, size, num_classes, stage, anchors):
        from bench.train_step import build_model
        from yolo3.training import compile_model
        model, _ = build_model(kind, size, num_classes, stage)
        return compile_model(model, 1e-3, jit_compile=False)


def fit_steps(keras, model, x, y, steps):
    """Seconds between consecutive batch ends of model.fit on the batch repeated."""
    import numpy as np
    samples = []

    class StepClock(keras.callbacks.Callback):
        last = None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if self.last is not None:
                samples.append(now - self.last)
            self.last = now
    xs = [np.concatenate([a] * steps) for a in x]
    model.fit(xs, np.concatenate([y] * steps), batch_size=len(y), epochs=1, shuffle=False,
              verbose=0, callbacks=[StepClock()])
    return samples


def op_type_times(logdir):
    """{op type: ms} of the host's op events in the trace under logdir, summed over
    threads (the part of an event name after its last ':', else the whole name)."""
    from bench.profile_step import op_events
    out = {}
    for name, ms in op_events(logdir):
        kind = name.rsplit(":", 1)[-1]
        out[kind] = out.get(kind, 0.0) + ms
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile_step(model, x, y):
    """One train_on_batch under the TensorFlow profiler -> (wall ms, {op type: ms})."""
    import tensorflow as tf
    model.train_on_batch(x, y)  # traces train_on_batch's own step function
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        wall = time.perf_counter() - t0
        tf.profiler.experimental.stop()
        return wall * 1e3, op_type_times(logdir)


def worker(tool):
    """Serve JSON commands on stdin (build / time / profile / quit), replying on
    stdout with REPLY-prefixed JSON lines."""
    import numpy as np
    model = x = y = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            return 0
        if cmd["cmd"] == "build":
            tool.keras.backend.clear_session()
            t0 = time.perf_counter()
            model = tool.build(cmd["kind"], cmd["size"], cmd["classes"], cmd["stage"],
                               cmd["anchors"])
            data = np.load(cmd["data"], allow_pickle=False)
            x, y = [data[f"x{i}"] for i in range(len(data.files) - 1)], data["y"]
            fit_steps(tool.keras, model, x, y, 2)  # builds the step function
            reply = {"build_s": time.perf_counter() - t0}
        elif cmd["cmd"] == "time":
            reply = {"samples": fit_steps(tool.keras, model, x, y, cmd["steps"] + 1)}
        else:
            wall, ops = profile_step(model, x, y)
            reply = {"wall_ms": wall, "ops_ms": ops}
        print(REPLY + json.dumps(reply), flush=True)
    return 0


# ---- the parent: two workers, interleaved rounds ----

class Worker:
    """A worker process of this script; ask(cmd) -> its reply."""

    def __init__(self, which, original, log):
        env = dict(os.environ)
        if which == "original":
            env["TF_USE_LEGACY_KERAS"] = "1"
        args = [sys.executable, os.path.abspath(__file__), "--worker", which,
                "--original", original]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log, text=True, env=env, cwd=ROOT)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY):])
        raise RuntimeError(f"worker exited with {self.proc.wait()} (see its log)")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
        self.proc.wait()


def write_batch(path, kind, size, batch, classes):
    """The shared batch (bench.train_step.make_batch) as an .npz the workers load."""
    import numpy as np

    from bench.train_step import make_batch
    x, y = make_batch(kind, size, batch, classes)
    np.savez(path, y=y, **{f"x{i}": a for i, a in enumerate(x)})


def spread(values):
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values),
            "values": values}


def compare_row(workers, row, rounds, steps, classes, folder, profile=False):
    """One row: build in both workers, then `rounds` alternations of `steps`
    timed steps (the original first) -> dict of img/s and ratios."""
    from bench.train_step import anchors_for
    kind, size, batch, stage = row
    data = os.path.join(folder, "batch.npz")
    write_batch(data, kind, size, batch, classes)
    build = {"cmd": "build", "kind": kind, "size": size, "batch": batch, "stage": stage,
             "classes": classes, "anchors": anchors_for(kind).tolist(), "data": data}
    out = {"kind": kind, "size": size, "batch": batch, "stage": stage}
    for name, w in workers.items():
        out[f"{name}_build_s"] = w.ask(**build)["build_s"]
    rates = {name: [] for name in workers}
    for _ in range(rounds):
        for name, w in workers.items():
            samples = w.ask(cmd="time", steps=steps)["samples"]
            rates[name].append(batch / statistics.mean(samples))
    for name in workers:
        out[name] = spread(rates[name])
    out["ratio_per_round"] = spread([p / o for p, o in zip(rates["project"], rates["original"])])
    out["ratio_of_means"] = out["project"]["mean"] / out["original"]["mean"]
    out["load_average"] = os.getloadavg()
    if profile:
        out["profile"] = {name: w.ask(cmd="profile") for name, w in workers.items()}
    return out


def compare(original, rows=ROWS, rounds=3, steps=4, classes=80, profile=False,
            log=subprocess.DEVNULL, report=None):
    """Every row through both workers (their stderr to `log`) -> list of per-row
    dicts (compare_row), each also given to report() as it comes."""
    results = []
    with tempfile.TemporaryDirectory() as folder:
        workers = {"original": Worker("original", original, log),
                   "project": Worker("project", original, log)}
        try:
            for row in rows:
                results.append(compare_row(workers, row, rounds, steps, classes, folder,
                                           profile))
                if report:
                    report(results[-1])
        finally:
            for w in workers.values():
                w.close()
    return results


def row_label(r):
    return f"{r['kind']}-{r['size']} stage {r['stage']} b{r['batch']}"


def table_rows(results):
    """(benchmark, setting, median, range, note) rows for bench/run.py's table."""
    rows = []
    for r in results:
        o, p, q = r["original"], r["project"], r["ratio_per_round"]
        rows.append((f"vs original {row_label(r)}", f"{len(q['values'])} rounds",
                     f"{r['ratio_of_means']:.2f}x", f"{q['min']:.2f}-{q['max']:.2f}",
                     f"project {p['mean']:.2f} img/s, original {o['mean']:.2f} img/s"))
    return rows


def print_profile(r, top=12):
    for name, prof in r["profile"].items():
        total = sum(prof["ops_ms"].values())
        print(f"  {name}: step {prof['wall_ms']:.0f} ms wall, {total:.0f} ms op time")
        for op, ms in list(prof["ops_ms"].items())[:top]:
            print(f"    {op:40} {ms:8.1f} ms {ms / total:6.1%}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original", required=True, help="path of a keras-yolo3 checkout")
    p.add_argument("--rounds", type=int, default=3, help="alternations per row (default: 3)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per round (default: 4)")
    p.add_argument("--rows", default="0,1,2,3",
                   help="rows to run, 0-3: tiny stage 2, tiny stage 1, yolov3 stage 2, "
                        "yolov3 stage 1 (default: all)")
    p.add_argument("--profile", action="store_true", help="also profile one step of each")
    p.add_argument("--json", default="", help="write the results to this JSON file")
    p.add_argument("--log", default="", help="append the workers' stderr to this file")
    p.add_argument("--worker", choices=["original", "project"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(OriginalTool(a.original) if a.worker == "original" else ProjectTool())
    from yolo3.errors import UserError
    if not os.path.isfile(os.path.join(a.original, "yolo3", "model.py")):
        raise UserError(f"--original {a.original}: no yolo3/model.py there "
                        f"(expected a keras-yolo3 checkout)")
    rows = [ROWS[int(i)] for i in a.rows.split(",")]

    def report(r):
        row = table_rows([r])[0]
        print(f"{row[0]:36} {row[1]:9} {row[2]:>7} per-round {row[3]:>10}  {row[4]}; "
              f"load {r['load_average'][0]:.1f}", flush=True)
        if a.profile:
            print_profile(r)
    with open(a.log or os.devnull, "a") as log:
        results = compare(a.original, rows, a.rounds, a.steps, profile=a.profile, log=log,
                          report=report)
    if a.json:
        from yolo3.atomic import atomic_open
        with atomic_open(a.json, "w") as f:
            json.dump({"time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                       "rows": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    if "--worker" in sys.argv:  # no yolo3 import here: the original has its own yolo3
        sys.exit(main())
    from yolo3.errors import run_cli
    sys.exit(run_cli(main))
