"""Annotation files and classes files: accepted forms, every rejected form with its
message, path resolution, --skip-bad."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolo3.annotation_file import (AnnotationLine, format_line, get_classes, parse_line,
                        read_annotations, resolve_image_path)
from yolo3.errors import UserError
from tests.fixtures import SHARED



@pytest.fixture
def folder(tmp_path, monkeypatch):
    """tmp_path/data with images a.png (100x80) and 'b c.png' (50x40); the current
    directory is an empty tmp_path/elsewhere."""
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (100, 80)).save(data / "a.png")
    Image.new("RGB", (50, 40)).save(data / "b c.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return data


def _write(folder, text, name="ann.txt", encoding="utf-8"):
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def _problems(path, **kw):
    with pytest.raises(UserError) as info:
        read_annotations(path, **kw)
    return str(info.value).split("\n")


def test_classes_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffcat\r\n\r\ndog \n\n  bird\n".encode())
    assert get_classes(path) == ["cat", "dog", "bird"]
    path.write_text("cat\ndog\ncat\n")
    with pytest.raises(UserError) as info:
        get_classes(path)
    assert str(info.value) == f"{path}:3: duplicate class name ('cat', first on line 1)"
    path.write_text("\n \n")
    with pytest.raises(UserError, match="no class names"):
        get_classes(path)


def test_accepted_forms(folder):
    text = ("\ufeff# a comment\r\n"
            "a.png 10,20,30,40,0 50,10,90.5,70,2\r\n"
            "\r\n"
            "   \n"
            "b c.png\t1.5,2,20,30,1\n"
            "a.png\n"
            "  # indented comment\n")
    path = _write(folder, text)
    lines = read_annotations(path, num_classes=3)
    assert [Path(l.path) for l in lines] == [folder / "a.png", folder / "b c.png",
                                             folder / "a.png"]
    assert [l.source for l in lines] == [f"{path}:2", f"{path}:5", f"{path}:6"]
    assert lines[0].boxes.dtype == np.float32
    np.testing.assert_array_equal(lines[0].boxes, [[10, 20, 30, 40, 0], [50, 10, 90.5, 70, 2]])
    np.testing.assert_array_equal(lines[1].boxes, [[1.5, 2, 20, 30, 1]])
    assert lines[2].boxes.shape == (0, 5)  # a negative image


def test_old_mac_line_ends(folder):
    path = _write(folder, "a.png 1,2,3,4,0\rb c.png\r")
    assert [l.source[-2:] for l in read_annotations(path)] == [":1", ":2"]


def test_parse_line_and_format_line():
    line = parse_line("dir with space/x y.jpg  3,4,5,6,7 1.25,2,3,4,0", source="t:1")
    assert line == AnnotationLine("dir with space/x y.jpg", line.boxes, "t:1")
    np.testing.assert_array_equal(line.boxes, [[3, 4, 5, 6, 7], [1.25, 2, 3, 4, 0]])
    assert format_line(line.path, line.boxes) == \
        "dir with space/x y.jpg 3,4,5,6,7 1.25,2,3,4,0"
    assert format_line("a.jpg", np.zeros((0, 5))) == "a.jpg"
    with pytest.raises(UserError) as info:
        parse_line("x.jpg 1,2,3,0", source="t:9")
    assert str(info.value) == ("t:9: unparsable box, expected x_min,y_min,x_max,y_max,"
                               "class_id (box 1: 1,2,3,0)")


@pytest.mark.parametrize("line, message", [
    ("a.png 1,2,3,4", "unparsable box, expected x_min,y_min,x_max,y_max,class_id "
                      "(box 1: 1,2,3,4)"),
    ("a.png 1,2,3,4,0,5", "unparsable box, expected x_min,y_min,x_max,y_max,class_id "
                          "(box 1: 1,2,3,4,0,5)"),
    ("a.png 1,2,3,x4,0", "unparsable box, expected numbers (box 1: 1,2,3,x4,0)"),
    ("a.png 1,2,30,40,0 junk", "unparsable box, expected x_min,y_min,x_max,y_max,"
                               "class_id (box 2: junk)"),
    ("a.png 1,2,3,nan,0", "unparsable box, numbers must be finite (box 1: 1,2,3,nan,0)"),
    ("a.png 30,2,10,40,0", "x_min >= x_max (box 1: 30,2,10,40,0)"),
    ("a.png 1,40,30,40,0", "y_min >= y_max (box 1: 1,40,30,40,0)"),
    ("a.png 1,2,30,40,3", "class id 3 outside [0, 3) (box 1: 1,2,30,40,3)"),
    ("a.png 1,2,30,40,-1", "class id -1 outside [0, 3) (box 1: 1,2,30,40,-1)"),
    ("a.png 1,2,30,40,1.5", "class id is not an integer (box 1: 1,2,30,40,1.5)"),
    ("a.png 1,2,102,40,0", "box outside the 100x80 image (box 1: 1,2,102,40,0)"),
    ("a.png -2,2,30,40,0", "box outside the 100x80 image (box 1: -2,2,30,40,0)"),
    ("1,2,30,40,0", "no image path before the boxes"),
])
def test_rejected_forms(folder, line, message):
    path = _write(folder, "a.png 1,2,30,40,0\n" + line + "\n")
    problems = _problems(path, num_classes=3)
    assert problems == [f"{path}: 1 bad line of 2 (fix them, or skip them with "
                        "--skip-bad):", f"{path}:2: {message}"]


def test_one_pixel_of_slack(folder):
    path = _write(folder, "a.png -1,-0.5,101,81,0\n")
    np.testing.assert_array_equal(read_annotations(path)[0].boxes, [[-1, -.5, 101, 81, 0]])


def test_image_problems(folder):
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("hello")
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "whole.jpg")
    data = (folder / "whole.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[:len(data) // 2])
    path = _write(folder, "missing.jpg 1,2,3,4,0\nempty.jpg\ntext.jpg\ncut.jpg\n")
    problems = _problems(path)
    assert problems[1:4] == [
        f"{path}:1: image not found (missing.jpg; tried {os.getcwd()}/missing.jpg "
        f"and {folder}/missing.jpg)",
        f"{path}:2: empty image file ({folder}/empty.jpg)",
        f"{path}:3: not an image (unknown or damaged format) ({folder}/text.jpg)",
    ]
    assert problems[4].startswith(f"{path}:4: truncated or damaged image: image file is "
                                  "truncated")
    assert problems[4].endswith(f") ({folder}/cut.jpg)") and len(problems) == 5
    # Without image checks only the syntax is checked.
    assert len(read_annotations(path, check_images=False)) == 4


def test_missing_image_beside_an_annotation_file_in_the_current_directory(folder, monkeypatch):
    monkeypatch.chdir(folder)
    _write(folder, "gone.png\n")
    assert _problems("ann.txt")[1] == f"ann.txt:1: image not found (gone.png; tried {folder}/gone.png)"


def test_all_problems_at_once_up_to_a_limit(folder):
    path = _write(folder, "".join(f"a.png 9,2,{i},40,0 5,5,1,1,0\n" for i in range(1, 8)))
    problems = _problems(path, max_problems=5)
    assert problems[0] == f"{path}: 7 bad lines of 7 (fix them, or skip them with --skip-bad):"
    assert problems[1] == f"{path}:1: x_min >= x_max (box 1: 9,2,1,40,0)"
    assert problems[2] == f"{path}:1: x_min >= x_max (box 2: 5,5,1,1,0)"
    assert problems[3] == f"{path}:1: y_min >= y_max (box 2: 5,5,1,1,0)"
    assert problems[5:] == [f"{path}:2: x_min >= x_max (box 2: 5,5,1,1,0)",
                            "... and 16 more problems"]


def test_skip_bad(folder, capsys):
    path = _write(folder, "a.png 1,2,30,40,0\nmissing.png\na.png 5,5,1,1,0\nb c.png\n")
    lines = read_annotations(path, skip_bad=True)
    assert [l.source for l in lines] == [f"{path}:1", f"{path}:4"]
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {path}: skipping 2 bad lines of 4:\n{path}:2: image not found")


def test_no_usable_lines_and_too_few(folder):
    path = _write(folder, "# nothing\n\n")
    assert _problems(path) == [f"{path}: no usable annotation lines (0 lines, 0 bad)"]
    path = _write(folder, "missing.png\n", name="bad.txt")
    assert _problems(path, skip_bad=True) == [
        f"{path}: no usable annotation lines (1 line, 1 bad)"]
    path = _write(folder, "a.png\nb c.png\n", name="two.txt")
    assert _problems(path, min_lines=8) == [
        f"{path}: 2 usable lines, fewer than one batch (8)"]
    assert _problems(str(folder / "none.txt")) == [f"{folder}/none.txt: annotation file not found"]


def test_relative_paths_current_directory_first(folder, tmp_path, monkeypatch):
    path = _write(folder, "a.png 1,2,3,4,0\n")
    # Not in the current directory: found next to the annotation file.
    assert read_annotations(path)[0].path == str(folder / "a.png")
    # In the current directory (as the original): that one wins.
    Image.new("RGB", (10, 10)).save(tmp_path / "elsewhere" / "a.png")
    assert read_annotations(path)[0].path == "a.png"
    resolved, tried = resolve_image_path("x.png", path)
    assert resolved == "x.png" and tried == [os.path.abspath("x.png"), str(folder / "x.png")]
    monkeypatch.chdir(folder)
    assert read_annotations("ann.txt")[0].path == "a.png"


def test_absolute_path_and_latin1_bytes(folder):
    path = _write(folder, f"{folder}/a.png 1,2,3,4,0\n")
    assert read_annotations(path)[0].path == f"{folder}/a.png"
    name = "caf\xe9.png"
    Image.new("RGB", (8, 8)).save(os.path.join(os.fsencode(folder), name.encode("latin-1")))
    path = _write(folder, name + "\n", name="latin.txt", encoding="latin-1")
    line = read_annotations(path)[0]
    assert os.path.exists(line.path)


def test_full_check(folder):
    noise = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "d.png")
    data = bytearray((folder / "d.png").read_bytes())
    data[len(data) // 2: len(data) // 2 + 32] = b"\x00" * 32
    (folder / "d.png").write_bytes(bytes(data))
    path = _write(folder, "d.png\n")
    assert len(read_annotations(path)) == 1
    problems = _problems(path, full_check=True)
    assert problems[1].startswith(f"{path}:1: ")


def test_progress_bar_while_checking_images(folder, capsys, monkeypatch):
    from yolo3 import progress
    path = _write(folder, "a.png 1,1,5,5,0\nb c.png\na.png\n")
    read_annotations(path, full_check=True)
    assert capsys.readouterr().err == ""        # not a terminal: no bar
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    monkeypatch.setattr(progress, "DELAY", 0)
    read_annotations(path, full_check=True)
    err = capsys.readouterr().err
    assert f"checking {path}:" in err and "/3 [" in err
    read_annotations(path, check_images=False)   # nothing to decode: no bar
    assert capsys.readouterr().err == ""
    read_annotations(path, full_check=True, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not (SHARED / "data" / "raccoon").is_dir(),
                    reason="../shared/data/raccoon is absent")
def test_real_annotation_files():
    lines = read_annotations(SHARED / "data" / "raccoon" / "train.txt", num_classes=1)
    assert len(lines) == 160 and all(l.boxes.shape[1] == 5 for l in lines)
    coco = SHARED / "data" / "coco128-train" / "train.txt"
    if coco.exists():
        lines = read_annotations(coco, num_classes=80)
        assert sum(len(l.boxes) == 0 for l in lines) == 2


def test_full_check_on_several_processes_gives_the_serial_result(folder, monkeypatch):
    """40 lines in chunks of 3 over 2 processes: every 7th line names a damaged
    image (only decoding finds it), every 11th a missing one; the problems come
    back in line order, each naming its file:line, the good lines in order."""
    from yolo3 import annotation_file
    noise = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "d.png")
    data = bytearray((folder / "d.png").read_bytes())
    data[len(data) // 2: len(data) // 2 + 32] = b"\x00" * 32
    (folder / "d.png").write_bytes(bytes(data))
    names = ["missing.png" if n % 11 == 0 else "d.png" if n % 7 == 0 else "a.png"
             for n in range(1, 41)]
    path = _write(folder, "".join(f"{name} 0,0,5,{n},0\n" for n, name in
                                  enumerate(names, 1)))
    bad = [n for n, name in enumerate(names, 1) if name != "a.png"]
    assert bad == [7, 11, 14, 21, 22, 28, 33, 35]
    pools = []

    class Pool(annotation_file.ProcessPoolExecutor):
        def __init__(self, workers):
            pools.append(workers)
            super().__init__(workers)
    monkeypatch.setattr(annotation_file, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(annotation_file, "CHUNK", 3)
    results = {}
    for workers in (1, 2):
        problems = _problems(path, full_check=True, workers=workers)
        assert problems[0] == f"{path}: 8 bad lines of 40 (fix them, or skip them " \
                              "with --skip-bad):"
        assert [p.split(":")[1] for p in problems[1:]] == [str(n) for n in bad]
        kept = read_annotations(path, full_check=True, skip_bad=True, workers=workers)
        assert [line.boxes[0, 3] for line in kept] == \
            [n for n in range(1, 41) if n not in bad]
        results[workers] = problems, [(line.path, line.source, line.boxes.tolist())
                                      for line in kept]
    assert results[1] == results[2]
    assert pools == [2, 2]                      # the serial reads made no pool
