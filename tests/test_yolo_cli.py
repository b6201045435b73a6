"""yolo.py and evaluate.py: generated images, a tiny model with hand-set weights
(detections known by hand), flags reaching the model, errors, video, export, and
the real yolov3-tiny weights on ../shared."""
import json

import numpy as np
import pytest
from PIL import Image

import evaluate
import yolo
from tests.fixtures.detector import SCORE, expected_boxes, write_model_files
from yolo3.errors import UserError, run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model, anchors, classes = write_model_files(root / "model")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (w, h) in {"a.png": (64, 64), "b.jpg": (128, 64), "c.png": (50, 90)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(images / name)
    return {"model": model, "anchors": anchors, "classes": classes, "images": images,
            "root": root}


def model_flags(files, **over):
    flags = {"--model": files["model"], "--anchors": files["anchors"],
             "--classes": files["classes"], "--input-size": "64", **over}
    return [str(v) for kv in flags.items() for v in kv]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_images_from_folder_and_glob_to_output_and_json(files, tmp_path):
    out, jsonl = tmp_path / "out", tmp_path / "d.jsonl"
    argv = model_flags(files) + ["--image", str(files["images"]),
                                 str(files["images"] / "b.*"), "--output", str(out),
                                 "--json", str(jsonl)]
    assert yolo.main(argv) == 0
    # the folder gives a, b, c; the glob b again (a unique output name)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg", "b_1.jpg", "c.png"]
    assert Image.open(out / "b.jpg").size == (128, 64)
    records = read_jsonl(jsonl)
    assert len(records) == 16
    first_b = [r for r in records if r["image"].endswith("b.jpg")][:4]
    got = sorted([r["x_min"], r["y_min"], r["x_max"], r["y_max"]] for r in first_b)
    np.testing.assert_allclose(got, expected_boxes(128, 64), atol=0.01)
    assert {(r["class"], r["class_id"]) for r in records} == {("b", 1)}
    assert records[0]["score"] == pytest.approx(SCORE, abs=1e-5)


def test_flags_reach_the_model(files, tmp_path):
    def count(**over):
        jsonl = tmp_path / "x.jsonl"
        argv = model_flags(files, **over) + ["--image", str(files["images"] / "a.png"),
                                             "--json", str(jsonl)]
        assert yolo.main(argv) == 0
        return read_jsonl(jsonl)

    assert len(count()) == 4
    assert count(**{"--score": "0.99995"}) == []        # above sigmoid(10)^2
    assert len(count(**{"--input-size": "96"})) == 9     # 3x3 cells
    # --mask 0,1,2/3,4,5: head 1 slot 0 is anchor 0 (10x14) instead of anchor 3 (20x24)
    box = count(**{"--mask": "0,1,2/3,4,5"})[0]
    assert (box["x_max"] - box["x_min"], box["y_max"] - box["y_min"]) == pytest.approx((10, 14))
    anchors = tmp_path / "anchors.txt"
    anchors.write_text("10,14, 23,27, 37,58, 30,30, 135,169, 344,319")
    box = count(**{"--anchors": anchors})[0]
    assert (box["x_max"] - box["x_min"], box["y_max"] - box["y_min"]) == pytest.approx((30, 30))


def test_wrong_classes_gives_the_mismatch_error(files, tmp_path, capsys):
    classes = tmp_path / "voc.txt"
    classes.write_text("\n".join(f"c{i}" for i in range(20)))
    argv = model_flags(files, **{"--classes": classes}) + ["--image", str(files["images"])]
    assert run_cli(yolo.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "2 heads of 24 channels" in err and "20 classes" in err and "6 anchors" in err


@pytest.mark.parametrize("argv, message", [
    ([], "nothing to do"),
    (["--image", "/nonexistent/*.jpg"], "no image file found"),
    (["--export", "e", "--score", "2"], "--score and --iou must be in [0, 1]"),
    (["--video-output", "o.mp4", "--export", "e"], "--video-output needs --video"),
])
def test_user_mistakes(files, capsys, argv, message):
    assert run_cli(yolo.main, model_flags(files) + argv) == 2
    assert message in capsys.readouterr().err


def test_help_lists_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        yolo.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "model_data/yolo.h5" in text and "0.45" in text and "--video-output" in text


def test_video_in_and_out(files, tmp_path):
    cv2 = pytest.importorskip("cv2")
    source = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for i in range(4):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out.avi"
    argv = model_flags(files) + ["--video", str(source), "--video-output", str(out)]
    assert yolo.main(argv) == 0
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 4 and frames[0].shape == (64, 96, 3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class _InterruptedAfter:
    """A detector that is stopped (Ctrl-C) while drawing frame `n`."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def detect_image(self, image):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return image


def test_video_output_interrupted_or_unwritable_leaves_nothing(tmp_path):
    cv2 = pytest.importorskip("cv2")
    source = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for i in range(5):
        writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out.mp4"
    detector = _InterruptedAfter(3)
    with pytest.raises(KeyboardInterrupt):
        yolo.detect_video(detector, str(source), str(out))
    assert detector.calls == 3
    with pytest.raises(UserError, match="cannot write this video format"):
        yolo.detect_video(detector, str(source), str(tmp_path / "out.unknown-format"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi"]


def test_export_flag_writes_saved_model_and_keras(files, tmp_path, capsys):
    assert yolo.main(model_flags(files) + ["--export", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "saved_model" / "saved_model.pb").exists()
    assert (tmp_path / "e" / "body.keras").exists()
    from yolo3.export import load_saved_model
    serve_uint8, _ = load_saved_model(tmp_path / "e" / "saved_model")
    image = np.asarray(Image.open(files["images"] / "b.jpg"))
    out = serve_uint8(image[None])
    n = int(out["valid_detections"][0])
    np.testing.assert_allclose(sorted(out["boxes"][0, :n].tolist()), expected_boxes(128, 64),
                               atol=0.05)


def test_evaluate_cli_table_json_plot(files, tmp_path, capsys):
    lines = []
    for name, (w, h) in {"a.png": (64, 64), "b.jpg": (128, 64)}.items():
        boxes = expected_boxes(w, h)
        # ground truth: three of the four boxes of class 1 (class b), one of class 0
        gt = [(*b, 1) for b in boxes[:3]] + [(*boxes[3], 0)]
        lines.append(f"{files['images'] / name} " + " ".join(
            ",".join(f"{v:.2f}" for v in row) for row in gt))
    annotations = tmp_path / "gt.txt"
    annotations.write_text("\n".join(lines) + "\n")
    argv = model_flags(files) + ["--annotations", str(annotations), "--json",
                                 str(tmp_path / "m.json"), "--plot", str(tmp_path / "pr.png")]
    assert evaluate.main(argv) == 0
    text = capsys.readouterr().out
    report = json.loads((tmp_path / "m.json").read_text())
    # class b: 8 detections, each on its own box: 6 on class-b boxes, 2 on the
    # class-a boxes (false positives); class a is never detected -> AP 0
    assert report["per_class"]["b"]["tp"] == 6 and report["per_class"]["a"]["AP50"] == 0
    assert report["classes_without_ground_truth"] == ["c"]
    assert "mAP50 (VOC all-point, IoU 0.5)" in text and (tmp_path / "pr.png").exists()


def test_real_tiny_weights_on_coco128(shared, tmp_path, capsys):
    """Converted darknet yolov3-tiny on 128 COCO images: an independent pipeline
    (OpenCV's darknet reader + pycocotools, mask 3,4,5/1,2,3) measured COCO AP50
    0.422 and AP 0.209 (../shared/pretrained/README.md)."""
    from yolo3 import darknet
    from yolo3.training import build_body
    from yolo3.weights import save_weights

    folder = shared / "pretrained" / "yolov3-tiny"
    data = shared / "data" / "coco128-train"
    network = darknet.load_cfg(folder / "yolov3-tiny.cfg")
    body = build_body(6, 80, (416, 416))
    darknet.set_weights(body, darknet.read_weights(folder / "yolov3-tiny.weights", network))
    save_weights(body, tmp_path / "tiny.weights.h5")
    argv = ["--annotations", str(data / "train.txt"), "--model", str(tmp_path / "tiny.weights.h5"),
            "--anchors", "model_data/tiny_yolo_anchors.txt", "--classes",
            str(data / "classes.txt"), "--json", str(tmp_path / "m.json"), "--no-progress"]
    assert evaluate.main(argv) == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["coco"]["AP50"] == pytest.approx(0.422, abs=0.01)
    assert report["mAP"] == pytest.approx(0.209, abs=0.01)
    assert 0.39 < report["mAP50"] < 0.45


def test_the_original_yolo_attributes_keep_working(files, tmp_path):
    """What scripts of the original's YOLO class used: its defaults, the file
    attributes, class_names, anchors, colors, yolo_model (settable), score
    between calls, generate(), detect_image and close_session."""
    from tests.fixtures.detector import fixed_body
    from yolo3.detector import YOLO

    assert YOLO.get_defaults("model_image_size") == (416, 416)
    assert YOLO.get_defaults("gpu_num") == 1
    assert YOLO.get_defaults("nope") == "Unrecognized attribute name 'nope'"
    assert YOLO._defaults["score"] == 0.3 and YOLO._defaults["iou"] == 0.45
    det = YOLO(model_path=str(files["model"]), anchors_path=str(files["anchors"]),
               classes_path=str(files["classes"]), model_image_size=(64, 64))
    assert (det.model_path, det.score, det.iou, det.gpu_num) == (str(files["model"]), 0.3,
                                                                 0.45, 1)
    assert det.class_names == ["a", "b", "c"] and det.anchors.shape == (6, 2)
    assert len(det.colors) == 3 and det.yolo_model is det.body
    image = Image.open(files["images"] / "a.png")

    def count():
        drawn, found = det.detect_image(image, return_detections=True)
        assert drawn.size == image.size
        return len(found.scores)

    assert count() == 4                          # one box per cell of the 2x2 grid
    det.score = 0.99995                          # above sigmoid(10)^2
    assert count() == 0
    det.score = 0.3
    silent = fixed_body()
    kernel, bias = silent.get_layer("conv_015").get_weights()
    bias[4] = -10.0                              # objectness of the only box slot
    silent.get_layer("conv_015").set_weights([kernel, bias])
    det.yolo_model = silent
    assert det.body is silent and count() == 0
    det.generate()                               # the model from model_path again
    assert count() == 4
    assert det.close_session() is None
    with pytest.raises(UserError, match="int or an"):
        YOLO(body=silent, class_names=["a", "b", "c"], anchors=det.anchors,
             model_image_size="64x64")
    with pytest.warns(UserWarning, match="gpu_num=2"):
        YOLO(body=silent, class_names=["a", "b", "c"], anchors=det.anchors,
             model_image_size=64, gpu_num=2)
