import numpy as np
import pytest
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from recon.metrics import error_map, image_metrics


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.random((48, 40, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    return a, b


def test_metrics_match_skimage(pair):
    a, b = pair
    m = image_metrics(a, b)
    assert abs(m["mse"] - mean_squared_error(a, b)) < 1e-4
    assert abs(m["psnr"] - peak_signal_noise_ratio(a, b, data_range=1.0)) < 1e-4
    expected = structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert abs(m["ssim"] - expected) < 1e-4
    assert 10 < m["psnr"] < 30 and 0 < m["ssim"] < 1


def test_identical_images():
    a = np.random.default_rng(1).random((16, 16, 3))
    m = image_metrics(a, a)
    assert m["mse"] == 0 and m["psnr"] == float("inf") and m["ssim"] == pytest.approx(1.0)


def test_shape_mismatch_raises(pair):
    with pytest.raises(ValueError, match="shapes differ"):
        image_metrics(pair[0], pair[1][:10])


def test_training_metrics_agree_with_reports(pair):
    """The in-graph PSNR/SSIM that pick the best checkpoint track the reported (skimage) ones."""
    from training.losses import psnr_metric, ssim_per_image
    a, b = pair
    m = image_metrics(a, b)
    assert float(psnr_metric(a[None], b[None])) == pytest.approx(m["psnr"], abs=1e-3)
    # the training SSIM uses valid windows only, skimage crops the border: close, not equal
    assert float(ssim_per_image(a[None], b[None])[0]) == pytest.approx(m["ssim"], abs=0.02)


def test_error_map(pair):
    a, b = pair
    e = error_map(a, b)
    assert e.shape == (48, 40) and np.allclose(e, np.abs(a - b).mean(-1), atol=1e-6)
