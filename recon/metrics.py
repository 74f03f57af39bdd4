"""Per-image quality metrics: PSNR and SSIM with an explicit data range (scikit-image), and LPIPS
(Zhang et al. 2018; recon.lpips).

Every function takes uint8 (0..255), uint16 (0..65535) or float images in [0, 1] (see
`recon.imageio.checked_image`; anything else raises ValueError) and computes in float64 on [0, 1].
Where a metric is undefined for an image that small (SSIM below its 11 px window, LPIPS below its
network's input), it is NaN rather than an error: see SSIM_MIN_SIZE and recon.lpips.MIN_SIZE.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from recon.imageio import checked_image, to_float

DATA_RANGE = 1.0
SSIM_MIN_SIZE = 11  # the Gaussian window (sigma 1.5, truncated at 3.5 sigma) needs this many pixels a side
ERROR_MAP_MAX = 0.25  # every error map's colour range is 0..this, so maps of any images, runs and tools compare


def unit_pair(reference, test) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 in [0, 1], after checking dtype, range and shape.

    Raises:
        ValueError: a dtype or range `checked_image` refuses; shapes that differ; an image that is
            not (H, W, 3), (H, W, 1) or (H, W) (a channel-first (3, H, W) array gave a PSNR and
            NaN SSIM and LPIPS, computed over the wrong axes).
    """
    a = to_float(checked_image(reference, "reference")).astype(np.float64)
    b = to_float(checked_image(test, "test")).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: reference {a.shape} vs test {b.shape}")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3)):
        hint = ": channels first? Use image.transpose(1, 2, 0)" if a.ndim == 3 and a.shape[0] in (1, 3) else ""
        raise ValueError(f"expected (H, W, 3) images, channels last, got shape {a.shape}{hint}")
    return a, b


def mse(reference: np.ndarray, test: np.ndarray) -> float:
    return _mse(*unit_pair(reference, test))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB on [0,1] (data range 1); infinite for identical images."""
    return _psnr(*unit_pair(reference, test))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM as Wang et al. 2004 define it: 11x11 Gaussian window (sigma 1.5), per channel, averaged.
    NaN for images under SSIM_MIN_SIZE px on a side, where the window does not fit."""
    return _ssim(*unit_pair(reference, test))


# The same on a pair unit_pair has already checked (image_metrics checks once for all of them).
# scikit-image is imported on first use: it brings scipy.stats (about a second), which the
# command-line tools' --help and the constants above do not need.
def _mse(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import mean_squared_error
    return float(mean_squared_error(a, b))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(a, b, data_range=DATA_RANGE))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity
    if min(a.shape[:2]) < SSIM_MIN_SIZE:
        return math.nan
    return float(structural_similarity(a, b, data_range=DATA_RANGE, channel_axis=-1 if a.ndim == 3 else None,
                                       gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


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
    from recon.lpips import MIN_SIZE, NETS
    if net not in NETS:
        raise ValueError(f"LPIPS net must be one of {NETS}, not {net!r}")
    a, b = unit_pair(reference, test)
    if min(a.shape[:2]) < MIN_SIZE[net]:
        return math.nan
    return float(lpips_model(net)(a, b))


def image_metrics(reference: np.ndarray, test: np.ndarray, lpips_net: str | None = "alex") -> dict[str, float]:
    """MSE, PSNR, SSIM and (unless lpips_net is None) LPIPS of one (H, W, 3) image pair in [0,1].

    Raises:
        ValueError: as `unit_pair` (dtype, range, differing shapes, channels first), or a pair that
            is not (H, W, 3).

    Example:
        >>> image_metrics(a, b)
        {'mse': 0.0021, 'psnr': 26.8, 'ssim': 0.83, 'lpips': 0.12}
    """
    a, b = unit_pair(reference, test)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB pair, got shape {a.shape}")
    out = {"mse": _mse(a, b), "psnr": _psnr(a, b), "ssim": _ssim(a, b)}
    if lpips_net:
        out["lpips"] = lpips(a, b, lpips_net)
    return out


def error_map(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-pixel absolute error averaged over channels, (H, W) in [0,1]; draw it on 0..ERROR_MAP_MAX."""
    a, b = unit_pair(reference, test)
    return np.abs(a - b).mean(axis=-1).astype(np.float32)
