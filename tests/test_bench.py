"""Smoke tests for bench/: the timing helper, FLOP counts against darknet's published
numbers, the GPU script on the CPU (--smoke, JAX backend) and cheap run.py parts."""
import json
import os
import subprocess
import sys

import pytest

from tests.fixtures import ROOT
from tests.fixtures.darknet import SMALL_CFG, SMALL_CFG_FLOATS


# ---- timing -----------------------------------------------------------------------

def fake_clock(durations):
    """A clock whose consecutive (start, stop) readings differ by the given durations."""
    ticks, now = [], 0.0
    for d in durations:
        ticks += [now, now + d]
        now += d + 1.0
    it = iter(ticks)
    return lambda: next(it)


def test_measure_warmup_median_min_max():
    from bench.timing import measure
    calls = []
    t = measure(lambda: calls.append(1), repeats=4, warmup=2,
                clock=fake_clock([3.0, 1.0, 2.0, 10.0]))
    assert len(calls) == 6                       # 2 untimed warm-up calls + 4 timed
    assert (t.n, t.min, t.max) == (4, 1.0, 10.0)
    assert t.median == pytest.approx(2.5)        # median of 1, 2, 3, 10
    med, best, worst = t.rate(5.0)               # 5 units per call
    assert (med, best, worst) == pytest.approx((2.0, 5.0, 0.5))
    d = t.as_dict(5.0, "images_per_s")
    assert d["images_per_s"] == pytest.approx(2.0) and d["images_per_s_max"] == pytest.approx(5.0)


def test_measure_stops_at_max_seconds_and_rejects_bad_counts():
    from bench.timing import measure
    t = measure(lambda: None, repeats=10, warmup=0, max_seconds=2.5,
                clock=fake_clock([1.0, 1.0, 1.0, 1.0]))
    assert t.n == 3                              # 1 + 1 + 1 >= 2.5 after the third
    with pytest.raises(ValueError):
        measure(lambda: None, repeats=0)


def test_measure_paired_alternates_ref_first():
    from bench.timing import measure_paired
    order = []
    # warm-up (ref, fn), then pairs: ref 2 s / fn 6 s, ref 1 s / fn 5 s, ref 4 s / fn 4 s
    t, tr, ratios = measure_paired(lambda: order.append("f"), lambda: order.append("r"),
                                   repeats=3, warmup=1,
                                   clock=fake_clock([2.0, 6.0, 1.0, 5.0, 4.0, 4.0]))
    assert order == ["r", "f"] * 4
    assert (t.median, t.min, t.max) == (5.0, 4.0, 6.0)
    assert (tr.median, tr.min, tr.max) == (2.0, 1.0, 4.0)
    assert ratios == pytest.approx([3.0, 5.0, 1.0])


# ---- FLOPs ------------------------------------------------------------------------

def test_count_flops_small_model_by_hand():
    import keras
    from bench.flops import count_flops
    i = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(i)
    b = keras.layers.Conv2D(5, 1, name="b")(a)
    c = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c")(a)
    m = keras.Model(i, [b, c])
    fa, fb, fc = 2 * 9 * 3 * 4 * 64, 2 * 1 * 4 * 5 * 64, 2 * 9 * 4 * 6 * 16
    r = count_flops(m)
    assert r["per_layer"] == {"a": fa, "b": fb, "c": fc}
    # a: no trainable layer above it -> forward + weight grad only; b, c: 3x
    assert r["train"] == 2 * fa + 3 * fb + 3 * fc
    m.get_layer("a").trainable = False
    m.get_layer("b").trainable = False
    # only c trains: forward + c's weight gradient; nothing trainable above any conv
    assert count_flops(m)["train"] == fa + fb + fc + fc


@pytest.mark.parametrize("kind, convs, darknet", [("yolov3", 75, 65.86), ("tiny", 13, 5.56)])
def test_model_flops_match_darknet(kind, convs, darknet):
    from bench.flops import DARKNET_BFLOPS_416, model_flops
    assert DARKNET_BFLOPS_416[kind] == darknet   # pjreddie.com/darknet/yolo, 416, 80 classes
    r = model_flops(kind, 416, 80)
    assert r["convs"] == convs
    assert r["forward"] / 1e9 == pytest.approx(darknet, rel=0.01)
    # first conv has no trainable layer above it: 3x forward less its input gradient
    first = r["per_layer"]["conv_000"]
    assert r["train"] == 3 * r["forward"] - first


def test_stage1_train_flops_add_only_output_convs():
    import keras
    from bench.flops import count_flops
    from yolo3.model import yolo_body
    body = yolo_body(keras.Input((416, 416, 3)), 3, 80)
    for layer in body.layers:
        layer.trainable = layer.name in ("conv_081", "conv_093", "conv_105")
    r = count_flops(body)
    out = 2 * 255 * (13 * 13 * 1024 + 26 * 26 * 512 + 52 * 52 * 256)  # 1x1 output convs
    assert r["train"] - r["forward"] == out
    assert r["trainable_convs"] == 3


# ---- training step (TensorFlow, tiny sizes) -----------------------------------------

def test_train_step_tiny_stage1_flops_and_rate():
    from bench.train_step import bench_train_step
    r = bench_train_step("tiny", 64, 2, stage=1, xla=False, repeats=1, matmul_gflops=100.0,
                         paired=True)
    # darknet's 5.564961792 GFLOP at 416 scales with the area (all convs are 'same');
    # stage 1 adds the weight gradients of the two 1x1 output convs (512->255 at 2x2,
    # 256->255 at 4x4)
    forward = 5.564961792e9 * (64 / 416) ** 2
    outputs = 2 * 255 * (2 * 2 * 512 + 4 * 4 * 256)
    assert r["step_gflop"] * 1e9 == pytest.approx(2 * (forward + outputs), rel=1e-9)
    assert r["images_per_s"] > 0 and r["n"] == 1
    assert r["gflops"] == pytest.approx(r["step_gflop"] / r["median_s"])
    assert r["ratio_to_matmul"] == pytest.approx(r["gflops"] / 100.0)
    # one pair: the ratio is the step's GFLOP/s over the paired matmuls' GFLOP/s
    assert r["ratio_paired"] == pytest.approx(r["gflops"] / r["matmul_paired_gflops"])


def test_bottleneck_bench_tiny():
    from bench.train_step import bench_bottleneck
    r = bench_bottleneck("tiny", 64, 2, xla=False, repeats=1, warmup=1, steps=3)
    plain, cached = r["plain_stage1"], r["bottleneck_stage1"]
    assert r["xla_plain"] is False and r["xla_bottleneck"] is False
    # steady-state steps: 2 epochs of 3 steps, the first step of each not timed
    assert plain["n"] == cached["n"] == 4
    assert r["speedup_per_epoch"] == pytest.approx(plain["median_s"] / cached["median_s"])
    assert r["speedup_compute"] == pytest.approx(
        r["plain_stage1_in_memory"]["median_s"] / cached["median_s"])
    feats = r["feature_extraction"]["median_s"]
    assert r["speedup_first_epoch"] == pytest.approx(
        plain["median_s"] / (cached["median_s"] + feats))


# ---- run.py -----------------------------------------------------------------------

def test_goals_from_results_by_hand():
    from bench.run import goals
    res = {"train": [
        {"kind": "tiny", "stage": 2, "xla": True, "images_per_s": 3.0},
        {"kind": "tiny", "stage": 2, "xla": False, "images_per_s": 4.0},
        {"kind": "yolov3", "stage": 2, "xla": True, "images_per_s": 0.8, "ratio_to_matmul": 0.42}],
        "pipeline": {"result": {"dataset_batch8": [{"workers": 1, "images_per_s": 30.0},
                                                   {"workers": 2, "images_per_s": 50.0}]}},
        "bottleneck": [{"kind": "tiny", "speedup_per_epoch": 9.5, "speedup_compute": 8.0},
                       {"kind": "yolov3", "speedup_per_epoch": 20.0, "speedup_compute": 18.0}]}
    g = goals(res)
    assert g["yolov3_stage2_xla_ratio_ge_0.5"] == {"value": 0.42, "met": False, "paired": None}
    assert g["pipeline_2_workers_gt_tiny_stage2"] == {"value": 12.5, "met": True}  # 50 / 4
    assert g["bottleneck_tiny_speedup_ge_10"] == {"value": 9.5, "met": False, "in_memory": 8.0}
    assert g["bottleneck_yolov3_speedup_ge_10"] == {"value": 20.0, "met": True,
                                                    "in_memory": 18.0}
    assert goals({}) == {}


def test_run_quick_matmul_json(tmp_path, capsys):
    from bench.run import main
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["--quick", "--only", "matmul", "--json", str(out), "--markdown", str(md)]) == 0
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| benchmark |") and lines[2].startswith("| matmul float32 |")
    r = json.loads(out.read_text())
    assert r["quick"] and r["machine"]["cores"] == os.cpu_count()
    m = r["matmul"]
    assert r["matmul_gflops"] == m["gflops"] > 0
    assert m["gflops"] == pytest.approx(2 * m["size"] ** 3 / 1e9 / m["median_s"])
    assert "matmul float32" in capsys.readouterr().out


def test_run_rejects_unknown_section(capsys):
    from bench.run import main
    from yolo3.errors import run_cli
    assert run_cli(main, ["--only", "matmul,nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'nope'" in err and err.count("\n") == 1


def test_run_helper_absent_is_skipped_with_note(monkeypatch):
    import bench.run as run
    monkeypatch.setitem(run.HELPERS, "convert", ("bench.no_such_bench", [], []))
    data = run.run_helper("convert", quick=False)
    assert "not available" in data["skipped"]
    assert run.summarise("convert", data, {})[0][1] == "skipped"


# ---- convert benchmark's input ----------------------------------------------------

def test_convert_bench_writes_a_weights_file_the_size_of_the_cfg(tmp_path):
    from bench.bench_convert import random_weights
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL_CFG)
    random_weights(tmp_path / "small.weights", str(cfg))
    # the 20-byte header (3 int32 and an int64), then the cfg's floats
    assert (tmp_path / "small.weights").stat().st_size == 20 + 4 * SMALL_CFG_FLOATS


# ---- the comparison with the original (bench/vs_original.py) ---------------------

class FakeWorker:
    """Answers build / time like a vs_original worker, logging the calls."""

    def __init__(self, name, step_s, calls):
        self.name, self.step_s, self.calls = name, step_s, calls

    def ask(self, cmd, **kw):
        self.calls.append((self.name, cmd))
        return {"build_s": 1.0} if cmd == "build" else {"samples": [self.step_s.pop(0)] * 3}


def test_vs_original_alternates_and_takes_ratios_by_hand(tmp_path):
    from bench.vs_original import compare_row, table_rows
    calls = []
    workers = {"original": FakeWorker("original", [1.0, 2.0], calls),
               "project": FakeWorker("project", [0.5, 4.0], calls)}
    r = compare_row(workers, ("tiny", 64, 2, 2), rounds=2, steps=3, classes=3,
                    folder=str(tmp_path))
    assert calls == [("original", "build"), ("project", "build"), ("original", "time"),
                     ("project", "time"), ("original", "time"), ("project", "time")]
    # batch 2: original 2.0 then 1.0 img/s, project 4.0 then 0.5 img/s
    assert r["original"]["values"] == [2.0, 1.0] and r["project"]["values"] == [4.0, 0.5]
    assert r["ratio_per_round"]["values"] == [2.0, 0.5]
    assert r["ratio_of_means"] == pytest.approx(2.25 / 1.5)
    row = table_rows([r])[0]
    assert row[0] == "vs original tiny-64 stage 2 b2" and row[2] == "1.50x"
    assert row[3] == "0.50-2.00"


def test_run_rejects_vs_original_without_checkout(tmp_path, capsys):
    from bench.run import main
    from yolo3.errors import run_cli
    assert run_cli(main, ["--only", "flops", "--vs-original", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --vs-original ") and err.count("\n") == 1


# ---- the GPU script on this CPU ---------------------------------------------------

def test_gpu_jax_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(ROOT))
    # one config (tiny-64 stage 1, bf16) keeps the JIT compile short; plus the pipeline
    p = subprocess.run([sys.executable, "-m", "bench.gpu_jax", "--smoke",
                        "--only", "1", "--json", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["device"].startswith("cpu") and r["precision"] == "mixed_bfloat16"
    (t,) = r["train"]
    assert (t["kind"], t["size"], t["batch"], t["stage"]) == ("tiny", 64, 2, 1)
    assert t["images_per_s"] > 0 and t["loss"] == t["loss"]  # finite, not NaN
    assert t["mfu"] == pytest.approx(t["tflops"] / 989.0)
    assert r["pipeline"]["workers"] == 2 and r["pipeline"]["images_per_s"] > 0


# ---- the recipe protocol's table ----------------------------------------------------

def test_recipes_report_means_and_sample_sd_over_seeds(tmp_path):
    from bench.recipes import collected, summarise
    runs = {"raccoon-modern-s1": 0.20, "raccoon-modern-s2": 0.30, "raccoon-modern-s3": 0.40,
            "bccd-modern-no-mosaic-s1": 0.25}
    for folder, ap in runs.items():
        (tmp_path / "runs" / folder).mkdir(parents=True)
        (tmp_path / "runs" / folder / "result.json").write_text(json.dumps(
            {"AP": ap, "AP50": 2 * ap, "AP75": ap / 2, "train_seconds": 100.0}))
    (tmp_path / "runs" / "raccoon-faithful-s1").mkdir()          # unfinished: no result
    results = collected(str(tmp_path))
    assert sorted(results) == [("bccd", "modern-no-mosaic"), ("raccoon", "modern")]
    rows, summary = summarise(results)
    # AP in points: mean of 20, 30, 40 = 30; sample SD = sqrt((100 + 0 + 100) / 2) = 10
    assert summary["raccoon/modern"]["AP"] == pytest.approx({"mean": 30.0, "sd": 10.0})
    assert summary["bccd/modern-no-mosaic"]["seeds"] == 1
    assert "| raccoon | modern | 3 | 30.0 ± 10.0 | 60.0 ± 20.0 | 15.0 ± 5.0 |" in rows[-1]
