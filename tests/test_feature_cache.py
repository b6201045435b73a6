"""yolo3.feature_cache: chunked .npy files read through memory maps, a disk check
before any work, and no trusted leftovers of a killed build."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from yolo3 import feature_cache
from yolo3.errors import UserError
from yolo3.feature_cache import cache_bytes, cached_rows, read_cache, write_cache
from tests.fixtures import ROOT

SPECS = {"f0": ((2, 3), "float16"), "boxes": ((4,), "float32")}


def chunks(count, size=3):
    """Rows i hold the value i everywhere."""
    for start in range(0, count, size):
        rows = np.arange(start, min(start + size, count))
        yield {"f0": np.broadcast_to(rows[:, None, None], (len(rows), 2, 3)),
               "boxes": np.broadcast_to(rows[:, None], (len(rows), 4))}


def test_written_in_chunks_and_read_back_by_rows(tmp_path):
    folder = tmp_path / "train-abc"
    write_cache(folder, 10, SPECS, chunks(10))
    assert sorted(os.listdir(folder)) == ["boxes.npy", "f0.npy", "manifest.json"]
    arrays = read_cache(folder, 10, SPECS)
    assert arrays["f0"].dtype == np.float16 and arrays["f0"].shape == (10, 2, 3)
    picked = arrays["f0"][[7, 2, 9]]
    assert picked.tolist() == [[[7] * 3] * 2, [[2] * 3] * 2, [[9] * 3] * 2]
    assert arrays["boxes"][[0, 4]].tolist() == [[0] * 4, [4] * 4]
    # plain .npy files: numpy reads them alone
    assert np.load(folder / "boxes.npy", allow_pickle=False)[5].tolist() == [5] * 4
    # another count or shape is not this cache
    assert read_cache(folder, 11, SPECS) is None
    assert read_cache(folder, 10, {**SPECS, "f0": ((2, 4), "float16")}) is None
    assert cache_bytes(10, SPECS) == 10 * 6 * 2 + 10 * 4 * 4


def test_too_little_disk_is_refused_before_any_work(tmp_path, monkeypatch):
    started = []

    def never():
        started.append(True)
        yield from chunks(10)

    free = feature_cache.shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(feature_cache.shutil, "disk_usage", lambda path: free)
    folder = tmp_path / "bottleneck" / "train-abc"
    with pytest.raises(UserError) as error:
        cached_rows(folder, 10_000_000, SPECS, never)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "bottleneck") in message
    assert f"needs {cache_bytes(10_000_000, SPECS)} bytes" in message
    assert started == [] and not (tmp_path / "bottleneck").exists()


KILLED = textwrap.dedent("""
    import os, sys
    import numpy as np
    from yolo3.feature_cache import write_cache
    def chunks():
        for start in range(0, 100, 10):
            if start == 50:
                os._exit(9)          # killed half-way
            yield {"f0": np.full((10, 2, 3), start, np.float16),
                   "boxes": np.zeros((10, 4), np.float32)}
    write_cache(sys.argv[1], 100, {"f0": ((2, 3), "float16"),
                                   "boxes": ((4,), "float32")}, chunks())
""")


def test_a_killed_build_is_never_trusted_and_is_cleaned_up(tmp_path, capsys):
    folder = tmp_path / "train-abc"
    done = subprocess.run([sys.executable, "-c", KILLED, str(folder)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60, check=False)
    assert done.returncode == 9
    leftovers = os.listdir(tmp_path)
    assert len(leftovers) == 1 and ".building-" in leftovers[0]   # not the cache
    assert read_cache(folder, 100, SPECS) is None
    arrays = cached_rows(folder, 100, SPECS, lambda: chunks(100), "train")
    assert "computing train features of 100 images" in capsys.readouterr().out
    assert os.listdir(tmp_path) == ["train-abc"]
    assert arrays["f0"][[99]].max() == 99
    cached_rows(folder, 100, SPECS, lambda: chunks(100), "train")
    assert "reusing cached train features" in capsys.readouterr().out


LARGE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from yolo3.feature_cache import cached_rows
    rows, row_shape = 2000, (64, 64, 10)     # 2000 x 80 KiB = 160 MiB of float16
    specs = {"f0": (row_shape, "float16"), "boxes": ((20, 5), "float32")}
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    def chunks():
        for start in range(0, rows, 16):
            n = min(16, rows - start)
            yield {"f0": np.full((n, *row_shape), start % 100, np.float16),
                   "boxes": np.zeros((n, 20, 5), np.float32)}
    before = peak()
    arrays = cached_rows(sys.argv[1], rows, specs, chunks)
    built = peak()
    order = np.random.default_rng(0).permutation(rows)
    total = 0.0
    for start in range(0, rows, 16):       # one epoch of shuffled batches
        total += float(arrays["f0"][np.sort(order[start:start + 16])].sum(dtype=np.float64))
    print("RSS", before, built, peak(), total)
""")


def test_a_cache_larger_than_memory_budget_is_built_and_read_with_flat_rss(tmp_path):
    """160 MiB of features through a process whose peak resident memory grows by
    less than 48 MiB (a few batches), building and reading a whole epoch."""
    done = subprocess.run([sys.executable, "-c", LARGE, str(tmp_path / "c")],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("RSS "))
    before, built, after, total = (float(v) for v in line.split()[1:])
    size = 2000 * 64 * 64 * 10 * 2
    assert os.path.getsize(tmp_path / "c" / "f0.npy") > size
    assert built - before < 48 * 2**20 and after - before < 48 * 2**20, line
    # every row read once: sum over rows of (row start % 100) * row size
    starts = np.arange(2000) // 16 * 16 % 100
    assert total == float(starts.sum()) * 64 * 64 * 10
