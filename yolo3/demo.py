"""A synthetic detection data set for the demo and the tests: coloured shapes
(circle, square, triangle) on textured backgrounds, with their boxes.

Nothing is downloaded: every image is drawn here from a seeded generator, so the
same seed gives the same files."""
import os

import numpy as np
from PIL import Image, ImageDraw

from .anchors import write_anchors
from .atomic import atomic_open, atomic_path

CLASSES = ["circle", "square", "triangle"]
# Anchors (w,h in input pixels) for shapes of 18..50 px in a 128 px image. With the
# default tiny mask (3,4,5 / 1,2,3) anchor 0 is unused, so it is kept below every
# object's size: no box has anchor 0 as its best match.
DEMO_ANCHORS = np.array([[8, 8], [18, 18], [26, 26], [34, 34], [44, 44], [56, 56]],
                        dtype=np.float32)


def _texture(rng, size):
    """A background: smooth colour noise plus random stripes, muted colours."""
    coarse = rng.uniform(40, 200, size=(6, 6, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC),
                      dtype=np.float32)
    base = 0.5 * base + 0.5 * base.mean(axis=2, keepdims=True)  # half saturation
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 24)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    base += stripes[..., None] * rng.uniform(5, 30)
    base += rng.normal(0, 8, size=base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def _vivid_colour(rng, background_mean):
    """A saturated colour far from the background's mean colour."""
    for _ in range(20):
        colour = rng.integers(0, 256, size=3)
        colour[rng.integers(0, 3)] = rng.choice([0, 255])
        if np.abs(colour - background_mean).sum() > 180:
            break
    return tuple(int(c) for c in colour)


def _draw_shape(draw, kind, box, colour):
    x0, y0, x1, y1 = box
    if kind == 0:
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif kind == 1:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    else:
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)],
                     fill=colour)


def _place_boxes(rng, size, count, min_side, max_side):
    """Up to `count` boxes (x0, y0, x1, y1) inside the image that do not touch."""
    boxes = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        w = int(rng.integers(min_side, max_side + 1))
        h = int(np.clip(w * rng.uniform(0.75, 1.33), min_side, max_side))
        x0 = int(rng.integers(0, size - w + 1))
        y0 = int(rng.integers(0, size - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] + 2 <= b[0] or b[2] + 2 <= box[0] or box[3] + 2 <= b[1]
               or b[3] + 2 <= box[1] for b in boxes):
            boxes.append(box)
    return boxes


def make_image(rng, size=128, max_objects=3, min_side=18, max_side=50):
    """One RGB image and its boxes [(x0, y0, x1, y1, class_id), ...]."""
    pixels = _texture(rng, size)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    boxes = []
    count = int(rng.integers(1, max_objects + 1))
    for x0, y0, x1, y1 in _place_boxes(rng, size, count, min_side, max_side):
        kind = int(rng.integers(0, len(CLASSES)))
        _draw_shape(draw, kind, (x0, y0, x1, y1), _vivid_colour(rng, pixels.mean((0, 1))))
        boxes.append((x0, y0, x1, y1, kind))
    return image, boxes


def make_dataset(folder, num_images=300, size=128, seed=0):
    """Write images, `annotations.txt`, `classes.txt` and `anchors.txt` under
    `folder` (every file atomically). Returns a dict of the three file paths."""
    folder = os.path.abspath(folder)
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(num_images):
        image, boxes = make_image(rng, size)
        path = os.path.join(images, f"{index:04d}.png")
        with atomic_path(path) as temp:
            image.save(temp, format="PNG")
        lines.append(" ".join([path] + [",".join(map(str, b)) for b in boxes]))
    paths = {"annotations": os.path.join(folder, "annotations.txt"),
             "classes": os.path.join(folder, "classes.txt"),
             "anchors": os.path.join(folder, "anchors.txt")}
    with atomic_open(paths["annotations"], "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with atomic_open(paths["classes"], "w", encoding="utf-8") as handle:
        handle.write("\n".join(CLASSES) + "\n")
    write_anchors(paths["anchors"], DEMO_ANCHORS)
    return paths


def run_demo(log_dir="logs/demo/", resume=False, jit="auto", num_images=300,
             input_size=128, freeze_epochs=45, epochs=55, batch_size=16):
    """`train.py --demo`: make the data set under log_dir/data, train tiny-YOLOv3
    from scratch through both stages, print the validation mAP@0.5 and the files."""
    import time

    from .evaluation import evaluate_detector, validation_detector
    from .trainer import Trainer, TrainConfig, describe_outputs

    started = time.time()
    paths = make_dataset(os.path.join(log_dir, "data"), num_images, size=input_size)
    print(f"Demo data set: {num_images} images of {', '.join(CLASSES)} in "
          f"{os.path.dirname(paths['annotations'])}")
    cfg = TrainConfig(annotations=paths["annotations"], classes=paths["classes"],
                      anchors=paths["anchors"], weights="none", log_dir=log_dir,
                      input_shape=(input_size, input_size), batch_size=batch_size,
                      unfreeze_batch_size=batch_size, freeze_epochs=freeze_epochs,
                      epochs=epochs, freeze_body=0, resume=resume, jit=jit)
    trainer = Trainer(cfg, verbose=2)
    result = trainer.run()
    if result.status:
        print(f"error: {result.message}")
        return result.status
    detector = validation_detector(trainer.body, trainer.class_names, trainer.anchors,
                                   trainer.input_shape, trainer.mask)
    map50 = evaluate_detector(detector, trainer.val_lines, coco=False)[0]["mAP50"]
    minutes = (time.time() - started) / 60
    print(f"\nDemo done in {minutes:.1f} min: validation mAP@0.5 = {map50:.3f} on "
          f"{len(trainer.val_lines)} images ({result.epochs_done} epochs). Written:")
    print("\n".join(describe_outputs(log_dir)))
    image = os.path.join(log_dir, "data", "images", "0000.png")
    print(f"Detect with: python yolo.py --model {result.outputs['trained_weights_final']}"
          f" --anchors {paths['anchors']} --classes {paths['classes']} "
          f"--input-size {input_size} --image {image}")
    return 0
