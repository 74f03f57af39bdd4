"""recon: reconstruct images from the frozen feature maps of a pretrained CNN.

    from recon import BUNDLED_MODELS, EXAMPLE_PHOTOS, Reconstructor, load_image, save_image

    model = Reconstructor.from_pretrained(BUNDLED_MODELS / "vgg16-block3_conv3")
    rec = model.reconstruct(load_image(EXAMPLE_PHOTOS / "grace_hopper.jpg"), size="native")
    save_image(rec.output, "grace_hopper_block3.png")

The names below load on first use (PEP 562), so `import recon` and its light modules (config,
imageio, precision, startup) do not start Keras and TensorFlow. The first name that needs them
starts TensorFlow with its C++ start-up lines kept off the console (`recon.startup`;
TF_CPP_MIN_LOG_LEVEL=0 shows them). `recon.hub` holds the Hub helpers (`from_pretrained`,
`push_to_hub`, `download`, `HubError`): the `hub/` folder of a checkout, shipped inside `recon` by
`pip install .`.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_HOMES = {
    "ConfigError": "recon.config", "ReconConfig": "recon.config",
    "build_decoder": "recon.decoder",
    "EncoderWeightsError": "recon.encoder", "build_encoder": "recon.encoder",
    "ImageLoadError": "recon.imageio", "load_image": "recon.imageio", "save_image": "recon.imageio",
    "image_metrics": "recon.metrics",
    "ModelFolderError": "recon.pipeline", "Reconstruction": "recon.pipeline", "Reconstructor": "recon.pipeline",
}
_LIGHT = {"recon.config", "recon.imageio"}  # need neither Keras nor TensorFlow, now or later


def _data_folder(name: str) -> Path:
    """models/ or examples/: inside the package where `pip install .` put it, else beside it (a checkout,
    or `pip install -e .`)."""
    package = Path(__file__).resolve().parent
    installed = package / name
    return installed if installed.is_dir() else package.parent / name


BUNDLED_MODELS = _data_folder("models")  # vgg16-block1_conv2 ... vgg16-block5_conv3, one model folder each
EXAMPLE_PHOTOS = _data_folder("examples")  # astronaut.jpg, chelsea.jpg, coffee.jpg, grace_hopper.jpg

__all__ = ["BUNDLED_MODELS", "ConfigError", "EXAMPLE_PHOTOS", "EncoderWeightsError", "ImageLoadError",
           "ModelFolderError", "ReconConfig", "Reconstruction", "Reconstructor", "build_decoder", "build_encoder",
           "image_metrics", "load_image", "save_image"]

if TYPE_CHECKING:
    from recon.config import ConfigError, ReconConfig
    from recon.decoder import build_decoder
    from recon.encoder import EncoderWeightsError, build_encoder
    from recon.imageio import ImageLoadError, load_image, save_image
    from recon.metrics import image_metrics
    from recon.pipeline import ModelFolderError, Reconstruction, Reconstructor


def __getattr__(name: str):
    if name == "hub":
        return _hub()
    if name not in _HOMES:
        raise AttributeError(f"module 'recon' has no attribute {name!r}")
    if _HOMES[name] not in _LIGHT and "tensorflow" not in sys.modules:
        from recon.startup import start_tensorflow_quietly
        start_tensorflow_quietly()  # does nothing for KERAS_BACKEND other than tensorflow
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # found directly next time
    return value


def _hub():
    """recon.hub, imported on first use: `hub` imports `recon`, so `recon` never imports it at import time."""
    try:
        module = importlib.import_module("recon.hub")  # installed: hub/ ships as recon/hub
    except ModuleNotFoundError as e:
        if e.name != "recon.hub":
            raise
        module = importlib.import_module("hub")  # a checkout on sys.path: hub/ beside recon/
        sys.modules["recon.hub"] = module
    globals()["hub"] = module
    return module


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__", "hub"])
