"""Convert Pascal VOC XML, COCO instances JSON and YOLO txt labels to the
annotation line format `path x_min,y_min,x_max,y_max,class_id ...`.

Every converter returns a `Conversion`; `write_annotations` writes it atomically.
Boxes become integer pixels (Python round), clipped to the image; a box outside the
image by more than 1 px, or with min >= max, is an error naming the file and line.
"""
import json
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import TreeBuilder
from xml.parsers import expat

from .atomic import atomic_open
from .annotation_file import get_classes
from .errors import UserError
from .images import image_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The 80 category ids of COCO 2014/2017 instances files, in COCO order (-> 0..79).
COCO_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66),
            67, 70, *range(72, 83), *range(84, 91))
COCO_NAMES = (
    "person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic light,"
    "fire hydrant,stop sign,parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,"
    "bear,zebra,giraffe,backpack,umbrella,handbag,tie,suitcase,frisbee,skis,snowboard,"
    "sports ball,kite,baseball bat,baseball glove,skateboard,surfboard,tennis racket,"
    "bottle,wine glass,cup,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,"
    "carrot,hot dog,pizza,donut,cake,chair,couch,potted plant,bed,dining table,toilet,"
    "tv,laptop,mouse,remote,keyboard,cell phone,microwave,oven,toaster,sink,"
    "refrigerator,book,clock,vase,scissors,teddy bear,hair drier,toothbrush").split(",")
COCO_CATEGORY_MODES = ("coco", "listed", "present")
_LINE = "_line"  # attribute holding an XML element's start line
LEFT_OUT = "images without boxes left out"
TINY = "objects under 1 px skipped"
BAD = "bad boxes skipped"


@dataclass
class Conversion:
    """Images as (path, [(x_min, y_min, x_max, y_max, class_id), ...]), class
    names in id order, and counts for the summary."""
    images: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, path, boxes, skipped, negatives):
        """Keep an image with boxes; keep one without boxes only as a requested
        negative, and never when its objects were skipped (crowd, difficult...)."""
        if boxes or (negatives and not skipped):
            self.images.append((Path(path), boxes))
            self.counts["boxes"] += len(boxes)
            self.counts["negatives"] += not boxes
            return True
        self.counts[LEFT_OUT] += 1
        return False


def pixel_box(x_min, y_min, x_max, y_max, width, height, where):
    """Integer box clipped to the image, or None when it rounds to zero size."""
    values = f"{x_min:g},{y_min:g},{x_max:g},{y_max:g}"
    if not (x_min < x_max and y_min < y_max):
        raise UserError(f"{where}: empty box, min >= max ({values})")
    if x_min < -1 or y_min < -1 or x_max > width + 1 or y_max > height + 1:
        raise UserError(f"{where}: box outside the {width:g}x{height:g} image ({values})")
    x0, x1 = (min(max(round(v), 0), math.floor(width)) for v in (x_min, x_max))
    y0, y1 = (min(max(round(v), 0), math.floor(height)) for v in (y_min, y_max))
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _folder(path):
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder")
    return path


def _read_text(path):
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def _number(value, where, what):
    """A finite float from a string or a JSON number (not a bool)."""
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
    except ValueError:
        raise UserError(f"{where}: {what} is not a number ({value!r})") from None
    return number


# ---------------------------------------------------------------- Pascal VOC

def _parse_xml(path):
    """Element tree of an XML file; every element records its start line."""
    builder, parser = TreeBuilder(), expat.ParserCreate()
    parser.StartElementHandler = lambda tag, attrs: builder.start(
        tag, {**attrs, _LINE: str(parser.CurrentLineNumber)})
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        with open(path, "rb") as handle:
            parser.ParseFile(handle)
    except expat.ExpatError as exc:
        raise UserError(f"{path}:{exc.lineno}: malformed XML "
                        f"({expat.ErrorString(exc.code)})") from None
    return builder.close()


def _voc_number(parent, tag, path):
    child = parent.find(tag)
    if child is None:
        raise UserError(f"{path}:{parent.get(_LINE)}: <{parent.tag}> without <{tag}>")
    return _number((child.text or "").strip(), f"{path}:{child.get(_LINE)}", f"<{tag}>")


def _voc_image(root, xml_path, images):
    """The image named by <filename>, else the XML's stem with an image extension."""
    filename = (root.findtext("filename") or "").strip()
    candidates = [images / filename] if filename else []
    candidates += [images / (xml_path.stem + ext) for ext in IMAGE_EXTENSIONS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    wanted = filename or f"{xml_path.stem}.*"
    raise UserError(f"{xml_path}: image not found ({images / wanted})")


def read_voc(xml_path, images, skip_bad=False):
    """(image path, [(name, box, difficult, where), ...]) of one XML file; box is
    None when it rounds to zero size, BAD when it is empty or outside the image
    and skip_bad is set (a warning names it; otherwise UserError)."""
    root = _parse_xml(xml_path)
    if root.tag != "annotation":
        raise UserError(f"{xml_path}:{root.get(_LINE)}: root element is <{root.tag}>, "
                        "expected <annotation>")
    image = _voc_image(root, xml_path, images)
    try:  # <size> when present and positive, else the image header
        width, height = (float(root.findtext(f"size/{tag}")) for tag in ("width", "height"))
        if width <= 0 or height <= 0:
            raise ValueError
    except (TypeError, ValueError):
        width, height = image_size(image)
    objects = []
    for obj in root.findall("object"):
        where = f"{xml_path}:{obj.get(_LINE)}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise UserError(f"{where}: <object> without a <name>")
        difficult = _number((obj.findtext("difficult") or "").strip() or "0",
                            where, "<difficult>") != 0
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise UserError(f"{where}: <object> {name!r} without a <bndbox>")
        coords = [_voc_number(bndbox, tag, xml_path) for tag in ("xmin", "ymin", "xmax", "ymax")]
        try:
            box = pixel_box(*coords, width, height, f"{xml_path}:{bndbox.get(_LINE)}: {name!r}")
        except UserError as error:
            if not skip_bad:
                raise
            print(f"warning: {error}; skipped", file=sys.stderr)
            box = BAD
        objects.append((name, box, difficult, where))
    return image, objects


def _voc_files(xml_dir, ids):
    """XML files named by an ids file (first word of each line), else all, sorted."""
    if ids is None:
        files = sorted(xml_dir.glob("*.xml"))
        if not files:
            raise UserError(f"{xml_dir}: no .xml files")
        return files
    files = []
    for number, line in enumerate(_read_text(ids).splitlines(), 1):
        if line.split():
            path = xml_dir / f"{line.split()[0]}.xml"
            if not path.is_file():
                raise UserError(f"{ids}:{number}: no annotation file ({path})")
            files.append(path)
    if not files:
        raise UserError(f"{ids}: no image ids")
    return files


def convert_voc(folder, images=None, classes=None, ids=None, include_difficult=False,
                skip_unknown=False, negatives=False, skip_bad=False):
    """Pascal VOC: `folder` is a VOC root (Annotations/, JPEGImages/) or a folder of
    XML files; `images` defaults to the sibling JPEGImages/, else `folder`.
    `classes`: names in id order; default all object names, sorted. skip_bad:
    empty boxes and boxes outside the image are reported and skipped."""
    folder = _folder(folder)
    xml_dir = folder / "Annotations" if (folder / "Annotations").is_dir() else folder
    if images is None:
        jpeg = xml_dir.parent / "JPEGImages"
        images = jpeg if jpeg.is_dir() else xml_dir
    parsed = [read_voc(path, _folder(images), skip_bad) for path in _voc_files(xml_dir, ids)]
    if classes is None:  # every name, difficult ones too: same list with or without them
        classes = sorted({name for _, objects in parsed for name, *_ in objects})
    index = {name: i for i, name in enumerate(classes)}
    conversion = Conversion(classes=list(classes))
    counts = conversion.counts
    for image, objects in parsed:
        boxes = []
        for name, box, difficult, where in objects:
            if difficult and not include_difficult:
                counts["difficult objects skipped"] += 1
            elif name not in index:
                if not skip_unknown:
                    raise UserError(f"{where}: unknown class ({name!r}) not in the classes file")
                counts["objects of unknown classes skipped"] += 1
            elif box is None:
                counts[TINY] += 1
            elif box == BAD:
                counts[BAD] += 1
            else:
                boxes.append((*box, index[name]))
        conversion.add(image, boxes, len(objects) - len(boxes), negatives)
    return conversion


# ---------------------------------------------------------------------- COCO

def _load_json(path):
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise UserError(f"{path}: not a COCO instances file (no 'images' and "
                        "'annotations' lists)")
    return data


def _entry(item, where, keys):
    """Check a JSON object has `keys`; return their values."""
    if not isinstance(item, dict):
        raise UserError(f"{where}: not a JSON object ({item!r:.40})")
    missing = [key for key in keys if key not in item]
    if missing:
        raise UserError(f"{where}: missing {missing[0]!r}")
    return [item[key] for key in keys]


def _check_id(value, where, what):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(f"{where}: {what} is not an integer or a text ({value!r:.40})")


def _coco_categories(listed, used, mode):
    """(category ids in class-id order, their names) for --categories `mode`."""
    if mode == "coco":
        return COCO_IDS, [listed.get(cid, name) for cid, name in zip(COCO_IDS, COCO_NAMES)]
    if mode not in ("listed", "present"):
        raise UserError(f"unknown category mode ({mode!r}; one of {COCO_CATEGORY_MODES})")
    ids = sorted(listed if mode == "listed" else used.keys() & listed.keys())
    return ids, [listed[cid] for cid in ids]


def convert_coco(json_path, images, categories="coco", negatives=False):
    """COCO instances JSON. `categories`: 'coco' maps the 80 COCO ids to 0..79,
    'listed' every category in the file by id, 'present' those with boxes.
    Crowd annotations are skipped; images keep the file's order."""
    data = _load_json(json_path)
    listed = {}
    for i, category in enumerate(data.get("categories") or []):
        where = f"{json_path}: categories[{i}]"
        cid, name = _entry(category, where, ("id", "name"))
        _check_id(cid, where, "category id")
        if not isinstance(name, str) or not name.strip():
            raise UserError(f"{where}: category name is not a text ({name!r})")
        listed[cid] = name.strip()
    entries = {}
    for i, item in enumerate(data["images"]):
        where = f"{json_path}: images[{i}]"
        iid, file_name, width, height = _entry(item, where, ("id", "file_name", "width", "height"))
        _check_id(iid, where, "image id")
        width, height = (_number(v, where, k) for v, k in ((width, "width"), (height, "height")))
        if not isinstance(file_name, str) or not file_name or width <= 0 or height <= 0:
            raise UserError(f"{where}: bad file_name or size ({file_name!r}, {width:g}x{height:g})")
        if iid in entries:
            raise UserError(f"{where}: duplicate image id ({iid!r})")
        entries[iid] = (Path(images) / file_name, width, height, [], Counter())
    counts, used = Counter(), {}
    for i, annotation in enumerate(data["annotations"]):
        where = f"{json_path}: annotations[{i}]"
        iid, cid = _entry(annotation, where, ("image_id", "category_id"))
        _check_id(cid, where, "category_id")
        if iid not in entries:
            raise UserError(f"{where}: unknown image_id ({iid!r})")
        _, width, height, objects, skipped = entries[iid]
        if annotation.get("iscrowd"):
            skipped["crowd objects skipped"] += 1
            continue
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise UserError(f"{where}: bbox is not [x, y, width, height] ({bbox!r:.60})")
        x, y, w, h = (_number(v, where, "bbox value") for v in bbox)
        box = pixel_box(x, y, x + w, y + h, width, height, where)
        if box is None:
            skipped[TINY] += 1
        else:
            objects.append((*box, cid, where))
            used.setdefault(cid, where)
    ids, names = _coco_categories(listed, used, categories)
    index = {cid: i for i, cid in enumerate(ids)}
    for cid, where in used.items():
        if cid not in index:
            hint = ("is not one of the 80 COCO categories (use --categories listed or "
                    "present)" if categories == "coco" else "is not in 'categories'")
            raise UserError(f"{where}: category_id {cid!r} {hint}")
    conversion = Conversion(classes=names, counts=counts)
    for path, _, _, objects, skipped in entries.values():
        counts.update(skipped)
        boxes = [(*box, index[cid]) for *box, cid, _ in objects]
        if conversion.add(path, boxes, sum(skipped.values()), negatives) and not path.is_file():
            raise UserError(f"{json_path}: image not found ({path})")
    return conversion


# ---------------------------------------------------------------------- YOLO

def _yolo_folders(folder, labels):
    """(images, labels): folder/images + folder/labels, or an images folder whose
    last `images` path part is replaced by `labels`, or labels beside the images."""
    folder = _folder(folder)
    if (folder / "images").is_dir():
        return folder / "images", _folder(labels) if labels else folder / "labels"
    if labels:
        return folder, _folder(labels)
    parts = folder.parts
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        twin = Path(*parts[:i], "labels", *parts[i + 1:])
        if twin.is_dir():
            return folder, twin
    return folder, folder


def convert_yolo(folder, labels=None, classes=None, negatives=False):
    """YOLO normalised labels (`class cx cy w h` a line, one .txt per image, a
    missing or empty file = no boxes). Classes: `classes`, else classes.txt in
    the labels or dataset folder. Image sizes come from the image headers."""
    images, labels = _yolo_folders(folder, labels)
    if classes is None:
        found = [p for p in (labels / "classes.txt", Path(folder) / "classes.txt") if p.is_file()]
        if not found:
            raise UserError(f"{folder}: no classes.txt; give the class names with --classes")
        classes = get_classes(found[0])
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and not p.name.startswith(".") and p.is_file())
    if not files:
        raise UserError(f"{images}: no images ({' '.join(IMAGE_EXTENSIONS)})")
    conversion = Conversion(classes=list(classes))
    label_files = set()
    for image in files:
        label = labels / image.relative_to(images).with_suffix(".txt")
        boxes, skipped = [], 0
        if label.is_file():
            label_files.add(label)
            lines = _read_text(label).splitlines()
            width, height = image_size(image) if any(map(str.strip, lines)) else (0, 0)
            for number, line in enumerate(lines, 1):
                where, fields = f"{label}:{number}", line.split()
                if not fields:
                    continue
                if len(fields) != 5:
                    raise UserError(f"{where}: expected 5 values 'class cx cy w h', "
                                    f"got {len(fields)} ({line.strip():.60})")
                cls = _number(fields[0], where, "class id")
                if not cls.is_integer() or not 0 <= cls < len(classes):
                    raise UserError(f"{where}: class id outside 0..{len(classes) - 1} ({fields[0]})")
                cx, cy, w, h = (_number(v, where, "coordinate") for v in fields[1:])
                box = pixel_box((cx - w / 2) * width, (cy - h / 2) * height,
                                (cx + w / 2) * width, (cy + h / 2) * height, width, height, where)
                if box is None:
                    conversion.counts[TINY] += 1
                    skipped += 1
                else:
                    boxes.append((*box, int(cls)))
        conversion.add(image, boxes, skipped, negatives)
    orphans = set(labels.rglob("*.txt")) - label_files - {labels / "classes.txt"}
    if orphans:
        conversion.counts["label files without an image"] = len(orphans)
    return conversion


# -------------------------------------------------------------------- output

def annotation_line(path, boxes, base=None):
    """`path x_min,y_min,x_max,y_max,class_id ...`; the path relative to `base`
    when given and possible (same drive), else absolute."""
    path = os.path.abspath(path)
    if "\n" in path or "\r" in path:
        raise UserError(f"image path contains a line break ({path!r})")
    if base is not None:
        try:
            path = os.path.relpath(path, base)
        except ValueError:  # another drive
            pass
        if path.startswith("#"):  # would read as a comment
            path = os.path.join(os.curdir, path)
    return " ".join([path] + [",".join(map(str, box)) for box in boxes])


def default_classes_path(output):
    """train.txt -> train_classes.txt (same folder)."""
    stem, _ = os.path.splitext(os.fspath(output))
    return f"{stem}_classes.txt"


def write_annotations(conversion, output, classes_output=None, absolute=False):
    """Write the annotation and classes files atomically; return their paths."""
    if not conversion.images:
        raise UserError("no image has a box to write (--negatives keeps images without boxes)")
    classes_output = classes_output or default_classes_path(output)
    base = None if absolute else os.path.dirname(os.path.abspath(output))
    lines = [annotation_line(path, boxes, base) for path, boxes in conversion.images]
    with atomic_open(output, "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(line + "\n" for line in lines)
    with atomic_open(classes_output, "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(name + "\n" for name in conversion.classes)
    return output, classes_output


def summary(conversion):
    """One line: images, boxes, classes, then what was skipped or left out."""
    counts = Counter(conversion.counts)
    text = (f"{len(conversion.images)} images ({counts.pop('negatives', 0)} negatives), "
            f"{counts.pop('boxes', 0)} boxes, {len(conversion.classes)} classes")
    notes = [f"{n} {what}" for what, n in counts.items() if n]
    return "; ".join([text] + notes)
