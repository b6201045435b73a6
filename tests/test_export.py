""".tflite (float32, float16, int8) and .onnx exports: written by yolo.py --export,
run by yolo.py / evaluate.py --model, compared with the Keras model they came from;
a model with a non-default input size, class count and mask; bad export options."""
import json

import keras
import numpy as np
import pytest
from tests.fixtures.detector import ANCHORS, CLASSES, fixed_body
from PIL import Image

import evaluate
import yolo
from yolo3.detector import YOLO
from yolo3.errors import UserError, run_cli
from yolo3.export import export_file, export_request
from yolo3.runtimes import load_runtime, tflite_custom_ops
from yolo3.training import build_body
from yolo3.weights import save_weights

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the TFLite converter needs TensorFlow")

EXPORTS = {"f32.tflite": [], "f16.tflite": ["--quantize", "float16"],
           "int8.tflite": ["--quantize", "int8"], "f32.onnx": []}


def noise(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def perturbed(body, seed=3, sigma=.05):
    """`body` with its weights moved by noise: varied scores and boxes."""
    rng = np.random.default_rng(seed)
    body.set_weights([w + rng.normal(0, sigma, w.shape).astype(w.dtype)
                      for w in body.get_weights()])
    return body


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 64 px tiny model (3 classes) as weights + anchors + classes files, its Keras
    detector, and the four files yolo.py --export writes from it."""
    root = tmp_path_factory.mktemp("export")
    model = root / "model.weights.h5"
    keras.utils.set_random_seed(0)     # the clone's initial weights: the same every run
    save_weights(perturbed(keras.models.clone_model(fixed_body())), model)
    (root / "anchors.txt").write_text(", ".join(f"{w:g},{h:g}" for w, h in ANCHORS) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    images = [noise(96 - 16 * i, 48 + 16 * i, i) for i in range(4)]
    for i, image in enumerate(images):
        image.save(root / f"{i}.png")
    # ground truth for evaluate.py; the same file calibrates the int8 ranges
    (root / "annotations.txt").write_text(
        "".join(f"{root / f'{i}.png'} 4,4,30,30,{i % 3}\n" for i in range(4)))
    flags = ["--model", str(model), "--anchors", str(root / "anchors.txt"),
             "--classes", str(root / "classes.txt"), "--input-size", "64", "--score", ".2"]
    for name, extra in EXPORTS.items():
        if "int8" in extra:
            extra = extra + ["--calibration", str(root / "annotations.txt")]
        assert yolo.main(flags + ["--export", str(root / name)] + extra) == 0
    keras_detector = YOLO(model_path=model, anchors_path=root / "anchors.txt",
                          classes_path=root / "classes.txt", model_image_size=64, score=.2)
    return {"root": root, "flags": flags, "images": images, "keras": keras_detector}


def raw_outputs(detector, images):
    batch = np.stack([detector.preprocess(i) for i in images])
    return [keras.ops.convert_to_numpy(o) for o in detector.body(batch, training=False)], batch


def assert_same_detections(got, want):
    """The same number of boxes per class, and each box of `got` has a box of its
    class in `want` with the same coordinates (to 1e-3 px + 1e-4 relative) and
    score (to 1e-4): float32 rounding through the network only, in any order."""
    assert sorted(got.classes.tolist()) == sorted(want.classes.tolist())
    for box, score, c in zip(*got):
        same = want.classes == c
        close = np.all(np.abs(want.boxes[same] - box) <= 1e-3 + 1e-4 * np.abs(box), axis=1)
        assert (close & (np.abs(want.scores[same] - score) <= 1e-4)).any()


@pytest.mark.parametrize("name, tolerance", [("f32.tflite", 1e-4), ("f32.onnx", 1e-4),
                                             ("f16.tflite", 1e-2)])
def test_float_files_match_the_keras_model(exported, name, tolerance):
    runtime = load_runtime(exported["root"] / name)
    expected, batch = raw_outputs(exported["keras"], exported["images"])
    got = runtime(batch)                    # a batch of 4: the batch size is free
    assert [g.shape for g in got] == [(4, 2, 2, 24), (4, 4, 4, 24)]
    for g, e in zip(got, expected):
        assert np.abs(g - e).max() <= tolerance
    assert runtime.metadata["quantize"] == ("float16" if "f16" in name else "none")


@pytest.mark.parametrize("name", ["f32.tflite", "f32.onnx"])
def test_float32_files_give_the_keras_detections(exported, name):
    detector = YOLO(model_path=exported["root"] / name, score=.2)
    assert detector.class_names == CLASSES and detector.model_image_size == (64, 64)
    np.testing.assert_array_equal(detector.anchors, ANCHORS)
    for got, want in zip(detector.detect(exported["images"]),
                         exported["keras"].detect(exported["images"])):
        assert len(want.scores) > 0
        assert_same_detections(got, want)


def test_int8_file_is_full_integer_and_close(exported):
    runtime = load_runtime(exported["root"] / "int8.tflite")
    assert runtime.input["dtype"] == np.int8
    assert {np.dtype(d["dtype"]) for d in runtime.outputs.values()} == {np.dtype(np.int8)}
    # the calibration images span [0, 1]: 256 int8 steps of 1/255 from -128
    scale, zero = runtime.input["quantization"]
    assert scale == pytest.approx(1 / 255, rel=1e-3) and zero == -128
    expected, batch = raw_outputs(exported["keras"], exported["images"])
    for g, e in zip(runtime(batch), expected):
        assert g.dtype == np.float32
        # a few output steps: each head's int8 range covers the calibration outputs
        assert np.abs(g - e).max() <= 0.05 * (e.max() - e.min())


@pytest.mark.parametrize("name", [n for n in EXPORTS if n.endswith(".tflite")])
def test_tflite_files_have_builtin_operators_only(exported, name):
    content = (exported["root"] / name).read_bytes()
    assert tflite_custom_ops(content) == []     # no Flex (select TF) ops


def test_yolo_and_evaluate_run_the_exported_files(exported, tmp_path):
    root, images = exported["root"], [str(exported["root"] / f"{i}.png") for i in range(4)]
    reference = tmp_path / "keras.jsonl"
    assert yolo.main(exported["flags"] + ["--image", *images, "--json", str(reference)]) == 0
    keras_metrics = tmp_path / "keras.json"
    assert evaluate.main(["--annotations", str(root / "annotations.txt"), "--no-progress",
                          "--json", str(keras_metrics)] + exported["flags"]) == 0
    want = json.loads(keras_metrics.read_text())
    for name in ("f32.tflite", "f32.onnx"):
        jsonl = tmp_path / f"{name}.jsonl"
        assert yolo.main(["--model", str(root / name), "--score", ".2", "--image", *images,
                          "--json", str(jsonl)]) == 0
        assert len(jsonl.read_text().splitlines()) == len(reference.read_text().splitlines())
        metrics = tmp_path / f"{name}.json"
        assert evaluate.main(["--annotations", str(root / "annotations.txt"), "--no-progress",
                              "--model", str(root / name), "--score", ".2",
                              "--json", str(metrics)]) == 0
        got = json.loads(metrics.read_text())
        assert got["mAP50"] == pytest.approx(want["mAP50"], abs=1e-6)
        assert got["coco"]["AP"] == pytest.approx(want["coco"]["AP"], abs=1e-6)


def test_non_default_size_classes_and_mask_travel_in_the_file(tmp_path):
    classes = ["c0", "c1", "c2", "c3", "c4"]
    anchors = ANCHORS * 1.5
    mask = [[0, 1, 2], [3, 4, 5]]
    body = perturbed(build_body(6, len(classes), (64, 96)), seed=5)
    detector = YOLO(body=body, class_names=classes, anchors=anchors, mask=mask,
                    model_image_size=(64, 96), score=.3)
    images = [noise(90, 50, 7), noise(40, 70, 8)]
    want = detector.detect(images)
    for name in ("odd.tflite", "odd.onnx"):
        export_file(detector, export_request(tmp_path / name))
        loaded = YOLO(model_path=tmp_path / name, score=.3)
        assert loaded.model_image_size == (64, 96) and loaded.class_names == classes
        assert loaded.mask == mask
        np.testing.assert_allclose(loaded.anchors, anchors)
        assert [o.shape for o in loaded.runtime(np.zeros((1, 64, 96, 3), np.float32))] == [
            (1, 2, 3, 30), (1, 4, 6, 30)]
        for got, expected in zip(loaded.detect(images), want):
            assert len(expected.scores) > 0
            assert_same_detections(got, expected)
        with pytest.raises(UserError, match="carries its anchors"):
            YOLO(model_path=tmp_path / name, classes_path="classes.txt")
        with pytest.raises(UserError, match="already an exported file"):
            export_file(loaded, export_request(tmp_path / "again.onnx"))


@pytest.mark.parametrize("extra, message", [
    (["--export", "{d}/m.pb"], "unknown export suffix '.pb'"),
    (["--export", "{d}/m.tflite", "--quantize", "int8"], "int8 needs --calibration"),
    (["--export", "{d}/m.tflite", "--quantize", "int8", "--calibration", "{d}/no.txt"],
     "no.txt: annotation file not found"),
    (["--export", "{d}/m.tflite", "--quantize", "int8", "--calibration", "{d}/empty.txt"],
     "empty.txt: no usable annotation lines"),
    (["--export", "{d}/m.tflite", "--quantize", "int4"], "--quantize must be one of"),
    (["--export", "{d}/m.onnx", "--quantize", "float16"], "is for .tflite files"),
    (["--export", "{d}/m.tflite", "--calibration", "{d}/empty.txt"], "only used with"),
    (["--export", "{d}/m.onnx", "--format", "tflite"], "the suffix .onnx says onnx"),
    (["--export", "{d}/m", "--format", "coreml"], "--format must be one of"),
    (["--image", "{d}/x.png", "--quantize", "int8"], "need --export"),
])
def test_bad_export_options_are_one_line_errors_and_write_nothing(exported, tmp_path, capsys,
                                                                   extra, message):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "empty.txt").write_text("\n# nothing\n")
    Image.new("RGB", (8, 8)).save(folder / "x.png")
    before = sorted(p.name for p in folder.iterdir())
    argv = exported["flags"] + [a.format(d=folder) for a in extra]
    assert run_cli(yolo.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_foreign_files_are_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    with pytest.raises(UserError, match="cannot load the .onnx file"):
        load_runtime(garbage)
    value = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 32, 32, 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 32, 32, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g",
                              [value], [out])
    onnx.save(helper.make_model(graph), tmp_path / "plain.onnx")
    with pytest.raises(UserError, match="no 'yolo3' metadata"):
        load_runtime(tmp_path / "plain.onnx")
    with pytest.raises(UserError, match="model file not found"):
        load_runtime(tmp_path / "missing.tflite")
