"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the Lite variants of Google's
tensorflow/tpu/models/official/efficientnet/lite) in Keras, up to a chosen layer or with its
1000-class ImageNet head.

Lite0: width and depth 1.0, ReLU6 instead of swish, no squeeze-and-excitation, stem and head fixed.
Every conv has "same" padding as TensorFlow computes it (asymmetric at stride 2: the extra row and
column at the bottom and right), as the checkpoint was trained; batch norm with epsilon 1e-3.
Input: (255x - 127) / 128 of [0,1] RGB (recon.encoder.Preprocess "efficientnet_lite").
"""

from __future__ import annotations

from keras import layers

from recon.config import EFFICIENTNET_LITE0_LAYERS

BN_EPSILON = 1e-3
# Stages of MBConv blocks: (repeats, kernel, first block's stride, expansion, output channels); the
# MBConv blocks are numbered b0..b15 through them, as the checkpoint's _blocks.0.._blocks.15.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS, HEAD_CHANNELS, CLASSES = 32, 1280, 1000


def conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu6: bool = True):
    """Conv (no bias) + batch norm (+ ReLU6): the unit every EfficientNet conv comes in."""
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if relu6 else x


def mbconv(x, filters: int, kernel: int, stride: int, expansion: int, name: str):
    """Inverted residual: 1x1 expand (unless expansion 1), depthwise kxk, 1x1 linear projection, and
    the input added back where shapes allow (stride 1, same channels)."""
    inputs, channels = x, x.shape[-1]
    if expansion != 1:
        x = conv_bn(x, channels * expansion, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dwconv_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dwconv_relu6")(x)
    x = conv_bn(x, filters, 1, 1, f"{name}_project", relu6=False)
    if stride == 1 and channels == filters:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0_features(x, last_layer: str):
    """EfficientNet-Lite0's layers applied to `x` (N, H, W, 3), preprocessed, up to `last_layer`
    (EFFICIENTNET_LITE0_LAYERS: "stem", "block1".."block7" the output of each stage, "head"):
    (N, ceil(H/s), ceil(W/s), C), s the layer's stride.

    Raises:
        KeyError: `last_layer` is not one of EFFICIENTNET_LITE0_LAYERS.
    """
    if last_layer not in EFFICIENTNET_LITE0_LAYERS:
        raise KeyError(f"EfficientNet-Lite0 has no layer {last_layer!r}; its layers: {list(EFFICIENTNET_LITE0_LAYERS)}")
    x = conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    if last_layer == "stem":
        return x
    block = 0
    for stage, (repeats, kernel, stride, expansion, filters) in enumerate(LITE0_STAGES, start=1):
        for repeat in range(repeats):
            x = mbconv(x, filters, kernel, stride if repeat == 0 else 1, expansion, f"b{block}")
            block += 1
        if last_layer == f"block{stage}":
            return x
    return conv_bn(x, HEAD_CHANNELS, 1, 1, "head")


def efficientnet_lite0_classifier(x):
    """The whole network on preprocessed (N, H, W, 3) `x`: (N, 1000) ImageNet class probabilities."""
    x = efficientnet_lite0_features(x, "head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return layers.Dense(CLASSES, activation="softmax", name="classifier")(x)
