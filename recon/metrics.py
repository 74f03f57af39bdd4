"""Per-image quality metrics on [0,1] float RGB: PSNR and SSIM with an explicit data range
(scikit-image), and LPIPS (Zhang et al. 2018; recon.lpips)."""

from __future__ import annotations

import functools
import math

import numpy as np
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

DATA_RANGE = 1.0


def mse(reference: np.ndarray, test: np.ndarray) -> float:
    return float(mean_squared_error(reference.astype(np.float64), test.astype(np.float64)))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB for [0,1] images; infinite for identical images."""
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(reference.astype(np.float64), test.astype(np.float64),
                                             data_range=DATA_RANGE))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM as Wang et al. 2004 define it: 11x11 Gaussian window (sigma 1.5), per channel, averaged."""
    return float(structural_similarity(
        reference.astype(np.float64), test.astype(np.float64), data_range=DATA_RANGE,
        channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


@functools.lru_cache(maxsize=2)
def lpips_model(net: str = "alex"):
    """One LPIPS network per process (built on first use: about a second)."""
    from recon.lpips import LPIPS
    return LPIPS(net)


def lpips(reference: np.ndarray, test: np.ndarray, net: str = "alex") -> float:
    """LPIPS v0.1 of one (H, W, 3) pair in [0,1]: 0 identical, lower is better.

    net: "alex" (the LPIPS authors' default) or "vgg". NaN where the image is smaller than the
    network takes (31 px for AlexNet, 16 for VGG), since the distance is undefined there.
    """
    from recon.lpips import MIN_SIZE
    if min(reference.shape[:2]) < MIN_SIZE[net]:
        return math.nan
    return float(lpips_model(net)(reference, test))


def image_metrics(reference: np.ndarray, test: np.ndarray, lpips_net: str | None = "alex") -> dict[str, float]:
    """MSE, PSNR, SSIM and (unless lpips_net is None) LPIPS of one (H, W, 3) image pair in [0,1].

    Example:
        >>> image_metrics(a, b)
        {'mse': 0.0021, 'psnr': 26.8, 'ssim': 0.83, 'lpips': 0.12}
    """
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    out = {"mse": mse(reference, test), "psnr": psnr(reference, test), "ssim": ssim(reference, test)}
    if lpips_net:
        out["lpips"] = lpips(reference, test, lpips_net)
    return out


def error_map(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-pixel absolute error averaged over channels, (H, W) in [0,1]."""
    return np.abs(reference.astype(np.float32) - test.astype(np.float32)).mean(axis=-1)
