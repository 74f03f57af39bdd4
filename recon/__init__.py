"""recon: reconstruct images from the frozen feature maps of a pretrained CNN."""

__version__ = "0.1.0"

from recon.config import ConfigError, ReconConfig  # noqa: E402
from recon.decoder import build_decoder  # noqa: E402
from recon.encoder import EncoderWeightsError, build_encoder  # noqa: E402
from recon.imageio import ImageLoadError, load_image  # noqa: E402
from recon.metrics import image_metrics  # noqa: E402
from recon.pipeline import ModelFolderError, Reconstruction, Reconstructor  # noqa: E402

__all__ = ["ConfigError", "EncoderWeightsError", "ImageLoadError", "ModelFolderError", "ReconConfig",
           "Reconstruction", "Reconstructor", "build_decoder", "build_encoder", "image_metrics", "load_image"]
