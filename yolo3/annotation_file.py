"""Annotation files: parsing and validation (no Keras import, so the small CLIs
start fast; the training batches are in yolo3.batches).

Line format: `path x_min,y_min,x_max,y_max,class_id ...` (absolute pixels of the
stored image; decimals accepted). The path is everything before the first box, so
it may hold spaces. Blank lines and `#` comments are skipped; CRLF and a UTF-8 BOM
are accepted; a line with only a path is an image without objects.
"""
import itertools
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import numpy as np

from .errors import UserError, read_text
from .images import ImageError, check_image
from .progress import progress_bar

MAX_PROBLEMS = 50
CHUNK = 64      # lines per task when full_check decodes on several processes
# A token meant as a box: numbers and commas with at least one comma and a digit,
# or anything with 4 commas and no path separator (a box with a typo in it).
_NUMBERS = re.compile(r"[-+0-9.eE]*,[-+0-9.eE,]*")
_TOKEN = re.compile(r"\S+")


class AnnotationLine(NamedTuple):
    """One image: `path` (resolved), `boxes` float32 (n, 5) x_min, y_min, x_max,
    y_max, class_id, and `source` 'FILE:LINE' for messages."""
    path: str
    boxes: np.ndarray
    source: str = "<line>"


def get_classes(path):
    """Class names, one per line, in class-id order. Blank lines are ignored (the
    original counted them); a duplicate name or an empty file is a UserError."""
    path = os.fspath(path)
    text = read_text(path)
    names, first_seen = [], {}
    for number, raw in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        name = raw.strip()
        if not name:
            continue
        if name in first_seen:
            raise UserError(f"{path}:{number}: duplicate class name ({name!r}, "
                            f"first on line {first_seen[name]})")
        first_seen[name] = number
        names.append(name)
    if not names:
        raise UserError(f"{path}: no class names")
    return names


def _format_number(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def format_line(path, boxes):
    """The annotation line text for `path` and boxes (n, 5); integers stay integers."""
    parts = [str(path)]
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 5):
        parts.append(",".join(_format_number(v) for v in box[:4])
                     + f",{int(box[4])}")
    return " ".join(parts)


def _parse_box(token, number, num_classes):
    """(box (5,) or None, problems) for one box token; number counts from 1."""
    fields = token.split(",")
    where = f"box {number}: {token}"
    if len(fields) != 5:
        return None, [f"unparsable box, expected x_min,y_min,x_max,y_max,class_id ({where})"]
    try:
        values = [float(f) for f in fields]
    except ValueError:
        return None, [f"unparsable box, expected numbers ({where})"]
    with np.errstate(over="ignore"):  # beyond float32 (3.4e38) -> inf
        finite = np.isfinite(np.array(values, dtype=np.float32)).all()
    if not finite:
        return None, [f"unparsable box, numbers must be finite ({where})"]
    problems = []
    x_min, y_min, x_max, y_max, class_id = values
    if not class_id.is_integer():
        problems.append(f"class id is not an integer ({where})")
    elif class_id < 0 or (num_classes is not None and class_id >= num_classes):
        limit = num_classes if num_classes is not None else "number of classes"
        problems.append(f"class id {int(class_id)} outside [0, {limit}) ({where})")
    if x_min >= x_max:
        problems.append(f"x_min >= x_max ({where})")
    if y_min >= y_max:
        problems.append(f"y_min >= y_max ({where})")
    return np.array(values, dtype=np.float32), problems


def _box_like(token):
    if _NUMBERS.fullmatch(token) and re.search(r"\d", token):
        return True
    return token.count(",") >= 4 and "/" not in token and "\\" not in token


def _parse(text, num_classes=None):
    """(path, boxes float32 (n, 5), box tokens, problems) of one non-blank line."""
    text = text.strip()
    tokens = list(_TOKEN.finditer(text))
    first_box = next((i for i, t in enumerate(tokens) if _box_like(t.group())),
                     len(tokens))
    path = text[:tokens[first_box].start()].strip() if first_box < len(tokens) else text
    box_tokens = [t.group() for t in tokens[first_box:]]
    problems = [] if path else ["no image path before the boxes"]
    boxes = []
    for number, token in enumerate(box_tokens, 1):
        box, box_problems = _parse_box(token, number, num_classes)
        problems += box_problems
        if box is not None:
            boxes.append(box)
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 5)
    return path, boxes, box_tokens, problems


def parse_line(text, source="<line>", num_classes=None):
    """An AnnotationLine from one line of text (path not resolved, image not
    checked); UserError `source: what (value)` when the line is malformed."""
    path, boxes, _, problems = _parse(text, num_classes)
    if problems:
        raise UserError("\n".join(f"{source}: {p}" for p in problems))
    return AnnotationLine(path, boxes, source)


def resolve_image_path(image_path, annotation_path):
    """(path, places tried): a relative path is looked up in the current directory
    first (as the original), then next to the annotation file."""
    if os.path.isabs(image_path):
        return image_path, [image_path]
    here = image_path
    beside = os.path.join(os.path.dirname(os.path.abspath(annotation_path)), image_path)
    for candidate in (here, beside):
        if os.path.exists(candidate):
            return candidate, [os.path.abspath(here), beside]
    return here, [os.path.abspath(here), beside]


def _check_boxes_in_image(boxes, tokens, size):
    """Problems for boxes outside the (w, h) image by more than one pixel."""
    w, h = size
    problems = []
    for number, (box, token) in enumerate(zip(boxes, tokens), 1):
        if box[0] < -1 or box[1] < -1 or box[2] > w + 1 or box[3] > h + 1:
            problems.append(f"box outside the {w}x{h} image (box {number}: {token})")
    return problems


def read_annotations(path, num_classes=None, check_images=True, full_check=False,
                     skip_bad=False, min_lines=1, max_problems=MAX_PROBLEMS, progress=None,
                     workers=None):
    """Read and validate an annotation file -> list of AnnotationLine.

    Every line is checked before anything trains: box syntax, x_min < x_max,
    y_min < y_max, class id in [0, num_classes) (when given) and, with check_images,
    that the image exists, is not empty or truncated (header and end-of-file check;
    full_check decodes it) and holds the boxes (1 pixel of slack). Problems are
    collected (the first `max_problems` shown) and raised as one UserError of
    `FILE:LINE: what (value)` lines; with skip_bad, bad lines are dropped with a
    warning on stderr instead. Fewer than `min_lines` usable lines is an error.
    Image paths are resolved by `resolve_image_path`. While images are checked, a
    progress bar shows when `progress` (None: on a terminal, yolo3.progress).
    full_check decodes on `workers` processes (None: one per CPU), with the same
    result as one.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise UserError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an annotation file") from None
    raw_lines = list(enumerate(re.split(r"\r\n|\r|\n", text), 1))
    raw_lines = [(n, line) for n, line in raw_lines
                 if line.strip() and not line.lstrip().startswith("#")]
    good, problems, bad_lines = [], [], 0
    with progress_bar(len(raw_lines), f"checking {path}", progress if check_images else False,
                      unit="image") as advance:
        checked = _validate_all(raw_lines, (path, num_classes, check_images, full_check),
                                workers if full_check else 1)
        for (number, _), line_problems in zip(raw_lines, checked):
            source = f"{path}:{number}"
            if isinstance(line_problems, AnnotationLine):
                good.append(line_problems._replace(source=source))
            else:
                bad_lines += 1
                problems += [f"{source}: {p}" for p in line_problems]
            advance()
    if problems:
        listing = "\n".join(problems[:max_problems])
        if len(problems) > max_problems:
            listing += f"\n... and {len(problems) - max_problems} more problems"
        if not skip_bad:
            raise UserError(f"{path}: {_lines(bad_lines, 'bad line')} of {len(raw_lines)} "
                            f"(fix them, or skip them with --skip-bad):\n{listing}")
        print(f"warning: {path}: skipping {_lines(bad_lines, 'bad line')} of "
              f"{len(raw_lines)}:\n{listing}", file=sys.stderr)
    if not good:
        raise UserError(f"{path}: no usable annotation lines ({_lines(len(raw_lines), 'line')}"
                        f", {bad_lines} bad)")
    if len(good) < min_lines:
        raise UserError(f"{path}: {_lines(len(good), 'usable line')}, fewer than one batch "
                        f"({min_lines})")
    return good


def _lines(count, what):
    return f"{count} {what}" + ("" if count == 1 else "s")


def _validate_all(raw_lines, args, workers):
    """_validate(line, *args) of each (number, line), in line order. With
    several workers the lines go to a process pool in chunks of CHUNK (decoding
    images is the slow part: --full-check)."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    chunks = [[line for _, line in raw_lines[i:i + CHUNK]]
              for i in range(0, len(raw_lines), CHUNK)]
    if workers < 2 or len(chunks) < 2:
        for chunk in chunks:
            yield from _validate_chunk(chunk, args)
        return
    pool = ProcessPoolExecutor(min(workers, len(chunks)))
    try:
        for results in pool.map(_validate_chunk, chunks, itertools.repeat(args)):
            yield from results
    finally:   # an error or Ctrl-C: the chunks not started are dropped
        pool.shutdown(cancel_futures=True)


def _validate_chunk(lines, args):
    return [_validate(line, *args) for line in lines]


def _validate(line, annotation_path, num_classes, check_images, full_check):
    """An AnnotationLine, or the list of problems of this line."""
    image_path, boxes, tokens, problems = _parse(line, num_classes)
    if not image_path:
        return problems
    resolved, tried = resolve_image_path(image_path, annotation_path)
    if check_images:
        try:
            size = check_image(resolved, full=full_check)
        except ImageError as exc:
            if exc.reason == "image not found" and len(tried) == 2:
                places = tried[0] if tried[0] == tried[1] else " and ".join(tried)
                problems.append(f"image not found ({image_path}; tried {places})")
            else:
                problems.append(f"{exc.reason} ({resolved})")
        else:
            if not problems:
                problems += _check_boxes_in_image(boxes, tokens, size)
    return problems or AnnotationLine(resolved, boxes)


def as_annotation_lines(lines):
    """AnnotationLine objects from AnnotationLines or line strings (parsed, paths
    relative to the current directory); UserError for a malformed string."""
    result = []
    for number, line in enumerate(lines, 1):
        if isinstance(line, str):
            line = parse_line(line, source=f"line {number}")
        result.append(line)
    return result
