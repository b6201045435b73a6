"""All benchmarks in one command: prints a table and writes JSON.

    python -m bench.run --json bench/results/cpu.json          # ~12 minutes, 2 cores
    python -m bench.run --quick                                # under a minute

Sections (--only to pick): matmul (this machine's float32 matmul rate, the practical
limit), flops (model FLOPs vs darknet's), train (training-step images/s and GFLOP/s,
tiny-416 batch 8 and YOLOv3-416 batch 4, stages 1 and 2, XLA on and off, ratio to the
matmul rate), pipeline, bottleneck, detect, kmeans, convert (the other helpers'
benchmarks, called when present, else skipped with a note). Every figure is a median
over repeats after a warm-up, with min and max; ratios are taken within this run.

    python -m bench.run --only train --vs-original ~/src/keras-yolo3

--vs-original PATH adds this project's training step against the original
keras-yolo3's in the checkout at PATH (run under tf_keras; bench/vs_original.py):
the ratio per model and stage, the two alternating in one run.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time

SECTIONS = ("matmul", "flops", "pipeline", "train", "bottleneck", "detect", "kmeans", "convert")

# (kind, size, batch, stage, xla); quick keeps tiny stage 2 (the pipeline goal's reference)
TRAIN_FULL = [(k, 416, b, st, x) for k, b in (("tiny", 8), ("yolov3", 4))
              for st in (1, 2) for x in (True, False)]
TRAIN_QUICK = [("tiny", 416, 8, 2, False)]


def machine():
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        cpu = names[0] if names else cpu
    import keras
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "keras": keras.__version__, "backend": keras.backend.backend(),
            "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    with contextlib.suppress(OSError):
        info["load_average"] = os.getloadavg()
    with contextlib.suppress(ImportError):
        import tensorflow as tf
        info["tensorflow"] = tf.__version__
    return info


def sec_matmul(res, quick):
    from bench.matmul import best_matmul
    r = best_matmul((1024, 2048) if quick else (2048, 4096), repeats=3 if quick else 5)
    res["matmul"] = r
    res["matmul_gflops"] = r["gflops"]
    return [("matmul float32", f"n={r['size']}", f"{r['gflops']:.1f} GFLOP/s",
             f"{r['gflops_min']:.1f}-{r['gflops_max']:.1f}", "")]


def sec_flops(res, quick):
    from bench.flops import DARKNET_BFLOPS_416, model_flops
    rows, res["flops"] = [], {}
    for kind in ("yolov3", "tiny"):
        r = model_flops(kind, 416, 80)
        fwd = r["forward"] / 1e9
        res["flops"][kind] = {"forward_gflop": fwd, "train_all_gflop": r["train"] / 1e9,
                              "darknet_bflops": DARKNET_BFLOPS_416[kind], "convs": r["convs"]}
        rows.append((f"{kind}-416 FLOPs", "forward", f"{fwd:.2f} GFLOP",
                     f"darknet {DARKNET_BFLOPS_416[kind]}", f"train {r['train'] / 1e9:.1f}"))
    return rows


def sec_train(res, quick):
    import gc
    import keras
    from bench.train_step import bench_train_step
    mm = res.get("matmul_gflops")
    rows, res["train"] = [], []
    for kind, size, batch, stage, xla in TRAIN_QUICK if quick else TRAIN_FULL:
        r = bench_train_step(kind, size, batch, stage, xla, repeats=2 if quick else 3,
                             matmul_gflops=mm, paired=True)
        res["train"].append(r)
        ratio = (f"{r['ratio_to_matmul']:.0%} of matmul, " if mm else "") + \
            f"{r['ratio_paired']:.0%} paired"
        rows.append((f"train {kind}-{size} b{batch} stage {stage}", f"XLA {'on' if xla else 'off'}",
                     f"{r['images_per_s']:.2f} img/s",
                     f"{r['images_per_s_min']:.2f}-{r['images_per_s_max']:.2f}",
                     f"{r['gflops']:.0f} GFLOP/s {ratio}"))
        keras.backend.clear_session()
        gc.collect()
    return rows


def sec_vs_original(res, quick, path):
    """bench/vs_original.py: the four rows (--quick: tiny stage 2 only)."""
    from bench.vs_original import ROWS, compare, table_rows
    res["vs_original"] = compare(path, ROWS[:1] if quick else ROWS,
                                 rounds=1 if quick else 3, steps=2 if quick else 4)
    return table_rows(res["vs_original"])


def sec_bottleneck(res, quick):
    """Stage 1 plain vs on cached features, each through model.fit as train.py runs
    it by default (XLA: off for the whole network, on for the bottleneck head)."""
    import keras
    from bench.train_step import bench_bottleneck
    rows, res["bottleneck"] = [], []
    for kind, batch in [("tiny", 8)] if quick else [("tiny", 8), ("yolov3", 4)]:
        r = bench_bottleneck(kind, 416, batch, repeats=2 if quick else 3)
        p, m, b = r["plain_stage1"], r["plain_stage1_in_memory"], r["bottleneck_stage1"]
        res["bottleneck"].append(r)
        xla = {True: "XLA on", False: "XLA off"}
        rows.append((f"stage 1 {kind}-416 b{batch} plain", xla[r["xla_plain"]],
                     f"{p['images_per_s']:.2f} img/s",
                     f"{p['images_per_s_min']:.2f}-{p['images_per_s_max']:.2f}",
                     f"fit on augmented JPEGs; {m['images_per_s']:.2f} img/s on a batch "
                     f"in memory"))
        rows.append((f"stage 1 {kind}-416 b{batch} bottleneck", xla[r["xla_bottleneck"]],
                     f"{b['images_per_s']:.1f} img/s",
                     f"{b['images_per_s_min']:.1f}-{b['images_per_s_max']:.1f}",
                     f"{r['speedup_per_epoch']:.1f}x per epoch ({r['speedup_compute']:.1f}x "
                     f"in memory); features once: "
                     f"{r['feature_extraction']['images_per_s']:.2f} img/s"))
        keras.backend.clear_session()
    return rows


# ---- the other helpers' benchmarks: called through their main(argv) and --json ----

HELPERS = {
    # section: (module, quick argv or None to skip, full argv)
    "pipeline": ("bench.bench_data", ["--quick"], []),
    "detect": ("bench.bench_detect", ["--models", "tiny", "--images", "8", "--repeats", "1"],
               ["--models", "tiny,full", "--images", "8", "--repeats", "3"]),
    "kmeans": ("bench.bench_kmeans", ["--boxes", "100000", "--restarts", "1"],
               ["--boxes", "1000000", "--restarts", "1"]),
    "convert": ("bench.bench_convert", None, []),
}


def run_helper(section, quick):
    """Run a helper's bench main(argv + --json tmp); its JSON, or {'skipped': why}."""
    import importlib
    module, q, full = HELPERS[section]
    if quick and q is None:
        return {"skipped": "not in --quick (takes ~30 s)"}
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return {"skipped": f"{module.replace('.', '/')}.py not available ({exc})"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        out = io.StringIO()
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out):
                rc = mod.main([*(q if quick else full), "--json", path])
        except (Exception, SystemExit) as exc:  # a helper's failure must not stop the run
            return {"skipped": f"{module} failed: {type(exc).__name__}: {exc}"}
        if rc or not os.path.exists(path):
            return {"skipped": f"{module} returned {rc} without JSON", "output": out.getvalue()}
        with open(path) as f:
            data = json.load(f)
    return {"result": data, "seconds": time.perf_counter() - t0, "output": out.getvalue()}


def summarise(section, data, res):
    """Table rows for a helper's result (its own printed table is kept in the JSON)."""
    if "skipped" in data:
        return [(section, "skipped", "", "", data["skipped"][:80])]
    r = data["result"]
    if section == "kmeans":
        ours = r["rows"][0]
        seconds = ours.get("wall_s", ours.get("seconds"))
        return [(f"kmeans {r['boxes']} boxes k={r['k']}", f"{ours['runs']} run",
                 f"{seconds:.2f} s", "", f"{r['speedup']:.1f}x the original")]
    if section == "pipeline":
        g = r["get_random_data"]
        rows = [("pipeline get_random_data 416", "1 core", f"{g['images_per_s']:.1f} img/s",
                 f"{g['min']:.1f}-{g['max']:.1f}", f"{r['speedup']:.1f}x the original")]
        for d in r["dataset_batch8"]:
            rows.append(("pipeline YoloDataset b8", f"{d['workers']} worker(s)",
                         f"{d['images_per_s']:.1f} img/s", "", f"{d['batches']} batches"))
        return rows
    if section == "detect":
        return [(f"detect {d['model']} 416", f"batch {d['batch']}",
                 f"{d['images_per_s']:.2f} img/s",
                 f"{d['images_per_s_min']:.2f}-{d['images_per_s_max']:.2f}", d["weights"][:40])
                for d in r["runs"]]
    if section == "convert":
        return [("convert yolov3-sized weights", f"{r['file_bytes'] / 2**20:.0f} MiB",
                 f"{r['seconds']:.2f} s", "", f"extra RSS {r['rss_extra'] / r['file_bytes']:.1f}x file")]
    return [(section, "", f"{data['seconds']:.1f} s", "", "see JSON")]


def goals(res):
    """The CPU goals of the performance issue, from this run's numbers (None: not run)."""
    out = {}
    train = res.get("train", [])
    full = [r for r in train if r["kind"] == "yolov3" and r["stage"] == 2 and r["xla"]]
    if full and "ratio_to_matmul" in full[0]:
        out["yolov3_stage2_xla_ratio_ge_0.5"] = {
            "value": full[0]["ratio_to_matmul"], "met": full[0]["ratio_to_matmul"] >= 0.5,
            "paired": full[0].get("ratio_paired")}
    tiny = [r["images_per_s"] for r in train if r["kind"] == "tiny" and r["stage"] == 2]
    pipe = res.get("pipeline", {}).get("result", {}).get("dataset_batch8", [])
    two = [d["images_per_s"] for d in pipe if d["workers"] == 2]
    if tiny and two:
        out["pipeline_2_workers_gt_tiny_stage2"] = {
            "value": two[0] / max(tiny), "met": two[0] > max(tiny)}
    for b in res.get("bottleneck", []):
        out[f"bottleneck_{b['kind']}_speedup_ge_10"] = {
            "value": b["speedup_per_epoch"], "met": b["speedup_per_epoch"] >= 10,
            "in_memory": b["speedup_compute"]}
    return out


def markdown(rows):
    """The printed table as a markdown table."""
    head = "| benchmark | setting | median | range (min-max) | note |"
    lines = [head, "|---|---|---:|---:|---|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_rows(rows):
    for r in rows:
        print(f"{r[0]:34} {r[1]:12} {r[2]:>16} {r[3]:>15}  {r[4]}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="small repeats and tiny-only training (under a minute)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections (default: all: {','.join(SECTIONS)})")
    p.add_argument("--json", default="", help="write all results to this JSON file (default: none)")
    p.add_argument("--markdown", default="",
                   help="also write the table as markdown to this file (default: none)")
    p.add_argument("--vs-original", default="", metavar="PATH",
                   help="also compare the training step with the original keras-yolo3 "
                        "checked out at PATH (needs tf_keras; default: no comparison)")
    a = p.parse_args(argv)
    if a.vs_original and not os.path.isfile(os.path.join(a.vs_original, "yolo3", "model.py")):
        from yolo3.errors import UserError
        raise UserError(f"--vs-original {a.vs_original}: no yolo3/model.py there "
                        f"(expected a keras-yolo3 checkout)")
    only = [s for s in a.only.split(",") if s]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        from yolo3.errors import UserError
        raise UserError(f"--only: unknown section {bad[0]!r} (known: {', '.join(SECTIONS)})")
    res = {"machine": machine(), "quick": a.quick}
    print(f"{res['machine']['cpu']}, {res['machine']['cores']} cores, "
          f"Keras {res['machine']['keras']} ({res['machine']['backend']})")
    print_rows([("benchmark", "setting", "median", "range", "note")])
    t0 = time.perf_counter()
    table = []
    for section in SECTIONS:  # fixed order: matmul first, its rate feeds the ratios
        if section not in only:
            continue
        if section in HELPERS:
            res[section] = run_helper(section, a.quick)
            try:
                rows = summarise(section, res[section], res)
            except (KeyError, TypeError, ValueError) as exc:  # a helper changed its JSON
                rows = [(section, "", f"{res[section]['seconds']:.1f} s", "",
                         f"see JSON (summary failed: {type(exc).__name__} {exc})")]
        else:
            rows = globals()[f"sec_{section}"](res, a.quick)
        print_rows(rows)
        table += rows
    if a.vs_original:
        rows = sec_vs_original(res, a.quick, a.vs_original)
        print_rows(rows)
        table += rows
    res["seconds"] = time.perf_counter() - t0
    res["goals"] = goals(res)
    for name, g in res["goals"].items():
        print(f"goal {name}: {g['value']:.2f} -> {'met' if g['met'] else 'MISSED'}")
    print(f"total {res['seconds']:.0f} s")
    from yolo3.atomic import atomic_open
    if a.json:
        with atomic_open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    if a.markdown:
        with atomic_open(a.markdown, "w") as f:
            f.write(markdown(table))
    return 0


if __name__ == "__main__":
    from yolo3.errors import run_cli
    sys.exit(run_cli(main))
