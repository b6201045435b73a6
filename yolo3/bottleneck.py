"""Stage 1 on cached features (upstream's train_bottleneck.py): with
--freeze-body 2 every layer but the output convolutions is frozen, and a frozen
BatchNorm runs in inference mode, so the inputs of the output convolutions do
not change during stage 1. They are computed once per image (letterboxed, no
augmentation), cached, and stage 1 trains only the output convolutions on them.

The cache (float16, in <log dir>/bottleneck/) is keyed by a hash of the
annotation lines with their image files' sizes and times, the frozen weights,
the input size and the class names, so a changed input never reuses it."""
import hashlib
import os

import keras
import numpy as np

from .atomic import atomic_path
from .augment import get_random_data
from .model import YoloLoss, preprocess_true_boxes
from .kinds import kind_of_body

MAX_BOXES = 20


def feature_model(body):
    """image -> the inputs of the output convolutions (all from frozen layers)."""
    return keras.Model(body.input, [body.get_layer(n).input
                                    for n in kind_of_body(body).output_convs])


def head_model(body, anchors, num_classes, mask):
    """Model([*features, *y_true], loss) through the body's own output
    convolutions (the same layer objects, so training updates the body). The
    features come as the cache's float16; the convolutions cast them (in the
    graph, far faster than numpy's float16 -> float32)."""
    features, outputs, y_true = [], [], []
    for i, name in enumerate(kind_of_body(body).output_convs):
        conv = body.get_layer(name)
        feature = keras.Input(shape=tuple(conv.input.shape[1:]), dtype="float16",
                              name=f"features_{i}")
        output = conv(feature)
        features.append(feature)
        outputs.append(output)
        y_true.append(keras.Input(shape=(*output.shape[1:3], len(mask[i]),
                                         num_classes + 5), name=f"y_true_{i}"))
    loss = YoloLoss(anchors, num_classes, kind_of_body(body).ignore_thresh, mask,
                    max_true_boxes=MAX_BOXES, name="yolo_loss")([*outputs, *y_true])
    return keras.Model([*features, *y_true], loss, name="yolo_bottleneck")


def data_fingerprint(lines):
    """A hash of the annotation lines and their image files' sizes and times."""
    digest = hashlib.sha256()
    for line in lines:
        stat = os.stat(line.path)
        digest.update(f"{line.path}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
        digest.update(np.ascontiguousarray(line.boxes, np.float32).tobytes())
    return digest.hexdigest()


def cache_key(lines, extractor, input_shape, class_names):
    """sha256 of everything the cached features depend on."""
    digest = hashlib.sha256()
    digest.update(data_fingerprint(lines).encode())
    digest.update(repr((tuple(input_shape), list(class_names))).encode())
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def compute_features(extractor, lines, input_shape, batch_size=8):
    """{'f0': (N, h, w, c) float16, ..., 'boxes': (N, MAX_BOXES, 5)}."""
    parts, boxes = [], []
    for start in range(0, len(lines), batch_size):
        chunk = [get_random_data(line, input_shape, random=False, max_boxes=MAX_BOXES)
                 for line in lines[start:start + batch_size]]
        images = np.stack([image for image, _ in chunk])
        boxes += [box for _, box in chunk]
        outputs = extractor.predict_on_batch(images)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        parts.append([keras.ops.convert_to_numpy(o).astype(np.float16) for o in outputs])
    arrays = {f"f{i}": np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))}
    arrays["boxes"] = np.stack(boxes).astype(np.float32)
    return arrays


def cached_features(extractor, lines, input_shape, class_names, folder, label):
    """Features of `lines`, from the cache when its key matches, else computed and
    written (atomically); caches of other keys for this label are removed."""
    key = cache_key(lines, extractor, input_shape, class_names)[:20]
    path = os.path.join(folder, f"{label}-{key}.npz")
    if os.path.exists(path):
        print(f"Bottleneck: reusing cached {label} features {path}")
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    print(f"Bottleneck: computing {label} features of {len(lines)} images ...")
    arrays = compute_features(extractor, lines, input_shape)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith(f"{label}-") and name.endswith(".npz"):
            os.remove(os.path.join(folder, name))
    with atomic_path(path) as temp:
        with open(temp, "wb") as handle:
            np.savez(handle, **arrays)
    return arrays


class FeatureBatches(keras.utils.PyDataset):
    """([*features, *y_true], zeros) batches from cached features, reshuffled
    each epoch from (seed, epoch)."""

    def __init__(self, arrays, batch_size, input_shape, anchors, num_classes, mask,
                 shuffle=True, seed=0, initial_epoch=0):
        super().__init__()
        self.features = [arrays[f"f{i}"] for i in range(len(arrays) - 1)]
        self.boxes = arrays["boxes"]
        self.batch_size, self.input_shape = batch_size, tuple(input_shape)
        self.anchors, self.num_classes, self.mask = anchors, num_classes, mask
        self.shuffle, self.seed, self.epoch = shuffle, seed, initial_epoch

    def __len__(self):
        return max(1, len(self.boxes) // self.batch_size)

    def __getitem__(self, index):
        n = len(self.boxes)
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(n)
                 if self.shuffle else np.arange(n))
        picks = order[(index * self.batch_size + np.arange(self.batch_size)) % n]
        y_true = preprocess_true_boxes(self.boxes[picks], self.input_shape, self.anchors,
                                       self.num_classes, mask=self.mask)
        features = [f[picks] for f in self.features]
        return (*features, *y_true), np.zeros(self.batch_size, np.float32)

    def on_epoch_end(self):
        self.epoch += 1


def prepare(body, train_lines, val_lines, *, input_shape, anchors, class_names, mask,
            folder, seed, batch_size, first_epoch):
    """(model, train batches, val batches or None) for stage 1 on cached features:
    the features of `train_lines` and `val_lines` (cached in `folder`) through
    the body's own output convolutions; the training batches reshuffled each
    epoch from (seed, epoch), counting from `first_epoch`."""
    extractor = feature_model(body)
    common = (input_shape, anchors, len(class_names), mask)
    train_arrays = cached_features(extractor, train_lines, input_shape, class_names,
                                   folder, "train")
    train = FeatureBatches(train_arrays, batch_size, *common, shuffle=True, seed=seed,
                           initial_epoch=first_epoch)
    val = None
    if val_lines:
        val_arrays = cached_features(extractor, val_lines, input_shape, class_names,
                                     folder, "val")
        val = FeatureBatches(val_arrays, min(batch_size, len(val_lines)), *common,
                             shuffle=False)
    return head_model(body, anchors, len(class_names), mask), train, val
