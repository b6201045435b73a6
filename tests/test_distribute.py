"""--strategy mirrored on two logical CPU devices (in a subprocess: the logical
devices must be set before TensorFlow starts): the same loss and the same update
as one device for the same global batch."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from yolo3.distribute import check_batch, make_distribution
from yolo3.errors import UserError
from tests.fixtures import ROOT


SCRIPT = textwrap.dedent("""
    import json, os, sys
    import keras
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        DEVICES = ["/cpu:0", "/cpu:1"]
    else:   # JAX: two host devices from XLA_FLAGS
        DEVICES = None
    import numpy as np
    from yolo3.demo import DEMO_ANCHORS
    from yolo3.distribute import make_distribution
    from yolo3.model import preprocess_true_boxes
    from yolo3.training import compile_model, create_tiny_model

    rng = np.random.default_rng(0)
    images = rng.random((4, 64, 64, 3), np.float32)
    boxes = np.zeros((4, 20, 5), np.float32)
    boxes[:, 0] = [[4, 6, 30, 40, 0], [20, 20, 60, 50, 1], [0, 0, 24, 24, 1],
                   [30, 10, 62, 34, 0]]
    y_true = preprocess_true_boxes(boxes, (64, 64), DEMO_ANCHORS, 2)
    inputs, targets = [images, *y_true], np.zeros(4, np.float32)
    initial = None
    results = {}
    for name in ("none", "mirrored"):
        dist = make_distribution(name, DEVICES if name != "none" else None)
        with dist.scope():
            keras.utils.set_random_seed(1)
            # freeze_body=2: BatchNorm frozen (inference mode), so per-replica batch
            # statistics cannot make the two runs differ.
            model = create_tiny_model((64, 64), DEMO_ANCHORS, 2, load_pretrained=False,
                                      freeze_body=2)
            if initial is None:
                initial = model.get_weights()
            model.set_weights(initial)
            compile_model(model, 1e-2, jit_compile=keras.backend.backend() == "jax")
        before = model.evaluate(inputs, targets, batch_size=4, verbose=0)[0]
        step = model.fit(inputs, targets, batch_size=4, epochs=1, shuffle=False,
                         verbose=0).history["loss"][0]
        after = model.evaluate(inputs, targets, batch_size=4, verbose=0)[0]
        kernel = model.get_layer("conv_022").get_weights()[0]   # initial[-2]
        results[name] = {"replicas": dist.replicas, "before": float(before),
                         "step": float(step), "after": float(after),
                         "moved": float(np.abs(kernel - initial[-2]).max())}
        if name == "none":
            one_device_kernel = kernel
        else:
            results[name]["difference"] = float(np.abs(kernel - one_device_kernel).max())
    print("RESULT " + json.dumps(results))
""")


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_cpus_give_the_same_loss_and_update_as_one_device(backend):
    """TensorFlow: MirroredStrategy; JAX: keras.distribution.DataParallel."""
    if backend == "jax":
        pytest.importorskip("jax", reason="JAX (requirements-test.txt) is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    assert done.returncode == 0 and line, done.stderr[-3000:]
    results = json.loads(line[0][7:])
    one, two = results["none"], results["mirrored"]
    assert one["replicas"] == 1 and two["replicas"] == 2
    assert two["before"] == pytest.approx(one["before"], rel=1e-4)
    assert two["step"] == pytest.approx(one["step"], rel=1e-4)
    assert one["after"] < one["before"]          # the step trained
    assert two["after"] == pytest.approx(one["after"], rel=1e-3)
    # the output kernel moved by about lr (Adam) and the same way on both
    assert one["moved"] > 1e-3 and two["difference"] < 1e-2 * one["moved"]


def test_unknown_strategy_and_uneven_batch_are_user_errors():
    with pytest.raises(UserError, match="choose one of"):
        make_distribution("ring")
    none = make_distribution("none")
    assert none.replicas == 1 and none.describe() == "one device"
    check_batch(3, none)

    class Two:
        replicas = 2
    with pytest.raises(UserError, match="multiple of 2"):
        check_batch(3, Two())
