"""One's own Keras model as the encoder: cut at a named layer, measured, and stored in the model
folder so that loading never needs the original file.

A folder of backbone "keras" holds the cut model as `encoder.json` (Keras' model JSON: the
architecture) and `encoder.weights.h5` (its weights, Keras' layout). Both are untrusted input like
the rest of the folder: the JSON may name only Keras' own classes (`check_architecture`; no
Lambda, no custom or wrapped-framework layers, no functions by module path) and is rebuilt in
Keras' safe mode; the weights are checked against the rebuilt model before Keras reads them
(recon.hdf5.load_keras_weights). The preprocessing ([0,1] RGB to what the model expects) is not
part of the stored model: the config names it, and `wrap_own_model` puts it in front.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import keras
import numpy as np

from recon.config import MAX_BORDER_CELLS, MAX_FEATURE_CHANNELS, MAX_STRIDE, ReconConfig
from recon.hdf5 import WeightsFileError, load_keras_weights
from recon.pretrained_weights import EncoderWeightsError

ARCHITECTURE_FILE = "encoder.json"
MAX_ARCHITECTURE_BYTES = 20_000_000  # a ResNet-152's JSON is about 1 MB
INNER_NAME = "own_model"  # the cut model's name inside the encoder
# Modules whose classes an architecture may name: Keras' public layers, initializers, regularizers,
# constraints, dtype policies, and its own model classes.
ALLOWED_MODULES = {"keras", "keras.layers", "keras.initializers", "keras.regularizers", "keras.constraints",
                   "keras.src.models.functional", "keras.src.models.sequential", "keras.models"}
# Keras layers that run code from elsewhere (a Python function, a saved model, another framework)
REFUSED_CLASSES = {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}
# Sizes the geometry is measured at: multiples of every stride allowed, big enough for any border
PROBE_SIDES = (2 * MAX_STRIDE, 3 * MAX_STRIDE, 4 * MAX_STRIDE)


class OwnModelError(EncoderWeightsError):
    """One's own model that cannot serve as an encoder: unreadable, no such layer, not a 4-D map,
    a stride the decoder cannot invert, or classes outside Keras' own."""


def cut_own_model(path: str | Path, layer: str) -> keras.Model:
    """The model in a `.keras` file from its input to `layer`'s output, taking any height and width.

    Returns:
        A functional model named INNER_NAME: (N, H, W, 3) -> (N, h, w, C), its weights the file's.

    Raises:
        OwnModelError: the file cannot be loaded (safe mode: no Lambda layers), the model does not
            take one 3-channel image, has no layer `layer` (the closest names listed), the layer's
            output is not 4-D, or the layers up to it need a fixed input size.
    """
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises ValueError, TypeError, OSError, zipfile errors, ...
        raise OwnModelError(f"cannot load the Keras model {path}: {type(e).__name__}: {e}") from None
    if len(model.inputs) != 1 or model.inputs[0].shape[-1] != 3 or len(model.inputs[0].shape) != 4:
        raise OwnModelError(f"{path}: the model must take one (N, H, W, 3) image, "
                            f"not {[i.shape for i in model.inputs]}")
    names = [l.name for l in model.layers]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5) or names[-5:]
        raise OwnModelError(f"{path} has no layer {layer!r}; did you mean one of {close}? ({len(names)} layers)")
    output = model.get_layer(layer).output
    if not hasattr(output, "shape") or len(output.shape) != 4:
        raise OwnModelError(f"layer {layer!r} of {path} gives {getattr(output, 'shape', type(output).__name__)}, "
                            "not a 4-D (N, h, w, C) feature map: pick a convolutional layer")
    cut = keras.Model(model.inputs, output, name=INNER_NAME)
    check_architecture(json.loads(cut.to_json()), path)
    return any_size(cut, path)


def any_size(cut: keras.Model, source) -> keras.Model:
    """`cut` rebuilt with an input of any height and width (a model saved for 224x224 still cuts at a
    conv layer that does not care), its weights copied."""
    if tuple(cut.inputs[0].shape[1:3]) == (None, None):
        return cut
    config = json.loads(cut.to_json())
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, None, None, 3]
    try:
        flexible = keras.saving.deserialize_keras_object(config, safe_mode=True)
        flexible.set_weights(cut.get_weights())
    except Exception as e:
        raise OwnModelError(f"{source}: the layers up to {cut.layers[-1].name} need a fixed input size "
                            f"({type(e).__name__}: {e}); cut at an earlier layer") from None
    return flexible


def check_architecture(config, source) -> None:
    """Refuse a model JSON that names anything but Keras' own classes (ALLOWED_MODULES), a layer in
    REFUSED_CLASSES, a registered (custom) object, or a function.

    Raises:
        OwnModelError: naming the first such object.
    """
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
            if "class_name" not in item:
                continue
            name, module = item.get("class_name"), item.get("module")
            plain = module is None and name in ("__keras_tensor__", "__tuple__")
            registered = item.get("registered_name") not in (None, name)
            if not plain and (module not in ALLOWED_MODULES or name in REFUSED_CLASSES or registered
                              or name in ("function", "__lambda__")):
                raise OwnModelError(f"{source}: {module}.{name} is not one of Keras' own layers; an encoder may "
                                    "hold only those (no Lambda, custom or wrapped layers)")


def feature_geometry(model: keras.Model) -> tuple[int, int, int]:
    """(channels, stride, border cells) of a model taking (N, H, W, 3): its map of an input of
    stride*m pixels is m - border cells on each side, measured at PROBE_SIDES.

    Raises:
        OwnModelError: a map whose size is not that (it does not shrink by one power of 2, up to
            MAX_STRIDE), or over MAX_FEATURE_CHANNELS channels or MAX_BORDER_CELLS border cells.
    """
    sizes = [output_side(model, side) for side in PROBE_SIDES]
    layer = model.layers[-1].name
    channels = int(model.output.shape[-1])
    step = PROBE_SIDES[1] - PROBE_SIDES[0]
    growth = sizes[1] - sizes[0]
    stride = step // growth if growth > 0 and step % growth == 0 else 0
    border = PROBE_SIDES[0] // stride - sizes[0] if stride else -1
    if not (stride and stride & (stride - 1) == 0 and stride <= MAX_STRIDE
            and all(side // stride - border == n for side, n in zip(PROBE_SIDES, sizes))):
        raise OwnModelError(f"layer {layer}'s map is {sizes} cells for {list(PROBE_SIDES)} px inputs: not a "
                            f"stride the decoder can invert (a power of 2 up to {MAX_STRIDE}, the same at every size)")
    if not 0 <= border <= MAX_BORDER_CELLS:
        raise OwnModelError(f"layer {layer} loses {border} cells at the border (at most {MAX_BORDER_CELLS})")
    if not 0 < channels <= MAX_FEATURE_CHANNELS:
        raise OwnModelError(f"layer {layer} has {channels} channels (at most {MAX_FEATURE_CHANNELS})")
    return channels, stride, border


def output_side(model: keras.Model, side: int) -> int:
    """The model's output height for a side x side input (symbolically, else by running zeros)."""
    try:
        height = model.compute_output_shape((1, side, side, 3))[1]
    except Exception:  # a layer without a shape rule
        height = None
    if height is None:
        height = np.shape(model(np.zeros((1, side, side, 3), np.float32), training=False))[1]
    return int(height)


def wrap_own_model(cut: keras.Model, cfg: ReconConfig) -> keras.Model:
    """The encoder: [0,1] RGB -> the config's preprocessing -> the cut model, frozen."""
    from recon.encoder import VGGPreprocess
    inputs = keras.Input(shape=(None, None, 3), name="rgb")
    x = VGGPreprocess(cfg.preprocessing, name="preprocess")(inputs)
    model = keras.Model(inputs, cut(x), name=f"keras_{cfg.layer}")
    model.trainable = False
    return model


def save_own_encoder(encoder: keras.Model, folder: Path, weights_file: str) -> None:
    """Write the cut model inside `encoder` as ARCHITECTURE_FILE and `weights_file`."""
    cut = encoder.get_layer(INNER_NAME)
    (folder / ARCHITECTURE_FILE).write_text(cut.to_json())
    cut.save_weights(folder / weights_file)


def load_own_encoder(folder: Path, cfg: ReconConfig, weights_file: str) -> keras.Model:
    """The encoder of a backbone-"keras" folder, from its own two files: the architecture checked
    (`check_architecture`) and rebuilt in safe mode, the weights checked, and the map's geometry
    required to be the config's.

    Raises:
        OwnModelError: a missing, oversized or unreadable file, a refused class, weights that do not
            fit, or a map of other channels, stride or border than the config says.
    """
    path = folder / ARCHITECTURE_FILE
    try:
        if path.stat().st_size > MAX_ARCHITECTURE_BYTES:
            raise OwnModelError(f"{path} is over {MAX_ARCHITECTURE_BYTES:,} bytes")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise OwnModelError(f"cannot read {path} ({type(e).__name__}: {e})") from None
    check_architecture(config, path)
    try:
        cut = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as e:
        raise OwnModelError(f"{path} is not a Keras model ({type(e).__name__}: {e})") from None
    if not isinstance(cut, keras.Model) or cut.name != INNER_NAME or len(cut.inputs) != 1:
        raise OwnModelError(f"{path} is not an encoder this project wrote")
    try:
        load_keras_weights(cut, folder / weights_file, "the encoder in " + ARCHITECTURE_FILE)
    except WeightsFileError as e:
        raise OwnModelError(str(e)) from None
    geometry = feature_geometry(cut)
    if geometry != (cfg.channels, cfg.stride, cfg.border_cells):
        raise OwnModelError(f"{path} gives maps of (channels, stride, border) {geometry}, the config says "
                            f"{(cfg.channels, cfg.stride, cfg.border_cells)}")
    return wrap_own_model(cut, cfg)
