"""The training batches: a keras.utils.PyDataset over annotation lines, and the
original's generators."""
import keras
import numpy as np

from .annotation_file import as_annotation_lines
from .errors import UserError
from .model import preprocess_true_boxes
from .augment import get_random_data


class YoloDataset(keras.utils.PyDataset):
    """Training batches `((images (b, h, w, 3) float32 in [0, 1], *y_true), zeros(b))`.

    lines: AnnotationLine objects or line strings. input_shape: (h, w).
    augment: get_random_data(random=True) (training); False gives the letterboxed
    image (validation). shuffle: a new order each epoch. Each batch draws from its own
    numpy Generator seeded by (seed, epoch, batch index), so batches are the same
    whatever the number of workers and differ across batches and epochs.
    len = max(1, lines // batch_size); a batch larger than the data wraps around.
    """

    def __init__(self, lines, batch_size, input_shape, anchors, num_classes, mask=None,
                 augment=True, shuffle=True, seed=None, max_boxes=20,
                 exif_transpose=False, initial_epoch=0, **kwargs):
        super().__init__(**kwargs)
        self.lines = as_annotation_lines(lines)
        if not self.lines:
            raise UserError("no annotation lines to train on")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1 ({batch_size})")
        self.batch_size = int(batch_size)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.anchors = np.asarray(anchors, dtype=np.float32)
        self.num_classes, self.mask = num_classes, mask
        self.augment, self.shuffle = augment, shuffle
        self.max_boxes, self.exif_transpose = max_boxes, exif_transpose
        self.seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
        self.epoch = int(initial_epoch)
        self._order_epoch, self._order = None, None

    def __len__(self):
        return max(1, len(self.lines) // self.batch_size)

    def order(self, epoch):
        """The line order of an epoch: a permutation seeded by (seed, epoch)."""
        if self._order_epoch != epoch:
            n = len(self.lines)
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(n)
                           if self.shuffle else np.arange(n))
            self._order_epoch = epoch
        return self._order

    def batch_lines(self, index):
        """The AnnotationLines of batch `index` in the current epoch."""
        order = self.order(self.epoch)
        picks = order[(index * self.batch_size + np.arange(self.batch_size)) % len(order)]
        return [self.lines[i] for i in picks]

    def load_batch(self, index):
        """(images (b, h, w, 3), boxes (b, max_boxes, 5) in input pixels) of batch
        `index` in the current epoch, before the targets are built."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} outside 0..{len(self) - 1}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        h, w = self.input_shape
        images = np.empty((self.batch_size, h, w, 3), np.float32)
        boxes = np.empty((self.batch_size, self.max_boxes, 5), np.float32)
        for j, line in enumerate(self.batch_lines(index)):
            images[j], boxes[j] = get_random_data(
                line, self.input_shape, random=self.augment, max_boxes=self.max_boxes,
                rng=rng, exif_transpose=self.exif_transpose)
        return images, boxes

    def __getitem__(self, index):
        images, boxes = self.load_batch(index)
        y_true = preprocess_true_boxes(boxes, self.input_shape, self.anchors,
                                       self.num_classes, mask=self.mask)
        return (images, *y_true), np.zeros(self.batch_size, np.float32)

    def set_epoch(self, epoch):
        """Continue from `epoch` (for resumed training)."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        self.epoch += 1


def data_generator(annotation_lines, batch_size, input_shape, anchors, num_classes,
                   rng=None, mask=None):
    """The original's endless generator of augmented batches (kept for existing
    scripts; YoloDataset is the parallel, reproducible replacement). Shuffles a copy
    of the lines at the start of every pass; rng as in get_random_data."""
    lines = as_annotation_lines(annotation_lines)
    shuffle = np.random.shuffle if rng is None else rng.shuffle
    n = len(lines)
    i = 0
    while True:
        image_data, box_data = [], []
        for _ in range(batch_size):
            if i == 0:
                shuffle(lines)
            image, box = get_random_data(lines[i], input_shape, random=True, rng=rng)
            image_data.append(image)
            box_data.append(box)
            i = (i + 1) % n
        image_data = np.array(image_data)
        box_data = np.array(box_data)
        y_true = preprocess_true_boxes(box_data, input_shape, anchors, num_classes, mask=mask)
        yield [image_data, *y_true], np.zeros(batch_size, np.float32)


def data_generator_wrapper(annotation_lines, batch_size, input_shape, anchors, num_classes,
                           **kwargs):
    """data_generator, or None for no lines or a batch size <= 0 (the original's)."""
    n = len(annotation_lines)
    if n == 0 or batch_size <= 0:
        return None
    return data_generator(annotation_lines, batch_size, input_shape, anchors, num_classes,
                          **kwargs)
