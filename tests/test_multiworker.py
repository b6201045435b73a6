"""--strategy multiworker for real: two worker processes on localhost (free
ports), TensorFlow (MultiWorkerMirroredStrategy, TF_CONFIG) and JAX
(keras.distribution.initialize + DataParallel, gloo CPU collectives). Each runs
tests/multiworker_run.py: 2 epochs at 32 px on 16 generated images of a
three-convolution body in tiny-YOLOv3's shape (the real loss, schedule and
callbacks), killed after epoch 1 and continued with --resume. Most of the time
is each process's start (imports, the cluster, tracing or compiling the step):
one shared run per backend serves every check."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.multiworker_speed import free_ports
from tests.fixtures import ROOT

RUN = ROOT / "tests" / "multiworker_run.py"
TIMEOUT = 240


def cluster_env(backend, index, ports, tmp):
    env = dict(os.environ, KERAS_BACKEND=backend, WORKER=str(index), TMPDIR=str(tmp),
               PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    addresses = [f"localhost:{p}" for p in ports]
    if backend == "tensorflow":
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses},
                                       "task": {"type": "worker", "index": index}})
    else:
        env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=",".join(addresses),
                   KERAS_DISTRIBUTION_NUM_PROCESSES=str(len(ports)),
                   KERAS_DISTRIBUTION_PROCESS_ID=str(index))
    return env


def launch(backend, data, log_dir, out, tmp, *args):
    """Both workers; [(return code, output)] once both ended. With --stop-after,
    both are killed (SIGKILL) once both have finished that epoch."""
    ports = free_ports(2)
    out.mkdir(parents=True, exist_ok=True)
    logs = [open(out / f"worker{i}.log", "w+") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(RUN), str(data), str(log_dir),
                               str(out), *args], cwd=ROOT,
                              env=cluster_env(backend, i, ports, tmp),
                              stdout=logs[i], stderr=subprocess.STDOUT)
             for i in range(2)]
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if "--stop-after" in args and all(
                    (out / f"worker{i}.npz.stopped").exists() for i in range(2)):
                for p in procs:
                    p.kill()
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    results = []
    for p, log in zip(procs, logs):
        log.seek(0)
        results.append((p.returncode, log.read()))
        log.close()
    return results


def seen(out, worker):
    with np.load(out / f"worker{worker}.npz", allow_pickle=False) as data:
        return data["seen"]


def weights(out, worker):
    with np.load(out / f"worker{worker}.npz", allow_pickle=False) as data:
        return [data[k] for k in sorted(data.files) if k.startswith("w")]


def expected_batches(data):
    """The global batches of one epoch on one process: the pixel sums of the
    letterboxed training images in YoloDataset's order (no augmentation, no
    shuffle), in groups of the batch size 4."""
    from yolo3.annotation_file import read_annotations
    from yolo3.augment import get_random_data
    from yolo3.trainer import split_lines
    lines = read_annotations(data / "annotations.txt", 3)
    train, _ = split_lines(lines, 0.25, 47)
    sums = [get_random_data(line, (32, 32), random=False)[0].sum() for line in train]
    return np.array(sums[:len(train) // 4 * 4]).reshape(-1, 4)


@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def killed_and_resumed(request, tmp_path_factory):
    backend = request.param
    if backend == "jax":
        pytest.importorskip("jax", reason="JAX (requirements-test.txt) is not installed")
    from yolo3.demo import make_dataset
    base = tmp_path_factory.mktemp(backend)
    data, log_dir, tmp = base / "data", base / "log", base / "tmp"
    tmp.mkdir()
    make_dataset(data, num_images=16, size=64, seed=1)
    first = launch(backend, data, log_dir, base / "first", tmp, "--stop-after", "1")
    assert [code for code, _ in first] == [-9, -9], first[0][1][-3000:] + first[1][1][-3000:]
    second = launch(backend, data, log_dir, base / "second", tmp, "--resume")
    assert [code for code, _ in second] == [0, 0], \
        second[0][1][-3000:] + second[1][1][-3000:]
    return base, data, log_dir, tmp, first, second


def test_workers_split_each_global_batch_and_end_with_identical_weights(
        killed_and_resumed):
    base, data, _, _, _, second = killed_and_resumed
    batches = expected_batches(data)            # (3 steps, 4 images)
    for run in ("first", "second"):             # epoch 1, then epoch 2 resumed
        shares = [seen(base / run, w).reshape(len(batches), 2) for w in (0, 1)]
        # at each step worker 0 trains on the first half of a global batch and
        # worker 1 on its second half; over the epoch every batch once
        steps = np.concatenate(shares, axis=1)
        steps = steps[np.argsort(steps[:, 0])]
        expected = batches[np.argsort(batches[:, 0])]
        np.testing.assert_allclose(steps, expected, rtol=1e-5)
    final = [weights(base / "second", w) for w in (0, 1)]
    assert len(final[0]) == len(final[1]) > 0
    for a, b in zip(*final):
        np.testing.assert_array_equal(a, b)
    assert all("continuing after epoch 1" in output for _, output in second)


def test_only_the_chief_writes_outputs_the_others_a_removed_temporary(
        killed_and_resumed):
    _, _, log_dir, tmp, _, second = killed_and_resumed
    names = set(os.listdir(log_dir))
    assert {"trained_weights_final.weights.h5", "training_log.csv", "loss.png",
            "train_state"} <= names
    assert any(n.startswith("ep002-") for n in names)
    rows = (log_dir / "training_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]   # epoch 1 kept on resume
    # worker 1 wrote its checkpoints into a temporary folder under TMPDIR, gone now
    assert str(tmp) in second[1][1] and str(log_dir) not in second[1][1].split(
        "Epoch 2:")[-1]
    assert os.listdir(tmp) == []
