"""Per-image quality metrics on [0,1] float RGB, with an explicit data range (scikit-image)."""

from __future__ import annotations

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


def image_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """MSE, PSNR and SSIM of one (H, W, 3) image pair in [0,1].

    Example:
        >>> image_metrics(a, b)
        {'mse': 0.0021, 'psnr': 26.8, 'ssim': 0.83}
    """
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {test.shape}")
    return {"mse": mse(reference, test), "psnr": psnr(reference, test), "ssim": ssim(reference, test)}


def error_map(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-pixel absolute error averaged over channels, (H, W) in [0,1]."""
    return np.abs(reference.astype(np.float32) - test.astype(np.float32)).mean(axis=-1)
