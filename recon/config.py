"""The one dataclass that describes a trained reconstruction model.

It travels as `config.json` beside the weights and is enough to rebuild the exact model
(the `from_pretrained` pattern): architecture, feature layer and feature normalization.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

# VGG16 conv layers: name -> (channels, stride relative to the input).
VGG16_LAYERS: dict[str, tuple[int, int]] = {
    "block1_conv1": (64, 1), "block1_conv2": (64, 1),
    "block2_conv1": (128, 2), "block2_conv2": (128, 2),
    "block3_conv1": (256, 4), "block3_conv2": (256, 4), "block3_conv3": (256, 4),
    "block4_conv1": (512, 8), "block4_conv2": (512, 8), "block4_conv3": (512, 8),
    "block5_conv1": (512, 16), "block5_conv2": (512, 16), "block5_conv3": (512, 16),
}
BACKBONES = {"vgg16": VGG16_LAYERS}
UPSAMPLE_MODES = ("resize", "pixel_shuffle")
# Named weight sources; anything else is taken as a path to a local weights file.
NAMED_ENCODER_WEIGHTS = ("imagenet-torchvision", "imagenet", "hed-bsds500", "random")
# How [0,1] RGB becomes the encoder's input. "caffe": BGR, 0..255, minus the ImageNet mean (Keras'
# VGG16 and HED); "torchvision": RGB minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225).
PREPROCESSING = ("caffe", "torchvision")
TORCHVISION_SOURCES = ("imagenet-torchvision",)


class ConfigError(ValueError):
    """A config.json (or constructor argument) that cannot describe a valid model."""


@dataclass
class ReconConfig:
    backbone: str = "vgg16"  # frozen encoder network
    layer: str = "block3_conv3"  # the encoder's output layer: the features we invert
    image_size: int = 224  # square training size; inference also runs at any multiple of the stride
    encoder_weights: str = "imagenet-torchvision"  # a NAMED_ENCODER_WEIGHTS source or a weights file
    # the encoder's input convention (PREPROCESSING); None derives it from encoder_weights, which is
    # what every config.json written before this field existed means ("caffe")
    preprocessing: str | None = None
    # SHA-256 of the weights file of a packaged source (recon.pipeline.PACKAGED_ENCODERS), whose
    # weights a model folder does not copy; loading refuses a file with another hash
    encoder_sha256: str | None = None
    encoder_seed: int = 0  # initializer seed when encoder_weights == "random" (tests only)
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
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; known: {sorted(BACKBONES)}")
        layers = BACKBONES[self.backbone]
        if self.layer not in layers:
            raise ConfigError(f"unknown {self.backbone} layer {self.layer!r}; known: {list(layers)}")
        if self.preprocessing is None:
            torchvision = self.encoder_weights in TORCHVISION_SOURCES or self.encoder_weights.endswith(".ckpt")
            self.preprocessing = "torchvision" if torchvision else "caffe"
        if self.preprocessing not in PREPROCESSING:
            raise ConfigError(f"preprocessing must be one of {PREPROCESSING}, not {self.preprocessing!r}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample must be one of {UPSAMPLE_MODES}, not {self.upsample!r}")
        for name in ("image_size", "decoder_width"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, not {getattr(self, name)!r}")
        if not isinstance(self.num_res_blocks, int) or self.num_res_blocks < 0:
            raise ConfigError(f"num_res_blocks must be a non-negative integer, not {self.num_res_blocks!r}")
        if self.image_size % self.stride:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of the layer's stride {self.stride}")
        if self.upsample_widths is None:
            self.upsample_widths = [max(self.decoder_width // 2**i, 8) for i in range(self.num_upsamples)]
        self.upsample_widths = [int(w) for w in self.upsample_widths]
        if len(self.upsample_widths) != self.num_upsamples:
            raise ConfigError(
                f"upsample_widths needs {self.num_upsamples} entries for {self.layer} "
                f"(stride {self.stride}), got {self.upsample_widths}")
        if self.feature_scale is not None:
            self.feature_scale = [float(s) for s in self.feature_scale]
            if len(self.feature_scale) != self.channels or min(self.feature_scale) <= 0:
                raise ConfigError(f"feature_scale needs {self.channels} positive values for {self.layer}")

    @property
    def channels(self) -> int:
        """Channels of the feature map at `layer`."""
        return BACKBONES[self.backbone][self.layer][0]

    @property
    def stride(self) -> int:
        """Input pixels per feature-map cell along each axis."""
        return BACKBONES[self.backbone][self.layer][1]

    @property
    def num_upsamples(self) -> int:
        return self.stride.bit_length() - 1

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
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no config.json at {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(data, source=str(path))


# Everything that changes the shapes of the weights must be stated in a saved config.
REQUIRED_KEYS = {"backbone", "layer", "image_size", "decoder_width", "num_res_blocks",
                 "upsample_widths", "upsample", "feature_scale"}
