"""The small decoder: feature map -> RGB image. Fully convolutional, so any size works.

normalize -> 1x1 reduce -> residual blocks at feature resolution -> x2 stages
(bilinear resize + conv, or pixel shuffle; never transposed convs, which checkerboard) -> sigmoid RGB.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
from keras import layers, ops

from recon.config import ReconConfig


@keras.saving.register_keras_serializable(package="recon")
class PixelShuffle(layers.Layer):
    """Depth-to-space by `factor`: (H, W, C*f*f) -> (H*f, W*f, C)."""

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return ops.depth_to_space(x, self.factor)

    def get_config(self):
        return super().get_config() | {"factor": self.factor}


@keras.saving.register_keras_serializable(package="recon")
class EdgePad(layers.Layer):
    """(N, h, w, C) -> (N, h + 2p, w + 2p, C): p copies of the outermost cells on every side."""

    def __init__(self, cells: int, **kwargs):
        super().__init__(**kwargs)
        self.cells = cells

    def call(self, x):
        p = self.cells
        x = ops.concatenate([ops.repeat(x[:, :1], p, axis=1), x, ops.repeat(x[:, -1:], p, axis=1)], axis=1)
        return ops.concatenate([ops.repeat(x[:, :, :1], p, axis=2), x, ops.repeat(x[:, :, -1:], p, axis=2)], axis=2)

    def compute_output_shape(self, shape):
        grown = [None if n is None else n + 2 * self.cells for n in shape[1:3]]
        return (shape[0], *grown, shape[3])

    def get_config(self):
        return super().get_config() | {"cells": self.cells}


def _before_shuffle_taps() -> np.ndarray:
    """(oy, ox, phase in, phase out, dy, dx) 0/1: which tap (dy, dx) of a 3x3 conv on a x2 map
    reads, for an output pixel of phase out = 2*ry + rx, the pixel of phase in = 2*py + px at offset
    (oy, ox) on the map before its shuffle (phases in depth_to_space's order)."""
    taps = np.zeros((3, 3, 4, 4, 3, 3), np.float32)
    for ry, rx, dy, dx in itertools.product((0, 1), (0, 1), (-1, 0, 1), (-1, 0, 1)):
        (oy, py), (ox, px) = divmod(ry + dy, 2), divmod(rx + dx, 2)
        taps[oy + 1, ox + 1, 2 * py + px, 2 * ry + rx, dy + 1, dx + 1] = 1
    return taps


class ConvBeforeShuffle(layers.Layer):
    """`conv` (a 3x3, stride 1, "same" Conv2D, its weights shared) on depth_to_space(x, 2), computed on
    x itself and returned before that shuffle: (N, h, w, 4C) -> (N, h, w, 4*O), O `conv`'s filters,
    in this layer's dtype; depth_to_space(result, 2) is `conv(depth_to_space(x, 2))`: the same sums
    in another order, border included (zero padding at either size pads the same pixels), so equal to
    floating-point rounding (3e-7 in float32 on the bundled block3_conv3).

    Each output phase reads its 3x3 neighbourhood's phases at half the size: one conv from 4C to 4*O
    channels, 4x the multiply-adds. Worth it only where O is small: the RGB layer (O = 3), whose
    3-filter kernel at full size oneDNN does not run near its peak (`benchmarks/rgb_layer.py`). The
    kernel is rearranged from `conv`'s at each call (a 3x3x4Cx4O copy), so the two stay one set of
    weights.

    Raises:
        ValueError: `conv` is not a 3x3, stride-1, undilated, ungrouped, channels-last "same" Conv2D.
    """

    def __init__(self, conv: layers.Conv2D, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(conv, layers.Conv2D) and tuple(conv.kernel_size) == (3, 3) and conv.padding == "same"
                and tuple(conv.strides) == (1, 1) and tuple(conv.dilation_rate) == (1, 1) and conv.groups == 1
                and conv.data_format == "channels_last"):
            raise ValueError(f"ConvBeforeShuffle needs a 3x3, stride-1, undilated, channels-last \"same\" Conv2D, "
                             f"not {conv.name}")
        self.conv = conv
        self.taps = _before_shuffle_taps()

    def call(self, x):
        channels, filters = self.conv.kernel.shape[2:]
        kernel = ops.einsum("abpryx,yxco->abpcro", self.taps, ops.cast(self.conv.kernel, "float32"))
        kernel = ops.reshape(kernel, (3, 3, 4 * channels, 4 * filters))
        y = ops.conv(x, ops.cast(kernel, self.compute_dtype), padding="same")
        if self.conv.use_bias:
            y = y + ops.cast(ops.tile(self.conv.bias, [4]), self.compute_dtype)
        return self.conv.activation(y)


def residual_block(x, width: int, name: str):
    # The second conv starts at zero, so every block starts as the identity and a deep stack
    # trains like a shallow one at first (Goyal et al. 2017): +0.75 dB held-out after 4k crops (one seed).
    y = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
    y = layers.Conv2D(width, 3, padding="same", kernel_initializer="zeros", name=f"{name}_conv2")(y)
    return layers.Add(name=f"{name}_add")([x, y])


def upsample_stage(x, width: int, mode: str, name: str):
    """x2: a bilinear resize then a 3x3 conv ("resize"), or a 3x3 conv to 4x the channels then a
    depth-to-space ("pixel_shuffle", Shi et al. 2016): the same multiply-adds without the resize, and
    any resize stage rewritten this way computes the same away from the border
    (training.to_pixel_shuffle)."""
    if mode == "pixel_shuffle":
        x = layers.Conv2D(width * 4, 3, padding="same", name=f"{name}_conv")(x)
        return layers.Activation("relu", name=f"{name}_relu")(PixelShuffle(2, name=f"{name}_shuffle")(x))
    x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_resize")(x)
    return layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_conv")(x)


def build_decoder(cfg: ReconConfig) -> keras.Model:
    """Build the decoder for `cfg.layer`'s feature map (input channels and stages follow from it):
    (N, h, w, C) -> (N, cfg.image_size_of(h), cfg.image_size_of(w), 3) float32 in [0, 1].

    A layer with border cells (AlexNet's: an input of s*m pixels gives m - 1 cells, their centres
    half a cell in from where m cells would sit) is decoded with one extra cell of edge copies on
    every side, then cropped by half a cell's pixels on each side (`border_pad`, `border_crop`):
    the output has the input's size, and each cell lands on the pixels its receptive field is
    centred on (to half a pixel). Resizing the output instead would stretch it by (m)/(m - 1),
    misplacing content by up to half a cell at the far edge. A layer without border cells gets
    neither layer: its decoder is the same as before they existed.

    Example:
        >>> dec = build_decoder(ReconConfig(layer="block3_conv3"))
        >>> dec.count_params() <= 400_000
        True
    """
    inputs = keras.Input(shape=(None, None, cfg.channels), name="features")
    # Raw VGG activations are 87% zeros with peaks near 1000; unnormalized, a residual decoder
    # saturates its sigmoid at Adam 1e-3. Dividing by the per-channel RMS measured on the
    # training data (saved in the config) puts every channel near unit scale.
    scale = [1.0 / s for s in cfg.feature_scale] if cfg.feature_scale else 1.0
    x = layers.Rescaling(scale, name="feature_norm")(inputs)
    if cfg.border_cells:
        x = EdgePad(cfg.border_cells, name="border_pad")(x)
    x = layers.Conv2D(cfg.decoder_width, 1, activation="relu", name="reduce")(x)
    for i in range(cfg.num_res_blocks):
        x = residual_block(x, cfg.decoder_width, name=f"res{i + 1}")
    for i, width in enumerate(cfg.upsample_widths):
        x = upsample_stage(x, width, cfg.upsample, name=f"up{i + 1}")
    # The RGB conv computes in float32 under a mixed-precision policy (the training loss compares its
    # sigmoid's output) and follows a decoder cast whole to bfloat16 or float16 for inference
    # (recon.precision): 2.2 instead of 3.7 ms at 224 on 2 AVX512-BF16 cores. The sigmoid is float32
    # either way: TensorFlow's bfloat16 sigmoid is up to 5e-3 off (2.5x its output's rounding), which
    # cost 0.0004 held-out SSIM on block3_conv3 (benchmarks/rgb_layer.py times both).
    policy = keras.config.dtype_policy()
    rgb_dtype = policy if policy.compute_dtype == policy.variable_dtype else "float32"
    x = layers.Conv2D(3, 3, padding="same", dtype=rgb_dtype, name="rgb")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="rgb_sigmoid")(x)
    if cfg.border_cells:
        outputs = layers.Cropping2D(border_crop(cfg), dtype="float32", name="border_crop")(outputs)
    return keras.Model(inputs, outputs, name=f"decoder_{cfg.layer}")


def border_crop(cfg: ReconConfig) -> tuple:
    """((top, bottom), (left, right)) pixels `build_decoder` crops: the extra cell on each side,
    less half a cell (the receptive fields' offset)."""
    trim = cfg.border_cells * cfg.stride
    return ((trim // 2, trim - trim // 2),) * 2


# What `upsample_stage` names its layers, in call order, per mode
UPSAMPLE_LAYERS = {"resize": ("resize", "conv"), "pixel_shuffle": ("conv", "shuffle", "relu")}


def decoder_trunk(decoder: keras.Model) -> keras.Model:
    """The decoder up to its upsampling: normalize, reduce and the residual blocks, at feature-map
    resolution. (N, h, w, C) -> (N, h, w, decoder_width); shares `decoder`'s layers and weights."""
    last = [layer for layer in decoder.layers if layer.name == "reduce" or layer.name.startswith("res")][-1]
    return keras.Model(decoder.input, last.output, name=f"{decoder.name}_trunk")


def inference_decoder(decoder: keras.Model, cfg: ReconConfig, from_trunk: bool = False) -> keras.Model:
    """`decoder` rearranged to run faster, sharing its layers and weights: a pixel-shuffle decoder
    applies each stage's ReLU before its shuffle (where oneDNN can fuse it into the conv) and computes
    its RGB layer before the last shuffle (`ConvBeforeShuffle`); the same outputs up to floating-point
    rounding. Resize decoders run in their own order. `benchmarks/rgb_layer.py` times the two orders.

    (N, h, w, C) feature maps, or with `from_trunk` the (N, h, w, decoder_width) output of
    `decoder_trunk` (which then is not run: an int8 file ran it, recon.int8), -> (N, h*2^k, w*2^k, 3)
    float32 in [0, 1], k the number of x2 stages. A decoder `build_decoder` did not make (no
    "rgb_sigmoid" layer) is returned as it is.

    Raises:
        ValueError: `from_trunk` with a decoder `build_decoder` did not make.
    """
    if "rgb_sigmoid" not in {layer.name for layer in decoder.layers}:
        if from_trunk:
            raise ValueError(f"{decoder.name} was not made by build_decoder: it has no trunk to start after")
        return decoder
    x = inputs = keras.Input(shape=(None, None, cfg.decoder_width if from_trunk else cfg.channels),
                             name="trunk_output" if from_trunk else "features")
    if not from_trunk:
        x = decoder_trunk(decoder)(x)
    stages = len(cfg.upsample_widths)
    rgb_before_shuffle = cfg.upsample == "pixel_shuffle" and stages > 0
    # ReLU commutes with the shuffle
    parts = ("conv", "relu", "shuffle") if cfg.upsample == "pixel_shuffle" else UPSAMPLE_LAYERS[cfg.upsample]
    for i in range(stages):
        for part in parts:
            if not (rgb_before_shuffle and i == stages - 1 and part == "shuffle"):
                x = decoder.get_layer(f"up{i + 1}_{part}")(x)
    rgb = decoder.get_layer("rgb")
    if rgb_before_shuffle:
        x = ConvBeforeShuffle(rgb, dtype=rgb.dtype_policy, name="rgb_before_shuffle")(x)
        x = PixelShuffle(2, dtype=rgb.dtype_policy, name="rgb_shuffle")(x)
    else:
        x = rgb(x)
    x = decoder.get_layer("rgb_sigmoid")(x)
    if "border_crop" in {layer.name for layer in decoder.layers}:
        x = decoder.get_layer("border_crop")(x)
    return keras.Model(inputs, x, name=f"{decoder.name}_inference")
