"""Stage 1 on cached features (upstream's train_bottleneck.py): with
--freeze-body 2 every layer but the output convolutions is frozen, and a frozen
BatchNorm runs in inference mode, so the inputs of the output convolutions do
not change during stage 1. They are computed once per image (letterboxed, no
augmentation), cached, and stage 1 trains only the output convolutions on them.

The cache (float16 .npy files, memory-mapped, in <log dir>/bottleneck/; see
yolo3.feature_cache) is keyed by a hash of the
annotation lines with their image files' sizes and times, the frozen weights,
the input size and the class names, so a changed input never reuses it."""
import hashlib
import os
import shutil

import keras
import numpy as np

from .feature_cache import TEMP_MARK, cached_rows
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


def feature_specs(extractor, max_boxes=MAX_BOXES):
    """{name: (row shape, dtype)} of the cache: 'f0', 'f1'(, 'f2') float16 features
    of the heads, 'boxes' (max_boxes, 5) float32."""
    specs = {f"f{i}": (tuple(o.shape[1:]), "float16")
             for i, o in enumerate(extractor.outputs)}
    specs["boxes"] = ((max_boxes, 5), "float32")
    return specs


def feature_chunks(extractor, lines, input_shape, batch_size=8):
    """{'f0': (b, h, w, c) float16, ..., 'boxes': (b, MAX_BOXES, 5)} per batch of
    lines, in order, with a progress line every tenth of the lines."""
    step = max(1, len(lines) // 10)
    for start in range(0, len(lines), batch_size):
        chunk = [get_random_data(line, input_shape, random=False, max_boxes=MAX_BOXES)
                 for line in lines[start:start + batch_size]]
        outputs = extractor.predict_on_batch(np.stack([image for image, _ in chunk]))
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        arrays = {f"f{i}": keras.ops.convert_to_numpy(o).astype(np.float16)
                  for i, o in enumerate(outputs)}
        arrays["boxes"] = np.stack([box for _, box in chunk]).astype(np.float32)
        done = min(start + batch_size, len(lines))
        if done // step > start // step or done == len(lines):
            print(f"  {done}/{len(lines)} images", flush=True)
        yield arrays


def cached_features(extractor, lines, input_shape, class_names, folder, label):
    """Features of `lines` as {name: memory-mapped rows}: from the cache when its
    key matches, else computed into it; caches of other keys for this label
    are removed."""
    key = cache_key(lines, extractor, input_shape, class_names)[:20]
    path = os.path.join(folder, f"{label}-{key}")
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            stale = os.path.join(folder, name)
            if name.startswith(f"{label}-") and stale != path and TEMP_MARK not in name:
                (shutil.rmtree if os.path.isdir(stale) else os.remove)(stale)
    return cached_rows(path, len(lines), feature_specs(extractor),
                       lambda: feature_chunks(extractor, lines, input_shape), label)


class FeatureBatches(keras.utils.PyDataset):
    """([*features, *y_true], zeros) batches from cached features, reshuffled
    each epoch from (seed, epoch)."""

    def __init__(self, arrays, batch_size, input_shape, anchors, num_classes, mask,
                 shuffle=True, seed=0, initial_epoch=0):
        super().__init__()
        self.features = [arrays[f"f{i}"] for i in range(len(arrays) - 1)]  # memory maps
        self.boxes = arrays["boxes"]
        self.batch_size, self.input_shape = batch_size, tuple(input_shape)
        self.anchors, self.num_classes, self.mask = anchors, num_classes, mask
        self.shuffle, self.seed, self.epoch = shuffle, seed, initial_epoch

    def __len__(self):
        return max(1, len(self.boxes) // self.batch_size)

    def order(self):
        """The epoch's order, drawn once per epoch (not per batch: O(N) each)."""
        if getattr(self, "_order_epoch", None) != self.epoch:
            n = len(self.boxes)
            self._order = (np.random.default_rng([self.seed, self.epoch]).permutation(n)
                           if self.shuffle else np.arange(n))
            self._order_epoch = self.epoch
        return self._order

    def __getitem__(self, index):
        n = len(self.boxes)
        picks = self.order()[(index * self.batch_size + np.arange(self.batch_size)) % n]
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
