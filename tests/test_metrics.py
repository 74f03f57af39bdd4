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


# -- what the metrics accept: uint8, uint16, float in [0, 1]; anything else is refused -------------
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
def test_every_accepted_dtype_gives_the_same_metrics(pair, dtype):
    a, b = (np.round(x * 255) / 255 for x in pair)  # exactly representable in uint8
    reference = image_metrics(a, b, lpips_net=None)
    scale = {"uint8": 255, "uint16": 65535}.get(dtype)
    a, b = ((x * scale).round().astype(dtype) if scale else x.astype(dtype) for x in (a, b))
    m = image_metrics(a, b, lpips_net=None)
    assert m["psnr"] == pytest.approx(reference["psnr"], abs=1e-3)
    assert m["ssim"] == pytest.approx(reference["ssim"], abs=1e-4)


def test_two_uint8_images_are_not_read_as_floats(pair):
    """They gave -26.5 dB when uint8 was taken for [0, 1] floats; the same pair as floats: about 20 dB."""
    a, b = ((x * 255).round().astype(np.uint8) for x in pair)
    assert 15 < image_metrics(a, b, lpips_net=None)["psnr"] < 30


@pytest.mark.parametrize("bad, message", [
    (lambda a: a * 255.0, r"must lie in \[0, 1\].*0\.\.255"),  # a float image in 0..255
    (lambda a: a - 0.5, r"must lie in \[0, 1\]"),
    (lambda a: (a * 255).astype(np.int32), "dtype int32"),
    (lambda a: a > 0.5, "dtype bool"),
    (lambda a: np.where(a > 0.5, np.nan, a), "NaN"),
])
def test_out_of_range_or_unknown_dtypes_raise(pair, bad, message):
    with pytest.raises(ValueError, match=message):
        image_metrics(pair[0], bad(pair[1]))


def test_small_images_give_undefined_metrics_instead_of_errors():
    """SSIM's 11 px window and AlexNet's 31 px input do not fit: NaN, while PSNR is still defined."""
    import math
    for shape in [(1, 1, 3), (9, 40, 3), (8, 750, 3), (24, 24, 3)]:
        a = np.random.default_rng(0).random(shape)
        m = image_metrics(a, np.clip(a + 0.05, 0, 1))
        assert math.isfinite(m["psnr"]) and math.isnan(m["lpips"])
        assert math.isnan(m["ssim"]) == (min(shape[:2]) < 11)


@pytest.mark.parametrize("shape, message", [
    ((3, 48, 40), r"channels last, got shape \(3, 48, 40\): channels first\? Use image.transpose\(1, 2, 0\)"),
    ((2, 48, 40, 3), "expected .H, W, 3. images"),
    ((48, 40), r"expected an \(H, W, 3\) RGB pair"),
])
def test_channel_first_or_other_shapes_are_refused_not_scored(shape, message):
    """A (3, H, W) pair gave a PSNR, and NaN SSIM and LPIPS, computed over the wrong axes."""
    a = np.random.default_rng(2).random(shape)
    with pytest.raises(ValueError, match=message):
        image_metrics(a, np.clip(a + 0.05, 0, 1))
    with pytest.raises(ValueError, match=r"shapes differ: reference \(48, 40, 3\) vs test \(40, 48, 3\)"):
        image_metrics(np.zeros((48, 40, 3)), np.zeros((40, 48, 3)))
