"""Converters to the annotation line format (VOC XML, COCO JSON, YOLO txt) and the
annotations.py CLI. Fixtures are written here; expected lines are worked out by hand
(boxes rounded with Python's round, i.e. half to even, and clipped to the image)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import annotations
from yolo3.label_formats import (convert_coco, convert_voc, convert_yolo, summary,
                              write_annotations)
from yolo3.errors import UserError, run_cli
from tests.fixtures import ROOT



def image(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def lines_of(conversion, base):
    return [annotations_line(p, b, base) for p, b in conversion.images]


def annotations_line(path, boxes, base):
    rel = Path(path).relative_to(base).as_posix()
    return " ".join([rel] + [",".join(map(str, b)) for b in boxes])


# ------------------------------------------------------------------ VOC

def voc_object(name, box, difficult=None):
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{name}</name>{diff}<bndbox>{coords}</bndbox></object>"


def voc_file(path, objects, filename=None, size=(64, 48)):
    name = f"<filename>{filename}</filename>" if filename else ""
    dims = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    return write(path, f"<annotation>{name}{dims}{''.join(objects)}</annotation>")


@pytest.fixture
def voc(tmp_path):
    """VOC root: a.jpg (dog, difficult cat, cat without <difficult> and float
    coordinates), b.png 80x60 (only a difficult bird; no <size>, no <filename>),
    c.jpg (no objects)."""
    root = tmp_path / "VOC"
    for name, size in (("a.jpg", (64, 48)), ("b.png", (80, 60)), ("c.jpg", (64, 48))):
        image(root / "JPEGImages" / name, size)
    voc_file(root / "Annotations" / "a.xml", [
        voc_object("dog", (1, 2, 30, 40), 0),
        voc_object("cat", (5, 5, 20, 20), 1),
        voc_object("cat", ("10.4", "20.6", "63.7", 48))], filename="a.jpg")
    voc_file(root / "Annotations" / "b.xml", [voc_object("bird", (70, 50, 80, 60), 1)],
             size=None)
    voc_file(root / "Annotations" / "c.xml", [], filename="c.jpg")
    return root


def test_voc_default_skips_difficult_and_collects_sorted_classes(voc):
    conversion = convert_voc(voc)
    # classes sorted over every object, difficult ones too: bird 0, cat 1, dog 2
    assert conversion.classes == ["bird", "cat", "dog"]
    # 10.4 -> 10, 20.6 -> 21, 63.7 -> 64 (= width, kept)
    assert lines_of(conversion, voc) == ["JPEGImages/a.jpg 1,2,30,40,2 10,21,64,48,1"]
    assert conversion.counts["difficult objects skipped"] == 2
    assert conversion.counts["images without boxes left out"] == 2  # b: only a difficult object; c: none


def test_voc_difficult_and_negatives(voc):
    conversion = convert_voc(voc, include_difficult=True, negatives=True)
    assert lines_of(conversion, voc) == [
        "JPEGImages/a.jpg 1,2,30,40,2 5,5,20,20,1 10,21,64,48,1",
        "JPEGImages/b.png 70,50,80,60,0",  # size from the 80x60 image header
        "JPEGImages/c.jpg"]
    # b lost its only object to `difficult`: never turned into a negative
    assert lines_of(convert_voc(voc, negatives=True), voc) == [
        "JPEGImages/a.jpg 1,2,30,40,2 10,21,64,48,1", "JPEGImages/c.jpg"]


def test_voc_classes_file_ids_and_unknown(voc):
    conversion = convert_voc(voc, classes=["dog", "cat"])
    assert lines_of(conversion, voc) == ["JPEGImages/a.jpg 1,2,30,40,0 10,21,64,48,1"]
    with pytest.raises(UserError) as error:
        convert_voc(voc, classes=["dog", "cat"], include_difficult=True)
    assert str(error.value) == (f"{voc / 'Annotations' / 'b.xml'}:1: unknown class "
                                "('bird') not in the classes file")
    conversion = convert_voc(voc, classes=["dog", "cat"], include_difficult=True,
                             skip_unknown=True)
    assert conversion.counts["objects of unknown classes skipped"] == 1
    assert len(conversion.images) == 1


def test_voc_xml_folder_with_images_beside_and_ids(tmp_path):
    image(tmp_path / "x.jpg")
    image(tmp_path / "y.jpg")
    voc_file(tmp_path / "x.xml", [voc_object("a", (0, 0, 10, 10))], filename="x.jpg")
    voc_file(tmp_path / "y.xml", [voc_object("b", (1, 1, 5, 5))], filename="y.jpg")
    ids = write(tmp_path / "ids.txt", "y\n\nx 1\n")
    conversion = convert_voc(tmp_path, ids=ids)
    assert lines_of(conversion, tmp_path) == ["y.jpg 1,1,5,5,1", "x.jpg 0,0,10,10,0"]
    with pytest.raises(UserError, match=r"ids.txt:1: no annotation file \(.*z.xml\)"):
        convert_voc(tmp_path, ids=write(tmp_path / "ids.txt", "z\n"))


GOOD_XML = """<annotation>
<filename>a.jpg</filename>
<size><width>64</width><height>48</height></size>
<object>
<name>dog</name>
<bndbox>
<xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax>
</bndbox>
</object>
</annotation>
"""


@pytest.mark.parametrize("old, new, message", [
    ("<xmax>30</xmax>", "<xmax>ten</xmax>", ":7: <xmax> is not a number ('ten')"),
    ("<xmax>30", "<xmax>70", ":6: 'dog': box outside the 64x48 image (1,2,70,40)"),
    ("<xmin>1<", "<xmin>31<", ":6: 'dog': empty box, min >= max (31,2,30,40)"),
    ("<ymax>40</ymax>", "", ":6: <bndbox> without <ymax>"),
    ("<name>dog</name>", "<name> </name>", ":4: <object> without a <name>"),
    ("<name>dog</name>", "<name>dog</name><difficult>x</difficult>",
     ":4: <difficult> is not a number ('x')"),
    ("</object>", "", ":10: malformed XML (mismatched tag)"),
    (GOOD_XML, "", ":1: malformed XML (no element found)"),
    (GOOD_XML, "<foo/>", ":1: root element is <foo>, expected <annotation>"),
])
def test_voc_errors_name_file_line_and_value(tmp_path, old, new, message):
    image(tmp_path / "a.jpg")
    xml = write(tmp_path / "a.xml", GOOD_XML.replace(old, new))
    with pytest.raises(UserError) as error:
        convert_voc(tmp_path)
    assert str(error.value) == f"{xml}{message}"


def test_voc_skip_bad_reports_and_skips_degenerate_boxes(tmp_path, capsys):
    image(tmp_path / "a.jpg")
    two = GOOD_XML.replace("</annotation>", "<object><name>dog</name><bndbox><xmin>5</xmin>"
                           "<ymin>5</ymin><xmax>5</xmax><ymax>9</ymax></bndbox></object>"
                           "</annotation>")
    xml = write(tmp_path / "a.xml", two)
    conversion = convert_voc(tmp_path, skip_bad=True)
    assert lines_of(conversion, tmp_path) == ["a.jpg 1,2,30,40,0"]
    assert conversion.counts["bad boxes skipped"] == 1
    assert capsys.readouterr().err == (f"warning: {xml}:10: 'dog': empty box, min >= max "
                                       "(5,5,5,9); skipped\n")


def test_voc_missing_image(tmp_path):
    xml = write(tmp_path / "a.xml", GOOD_XML.replace("a.jpg", "zz.jpg"))
    with pytest.raises(UserError) as error:
        convert_voc(tmp_path)
    assert str(error.value) == f"{xml}: image not found ({tmp_path / 'zz.jpg'})"


# ----------------------------------------------------------------- COCO

COCO = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
               {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
               {"id": 3, "file_name": "c.jpg", "width": 64, "height": 48}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 18, "bbox": [10.2, 20.5, 30, 20], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 48]},
        {"id": 12, "image_id": 2, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 1},
        {"id": 13, "image_id": 1, "category_id": 90, "bbox": [5, 5, 0.3, 4]}],
    "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"},
                   {"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}],
}


@pytest.fixture
def coco(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        image(tmp_path / "images" / name)
    return write(tmp_path / "instances.json", json.dumps(COCO))


def test_coco_ids_in_coco_order(coco, tmp_path):
    conversion = convert_coco(coco, tmp_path / "images")
    # dog (id 18) is COCO class 16, person (1) class 0. x 10.2 -> 10, y 20.5 -> 20
    # (half to even), x_max 40.2 -> 40, y_max 40.5 -> 40; the 0.3 px wide box and the
    # crowd box are skipped; b (crowd only) and c (nothing) are left out.
    assert lines_of(conversion, tmp_path) == ["images/a.jpg 10,20,40,40,16 0,0,64,48,0"]
    assert summary(conversion) == (
        "1 images (0 negatives), 2 boxes, 80 classes; 1 objects under 1 px skipped; "
        "1 crowd objects skipped; 2 images without boxes left out")
    names = conversion.classes
    assert (len(names), names[0], names[16], names[79]) == (80, "person", "dog", "toothbrush")
    assert names[3] == "motorcycle"  # not listed in the file: the standard name
    # The darknet names file differs only in the spelling of six names.
    darknet = (ROOT / "model_data" / "coco_classes.txt").read_text().split("\n")[:80]
    assert sum(a != b for a, b in zip(names, darknet)) == 6


def test_coco_listed_present_and_negatives(coco, tmp_path):
    listed = convert_coco(coco, tmp_path / "images", "listed")
    assert listed.classes == ["person", "car", "dog", "toothbrush"]  # by id 1, 3, 18, 90
    assert lines_of(listed, tmp_path) == ["images/a.jpg 10,20,40,40,2 0,0,64,48,0"]
    present = convert_coco(coco, tmp_path / "images", "present", negatives=True)
    assert present.classes == ["person", "dog"]
    assert lines_of(present, tmp_path) == ["images/a.jpg 10,20,40,40,1 0,0,64,48,0",
                                           "images/c.jpg"]
    assert summary(present) == ("2 images (1 negatives), 2 boxes, 2 classes; 1 objects "
                                "under 1 px skipped; 1 crowd objects skipped; 1 images "
                                "without boxes left out")


def coco_with(**changes):
    data = json.loads(json.dumps(COCO))
    data["annotations"] = [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]
    data["annotations"][0].update(changes)
    return json.dumps(data)


@pytest.mark.parametrize("text, categories, message", [
    ('{\n"images": [1,\n]}', "coco", ":3: malformed JSON (Expecting value)"),
    ("[]", "coco", ": not a COCO instances file (no 'images' and 'annotations' lists)"),
    (coco_with(bbox=[1, 2, 3]), "coco",
     ": annotations[0]: bbox is not [x, y, width, height] ([1, 2, 3])"),
    (coco_with(bbox=[1, "a", 3, 4]), "coco", ": annotations[0]: bbox value is not a number ('a')"),
    (coco_with(bbox=[50, 0, 20, 10]), "coco",
     ": annotations[0]: box outside the 64x48 image (50,0,70,10)"),
    (coco_with(image_id=99), "coco", ": annotations[0]: unknown image_id (99)"),
    (coco_with(category_id=95), "coco", ": annotations[0]: category_id 95 is not one of "
     "the 80 COCO categories (use --categories listed or present)"),
    (coco_with(category_id=5), "listed", ": annotations[0]: category_id 5 is not in 'categories'"),
    (coco_with(category_id=None), "coco",
     ": annotations[0]: category_id is not an integer or a text (None)"),
])
def test_coco_errors(tmp_path, text, categories, message):
    image(tmp_path / "a.jpg")
    path = write(tmp_path / "bad.json", text)
    with pytest.raises(UserError) as error:
        convert_coco(path, tmp_path, categories)
    assert str(error.value) == f"{path}{message}"


def test_coco_missing_image(coco, tmp_path):
    (tmp_path / "images" / "a.jpg").unlink()
    with pytest.raises(UserError) as error:
        convert_coco(coco, tmp_path / "images")
    assert str(error.value) == f"{coco}: image not found ({tmp_path / 'images' / 'a.jpg'})"


# ----------------------------------------------------------------- YOLO

@pytest.fixture
def yolo(tmp_path):
    """dataset/images: a.jpg 64x48, b.png 80x60 (empty labels), d.jpg (no labels),
    sub/c.jpg 64x48; labels/orphan.txt has no image."""
    root = tmp_path / "dataset"
    image(root / "images" / "a.jpg")
    image(root / "images" / "b.png", (80, 60))
    image(root / "images" / "d.jpg")
    image(root / "images" / "sub" / "c.jpg")
    write(root / "labels" / "a.txt", "0 0.5 0.5 0.25 0.5\r\n1 0.125 0.25 0.25 0.5\n\n")
    write(root / "labels" / "b.txt", "")
    write(root / "labels" / "sub" / "c.txt", "2 0.5 0.5 1 1\n")
    write(root / "labels" / "orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    write(root / "labels" / "classes.txt", "cat\ndog\n\nbird\n")
    return root


def test_yolo_boxes_from_normalised_labels(yolo):
    conversion = convert_yolo(yolo)
    assert conversion.classes == ["cat", "dog", "bird"]
    # a: cx 32 cy 24 w 16 h 24 -> 24,12,40,36; cx 8 cy 12 w 16 h 24 -> 0,0,16,24
    assert lines_of(conversion, yolo) == ["images/a.jpg 24,12,40,36,0 0,0,16,24,1",
                                          "images/sub/c.jpg 0,0,64,48,2"]
    assert summary(conversion) == ("2 images (0 negatives), 3 boxes, 3 classes; 2 images "
                                   "without boxes left out; 1 label files without an image")
    negatives = convert_yolo(yolo / "images", classes=["x", "y", "z"], negatives=True)
    assert lines_of(negatives, yolo) == [
        "images/a.jpg 24,12,40,36,0 0,0,16,24,1", "images/b.png", "images/d.jpg",
        "images/sub/c.jpg 0,0,64,48,2"]


def test_yolo_labels_beside_images(tmp_path):
    image(tmp_path / "a.jpg", (100, 50))
    write(tmp_path / "a.txt", "1 0.5 0.5 0.5 0.5\n")
    conversion = convert_yolo(tmp_path, classes=["a", "b"])
    assert lines_of(conversion, tmp_path) == ["a.jpg 25,12,75,38,1"]  # 12.5 and 37.5: to even
    with pytest.raises(UserError, match="no classes.txt; give the class names with --classes"):
        convert_yolo(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("0 0.5 0.5 0.25\n", ":1: expected 5 values 'class cx cy w h', got 4 (0 0.5 0.5 0.25)"),
    ("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n", ":2: class id outside 0..2 (3)"),
    ("1.5 0.5 0.5 0.1 0.1\n", ":1: class id outside 0..2 (1.5)"),
    ("0 0.5 0.5 x 0.1\n", ":1: coordinate is not a number ('x')"),
    ("0 0.5 0.5 nan 0.1\n", ":1: coordinate is not a number ('nan')"),
    ("0 0.9 0.5 0.5 0.5\n", ":1: box outside the 64x48 image (41.6,12,73.6,36)"),
    ("0 0.5 0.5 0 0.1\n", ":1: empty box, min >= max (32,21.6,32,26.4)"),
])
def test_yolo_errors(tmp_path, text, message):
    image(tmp_path / "images" / "a.jpg")
    label = write(tmp_path / "labels" / "a.txt", text)
    with pytest.raises(UserError) as error:
        convert_yolo(tmp_path, classes=["a", "b", "c"])
    assert str(error.value) == f"{label}{message}"


def test_yolo_unreadable_image(tmp_path):
    write(tmp_path / "images" / "a.jpg", "not an image")
    write(tmp_path / "labels" / "a.txt", "0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(UserError, match=r"a.jpg: not an image"):
        convert_yolo(tmp_path, classes=["a"])


def test_yolo_real_labels_round_trip(shared, tmp_path):
    """coco128-train was made from YOLO labels with round((cx - w/2) * W) etc.:
    labels written back from its boxes must convert to the same lines."""
    data = shared / "data" / "coco128-train"
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").symlink_to(data / "images" / "train2017")
    expected = []
    for line in (data / "train.txt").read_text().splitlines():
        path, *boxes = line.split()
        w, h = Image.open(data / path).size
        rows = []
        for box in boxes:
            x0, y0, x1, y1, c = map(int, box.split(","))
            rows.append(f"{c} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} "
                        f"{(x1 - x0) / w} {(y1 - y0) / h}\n")
        write(tmp_path / "labels" / (Path(path).stem + ".txt"), "".join(rows))
        expected.append(boxes)
    conversion = convert_yolo(tmp_path, classes=(data / "classes.txt").read_text().split("\n")[:80],
                              negatives=True)
    got = [[",".join(map(str, b)) for b in boxes] for _, boxes in conversion.images]
    assert got == expected


# ------------------------------------------------------- output and CLI

def test_write_paths_relative_absolute_and_special(tmp_path):
    image(tmp_path / "data" / "my image.jpg")
    image(tmp_path / "data" / "#1.jpg")
    conversion = convert_yolo(tmp_path / "data", classes=["a"], negatives=True)
    out = tmp_path / "lists" / "train.txt"
    write_annotations(conversion, out)
    assert out.read_text() == "../data/#1.jpg\n../data/my image.jpg\n"
    assert (tmp_path / "lists" / "train_classes.txt").read_text() == "a\n"
    write_annotations(conversion, tmp_path / "data" / "t.txt", tmp_path / "names.txt")
    assert (tmp_path / "data" / "t.txt").read_text() == "./#1.jpg\nmy image.jpg\n"
    write_annotations(conversion, out, absolute=True)
    assert out.read_text().splitlines()[0] == str(tmp_path / "data" / "#1.jpg")


def test_cli_writes_files_and_summary(voc, tmp_path, capsys):
    out = tmp_path / "out" / "voc.txt"
    assert annotations.main(["voc", str(voc), "-o", str(out), "--negatives"]) == 0
    assert out.read_text() == ("../VOC/JPEGImages/a.jpg 1,2,30,40,2 10,21,64,48,1\n"
                               "../VOC/JPEGImages/c.jpg\n")
    assert (tmp_path / "out" / "voc_classes.txt").read_text() == "bird\ncat\ndog\n"
    assert capsys.readouterr().out.splitlines()[0] == (
        "voc: 2 images (1 negatives), 2 boxes, 3 classes; 2 difficult objects skipped; "
        "1 images without boxes left out")


def test_cli_user_errors_exit_2(voc, tmp_path, capsys):
    out = tmp_path / "out" / "x.txt"
    write(voc / "Annotations" / "c.xml", "<annotation>")
    assert run_cli(annotations.main, ["voc", str(voc), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {voc / 'Annotations' / 'c.xml'}:1: malformed XML (no element found)\n"
    assert not out.parent.exists()  # nothing written
    for argv in (["coco"], ["yolo", str(voc), "-o", str(out), "--bad"],
                 ["coco", "x.json", "--images", ".", "-o", str(out), "--categories", "all"],
                 ["yolo", str(tmp_path / "missing"), "-o", str(out)]):
        assert run_cli(annotations.main, argv) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_cli_process_exit_status(tmp_path):
    script = str(ROOT / "annotations.py")
    run = subprocess.run([sys.executable, script, "coco", str(tmp_path / "none.json"),
                          "--images", str(tmp_path), "-o", str(tmp_path / "o.txt")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
    assert "none.json" in run.stderr
    help_text = subprocess.run([sys.executable, script, "voc", "--help"], capture_output=True,
                               text=True, timeout=60).stdout
    for flag in ("--output", "--classes-out", "--negatives", "--absolute", "--images",
                 "--ids", "--classes", "--include-difficult", "--skip-unknown"):
        assert flag in help_text


def test_written_file_reads_back_with_the_trainer_parser(tmp_path):
    from yolo3.annotation_file import read_annotations
    image(tmp_path / "data" / "my image.jpg")
    image(tmp_path / "data" / "#1.jpg", (80, 60))
    write(tmp_path / "data" / "#1.txt", "0 0.25 0.25 0.25 0.25\n")  # 10,8,30,22 in 80x60
    conversion = convert_yolo(tmp_path / "data", classes=["a"], negatives=True)
    out = tmp_path / "lists" / "t.txt"
    write_annotations(conversion, out)
    lines = read_annotations(out, num_classes=1)
    assert [Path(line.path).resolve() for line in lines] == [
        (tmp_path / "data" / name).resolve() for name in ("#1.jpg", "my image.jpg")]
    assert lines[0].boxes.tolist() == [[10, 8, 30, 22, 0]]
    assert lines[1].boxes.shape == (0, 5)


def test_xml_entity_bomb_is_refused(tmp_path):
    entities = "".join(f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 10))
    xml = write(tmp_path / "a.xml", f'<!DOCTYPE a [<!ENTITY e0 "{"x" * 64}">{entities}]>'
                                    "<annotation><filename>&e9;</filename></annotation>")
    with pytest.raises(UserError, match=f"{xml}:1: malformed XML"):
        convert_voc(tmp_path)
