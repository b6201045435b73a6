"""The demo: the synthetic shapes data set and a shortened `train.py --demo`."""
import os

import numpy as np
from PIL import Image

from yolo3.annotation_file import read_annotations
from yolo3.demo import CLASSES, DEMO_ANCHORS, make_dataset, run_demo


def test_dataset_is_valid_and_reproducible(tmp_path):
    one = make_dataset(str(tmp_path / "a"), num_images=12, size=96, seed=5)
    make_dataset(str(tmp_path / "b"), num_images=12, size=96, seed=5)
    lines = read_annotations(one["annotations"], len(CLASSES), full_check=True)
    assert len(lines) == 12
    assert open(one["classes"]).read().split() == CLASSES
    assert open(one["anchors"]).read().strip() == "8,8,  18,18,  26,26,  34,34,  44,44,  56,56"
    for name in ("0000.png", "0011.png"):
        a = np.asarray(Image.open(tmp_path / "a" / "images" / name))
        b = np.asarray(Image.open(tmp_path / "b" / "images" / name))
        assert a.shape == (96, 96, 3) and np.array_equal(a, b)
    other = make_dataset(str(tmp_path / "c"), num_images=12, size=96, seed=6)
    assert open(other["annotations"]).read() != open(one["annotations"]).read()


def test_boxes_are_tight_around_the_shapes(tmp_path):
    paths = make_dataset(str(tmp_path), num_images=40, size=96, seed=1)
    squares = 0
    for line in read_annotations(paths["annotations"], len(CLASSES)):
        pixels = np.asarray(Image.open(line.path)).astype(int)
        for x0, y0, x1, y1, cls in line.boxes.astype(int):
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            assert min(x1 - x0, y1 - y0) >= 18   # never matches unused anchor 0
            if cls == 1:   # a filled square: one colour from corner to corner
                inside = pixels[y0:y1, x0:x1].reshape(-1, 3)
                assert (inside == inside[0]).all()
                squares += 1
            if cls == 0:   # a circle: its centre and edge midpoints share the colour
                cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
                colour = pixels[cy, cx]
                for y, x in ((y0, cx), (y1 - 1, cx), (cy, x0), (cy, x1 - 1)):
                    assert np.array_equal(pixels[y, x], colour)
    assert squares > 3
    assert DEMO_ANCHORS[0].max() < 18


def test_short_demo_trains_both_stages_and_reports_map(tmp_path, capsys):
    code = run_demo(str(tmp_path), num_images=24, input_size=64, freeze_epochs=1,
                    epochs=2, batch_size=8, jit=False)
    out = capsys.readouterr().out
    assert code == 0
    assert "Stage 1: epochs 1..1" in out and "Stage 2: epochs 2..2" in out
    assert "validation mAP@0.5 = " in out
    value = float(out.split("validation mAP@0.5 = ")[1].split()[0])
    assert 0.0 <= value <= 1.0
    for name in ("trained_weights_stage_1.weights.h5", "trained_weights_final.weights.h5",
                 "training_log.csv", "loss.png"):
        assert os.path.exists(tmp_path / name)
    assert "python yolo.py --model" in out
