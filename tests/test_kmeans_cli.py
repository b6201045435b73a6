"""kmeans.py CLI: output file and report, letterbox scaling, plot, refusals, errors."""
import numpy as np
import pytest
from PIL import Image

from kmeans import main
from yolo3.anchors import get_anchors
from yolo3.errors import run_cli

# six distinct box sizes (raw pixels) in one 832x416 image: with k=6 each box is
# its own cluster, so the anchors are the boxes (halved in 416 input pixels)
BOXES = [(0, 0, 20, 40), (0, 0, 60, 30), (0, 0, 80, 120), (0, 0, 200, 100),
         (0, 0, 160, 300), (0, 0, 400, 380)]


def original_kmeans(boxes, k, seed, max_iter=1000):
    """The original keras-yolo3 algorithm (random boxes as start, median update).
    Like the original, integer boxes give integer clusters (medians truncated)."""
    boxes = np.asarray(boxes)
    clusters = boxes[np.random.RandomState(seed).choice(len(boxes), k, replace=False)]
    last = np.zeros(len(boxes))
    for _ in range(max_iter):
        nearest = np.argmax(iou(boxes, clusters), axis=1)
        if (nearest == last).all():
            break
        for c in range(k):
            clusters[c] = np.median(boxes[nearest == c], axis=0)
        last = nearest
    return clusters


def iou(boxes, anchors):
    inter = (np.minimum(boxes[:, None, 0], anchors[None, :, 0])
             * np.minimum(boxes[:, None, 1], anchors[None, :, 1]))
    return inter / ((boxes[:, 0] * boxes[:, 1])[:, None]
                    + anchors[:, 0] * anchors[:, 1] - inter)


@pytest.fixture
def dataset(tmp_path):
    Image.new("RGB", (832, 416)).save(tmp_path / "wide.png")
    line = "wide.png " + " ".join(f"{x0},{y0},{x1},{y1},0" for x0, y0, x1, y1 in BOXES)
    path = tmp_path / "train.txt"
    path.write_text(line + "\n" + line + "\n")
    return path


def run(argv, capsys):
    code = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_anchors_in_input_pixels(dataset, tmp_path, capsys):
    out_file = tmp_path / "anchors.txt"
    code, out, err = run([dataset, "-k", 6, "--out", out_file], capsys)
    assert code == 0, err
    expected = sorted(((x1 - x0) / 2, (y1 - y0) / 2) for x0, y0, x1, y1 in BOXES)
    expected = sorted(expected, key=lambda a: a[0] * a[1])
    np.testing.assert_array_equal(get_anchors(out_file), expected)
    assert "12 boxes from 2 lines" in out
    assert "Accuracy: 100.00% (mean best IoU)" in out
    assert "Best possible recall: 100.00%" in out
    # tiny default mask [[3,4,5],[1,2,3]]: anchor 0 unused, anchor 3 on both heads
    assert "none (unused by the mask)" in out and "13x13 + 26x26" in out
    # the smallest anchor (10x20) is best for 2 of the 12 boxes: 16.7% get no target
    assert "note: 2 boxes (16.7%) have their best anchor in no head" in out


def test_raw_pixels_keep_image_pixels(dataset, tmp_path, capsys):
    out_file = tmp_path / "anchors.txt"
    code, _, err = run([dataset, "-k", 6, "--raw-pixels", "--out", out_file], capsys)
    assert code == 0, err
    expected = sorted(((x1 - x0), (y1 - y0)) for x0, y0, x1, y1 in BOXES)
    expected = sorted(expected, key=lambda a: a[0] * a[1])
    np.testing.assert_array_equal(get_anchors(out_file), expected)


def test_input_size_and_yolo_heads(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = [" ".join(f"0,0,{w},{h},0" for w, h in rng.integers(5, 400, (20, 2)))
             for _ in range(5)]
    path = tmp_path / "t.txt"
    path.write_text("".join(f"img.jpg {line}\n" for line in lines))
    code, out, err = run([path, "--raw-pixels", "--input-size", "608x416",
                          "--out", tmp_path / "a.txt"], capsys)
    assert code == 0, err
    assert out.count("19x13") == 3 and out.count("38x26") == 3 and out.count("76x52") == 3
    assert len(get_anchors(tmp_path / "a.txt")) == 9


@pytest.mark.parametrize("extra", [[], ["--raw-pixels"]])
def test_plot_is_a_png(dataset, tmp_path, capsys, extra):
    code, out, err = run([dataset, "-k", 6, "--out", tmp_path / "a.txt",
                          "--plot", tmp_path / "plot.png", *extra], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "plot.png") as image:
        assert image.format == "PNG" and image.size == (1200, 550)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("extra", [["--metric", "euclidean"], ["--update", "mean"],
                                   ["--evolve", "30"], ["--restarts", "1", "--seed", "3"]])
def test_options_run(dataset, tmp_path, capsys, extra):
    code, out, err = run([dataset, "-k", 6, "--out", tmp_path / "a.txt", *extra], capsys)
    assert code == 0, err
    assert get_anchors(tmp_path / "a.txt").shape == (6, 2)


def test_refuses_to_overwrite_model_data(dataset, tmp_path, capsys):
    target = tmp_path / "model_data" / "yolo_anchors.txt"
    target.parent.mkdir()
    target.write_text("10,13,  16,30,  33,23,  30,61,  62,45,  59,119,  116,90,  "
                      "156,198,  373,326\n")
    before = target.read_text()
    code, _, err = run([dataset, "-k", 6, "--out", target], capsys)
    assert code == 2 and "refusing to overwrite" in err and "--force" in err
    assert target.read_text() == before
    code, _, err = run([dataset, "-k", 6, "--out", target, "--force"], capsys)
    assert code == 0, err
    assert get_anchors(target).shape == (6, 2)


def test_default_out_is_the_working_directory(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run([dataset, "-k", 6], capsys)
    assert code == 0, err
    assert get_anchors(tmp_path / "yolo_anchors.txt").shape == (6, 2)


@pytest.mark.parametrize("text, argv, message", [
    ("a.jpg\n", [], "no boxes"),
    ("a.jpg 0,0,5,5,0 0,0,6,6,0\n", ["-k", "6"], "only 2 distinct box sizes for k=6"),
    ("a.jpg 0,0,5,5,0\nb.jpg 0,0,5\n", [], "t.txt:2: unparsable box"),
    ("a.jpg 0,0,5,5,0\n", ["--mask", "0,1,2/3,4,x"], "bad mask"),
])
def test_user_errors_exit_2(tmp_path, capsys, text, argv, message):
    path = tmp_path / "t.txt"
    path.write_text(text)
    code, out, err = run([path, "--raw-pixels", "--out", tmp_path / "a.txt", *argv],
                         capsys)
    assert code == 2
    # One line, or for bad annotation lines one header line and the listing.
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "a.txt").exists()


def test_missing_annotation_file(tmp_path, capsys):
    code, _, err = run([tmp_path / "nope.txt", "--out", tmp_path / "a.txt"], capsys)
    assert code == 2 and "nope.txt" in err


def test_help_lists_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--input-size", "--raw-pixels", "--restarts", "--update", "--max-iter",
                 "--seed", "--metric", "--evolve", "--out", "--force", "--plot"):
        assert flag in out
    out = " ".join(out.split())
    assert "(default: None)" not in out
    assert "300 for up to 10,000 distinct box sizes, else 30" in out and "(default: yolo_anchors.txt)" in out


@pytest.mark.parametrize("name", ["raccoon/train.txt", "coco128-train/train.txt"])
def test_real_data_beats_the_original(shared, tmp_path, capsys, name):
    annotations = shared / "data" / name
    code, out, err = run([annotations, "--raw-pixels", "--out", tmp_path / "a.txt"],
                         capsys)
    assert code == 0, err
    boxes = []
    for line in annotations.read_text().splitlines():
        for box in line.split()[1:]:
            x0, y0, x1, y1 = map(int, box.split(",")[:4])
            boxes.append((x1 - x0, y1 - y0))
    boxes = np.array(boxes)                       # int64, as the original read them
    ours = iou(boxes, get_anchors(tmp_path / "a.txt").astype(np.float64)).max(1).mean()
    assert f"Accuracy: {ours:.2%} (mean best IoU)" in out
    for seed in range(10):
        original = iou(boxes, original_kmeans(boxes, 9, seed)).max(1).mean()
        assert ours >= original


def test_progress_bars_on_a_terminal_only(dataset, tmp_path, capsys, monkeypatch):
    from yolo3 import progress
    argv = [dataset, "-k", 6, "--restarts", 3, "--out", tmp_path / "a.txt"]
    code, _, err = run(argv, capsys)
    assert code == 0 and err == ""             # not a terminal: no bar
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setattr(progress, "DELAY", 0)
    code, _, err = run(argv, capsys)
    assert code == 0 and "reading box sizes:" in err and "/2 [" in err
    assert "k-means:" in err and "/3 [" in err
    code, _, err = run(argv + ["--no-progress"], capsys)
    assert code == 0 and err == ""
