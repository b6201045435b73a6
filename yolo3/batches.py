"""The training batches: a keras.utils.PyDataset over annotation lines, and the
original's generators."""
import keras
import numpy as np

from .annotation_file import as_annotation_lines
from .errors import UserError
from .model import preprocess_true_boxes
from .augment import get_random_data
from .mosaic import largest_boxes, mixup, mosaic
from .multiscale import input_size_at


class YoloDataset(keras.utils.PyDataset):
    """Training batches `((images (b, h, w, 3) float32 in [0, 1], *y_true), zeros(b))`.

    lines: AnnotationLine objects or line strings. input_shape: (h, w).
    augment: get_random_data(random=True) (training); False gives the letterboxed
    image (validation). shuffle: a new order each epoch. Each batch draws from its own
    numpy Generator seeded by (seed, epoch, batch index), so batches are the same
    whatever the number of workers and differ across batches and epochs.
    len = max(1, lines // batch_size); a batch larger than the data wraps around.

    Options of the modern recipe, all off by default (the batches are then the
    original's, draw for draw):
    mosaic: with augment, the probability that a training image is a mosaic
    (yolo3.mosaic.mosaic) of its line and 3 lines drawn uniformly from the whole data
    set (it may draw its own line again), each of the 4 first through
    get_random_data(random=True). mixup: with augment, the probability that the image
    is then blended (yolo3.mosaic.mixup) with a partner made the same way from a
    uniformly drawn line (itself a mosaic with probability `mosaic`, never mixed).
    mosaic_until: an epoch index; from that epoch on, mosaic and mixup are off (None:
    never). A mixed image with more than max_boxes boxes keeps the max_boxes largest
    by area (yolo3.mosaic.largest_boxes). Draws per image, in order: the mosaic coin,
    3 line indices, the 4 samples' draws, the centre; then the mixup coin, the
    partner's line index, the partner as above, the blend weight. A probability of
    0 draws no coin.
    target_options: a dict of keyword arguments forwarded to preprocess_true_boxes.
    sizes: a list of (h, w) input sizes for multi-scale training (the trainer gives
    it to the training data only); images and y_true of batch `index` are made at
    yolo3.multiscale.input_size_at(sizes, seed, epoch, index // size_every), so
    size_every consecutive batches share a size. None: always input_shape.
    """

    def __init__(self, lines, batch_size, input_shape, anchors, num_classes, mask=None,
                 augment=True, shuffle=True, seed=None, max_boxes=20,
                 exif_transpose=False, initial_epoch=0, mosaic=0.0, mixup=0.0,
                 mosaic_until=None, target_options=None, sizes=None, size_every=10,
                 **kwargs):
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
        self.mosaic = _probability("mosaic", mosaic)
        self.mixup = _probability("mixup", mixup)
        self.mosaic_until = None if mosaic_until is None else int(mosaic_until)
        self.target_options = dict(target_options or {})
        self.sizes = _sizes(sizes)
        if int(size_every) < 1:
            raise UserError(f"batches per input size must be at least 1 ({size_every})")
        self.size_every = int(size_every)

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

    def batch_shape(self, index):
        """The input size (h, w) of batch `index` in the current epoch."""
        if self.sizes is None:
            return self.input_shape
        return input_size_at(self.sizes, self.seed, self.epoch, index // self.size_every)

    def mixing(self):
        """Whether mosaic or mixup may make the images of the current epoch."""
        until = self.mosaic_until
        return (self.augment and (self.mosaic > 0 or self.mixup > 0)
                and (until is None or self.epoch < until))

    def load_batch(self, index):
        """(images (b, h, w, 3), boxes (b, max_boxes, 5) in input pixels) of batch
        `index` in the current epoch, before the targets are built; (h, w) is
        batch_shape(index)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} outside 0..{len(self) - 1}")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        shape = self.batch_shape(index)
        sample = self._mixed_sample if self.mixing() else self._sample
        images = np.empty((self.batch_size, *shape, 3), np.float32)
        boxes = np.empty((self.batch_size, self.max_boxes, 5), np.float32)
        for j, line in enumerate(self.batch_lines(index)):
            images[j], boxes[j] = sample(line, shape, rng)
        return images, boxes

    def _sample(self, line, shape, rng):
        """get_random_data of one line: (image, boxes (max_boxes, 5) zero padded)."""
        return get_random_data(line, shape, random=self.augment, max_boxes=self.max_boxes,
                               rng=rng, exif_transpose=self.exif_transpose)

    def _mosaic_or_plain(self, line, shape, rng):
        """(image, boxes (n, 5)): a mosaic with probability self.mosaic, else the
        line's own augmented sample."""
        if self.mosaic > 0 and rng.random() < self.mosaic:
            picks = rng.integers(len(self.lines), size=3)
            lines = [line] + [self.lines[i] for i in picks]
            return mosaic([self._real_boxes(*self._sample(l, shape, rng)) for l in lines],
                          shape, rng)
        return self._real_boxes(*self._sample(line, shape, rng))

    @staticmethod
    def _real_boxes(image, boxes):
        """(image, boxes) without the zero padding rows."""
        return image, boxes[boxes[:, 2] > boxes[:, 0]]

    def _mixed_sample(self, line, shape, rng):
        """A sample of the modern recipe: a mosaic or not, then mixed up or not."""
        image, boxes = self._mosaic_or_plain(line, shape, rng)
        if self.mixup > 0 and rng.random() < self.mixup:
            partner = self.lines[rng.integers(len(self.lines))]
            image, boxes = mixup((image, boxes), self._mosaic_or_plain(partner, shape, rng),
                                 rng)
        return image, largest_boxes(boxes, self.max_boxes)

    def __getitem__(self, index):
        images, boxes = self.load_batch(index)
        y_true = preprocess_true_boxes(boxes, images.shape[1:3], self.anchors,
                                       self.num_classes, mask=self.mask,
                                       **self.target_options)
        return (images, *y_true), np.zeros(self.batch_size, np.float32)

    def set_epoch(self, epoch):
        """Continue from `epoch` (for resumed training)."""
        self.epoch = int(epoch)

    def on_epoch_end(self):
        self.epoch += 1


def free_size_batches(batches):
    """A tf.data.Dataset over a multi-scale YoloDataset whose element spec leaves
    the image and grid sizes free. (Keras's own adapter fixes every shape from the
    first two batches, which share a size, and then fails on the next size.) One
    pass per epoch, after which the dataset's epoch advances as Keras would
    advance it; the batches are the same as through Keras's adapter."""
    import tensorflow as tf

    def spec(array):
        free = (None,) * min(array.ndim, 3) + array.shape[3:]
        return tf.TensorSpec(free, tf.as_dtype(array.dtype))

    def one_epoch():
        for index in range(len(batches)):
            yield batches[index]
        batches.on_epoch_end()

    signature = tf.nest.map_structure(spec, batches[0])
    dataset = tf.data.Dataset.from_generator(one_epoch, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(1)


def _probability(name, value):
    """value as a float in [0, 1]; a UserError naming it otherwise."""
    if not 0 <= value <= 1:
        raise UserError(f"{name} probability {value}: outside 0..1")
    return float(value)


def _sizes(sizes):
    """Multi-scale sizes as a list of (h, w) multiples of 32, or None."""
    if sizes is None:
        return None
    sizes = [tuple(int(v) for v in size) for size in sizes]
    bad = [size for size in sizes if len(size) != 2 or min(size) < 32
           or any(v % 32 for v in size)]
    if not sizes or bad:
        raise UserError(f"multi-scale input sizes {bad or sizes}: need (h, w) multiples "
                        "of 32")
    return sizes


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
