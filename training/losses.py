"""Training losses and in-graph metrics, written with keras.ops so any Keras backend runs them."""

from __future__ import annotations

import numpy as np
from keras import ops


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g = np.outer(g, g) / np.outer(g, g).sum()
    return np.tile(g[:, :, None, None], (1, 1, 3, 1)).astype("float32")  # depthwise, 3 channels


def ssim_per_image(y_true, y_pred, max_val: float = 1.0):
    """SSIM of each image in a batch (Wang et al.: 11x11 Gaussian, sigma 1.5, valid windows)."""
    window = ops.convert_to_tensor(_gaussian_window())
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2

    def blur(x):
        return ops.depthwise_conv(x, window, strides=1, padding="valid")

    mu_x, mu_y = blur(y_true), blur(y_pred)
    var_x = blur(y_true * y_true) - mu_x * mu_x
    var_y = blur(y_pred * y_pred) - mu_y * mu_y
    cov = blur(y_true * y_pred) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ops.mean(ssim_map, axis=(1, 2, 3))


def as_float32(*tensors):
    """Losses and metrics run in float32 whatever the layers compute in (mixed precision)."""
    return [ops.cast(t, "float32") for t in tensors]


def psnr_metric(y_true, y_pred):
    """Mean over the batch of per-image PSNR (dB, data range 1). For monitoring; reports use recon.metrics."""
    y_true, y_pred = as_float32(y_true, y_pred)
    mse = ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3))
    return ops.mean(10.0 * ops.log10(1.0 / ops.maximum(mse, 1e-10)))


def ssim_metric(y_true, y_pred):
    y_true, y_pred = as_float32(y_true, y_pred)
    return ops.mean(ssim_per_image(y_true, y_pred))


psnr_metric.__name__ = "psnr"
ssim_metric.__name__ = "ssim"


def make_loss(alpha: float = 0.8, perceptual_weight: float = 0.0, encoder=None, feature_scale=None):
    """alpha*L1 + (1-alpha)*(1-SSIM) (the original project's loss), plus an optional
    feature-matching term: L1 between the frozen encoder's normalized features of both images."""
    if perceptual_weight and encoder is None:
        raise ValueError("a perceptual weight needs the encoder")
    scale = ops.convert_to_tensor(np.asarray(feature_scale if feature_scale else 1.0, dtype="float32"))

    def recon_loss(y_true, y_pred):
        y_true, y_pred = as_float32(y_true, y_pred)
        l1 = ops.mean(ops.abs(y_true - y_pred), axis=(1, 2, 3))
        loss = alpha * l1 + (1.0 - alpha) * (1.0 - ssim_per_image(y_true, y_pred))
        if perceptual_weight:
            diff = ops.cast(encoder(y_pred, training=False) - encoder(y_true, training=False), "float32") / scale
            loss = loss + perceptual_weight * ops.mean(ops.abs(diff), axis=(1, 2, 3))
        return loss

    return recon_loss
