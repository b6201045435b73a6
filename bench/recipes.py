"""The recipe protocol (not a test): train tiny-YOLOv3 from darknet's COCO weights
with each recipe on real data sets, several seeds, and measure every run on the
set's own test split with evaluate.py (COCO AP, AP50, AP75).

    python -m bench.recipes --data ../shared --out recipes-run
    python -m bench.recipes --data ../shared --out recipes-run --ablation raccoon

The sets (from --data): raccoon (data/raccoon: train.txt / test.txt, one class)
and bccd (data/bccd/BCCD, Pascal VOC: converted with annotations.py voc, trained
on trainval, measured on test). The weights: pretrained/yolov3-tiny converted
once with convert.py. Every run is train.py then evaluate.py in fresh
processes; its result (metrics, wall time) is a JSON file in
OUT/runs/SET-VARIANT-sSEED/, and a run whose result exists is not repeated, so
the command continues where a killed one stopped and new variants or seeds add
to the same table. Runs go seed by seed, so a cut-short protocol still compares
the recipes on the same seeds. Writes OUT/results.md (mean and standard
deviation over the seeds) and OUT/results.json over every finished run in OUT,
also those of other invocations; --report only writes them.

Both recipes get the same epoch budget (--freeze-epochs, --epochs), input size
and anchors (darknet's tiny anchors, which the pretrained heads were trained
with). The ablation runs `modern` with one part switched off at a time, and
`faithful` with one part switched on.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHORS = os.path.join(ROOT, "model_data", "tiny_yolo_anchors.txt")

VARIANTS = {
    "faithful": [],
    "modern": ["--recipe", "modern"],
}
# one part of the modern recipe changed at a time (off, or on for the parts that
# modern leaves off), and faithful with modern's batch size
ABLATION = {
    "modern-no-mosaic": ["--recipe", "modern", "--mosaic", "0"],
    "modern-no-multi-anchor": ["--recipe", "modern", "--iou-thresh", "0"],
    "modern-original-box-loss": ["--recipe", "modern", "--box-loss", "original"],
    "modern-no-ema": ["--recipe", "modern", "--no-ema"],
    "modern-plateau-lr": ["--recipe", "modern", "--lr-schedule", "plateau"],
    "modern-adam": ["--recipe", "modern", "--optimizer", "adam", "--weight-decay", "0"],
    "modern-batch-32": ["--recipe", "modern", "--batch-size", "32",
                        "--unfreeze-batch-size", "32"],
    "modern-mixup": ["--recipe", "modern", "--mixup", "0.2"],
    "modern-label-smoothing": ["--recipe", "modern", "--label-smoothing", "0.1"],
    "modern-multi-scale": ["--recipe", "modern", "--multi-scale", "192-320"],
    "faithful-batch-8": ["--batch-size", "8", "--unfreeze-batch-size", "8"],
}


def run(cmd, log_path=None):
    """Run a command from the project root; its output to log_path (or ours)."""
    if log_path is None:
        subprocess.run(cmd, cwd=ROOT, check=True)
        return
    with open(log_path, "w") as log:
        result = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}); see {log_path}")


def prepare(data, out):
    """The weights and the sets: {name: (train, test, classes)} with absolute paths."""
    os.makedirs(out, exist_ok=True)
    weights = os.path.join(out, "tiny_coco.weights.h5")
    if not os.path.isfile(weights):
        tiny = os.path.join(data, "pretrained", "yolov3-tiny")
        run([sys.executable, "convert.py", os.path.join(tiny, "yolov3-tiny.cfg"),
             os.path.join(tiny, "yolov3-tiny.weights"), weights])
    raccoon = os.path.join(data, "data", "raccoon")
    sets = {"raccoon": (os.path.join(raccoon, "train.txt"), os.path.join(raccoon, "test.txt"),
                        os.path.join(raccoon, "classes.txt"))}
    voc = os.path.join(data, "data", "bccd", "BCCD")
    bccd = os.path.join(out, "bccd")
    os.makedirs(bccd, exist_ok=True)
    for split in ("trainval", "test"):
        path = os.path.join(bccd, f"{split}.txt")
        if not os.path.isfile(path):
            run([sys.executable, "annotations.py", "voc", voc, "-o", path, "--absolute",
                 "--ids", os.path.join(voc, "ImageSets", "Main", f"{split}.txt"), "--skip-bad",
                 "--classes-out", os.path.join(bccd, "classes.txt")])
    sets["bccd"] = (os.path.join(bccd, "trainval.txt"), os.path.join(bccd, "test.txt"),
                    os.path.join(bccd, "classes.txt"))
    return weights, sets


def one_run(folder, weights, data_set, variant_args, seed, args):
    """Train and evaluate one (set, variant, seed); returns its result dict."""
    result_path = os.path.join(folder, "result.json")
    if os.path.isfile(result_path):
        with open(result_path) as handle:
            return json.load(handle)
    os.makedirs(folder, exist_ok=True)
    train, test, classes = data_set
    size = str(args.size)
    start = time.time()
    run([sys.executable, "train.py", "--annotations", train, "--classes", classes,
         "--anchors", ANCHORS, "--weights", weights, "--input-size", size,
         "--freeze-epochs", str(args.freeze_epochs), "--epochs", str(args.epochs),
         "--seed", str(seed), "--log-dir", os.path.join(folder, "logs"),
         "--no-tensorboard", *variant_args], os.path.join(folder, "train.log"))
    train_seconds = time.time() - start
    metrics_path = os.path.join(folder, "metrics.json")
    run([sys.executable, "evaluate.py", "--annotations", test, "--classes", classes,
         "--anchors", ANCHORS, "--input-size", size, "--no-progress",
         "--model", os.path.join(folder, "logs", "trained_weights_final.weights.h5"),
         "--json", metrics_path], os.path.join(folder, "evaluate.log"))
    with open(metrics_path) as handle:
        coco = json.load(handle)["coco"]
    result = {"AP": coco["AP"], "AP50": coco["AP50"], "AP75": coco["AP75"],
              "train_seconds": round(train_seconds, 1), "args": variant_args,
              "load_average": os.getloadavg()[0]}
    with open(result_path + ".tmp", "w") as handle:
        json.dump(result, handle, indent=1)
    os.replace(result_path + ".tmp", result_path)
    return result


def summarise(results):
    """{(set, variant): [result, ...]} -> markdown table rows and a JSON summary."""
    def mean_sd(values):
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.mean(values), sd

    rows, summary = [], {}
    for (data_set, variant), runs in sorted(results.items()):
        entry = {"seeds": len(runs)}
        cells = []
        for key, scale in (("AP", 100), ("AP50", 100), ("AP75", 100), ("train_seconds", 1)):
            mean, sd = mean_sd([r[key] * scale for r in runs])
            entry[key] = {"mean": mean, "sd": sd}
            cells.append(f"{mean:.1f} ± {sd:.1f}")
        summary[f"{data_set}/{variant}"] = entry
        rows.append(f"| {data_set} | {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    header = ["| set | recipe | seeds | COCO AP | AP50 | AP75 | train s |",
              "|---|---|---|---|---|---|---|"]
    return header + rows, summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared"),
                   help="folder with data/raccoon, data/bccd and pretrained/yolov3-tiny")
    p.add_argument("--out", default="recipes-run", help="working and result folder")
    p.add_argument("--sets", default="raccoon,bccd")
    p.add_argument("--variants", default="faithful,modern",
                   help=f"comma-separated, of {', '.join([*VARIANTS, *ABLATION])}")
    p.add_argument("--ablation", default="",
                   help="a set on which to also run every ablation variant")
    p.add_argument("--ablation-seeds", type=int, default=1)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--size", type=int, default=256, help="input size (both recipes)")
    p.add_argument("--freeze-epochs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--report", action="store_true",
                   help="run nothing: write the table of the runs already in --out")
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    weights, sets = prepare(os.path.abspath(args.data), out)
    table = {**VARIANTS, **ABLATION}
    seeds = [int(s) for s in args.seeds.split(",")]
    plan = []
    for i, seed in enumerate(seeds):
        for name in args.sets.split(","):
            plan += [(name, v, seed) for v in args.variants.split(",") if v]
            if name == args.ablation and i < args.ablation_seeds:
                plan += [(name, v, seed) for v in ABLATION]
    if not args.report:
        for name, variant, seed in plan:
            folder = os.path.join(out, "runs", f"{name}-{variant}-s{seed}")
            print(f"{name} {variant} seed {seed} ...", flush=True)
            result = one_run(folder, weights, sets[name], table[variant], seed, args)
            print(f"  AP {result['AP']:.3f} AP50 {result['AP50']:.3f} "
                  f"({result['train_seconds']:.0f} s)", flush=True)
            write_report(out, args)
    print(write_report(out, args))


def collected(out):
    """{(set, variant): [result, ...]} of every finished run in OUT/runs."""
    results = {}
    runs = os.path.join(out, "runs")
    for folder in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        path = os.path.join(runs, folder, "result.json")
        if os.path.isfile(path):
            data_set, variant = folder.rsplit("-s", 1)[0].split("-", 1)
            with open(path) as handle:
                results.setdefault((data_set, variant), []).append(json.load(handle))
    return results


def write_report(out, args):
    """OUT/results.md and results.json over every finished run; the markdown."""
    rows, summary = summarise(collected(out))
    text = (f"input {args.size}, epochs {args.freeze_epochs} frozen + "
            f"{args.epochs - args.freeze_epochs} all\n\n" + "\n".join(rows) + "\n")
    with open(os.path.join(out, "results.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(out, "results.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    return text


if __name__ == "__main__":
    main()
