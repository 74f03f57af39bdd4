"""Look inside a feature map and alter it: the numeric side of the demo's viewer and ablations.

Pure numpy on one (h, w, C) feature map, so the UI stays a thin layer and every number it
shows can be unit-tested. "Strongest" channels are ranked by mean activation on this image.
"""

from __future__ import annotations

import numpy as np

# Inferno colour map sampled at 9 points (matplotlib's values); interpolated linearly, which
# is close enough for display and keeps matplotlib out of the app's import time.
_INFERNO = np.array([
    [0.001, 0.000, 0.014], [0.122, 0.047, 0.283], [0.335, 0.060, 0.429],
    [0.533, 0.134, 0.416], [0.729, 0.212, 0.333], [0.891, 0.347, 0.198],
    [0.976, 0.550, 0.039], [0.977, 0.781, 0.171], [0.988, 0.998, 0.645]], dtype=np.float32)


def _check(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 3:
        raise ValueError(f"expected one (h, w, C) feature map, got shape {features.shape}")
    return features


def channel_means(features: np.ndarray) -> np.ndarray:
    """Mean activation of each channel, (C,)."""
    return _check(features).mean(axis=(0, 1))


def top_channels(features: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n channels with the highest mean activation, strongest first (ties by index)."""
    means = channel_means(features)
    n = int(np.clip(n, 0, means.size))
    order = np.lexsort((np.arange(means.size), -means))  # stable: equal means keep index order
    return order[:n]


def sparsity(features: np.ndarray) -> float:
    """Fraction of exact zeros: how much of the map ReLU switched off."""
    features = _check(features)
    return float(np.mean(features == 0)) if features.size else 0.0


def colormap(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(h, w) values -> (h, w, 3) uint8 through inferno; the range defaults to the values' own."""
    values = np.asarray(values, dtype=np.float32)
    lo = float(np.min(values)) if vmin is None else float(vmin)
    hi = float(np.max(values)) if vmax is None else float(vmax)
    t = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    t = np.nan_to_num(np.clip(t, 0.0, 1.0)) * (len(_INFERNO) - 1)
    low = np.minimum(np.floor(t).astype(int), len(_INFERNO) - 2)
    frac = (t - low)[..., None]
    rgb = _INFERNO[low] * (1 - frac) + _INFERNO[low + 1] * frac
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling, so each feature cell stays a visible square."""
    factor = max(1, int(factor))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def channel_image(features: np.ndarray, channel: int, size: int = 256) -> np.ndarray:
    """One channel colour-mapped on its own range (0 is black), upscaled to about `size` pixels."""
    features = _check(features)
    if not 0 <= channel < features.shape[-1]:
        raise ValueError(f"channel {channel} out of range 0..{features.shape[-1] - 1}")
    values = features[..., channel]
    image = colormap(values, vmin=min(0.0, float(values.min())))
    return upscale(image, size // max(values.shape))


def channel_tiles(features: np.ndarray, n: int, size: int = 96) -> list[tuple[np.ndarray, int, float]]:
    """The n strongest channels as (colour-mapped image, channel index, mean activation)."""
    features = _check(features)
    means = channel_means(features)
    return [(channel_image(features, int(c), size), int(c), float(means[c])) for c in top_channels(features, n)]


def channel_grid(features: np.ndarray, channels, cols: int = 8, size: int = 64, pad: int = 2) -> np.ndarray:
    """Channels side by side in rows of `cols` tiles (white gaps), as one uint8 image."""
    tiles = [channel_image(features, int(c), size) for c in channels]
    if not tiles:
        return np.full((size, size, 3), 255, np.uint8)
    th, tw = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    cols = min(cols, len(tiles))
    grid = np.full((rows * (th + pad) - pad, cols * (tw + pad) - pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * (th + pad):r * (th + pad) + th, c * (tw + pad):c * (tw + pad) + tw] = tile
    return grid


# -- ablations: same shape out, so the decoder can run on the result -------------------------
def keep_top_k(features: np.ndarray, k: int) -> np.ndarray:
    """Zero every channel but the k strongest."""
    features = _check(features)
    out = np.zeros_like(features)
    keep = top_channels(features, k)
    out[..., keep] = features[..., keep]
    return out


def zero_channel(features: np.ndarray, channel: int) -> np.ndarray:
    """The map with one channel switched off."""
    features = _check(features)
    if not 0 <= channel < features.shape[-1]:
        raise ValueError(f"channel {channel} out of range 0..{features.shape[-1] - 1}")
    out = features.copy()
    out[..., channel] = 0.0
    return out


def quantize(features: np.ndarray, bits: int) -> np.ndarray:
    """Uniform n-bit quantization per channel over [min(0, lo), hi]: 2**bits levels (0 is a level for ReLU maps)."""
    features = _check(features)
    bits = int(bits)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be between 1 and 16, not {bits}")
    levels = 2 ** bits - 1
    lo = np.minimum(features.min(axis=(0, 1)), 0.0)
    hi = features.max(axis=(0, 1))
    step = np.where(hi > lo, (hi - lo) / levels, 1.0)
    return (np.round((features - lo) / step) * step + lo).astype(np.float32)
