import importlib.util
import json
import math
from pathlib import Path

import numpy as np

from recon import ReconConfig
from training.data import CachedCrops
from training.losses import make_loss


def load_quality():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_benchmark_quick_mode(photo_dir, tmp_path):
    quality = load_quality()
    out = tmp_path / "quality"
    record = quality.main(["--data", str(photo_dir), "--holdout", str(photo_dir), "--quick", "--out", str(out),
                           "--encoder-weights", "random", "--cache-dir", str(tmp_path / "cache")])
    assert set(record["results"]) == {"original (lr 1e-4)", "original (lr 0.001)", "ours"}
    assert record["budget_crops_seen"] == 20  # 10 photos x 2 crops x 1 epoch, the same for every decoder
    assert record["params"]["ours"] <= record["params"]["original (lr 1e-4)"] == 370_563
    for result in record["results"].values():
        assert math.isfinite(result["psnr"][0]) and 0 <= result["ssim"][0] <= 1
    assert json.loads((out / "quality.json").read_text())["gain"] == record["gain"]
    assert (out / "quality_comparison.png").stat().st_size > 0


def test_ablation_variant_only_changes_the_residual_init():
    quality = load_quality()
    cfg = ReconConfig(image_size=32, encoder_weights="random")
    scale = [1.0] * cfg.channels
    default, glorot = quality.build_ours(cfg, "ours-deep", scale), quality.build_ours(cfg, "ours-deep-glorot", scale)
    assert default.count_params() == glorot.count_params()
    conv2 = [layer.name for layer in default.layers if layer.name.endswith("_conv2")]
    assert len(conv2) == 7
    for name in conv2:
        assert not np.any(default.get_layer(name).get_weights()[0])
        assert np.std(glorot.get_layer(name).get_weights()[0]) > 0.01


def test_perceptual_variant_is_the_same_decoder_trained_with_the_feature_term(photo_dir, tmp_path):
    quality = load_quality()
    cfg = ReconConfig(image_size=32, encoder_weights="random")
    scale = [1.0] * cfg.channels
    plain, perceptual = quality.build_ours(cfg, "ours-deep", scale), quality.build_ours(cfg, "ours-deep-perceptual", scale)
    assert plain.count_params() == perceptual.count_params()
    record = quality.main(["--data", str(photo_dir), "--holdout", str(photo_dir), "--quick", "--no-original",
                           "--variants", "ours-deep,ours-deep-perceptual", "--out", str(tmp_path / "q"),
                           "--encoder-weights", "random", "--cache-dir", str(tmp_path / "cache")])
    psnr = {k: r["psnr"][0] for k, r in record["results"].items()}
    assert set(psnr) == {"ours-deep", "ours-deep-perceptual"}
    assert psnr["ours-deep"] != psnr["ours-deep-perceptual"]  # same seed and crops: only the loss differs


def test_every_decoder_starts_from_the_same_seed_whatever_ran_before():
    quality = load_quality()
    rng = np.random.default_rng(0)
    data = CachedCrops(rng.random((8, 4, 4, 256), np.float32), rng.random((8, 16, 16, 3), np.float32),
                       batch_size=4, seed=0)
    holdout = rng.random((2, 4, 4, 256), np.float32), rng.random((2, 16, 16, 3), np.float32)
    build = lambda: quality.build_original_decoder(256)  # noqa: E731
    first = quality.train_and_score(build, make_loss(), 1e-3, data, 1, *holdout, seed=7)[1]
    np.random.default_rng(1).random(5), quality.build_original_decoder(256)  # draws from the RNGs in between
    again = quality.train_and_score(build, make_loss(), 1e-3, data, 1, *holdout, seed=7)[1]
    assert first["psnr"] == again["psnr"] and first["ssim"] == again["ssim"]
