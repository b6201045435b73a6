"""Detect objects in images or a video with a YOLOv3 / tiny-YOLOv3 model, or export
the detector (SavedModel + .keras body, .tflite, .onnx).

    python yolo.py --model tiny.weights.h5 --anchors model_data/tiny_yolo_anchors.txt \\
        --image photos/ 'more/*.jpg' --output out/ --json detections.jsonl
    python yolo.py --video in.mp4 --video-output out.mp4
    python yolo.py --export exported/
    python yolo.py --export tiny-int8.tflite --quantize int8 --calibration train.txt
    python yolo.py --model tiny-int8.tflite --image photos/
"""
import contextlib
import glob
import json
import os
import sys
import time

from yolo3.atomic import atomic_open, atomic_path
from yolo3.cli import Parser, positive_int, quiet_tensorflow
from yolo3.detector_options import add_model_arguments
from yolo3.errors import UserError, run_cli
from yolo3.images import open_image
from yolo3.progress import progress_bar

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def expand_images(patterns):
    """Files, folders (their image files, sorted) and globs -> list of paths."""
    paths = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(os.path.join(pattern, n) for n in os.listdir(pattern)
                           if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not found:
            raise UserError(f"{pattern}: no image file found")
        paths += found
    return paths


def output_names(paths, folder):
    """One output path per image in `folder`, same file name, made unique."""
    used, names = set(), []
    for path in paths:
        stem, ext = os.path.splitext(os.path.basename(path))
        ext = ext if ext.lower() in IMAGE_EXTENSIONS - {".gif"} else ".png"
        name, n = stem + ext, 1
        while name in used:
            name, n = f"{stem}_{n}{ext}", n + 1
        used.add(name)
        names.append(os.path.join(folder, name))
    return names


def detection_records(path, detections, class_names):
    """One JSON-ready dict per detection."""
    return [{"image": path, "class": class_names[c], "class_id": int(c),
             "score": round(float(s), 6),
             **dict(zip(("x_min", "y_min", "x_max", "y_max"),
                        (round(float(v), 2) for v in box)))}
            for box, s, c in zip(*detections)]


def detect_images(yolo, paths, output=None, json_path=None, progress=None):
    """Detect on every image; write annotated images and/or JSON lines, else
    print the detections. A progress bar when `progress` (None: on a terminal)
    and nothing is printed."""
    if not output and not json_path:
        progress = False    # the printed detections show the progress
    with progress_bar(len(paths), "detecting", progress, unit="image") as advance:
        records = _detect_images(yolo, paths, output, json_path, advance)
    if json_path:
        with atomic_open(json_path, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
    return records


def _detect_images(yolo, paths, output, json_path, advance):
    records = []
    outputs = output_names(paths, output) if output else [None] * len(paths)
    for start in range(0, len(paths), yolo.batch_size):
        chunk = paths[start:start + yolo.batch_size]
        images = [open_image(p) for p in chunk]
        for path, image, det, out in zip(chunk, images, yolo.detect(images), outputs[start:]):
            records += detection_records(path, det, yolo.class_names)
            if out:
                with atomic_path(out) as temp:
                    yolo.draw(image, det).save(temp, format=_pil_format(out))
            if not output and not json_path:
                print(f"{path}: {len(det.scores)} box{'' if len(det.scores) == 1 else 'es'}")
                for r in detection_records(path, det, yolo.class_names):
                    print(f"  {r['class']} {r['score']:.2f} ({r['x_min']:.0f}, {r['y_min']:.0f}) "
                          f"({r['x_max']:.0f}, {r['y_max']:.0f})")
        advance(len(chunk))
    return records


def _pil_format(path):
    from PIL import Image
    return Image.registered_extensions()[os.path.splitext(path)[1].lower()]


def detect_video(yolo, source, output=None, max_frames=None, progress=None):
    """Detect on every frame of a video file or webcam (index); write the annotated
    video to `output` (same frame rate and size). A progress bar when `progress`
    (None: on a terminal). Returns the number of frames."""
    try:
        import cv2
    except ImportError:
        raise UserError("--video needs OpenCV: pip install 'opencv-python-headless<5'") from None
    from PIL import Image
    import numpy as np

    capture = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
    if not capture.isOpened():
        raise UserError(f"{source}: cannot open the video")
    frames, started = 0, time.perf_counter()
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        with (atomic_path(output) if output else contextlib.nullcontext()) as temp:
            # OpenCV picks the container by extension: write temp + extension.
            target = temp + os.path.splitext(output)[1] if output else None
            writer, completed = None, False
            try:
                if output:
                    writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"mp4v"),
                                             fps, size)
                    if not writer.isOpened():
                        raise UserError(f"{output}: OpenCV cannot write this video format")
                with progress_bar(_frame_count(capture, max_frames), "detecting",
                                  progress, unit="frame") as advance:
                    while max_frames is None or frames < max_frames:
                        ok, frame = capture.read()
                        if not ok:      # end of the stream
                            break
                        image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                        drawn = np.asarray(yolo.detect_image(image))
                        frames += 1
                        if writer:
                            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                        advance()
                completed = True
            finally:
                if writer:
                    writer.release()
                if target and not completed:    # an error or Ctrl-C: no partial video
                    with contextlib.suppress(OSError):
                        os.remove(target)
            if output:
                os.replace(target, temp)
    finally:
        capture.release()
    seconds = time.perf_counter() - started
    print(f"{frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} frames/s)")
    return frames


def _frame_count(capture, max_frames):
    """Frames the video holds (None when unknown: a webcam), at most max_frames."""
    import cv2
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    counts = [n for n in (count if count > 0 else None, max_frames) if n is not None]
    return min(counts) if counts else None


def build_parser():
    parser = Parser(description=__doc__)
    add_model_arguments(parser)
    parser.add_argument("--image", nargs="+", metavar="PATH",
                        help="image files, folders or globs to detect on")
    parser.add_argument("--output", metavar="DIR",
                        help="write the annotated images here (default: print the "
                             "detections unless --json)")
    parser.add_argument("--json", metavar="FILE",
                        help="write one JSON object per detection and line: image, class, "
                             "class_id, score, x_min, y_min, x_max, y_max (pixels)")
    parser.add_argument("--video", metavar="IN",
                        help="video file or webcam index to detect on (needs OpenCV)")
    parser.add_argument("--video-output", metavar="OUT",
                        help="write the annotated video here (mp4v codec)")
    parser.add_argument("--max-frames", type=positive_int, default=None,
                        help="stop the video after this many frames (default: all)")
    parser.add_argument("--export", metavar="PATH",
                        help="FILE.tflite or FILE.onnx: the network (letterboxed image -> "
                             "raw head outputs; docs/deployment.md); a folder: "
                             "DIR/saved_model (TensorFlow SavedModel: image batch -> "
                             "boxes, scores, classes, valid_detections) and DIR/body.keras")
    parser.add_argument("--format", default=None,
                        help="export format savedmodel, tflite or onnx (default: from the "
                             "--export suffix)")
    parser.add_argument("--quantize", default=None,
                        help=".tflite: none (float32), float16 (weights) or int8 (full "
                             "integer; needs --calibration) (default: none)")
    parser.add_argument("--calibration", metavar="FILE",
                        help="int8: annotation file whose images (up to 300) calibrate "
                             "the ranges, letterboxed as at inference")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (one is shown on a terminal)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not (args.image or args.video or args.export):
        raise UserError("nothing to do: give --image, --video or --export")
    if args.video_output and not args.video:
        raise UserError("--video-output needs --video")
    paths = expand_images(args.image) if args.image else []
    progress = False if args.no_progress else None
    quiet_tensorflow()
    if args.export:
        from yolo3.export import export_request
        request = export_request(args.export, args.format, args.quantize, args.calibration)
    elif args.format or args.quantize or args.calibration:
        raise UserError("--format, --quantize and --calibration need --export")
    from yolo3.detector import make_detector
    yolo = make_detector(args)
    if paths:
        records = detect_images(yolo, paths, args.output, args.json, progress)
        print(f"{len(records)} detections in {len(paths)} images"
              + (f"; annotated images in {args.output}" if args.output else "")
              + (f"; JSON lines in {args.json}" if args.json else ""))
    if args.video:
        detect_video(yolo, args.video, args.video_output, args.max_frames, progress)
    if args.export:
        from yolo3.export import export_file
        written = export_file(yolo, request)
        print(f"exported {' and '.join(written)} ({request.label})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
