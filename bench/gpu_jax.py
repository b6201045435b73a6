"""GPU training-step benchmark under KERAS_BACKEND=jax with bfloat16 mixed precision.

    KERAS_BACKEND=jax python -m bench.gpu_jax --json gpu.json     # on the GPU machine
    KERAS_BACKEND=jax python -m bench.gpu_jax --smoke             # tiny sizes, any CPU

Runs YOLOv3-416 stage 2 at batch 32 and 64, stage 1, and tiny stage 2, as one jitted
stateless step (forward, yolo_loss + L2, backward, Adam) on data already on the
device, so the figure is the accelerator's, not the host's. Reports images/s and
MFU = achieved FLOP/s / peak (bf16 dense; H100 SXM / H200: 989 TFLOP/s), with the
FLOPs from bench/flops.py. Then the input pipeline's images/s with --workers workers
(bench/bench_data.py, when present) on synthetic JPEGs made in a temporary folder.
Nothing is downloaded: carry keras and its missing dependencies with
bench/carry_wheels.sh.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
PEAK_BF16_TFLOPS = 989.0  # H100 SXM / H200 dense bf16 (NVIDIA data sheet)

# (name, kind, size, batch, stage)
FULL = [("yolov3-416 stage 2 b32", "yolov3", 416, 32, 2),
        ("yolov3-416 stage 2 b64", "yolov3", 416, 64, 2),
        ("yolov3-416 stage 1 b64", "yolov3", 416, 64, 1),
        ("tiny-416 stage 2 b64", "tiny", 416, 64, 2)]
SMOKE = [("tiny-64 stage 2 b2", "tiny", 64, 2, 2),
         ("tiny-64 stage 1 b2", "tiny", 64, 2, 1)]


def make_step(model, optimizer):
    """A jitted stateless train step: (state, x) -> (state, loss). Data stays on device."""
    import jax
    import jax.numpy as jnp

    def loss_fn(trainable, non_trainable, x):
        y, non_trainable, losses = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True)
        # compile's loss is mean(y_pred) over the batch; Keras adds the L2 terms
        loss = jnp.mean(y.astype("float32")) + sum(l.astype("float32") for l in losses)
        return loss, non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def step(state, x):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return (trainable, non_trainable, opt_vars), loss

    return step


def bench_config(kind, size, batch, stage, steps, repeats, num_classes=80):
    """images/s (median, min, max over `repeats` runs of `steps` steps) and FLOPs."""
    import jax
    import keras
    from bench.timing import measure
    from bench.train_step import build_model, make_batch, step_flops
    model, body = build_model(kind, size, num_classes, stage)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    x, _ = make_batch(kind, size, batch, num_classes)
    x = [jax.device_put(a) for a in x]
    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    step = make_step(model, optimizer)
    holder = {"state": state}

    def run():
        s = holder["state"]
        for _ in range(steps):
            s, loss = step(s, x)
        jax.block_until_ready(loss)
        holder["state"] = s
        holder["loss"] = float(loss)

    t0 = time.perf_counter()
    run()  # compile + first steps
    compile_s = time.perf_counter() - t0
    t = measure(run, repeats=repeats, warmup=0)
    flops = step_flops(body, batch)
    out = {"kind": kind, "size": size, "batch": batch, "stage": stage, "steps": steps,
           "compile_s": compile_s, "loss": holder["loss"],
           **t.as_dict(batch * steps, "images_per_s")}
    out["tflops"] = flops * steps / t.median / 1e12
    out["mfu"] = out["tflops"] / PEAK_BF16_TFLOPS
    return out


def bench_pipeline(workers, images, batches):
    """YoloDataset batches of 8 at 416 with augmentation from `workers` processes, on
    generated 640x480 JPEGs (the data helper's bench/bench_data.py functions)."""
    import tempfile
    try:
        from bench.bench_data import dataset_rate, generated_lines
    except ImportError as exc:
        return {"skipped": f"bench/bench_data.py not importable ({exc})"}
    with tempfile.TemporaryDirectory() as folder:
        lines = generated_lines(folder, images)
        lines = lines * -(-batches * 8 // len(lines))  # enough lines for `batches`
        return dataset_rate(lines, workers, batches)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny-YOLOv3 at 64 px, batch 2, 1 step, 2 pipeline workers: "
                        "checks the script on a CPU")
    p.add_argument("--steps", type=int, default=10, help="steps per timed run (default: 10; smoke: 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per config (default: 3; smoke: 1)")
    p.add_argument("--precision", choices=["mixed_bfloat16", "float32"], default="mixed_bfloat16",
                   help="Keras dtype policy (default: mixed_bfloat16)")
    p.add_argument("--workers", type=int, default=16, help="pipeline workers (default: 16; smoke: 2)")
    p.add_argument("--only", default="",
                   help="comma-separated indexes into the config list to run (default: all)")
    p.add_argument("--no-pipeline", action="store_true", help="skip the input-pipeline part")
    p.add_argument("--json", default="", help="write results to this JSON file (default: none)")
    a = p.parse_args(argv)
    result = {"precision": a.precision, "peak_tflops": PEAK_BF16_TFLOPS, "train": []}
    if not a.no_pipeline:  # first: its worker processes fork before JAX starts threads
        workers = 2 if a.smoke else a.workers
        images, batches = (8, 2) if a.smoke else (64, 8 * workers)
        result["pipeline"] = pipe = bench_pipeline(workers, images, batches)
        print("pipeline:", pipe.get("skipped") or
              f"{pipe['images_per_s']:.1f} images/s (416, batch 8, augmented) "
              f"with {workers} workers", flush=True)
    import jax
    import keras
    if keras.backend.backend() != "jax":
        from yolo3.errors import UserError
        raise UserError(f"KERAS_BACKEND must be jax (got {keras.backend.backend()})")
    keras.mixed_precision.set_global_policy(a.precision)
    configs = SMOKE if a.smoke else FULL
    if a.only:
        try:
            configs = [configs[int(i)] for i in a.only.split(",")]
        except (ValueError, IndexError):
            from yolo3.errors import UserError
            raise UserError(f"--only: expected indexes 0-{len(configs) - 1} ({a.only})") from None
    steps, repeats = (1, 1) if a.smoke else (a.steps, a.repeats)
    dev = jax.devices()[0]
    result["device"] = f"{dev.platform}: {getattr(dev, 'device_kind', '')}"
    print(f"device {result['device']}, policy {a.precision}")
    print(f"{'config':26} {'images/s':>9} {'range':>17} {'TFLOP/s':>8} {'MFU':>6} {'compile s':>9}")
    for name, kind, size, batch, stage in configs:
        r = bench_config(kind, size, batch, stage, steps, repeats)
        r["name"] = name
        result["train"].append(r)
        print(f"{name:26} {r['images_per_s']:9.1f} {r['images_per_s_min']:8.1f}-"
              f"{r['images_per_s_max']:<8.1f} {r['tflops']:8.2f} {r['mfu']:6.1%} "
              f"{r['compile_s']:9.1f}", flush=True)
    if a.json:
        from yolo3.atomic import atomic_open
        with atomic_open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    from yolo3.errors import run_cli
    sys.exit(run_cli(main))
