"""The small decoder: feature map -> RGB image. Fully convolutional, so any size works.

normalize -> 1x1 reduce -> residual blocks at feature resolution -> x2 stages
(bilinear resize + conv, or pixel shuffle; never transposed convs, which checkerboard) -> sigmoid RGB.
"""

from __future__ import annotations

import keras
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
    """Build the decoder for `cfg.layer`'s feature map (input channels and stages follow from it).

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
    x = layers.Conv2D(cfg.decoder_width, 1, activation="relu", name="reduce")(x)
    for i in range(cfg.num_res_blocks):
        x = residual_block(x, cfg.decoder_width, name=f"res{i + 1}")
    for i, width in enumerate(cfg.upsample_widths):
        x = upsample_stage(x, width, cfg.upsample, name=f"up{i + 1}")
    # float32 under a mixed-precision policy: the sigmoid's output is what the training loss compares.
    # A decoder cast whole to bfloat16 or float16 for inference (recon.precision) keeps that precision
    # here too: 2.2 instead of 3.7 ms at 224 on 2 AVX512-BF16 cores, and bfloat16's steps near 1 are
    # those of the uint8 image shown (2^-8).
    policy = keras.config.dtype_policy()
    rgb_dtype = policy if policy.compute_dtype == policy.variable_dtype else "float32"
    outputs = layers.Conv2D(3, 3, padding="same", activation="sigmoid", dtype=rgb_dtype, name="rgb")(x)
    return keras.Model(inputs, outputs, name=f"decoder_{cfg.layer}")


# What `upsample_stage` names its layers, in call order, per mode
UPSAMPLE_LAYERS = {"resize": ("resize", "conv"), "pixel_shuffle": ("conv", "shuffle", "relu")}


def decoder_trunk(decoder: keras.Model) -> keras.Model:
    """The decoder up to its upsampling: normalize, reduce and the residual blocks, at feature-map
    resolution. (N, h, w, C) -> (N, h, w, decoder_width); shares `decoder`'s layers and weights."""
    last = [layer for layer in decoder.layers if layer.name == "reduce" or layer.name.startswith("res")][-1]
    return keras.Model(decoder.input, last.output, name=f"{decoder.name}_trunk")


def decoder_tail(decoder: keras.Model, cfg: ReconConfig) -> keras.Model:
    """The rest of the decoder after `decoder_trunk`: the upsampling stages and the RGB layer.
    (N, h, w, decoder_width) -> (N, h*2^k, w*2^k, 3) [0,1] in the RGB layer's dtype (float32 unless
    the decoder was built under a full bfloat16/float16 policy); shares `decoder`'s layers and weights."""
    x = inputs = keras.Input(shape=(None, None, cfg.decoder_width), name="trunk_output")
    for i in range(len(cfg.upsample_widths)):
        for part in UPSAMPLE_LAYERS[cfg.upsample]:
            x = decoder.get_layer(f"up{i + 1}_{part}")(x)
    return keras.Model(inputs, decoder.get_layer("rgb")(x), name=f"{decoder.name}_tail")
