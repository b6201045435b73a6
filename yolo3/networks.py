"""The networks in Keras 3, built in darknet layer order: Darknet53, YOLOv3,
YOLOv3-SPP and tiny-YOLOv3 bodies (yolo3.model re-exports them, the original's API).

Layer names follow the darknet layer index of yolov3.cfg / yolov3-spp.cfg /
yolov3-tiny.cfg: conv_NNN, bn_NNN, leaky_NNN (convolutional layer NNN), pad_NNN (the
top-left padding of stride-2 convolution NNN), add_NNN (shortcut), concat_NNN
(route of several layers), upsample_NNN, maxpool_NNN. Pretrained weights,
checkpoints and converted darknet files load by these names.
"""

import keras
import numpy as np
from keras import layers

from .batchnorm import BatchNormalization
from .utils import compose

L2_DECAY = 5e-4


class LayerIndex:
    """Hands out darknet layer indexes in cfg order, for deterministic layer names."""

    def __init__(self, start=0):
        self.next_index = start

    def take(self):
        index = self.next_index
        self.next_index += 1
        return index

    def skip(self, count=1):
        """Darknet layers without a Keras layer ([yolo], one-layer [route])."""
        self.next_index += count


def _name(prefix, index):
    return None if index is None else f"{prefix}_{index:03d}"


def DarknetConv2D(*args, index=None, **kwargs):
    """Conv2D with darknet's L2 decay and padding (stride 2: 'valid' after a
    ZeroPadding2D of one row on top and one column on the left)."""
    conv_kwargs = {"kernel_regularizer": keras.regularizers.L2(L2_DECAY)}
    strides = kwargs.get("strides", (1, 1))
    conv_kwargs["padding"] = "valid" if tuple(np.broadcast_to(strides, 2)) == (2, 2) else "same"
    conv_kwargs.update(kwargs)
    conv = layers.Conv2D(*args, name=_name("conv", index), **conv_kwargs)
    if conv_kwargs["padding"] == "valid" and tuple(np.broadcast_to(strides, 2)) == (2, 2):
        return compose(layers.ZeroPadding2D(((1, 0), (1, 0)), name=_name("pad", index)), conv)
    return conv


def DarknetConv2D_BN_Leaky(*args, index=None, **kwargs):
    """DarknetConv2D without bias, then BatchNormalization and LeakyReLU(0.1)."""
    kwargs = {"use_bias": False, **kwargs}
    return compose(
        DarknetConv2D(*args, index=index, **kwargs),
        BatchNormalization(name=_name("bn", index)),
        layers.LeakyReLU(negative_slope=0.1, name=_name("leaky", index)))


def _take(index):
    return None if index is None else index.take()


def resblock_body(x, num_filters, num_blocks, index=None):
    """A stride-2 3x3 convolution, then num_blocks x [1x1 f/2, 3x3 f, shortcut]."""
    x = DarknetConv2D_BN_Leaky(num_filters, (3, 3), strides=(2, 2), index=_take(index))(x)
    for _ in range(num_blocks):
        y = DarknetConv2D_BN_Leaky(num_filters // 2, (1, 1), index=_take(index))(x)
        y = DarknetConv2D_BN_Leaky(num_filters, (3, 3), index=_take(index))(y)
        x = layers.Add(name=_name("add", _take(index)))([x, y])
    return x


def _darknet_stages(x, index=None):
    """Darknet53 (52 convolutions); returns the 256-, 512- and 1024-channel maps
    (strides 8, 16, 32), the skip connections of yolo_body."""
    x = DarknetConv2D_BN_Leaky(32, (3, 3), index=_take(index))(x)
    x = resblock_body(x, 64, 1, index)
    x = resblock_body(x, 128, 2, index)
    stride8 = resblock_body(x, 256, 8, index)
    stride16 = resblock_body(stride8, 512, 8, index)
    stride32 = resblock_body(stride16, 1024, 4, index)
    return stride8, stride16, stride32


def darknet_body(x, index=None):
    """Darknet53 body: 52 convolutions, output stride 32."""
    return _darknet_stages(x, index)[2]


def _alternating(x, num_filters, sizes, index):
    """Convolutions of the given kernel sizes: 1x1 with num_filters, 3x3 with twice."""
    for size in sizes:
        filters = num_filters if size == 1 else num_filters * 2
        x = DarknetConv2D_BN_Leaky(filters, (size, size), index=_take(index))(x)
    return x


def spp_block(x, index=None):
    """darknet's spatial pyramid pooling (yolov3-spp.cfg): max pools of 5, 9 and 13
    at stride 1 over x, each after a one-layer [route] back to x, then
    [route] -1,-3,-5,-6: the concatenation of the 13, 9 and 5 pools and x."""
    pools = []
    for size in (5, 9, 13):
        pools.append(layers.MaxPooling2D(size, 1, padding="same",
                                         name=_name("maxpool", _take(index)))(x))
        if size != 13 and index is not None:
            index.skip()   # the [route] back to x
    return layers.Concatenate(name=_name("concat", _take(index)))([*pools[::-1], x])


def make_last_layers(x, num_filters, out_filters, index=None, spp=False):
    """Five alternating 1x1/3x3 convolutions (-> x), then 3x3 and a linear 1x1 with
    bias giving the head's raw output (-> y). With spp (YOLOv3-SPP's first head),
    spp_block and one more 1x1 convolution come after the third convolution."""
    x = _alternating(x, num_filters, (1, 3, 1), index)
    if spp:
        x = _alternating(spp_block(x, index), num_filters, (1,), index)
    x = _alternating(x, num_filters, (3, 1), index)
    y = DarknetConv2D_BN_Leaky(num_filters * 2, (3, 3), index=_take(index))(x)
    y = DarknetConv2D(out_filters, (1, 1), index=_take(index))(y)
    return x, y


def _upsample_and_join(x, skip, filters, index):
    """[route -4 back to x], 1x1 conv, upsample x2, route-concat with the skip map."""
    if index is not None:
        index.skip(2)   # the head's [yolo] and the one-layer [route]
    x = DarknetConv2D_BN_Leaky(filters, (1, 1), index=_take(index))(x)
    x = layers.UpSampling2D(2, name=_name("upsample", _take(index)))(x)
    return layers.Concatenate(name=_name("concat", _take(index)))([x, skip])


def _three_heads(inputs, num_anchors, num_classes, spp, name):
    index = LayerIndex()
    out_filters = num_anchors * (num_classes + 5)
    stride8, stride16, stride32 = _darknet_stages(inputs, index)
    x, y1 = make_last_layers(stride32, 512, out_filters, index, spp=spp)
    x = _upsample_and_join(x, stride16, 256, index)
    x, y2 = make_last_layers(x, 256, out_filters, index)
    x = _upsample_and_join(x, stride8, 128, index)
    x, y3 = make_last_layers(x, 128, out_filters, index)
    return keras.Model(inputs, [y1, y2, y3], name=name)


def yolo_body(inputs, num_anchors, num_classes):
    """YOLOv3: three heads at strides 32, 16, 8, each with num_anchors anchors."""
    return _three_heads(inputs, num_anchors, num_classes, False, "yolo_body")


def yolo_spp_body(inputs, num_anchors, num_classes):
    """YOLOv3-SPP (darknet's yolov3-spp.cfg): YOLOv3 with spp_block in the first
    head. The block's 6 layers and its extra convolution shift every later darknet
    index by 7: the outputs are conv_088, conv_100 and conv_112."""
    return _three_heads(inputs, num_anchors, num_classes, True, "yolo_spp_body")


def tiny_yolo_body(inputs, num_anchors, num_classes):
    """tiny-YOLOv3: two heads at strides 32 and 16 (13 convolutions)."""
    index = LayerIndex()
    out_filters = num_anchors * (num_classes + 5)

    def conv(filters, size):
        return DarknetConv2D_BN_Leaky(filters, (size, size), index=index.take())

    def maxpool(strides):
        return layers.MaxPooling2D(2, strides, padding="same",
                                   name=_name("maxpool", index.take()))

    # Layers are created in darknet order, so each takes the next index.
    x = inputs
    for filters in (16, 32, 64, 128):
        x = conv(filters, 3)(x)
        x = maxpool(2)(x)
    x1 = conv(256, 3)(x)
    x = maxpool(2)(x1)
    x = conv(512, 3)(x)
    x = maxpool(1)(x)
    x = conv(1024, 3)(x)
    x2 = conv(256, 1)(x)
    y1 = conv(512, 3)(x2)
    y1 = DarknetConv2D(out_filters, (1, 1), index=index.take())(y1)
    x = _upsample_and_join(x2, x1, 128, index)
    y2 = conv(256, 3)(x)
    y2 = DarknetConv2D(out_filters, (1, 1), index=index.take())(y2)
    return keras.Model(inputs, [y1, y2], name="tiny_yolo_body")


