"""recon: reconstruct images from the frozen feature maps of a pretrained CNN.

The names below load on first use (PEP 562), so `import recon` and its light modules (config,
imageio, precision, startup) do not start Keras and TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_HOMES = {
    "ConfigError": "recon.config", "ReconConfig": "recon.config",
    "build_decoder": "recon.decoder",
    "EncoderWeightsError": "recon.encoder", "build_encoder": "recon.encoder",
    "ImageLoadError": "recon.imageio", "load_image": "recon.imageio",
    "image_metrics": "recon.metrics",
    "ModelFolderError": "recon.pipeline", "Reconstruction": "recon.pipeline", "Reconstructor": "recon.pipeline",
}
__all__ = ["ConfigError", "EncoderWeightsError", "ImageLoadError", "ModelFolderError", "ReconConfig",
           "Reconstruction", "Reconstructor", "build_decoder", "build_encoder", "image_metrics", "load_image"]

if TYPE_CHECKING:
    from recon.config import ConfigError, ReconConfig
    from recon.decoder import build_decoder
    from recon.encoder import EncoderWeightsError, build_encoder
    from recon.imageio import ImageLoadError, load_image
    from recon.metrics import image_metrics
    from recon.pipeline import ModelFolderError, Reconstruction, Reconstructor


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'recon' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
