import importlib.util
import json
import math
from pathlib import Path

import numpy as np

from recon import ReconConfig


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
