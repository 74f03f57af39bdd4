"""The one dataclass that describes a trained reconstruction model.

It travels as `config.json` beside the weights and is enough to rebuild the exact model
(the `from_pretrained` pattern): architecture, feature layer and feature normalization.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path

# Each backbone's layers: name -> (channels, stride relative to the input), in network order.
# VGG16: the conv layers (after their ReLU), Keras' names.
VGG16_LAYERS: dict[str, tuple[int, int]] = {
    "block1_conv1": (64, 1), "block1_conv2": (64, 1),
    "block2_conv1": (128, 2), "block2_conv2": (128, 2),
    "block3_conv1": (256, 4), "block3_conv2": (256, 4), "block3_conv3": (256, 4),
    "block4_conv1": (512, 8), "block4_conv2": (512, 8), "block4_conv3": (512, 8),
    "block5_conv1": (512, 16), "block5_conv2": (512, 16), "block5_conv3": (512, 16),
}
# torchvision's AlexNet: each conv after its ReLU (LPIPS's relu1..relu5). Its convs and pools are
# unpadded enough that an input of s*m pixels gives m - 1 cells, not m (see BORDER_CELLS).
ALEXNET_LAYERS: dict[str, tuple[int, int]] = {
    "conv1": (64, 4), "conv2": (192, 8), "conv3": (384, 16), "conv4": (256, 16), "conv5": (256, 16),
}
# EfficientNet-Lite0 (Tan & Le 2019; Lite: ReLU6, no squeeze-excitation): the stem, the output of
# each of its seven stages of MBConv blocks (linear: after the projection and the residual sum),
# and the 1x1 head before pooling.
EFFICIENTNET_LITE0_LAYERS: dict[str, tuple[int, int]] = {
    "stem": (32, 2), "block1": (16, 2), "block2": (24, 4), "block3": (40, 8), "block4": (80, 16),
    "block5": (112, 16), "block6": (192, 32), "block7": (320, 32), "head": (1280, 32),
}
BACKBONES = {"vgg16": VGG16_LAYERS, "alexnet": ALEXNET_LAYERS, "efficientnet_lite0": EFFICIENTNET_LITE0_LAYERS}
# A user's own Keras model, cut at any layer: its channels, stride and border are measured from the
# model (recon.own_encoder) and stored in the config's feature_* fields.
OWN_KERAS_MODEL = "keras"
# Cells an input of stride*m pixels falls short of m (valid convolutions or pools at the borders);
# 0 for "same" padding. The decoder pads and crops for them (recon.decoder.build_decoder).
BORDER_CELLS = {"vgg16": 0, "alexnet": 1, "efficientnet_lite0": 0}
NETWORK_NAMES = {"vgg16": "VGG16", "alexnet": "AlexNet", "efficientnet_lite0": "EfficientNet-Lite0",
                 OWN_KERAS_MODEL: "own Keras model"}  # for people
UPSAMPLE_MODES = ("resize", "pixel_shuffle")
# Named weight sources per backbone, the default first; anything else is a path to a local weights
# file. "random" (Glorot from encoder_seed) is for tests. For OWN_KERAS_MODEL the source is the
# .keras file the encoder was cut from, recorded for people: loading reads the folder's own copy.
NAMED_ENCODER_WEIGHTS = {
    "vgg16": ("imagenet-torchvision", "imagenet", "hed-bsds500", "random"),
    "alexnet": ("imagenet-torchvision", "random"),
    "efficientnet_lite0": ("imagenet", "random"),
}
# How [0,1] RGB becomes the encoder's input (recon.encoder.Preprocess). "caffe": BGR, 0..255, minus
# the ImageNet mean (Keras' VGG16, HED); "torchvision": RGB minus mean (0.485, 0.456, 0.406), divided
# by std (0.229, 0.224, 0.225); "efficientnet_lite": (255x - 127) / 128, Google's Lite checkpoints';
# "zero_to_one", "zero_to_255", "minus_one_to_one": plain rescalings, for one's own model.
PREPROCESSING = ("caffe", "torchvision", "efficientnet_lite", "zero_to_one", "zero_to_255", "minus_one_to_one")
BACKBONE_PREPROCESSING = {"vgg16": ("caffe", "torchvision"), "alexnet": ("torchvision",),
                          "efficientnet_lite0": ("efficientnet_lite",), OWN_KERAS_MODEL: PREPROCESSING}
TORCHVISION_SOURCES = ("imagenet-torchvision",)


# What a model can be: a config.json comes from strangers (the Hub), so every value is checked
# against these before anything is built. Each bound is well beyond any model trained here (224 px,
# width 48, 7 blocks, 48-channel stages) and far below what would exhaust a machine's memory.
MAX_IMAGE_SIZE = 1024  # the square training size, at most what the app caps an image's own size to
MAX_WIDTH = 1024  # decoder_width and each upsample_widths entry
MAX_RES_BLOCKS = 64
MAX_DECODER_PARAMETERS = 50_000_000  # 200 MB of float32 weights (the bundled decoders: under 0.4M)
FEATURE_SCALE_RANGE = (1e-9, 1e9)  # per-channel RMS; training.data.feature_rms floors it at 1e-3
MAX_FEATURE_CHANNELS = 4096  # of one's own model's layer (EfficientNet-Lite0's head: 1280)
MAX_STRIDE = 64  # of one's own model's layer: six x2 stages in the decoder
MAX_BORDER_CELLS = 4
MAX_SEED = 2**32 - 1  # what keras.utils.set_random_seed takes
MAX_STRING = 4096  # characters of a name or a path
MAX_CONFIG_BYTES = 1_000_000  # a config.json with 512 feature scales is 15 kB


class ConfigError(ValueError):
    """A config.json (or constructor argument) that cannot describe a valid model."""


@dataclass
class ReconConfig:
    backbone: str = "vgg16"  # frozen encoder network: a BACKBONES name, or OWN_KERAS_MODEL
    layer: str = "block3_conv3"  # the encoder's output layer: the features we invert
    image_size: int = 224  # square training size; inference also runs at any multiple of the stride
    # a NAMED_ENCODER_WEIGHTS source of the backbone or a weights file; None: the backbone's default
    # (every config.json written before backbones existed names one)
    encoder_weights: str | None = None
    # the encoder's input convention (PREPROCESSING); None derives it from the backbone and
    # encoder_weights, which is what every config.json written before this field existed means ("caffe")
    preprocessing: str | None = None
    # SHA-256 of the weights file of a packaged source (recon.pipeline.is_packaged), whose weights a
    # model folder does not copy: loading refuses a file with another hash. For OWN_KERAS_MODEL, of
    # the .keras file the encoder was cut from (a record: the folder holds the encoder itself)
    encoder_sha256: str | None = None
    encoder_seed: int = 0  # initializer seed when encoder_weights == "random" (tests only)
    # For OWN_KERAS_MODEL only (null otherwise: the backbone's table says): the layer's channels, its
    # stride (input pixels per cell, a power of 2) and its border cells (BORDER_CELLS), measured from
    # the model when the folder was made
    feature_channels: int | None = None
    feature_stride: int | None = None
    feature_border: int | None = None
    decoder_width: int = 64  # channels after the 1x1 reduction and in the residual trunk
    num_res_blocks: int = 4  # residual blocks at the feature resolution
    upsample_widths: list[int] | None = None  # channels per x2 stage; None derives [w, w/2, ...]
    upsample: str = "resize"  # resize (bilinear + conv) or pixel_shuffle; no transposed convs
    feature_scale: list[float] | None = None  # per-channel RMS of the features on the training data
    # SHA-256 of the folder's encoder.int8.tflite (recon.int8), written by training.quantize after its
    # held-out check; a file with another hash (stale, or another model's) is never run
    int8_encoder_sha256: str | None = None
    # SHA-256 of decoder.weights.h5 when that int8 file also holds the decoder's residual trunk (a
    # copy of those weights): a decoder trained on since then makes the file stale too
    int8_decoder_sha256: str | None = None

    def __post_init__(self):
        """Check every field's type, finiteness and range (ConfigError naming the field) before
        anything is built from it."""
        self._check_encoder()
        self.upsample = _choice("upsample", self.upsample, UPSAMPLE_MODES)
        for name in ("encoder_sha256", "int8_encoder_sha256", "int8_decoder_sha256"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and len(value) == 64
                                          and all(c in "0123456789abcdef" for c in value)):
                raise ConfigError(f"{name} must be a SHA-256 as 64 lowercase hex digits or null, not {_shown(value)}")
        self.encoder_seed = _integer("encoder_seed", self.encoder_seed, 0, MAX_SEED)
        self.image_size = _integer("image_size", self.image_size, 1, MAX_IMAGE_SIZE)
        self.decoder_width = _integer("decoder_width", self.decoder_width, 1, MAX_WIDTH)
        self.num_res_blocks = _integer("num_res_blocks", self.num_res_blocks, 0, MAX_RES_BLOCKS)
        if self.image_size % self.stride or self.feature_size(self.image_size) < 1:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of the layer's stride {self.stride} "
                              f"of at least {self.image_size_of(1)} px")
        if self.upsample_widths is None:
            self.upsample_widths = [max(self.decoder_width // 2**i, 8) for i in range(self.num_upsamples)]
        widths = _sequence("upsample_widths", self.upsample_widths, self.num_upsamples,
                           f"for {self.layer} (stride {self.stride})")
        self.upsample_widths = [_integer(f"upsample_widths[{i}]", w, 1, MAX_WIDTH) for i, w in enumerate(widths)]
        if self.feature_scale is not None:
            scales = _sequence("feature_scale", self.feature_scale, self.channels, f"for {self.layer}")
            self.feature_scale = [_real(f"feature_scale[{i}]", s, *FEATURE_SCALE_RANGE) for i, s in enumerate(scales)]
        if self.decoder_parameters > MAX_DECODER_PARAMETERS:
            raise ConfigError(f"decoder_width, num_res_blocks and upsample_widths describe a decoder of "
                              f"{self.decoder_parameters:,} parameters, over the {MAX_DECODER_PARAMETERS:,} allowed")

    def _check_encoder(self) -> None:
        """backbone, layer, encoder_weights, preprocessing and the feature_* fields, for the backbone
        (ConfigError naming the field)."""
        own = self.backbone == OWN_KERAS_MODEL
        if not isinstance(self.backbone, str) or not (own or self.backbone in BACKBONES):
            raise ConfigError(f"backbone: unknown backbone {_shown(self.backbone)}; known: "
                              f"{[*BACKBONES, OWN_KERAS_MODEL]}")
        if own:
            self.layer = _text("layer", self.layer)
            self.feature_channels = _integer("feature_channels", self.feature_channels, 1, MAX_FEATURE_CHANNELS)
            self.feature_stride = _integer("feature_stride", self.feature_stride, 1, MAX_STRIDE)
            if self.feature_stride & (self.feature_stride - 1):
                raise ConfigError(f"feature_stride must be a power of 2 (the decoder upsamples x2 at a time), "
                                  f"not {self.feature_stride}")
            self.feature_border = _integer("feature_border", self.feature_border, 0, MAX_BORDER_CELLS)
            if self.preprocessing is None:
                raise ConfigError(f"preprocessing: one's own Keras model needs it stated, one of {list(PREPROCESSING)}")
            self.encoder_weights = _text("encoder_weights", self.encoder_weights if self.encoder_weights
                                         is not None else "own model")
        else:
            layers = BACKBONES[self.backbone]
            if not isinstance(self.layer, str) or self.layer not in layers:
                raise ConfigError(f"layer: unknown {self.backbone} layer {_shown(self.layer)}; known: {list(layers)}")
            for name in ("feature_channels", "feature_stride", "feature_border"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name} is for backbone {OWN_KERAS_MODEL!r} only; {self.backbone}'s table "
                                      f"gives it, so it must be null, not {_shown(getattr(self, name))}")
            if self.encoder_weights is None:
                self.encoder_weights = NAMED_ENCODER_WEIGHTS[self.backbone][0]
            self.encoder_weights = _text("encoder_weights", self.encoder_weights)
            if self.preprocessing is None:
                self.preprocessing = self._implied_preprocessing()
        self.preprocessing = _choice("preprocessing", self.preprocessing, BACKBONE_PREPROCESSING[self.backbone])

    def _implied_preprocessing(self) -> str:
        """What a config without `preprocessing` means: the backbone's only convention, or for VGG16
        torchvision's for torchvision weights (and .ckpt files) and Caffe's for the rest."""
        if self.backbone != "vgg16":
            return BACKBONE_PREPROCESSING[self.backbone][0]
        torchvision = self.encoder_weights in TORCHVISION_SOURCES or self.encoder_weights.endswith(".ckpt")
        return "torchvision" if torchvision else "caffe"

    @property
    def channels(self) -> int:
        """Channels of the feature map at `layer`."""
        return self.feature_channels if self.backbone == OWN_KERAS_MODEL else BACKBONES[self.backbone][self.layer][0]

    @property
    def stride(self) -> int:
        """Input pixels per feature-map cell along each axis (a power of 2)."""
        return self.feature_stride if self.backbone == OWN_KERAS_MODEL else BACKBONES[self.backbone][self.layer][1]

    @property
    def border_cells(self) -> int:
        """Cells an input of stride*m pixels falls short of m: its map is (m - border_cells) cells."""
        return self.feature_border if self.backbone == OWN_KERAS_MODEL else BORDER_CELLS[self.backbone]

    @property
    def depth_order(self) -> tuple:
        """Sort key: network (BACKBONES' order, one's own model last), then layer, shallow to deep."""
        if self.backbone == OWN_KERAS_MODEL:
            return (len(BACKBONES), self.stride, self.layer)
        return (list(BACKBONES).index(self.backbone), list(BACKBONES[self.backbone]).index(self.layer), "")

    def feature_size(self, pixels: int) -> int:
        """Cells of the feature map along a side of `pixels` (a multiple of the stride)."""
        return pixels // self.stride - self.border_cells

    def image_size_of(self, cells: int) -> int:
        """Pixels along a side whose feature map has `cells` cells: what the decoder gives back."""
        return (cells + self.border_cells) * self.stride

    @property
    def num_upsamples(self) -> int:
        return self.stride.bit_length() - 1

    @property
    def decoder_parameters(self) -> int:
        """Weights `recon.decoder.build_decoder` makes for this config, counted without building it."""
        width, blocks = self.decoder_width, self.num_res_blocks
        count = self.channels * width + width + blocks * 2 * (9 * width * width + width)
        factor = 4 if self.upsample == "pixel_shuffle" else 1
        for out in self.upsample_widths:
            count += 9 * width * out * factor + out * factor
            width = out
        return count + 9 * width * 3 + 3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "ReconConfig":
        """Validate a loaded dict: unknown keys warn, missing or invalid ones raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        stamps = {"recon_version", "keras_version"}
        unknown = set(data) - known - stamps
        if unknown:
            warnings.warn(f"{source}: ignoring unknown config keys {sorted(unknown)}", stacklevel=2)
        missing = REQUIRED_KEYS - set(data)
        if missing:
            raise ConfigError(f"{source}: missing required config keys {sorted(missing)}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{source}: invalid config: {e}") from None

    def save(self, path: str | Path) -> None:
        import keras

        from recon import __version__
        data = self.to_dict() | {"recon_version": __version__, "keras_version": keras.__version__}
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ReconConfig":
        """Read and check a config.json.

        Raises:
            ConfigError: naming the file and what is wrong: missing, unreadable, over
                MAX_CONFIG_BYTES, not JSON (or nested too deep), a missing key or an invalid value.
        """
        path = Path(path)
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{path} is over {MAX_CONFIG_BYTES:,} bytes: not a config.json")
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e}") from None
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(data, source=str(path))


def _shown(value) -> str:
    """A value for an error message, cut short (it may be a megabyte of JSON)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, not {_shown(value)}")
    return value


def _text(name: str, value) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_STRING or "\0" in value:
        raise ConfigError(f"{name} must be a name or a path (a string of 1 to {MAX_STRING} characters), "
                          f"not {_shown(value)}")
    return value


def _integer(name: str, value, low: int, high: int) -> int:
    """An integer (not a bool, not 3.0) from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high:,}, not {_shown(value)}")
    return int(value)


def _real(name: str, value, low: float, high: float) -> float:
    """A finite number from `low` to `high` (NaN fails the comparison; a 1000-digit int compares exactly)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
        raise ConfigError(f"{name} must be a finite number from {low:g} to {high:g}, not {_shown(value)}")
    return float(value)


def _sequence(name: str, value, length: int, why: str) -> list:
    """A list (or tuple, or 1-D array) of `length` entries."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__") or not hasattr(value, "__iter__") \
            or getattr(value, "ndim", 1) != 1:
        raise ConfigError(f"{name} must be a list of {length} numbers {why}, not {_shown(value)}")
    if len(value) != length:
        raise ConfigError(f"{name} needs {length} entries {why}, got {len(value)}")
    return list(value)


# Everything that changes the shapes of the weights must be stated in a saved config.
REQUIRED_KEYS = {"backbone", "layer", "image_size", "decoder_width", "num_res_blocks",
                 "upsample_widths", "upsample", "feature_scale"}
