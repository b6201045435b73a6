"""The YOLO detector: hand-computed detections, batching, drawing, loading and the
model/anchors/classes check, SavedModel export, the mAP callback."""
import csv

import keras
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.detector import (ANCHORS, CLASSES, SCORE, expected_boxes, fixed_body,
                             sorted_boxes, write_model_files)
from yolo3.detector import YOLO
from yolo3.errors import UserError


def noise(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


@pytest.fixture(scope="module")
def yolo():
    return YOLO(body=fixed_body(), class_names=CLASSES, anchors=ANCHORS, model_image_size=64)


def test_detections_match_hand_computed_boxes(yolo):
    sizes = [(64, 64), (128, 64), (50, 90)]
    results = yolo.detect([noise(w, h, i) for i, (w, h) in enumerate(sizes)], batch_size=3)
    for (w, h), det in zip(sizes, results):
        np.testing.assert_allclose(sorted_boxes(det), expected_boxes(w, h), atol=1e-3)
        np.testing.assert_allclose(det.scores, SCORE, rtol=1e-5)
        assert det.classes.tolist() == [1] * 4
        assert det.boxes.dtype == np.float32 and det.classes.dtype == np.int32
    # 128x64 by hand: scale .5, 16 px of padding top and bottom; the top row of
    # boxes is centred on y = 0 and clipped: [32 -+ 20, 0 -+ 24] -> [12, 0, 52, 24]
    np.testing.assert_allclose(sorted_boxes(results[1])[0], [12, 0, 52, 24], atol=1e-3)


def test_batches_give_the_same_detections_and_compile_once():
    body = keras.models.clone_model(fixed_body())
    body.set_weights([w + np.random.default_rng(1).normal(0, .05, w.shape).astype(w.dtype)
                      for w in fixed_body().get_weights()])
    det = YOLO(body=body, class_names=CLASSES, anchors=ANCHORS, model_image_size=64, score=.05)
    images = [noise(40 + 17 * i, 64 + 9 * i, i) for i in range(5)]
    together = det.detect(images, batch_size=4)       # batches of 4 and 1
    for image, expected in zip(images, together):
        alone = det.detect([image], batch_size=1)[0]
        np.testing.assert_allclose(alone.boxes, expected.boxes, atol=1e-3)
        np.testing.assert_allclose(alone.scores, expected.scores, atol=1e-5)
    if keras.backend.backend() == "tensorflow":
        assert det._run.compiled.experimental_get_tracing_count() == 1


def test_detect_image_draws_boxes_and_labels(yolo):
    image = Image.new("RGB", (128, 64), (255, 255, 255))
    drawn, det = yolo.detect_image(image, return_detections=True)
    assert drawn.size == image.size and len(det.scores) == 4
    pixels = np.asarray(drawn)
    color = yolo.colors[1]
    # right edge of the box [76, 40, 116, 64] (x = 116) in the class colour
    assert tuple(pixels[50, 116]) == color
    # a label box filled with the colour sits above the bottom-row boxes
    assert (pixels[20:40, 76:110] == color).all(axis=-1).sum() > 50
    assert np.asarray(image).min() == 255       # the input is not modified
    assert len(set(yolo.colors)) == len(CLASSES)


def test_loads_weight_files_and_keras_bodies(tmp_path, yolo):
    from yolo3.export import export_keras
    model, anchors, classes = write_model_files(tmp_path)
    loaded = YOLO(model_path=model, anchors_path=anchors, classes_path=classes,
                  model_image_size=64)
    assert (loaded.score, loaded.iou, loaded.max_boxes) == (0.3, 0.45, 20)
    np.testing.assert_allclose(sorted_boxes(loaded.detect([noise(64, 64)])[0]),
                               expected_boxes(64, 64), atol=1e-3)
    keras_file = export_keras(yolo, tmp_path / "body.keras")
    from_keras = YOLO(model_path=keras_file, anchors_path=anchors, classes_path=classes,
                      model_image_size=64)
    np.testing.assert_allclose(sorted_boxes(from_keras.detect([noise(90, 60)])[0]),
                               expected_boxes(90, 60), atol=1e-3)
    # a body saved at 64 runs at 96 too (same layers by name): 3x3 cells
    bigger = YOLO(model_path=keras_file, anchors_path=anchors, classes_path=classes,
                  model_image_size=96)
    assert len(bigger.detect([noise(96, 96)])[0].scores) == 9


def test_model_anchors_classes_mismatch_names_the_numbers(tmp_path):
    model, anchors, classes = write_model_files(tmp_path)
    four = tmp_path / "four.txt"
    four.write_text("a\nb\nc\nd\n")
    with pytest.raises(UserError) as info:
        YOLO(model_path=model, anchors_path=anchors, classes_path=four, model_image_size=64)
    message = str(info.value)
    assert "2 heads of 24 channels" in message          # 3 x (3 + 5) in the file
    assert "6 anchors" in message and "4 classes" in message and "27 channels" in message
    nine = tmp_path / "nine.txt"
    nine.write_text("10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326\n")
    with pytest.raises(UserError, match="9 anchors .* 3 heads"):
        YOLO(model_path=model, anchors_path=nine, classes_path=classes, model_image_size=64)
    with pytest.raises(UserError, match="not found"):
        YOLO(model_path=tmp_path / "nope.h5", anchors_path=anchors, classes_path=classes)
    with pytest.raises(UserError, match="multiple of 32"):
        YOLO(model_path=model, anchors_path=anchors, classes_path=classes, model_image_size=65)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel needs TF")
def test_saved_model_matches_python_path(tmp_path):
    from yolo3.export import export, load_saved_model
    body = keras.models.clone_model(fixed_body())
    rng = np.random.default_rng(3)
    body.set_weights([w + rng.normal(0, .05, w.shape).astype(w.dtype)
                      for w in fixed_body().get_weights()])
    det = YOLO(body=body, class_names=CLASSES, anchors=ANCHORS, model_image_size=64, score=.2)
    saved, keras_path = export(det, tmp_path / "exported")
    serve_uint8, serve_float = load_saved_model(saved)
    images = np.stack([np.asarray(noise(96, 48, s)) for s in (4, 5)])
    expected = det.detect([Image.fromarray(i) for i in images])
    for out in (serve_uint8(images), serve_float(images.astype(np.float32) / 255)):
        assert out["boxes"].shape[1:] == (100, 4)
        for b, want in enumerate(expected):
            n = int(out["valid_detections"][b])
            assert n == len(want.scores) > 0
            order = np.argsort(-want.scores, kind="stable")
            # the graph resizes with TF's bicubic, Python with Pillow's: tiny drift
            np.testing.assert_allclose(out["scores"][b, :n], want.scores[order], atol=2e-3)
            np.testing.assert_allclose(out["boxes"][b, :n], want.boxes[order], atol=0.5)
            assert out["classes"][b, :n].tolist() == want.classes[order].tolist()
            assert not out["boxes"][b, n:].any()
    assert keras_path.endswith("body.keras")


def test_map_callback_logs_val_map50(tmp_path):
    from yolo3.evaluation import MapEvaluation
    folder = tmp_path / "val"
    folder.mkdir()
    lines = []
    for i, (w, h) in enumerate([(64, 64), (128, 64)]):
        path = folder / f"{i}.png"
        noise(w, h, i).save(path)
        boxes = " ".join(",".join(f"{v:g}" for v in (*b, 1)) for b in expected_boxes(w, h))
        lines.append(f"{path} {boxes}")
    body = fixed_body()
    callback = MapEvaluation(lines, ANCHORS, CLASSES, (64, 64), every=2,
                             best_path=str(tmp_path / "best.weights.h5"), verbose=0)
    callback.set_model(body)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert np.isnan(logs["val_mAP50"])            # not an evaluation epoch
    callback.on_epoch_end(1, logs)
    assert logs["val_mAP50"] == pytest.approx(1.0)   # detections == ground truth
    assert (tmp_path / "best.weights.h5").exists()


def test_map_callback_in_fit_reaches_csv_logger(tmp_path):
    from yolo3.batches import YoloDataset
    from yolo3.evaluation import MapEvaluation
    from yolo3.training import compile_model, create_tiny_model
    path = tmp_path / "0.png"
    noise(64, 64).save(path)
    lines = [f"{path} 10,10,40,40,0"] * 2
    model = create_tiny_model((64, 64), ANCHORS, 3, load_pretrained=False, freeze_body=0)
    compile_model(model, 1e-3, jit_compile=False)
    data = YoloDataset(lines, 2, (64, 64), ANCHORS, 3, augment=False, seed=0)
    csv_path = tmp_path / "log.csv"
    model.fit(data, epochs=2, verbose=0, callbacks=[
        MapEvaluation(lines, ANCHORS, CLASSES, (64, 64), every=1, verbose=0),
        keras.callbacks.CSVLogger(str(csv_path))])
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 2 and all(0 <= float(r["val_mAP50"]) <= 1 for r in rows)
