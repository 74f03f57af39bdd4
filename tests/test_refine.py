import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from recon import ReconConfig, Reconstructor, image_metrics
from recon.refine import feature_error, feature_matching, refine
from tests.conftest import smooth_image


def test_feature_matching_lowers_the_feature_error_and_keeps_pixels_valid(tiny_config):
    model = Reconstructor(tiny_config)
    rec = model.reconstruct(smooth_image(40, 48, seed=3))
    trace = list(feature_matching(model, rec.features, rec.output, steps=20, learning_rate=1e-2, every=5))
    assert [step for step, _, _ in trace] == [0, 5, 10, 15, 20]
    errors = [error for _, _, error in trace]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 0.7 * errors[0]
    for _, image, _ in trace:
        assert image.shape == rec.output.shape and image.min() >= 0 and image.max() <= 1


def test_feature_matching_recovers_an_image_its_features_pin_down():
    # block1_conv2 keeps full resolution, so matching its features from a flat grey start
    # must bring back the picture: the check that the optimisation itself works.
    model = Reconstructor(ReconConfig(layer="block1_conv2", image_size=24, encoder_weights="random"))
    x = model.prepare(smooth_image(24, 24, seed=5))
    grey = np.full_like(x, 0.5)
    refined, error = refine(model, model.encode(x), grey, steps=60, learning_rate=2e-2)
    assert error < 0.05
    assert image_metrics(x, refined)["psnr"] > image_metrics(x, grey)["psnr"] + 6


def test_feature_error_agrees_with_feature_matching_and_grows_with_noise(tiny_config):
    model = Reconstructor(tiny_config)
    rec = model.reconstruct(smooth_image(32, 32, seed=4))
    _, _, first = next(feature_matching(model, rec.features, rec.output))
    assert feature_error(model, rec.output, rec.features) == pytest.approx(first, rel=1e-4)
    assert feature_error(model, rec.input, rec.features) == pytest.approx(0, abs=1e-10)
    rng = np.random.default_rng(0)
    noisy = [np.clip(rec.input + rng.normal(0, s, rec.input.shape), 0, 1).astype(np.float32) for s in (0.01, 0.1)]
    assert 0 < feature_error(model, noisy[0], rec.features) < feature_error(model, noisy[1], rec.features)


def test_refine_rejects_a_start_image_of_the_wrong_size(tiny_config):
    model = Reconstructor(tiny_config)
    features = model.encode(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="does not match features"):
        refine(model, features, np.zeros((16, 32, 3), np.float32), steps=1)


def test_feature_match_benchmark_end_to_end(tiny_config, photo_dir, tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "feature_match.py"
    spec = importlib.util.spec_from_file_location("feature_match_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    folder = Reconstructor(tiny_config).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "out"
    record = benchmark.main(["--data", str(photo_dir), "--models", str(folder), "--num-samples", "2",
                             "--steps", "4", "--every", "2", "--lr", "1e-2", "--out", str(out)])
    result = record["results"]["block2_conv2"]
    assert result["images"] == 2 and result["mean"]["step"] == [0, 2, 4]
    assert result["mean"]["feature_error"][-1] < result["mean"]["feature_error"][0]
    small, large = result["noise_calibration"]  # default noise: 4/255 and 8/255
    assert small["psnr"] > large["psnr"] and 0 < small["feature_error"] < large["feature_error"]
    assert json.loads((out / "feature_match.json").read_text())["results"]["block2_conv2"]["images"] == 2
    assert (out / "feature_match_curves.png").stat().st_size > 0
    assert (out / "feature_match_examples.jpg").stat().st_size > 0


def test_feature_matching_works_on_a_bfloat16_model():
    """Gradients through a bfloat16 encoder still reach float32 pixels and recover the image."""
    model = Reconstructor(ReconConfig(layer="block1_conv2", image_size=24, encoder_weights="random"),
                          precision="bfloat16")
    x = model.prepare(smooth_image(24, 24, seed=5))
    grey = np.full_like(x, 0.5)
    refined, error = refine(model, model.encode(x), grey, steps=60, learning_rate=2e-2)
    assert refined.dtype == np.float32 and error < 0.1
    assert image_metrics(x, refined)["psnr"] > image_metrics(x, grey)["psnr"] + 5
