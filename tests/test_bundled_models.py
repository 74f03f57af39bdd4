"""The models shipped in models/: they load offline, are what their configs say, and really reconstruct."""

import json
from pathlib import Path

import numpy as np
import pytest

from recon import Reconstructor, load_image

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(p for p in (ROOT / "models").iterdir() if (p / "config.json").is_file())
DEFAULT = ROOT / "models" / "vgg16-block3_conv3"


def test_the_default_and_per_layer_models_are_there_and_small():
    assert DEFAULT in MODELS and [m.name for m in MODELS] == [
        f"vgg16-{layer}" for layer in ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")]
    total = sum(f.stat().st_size for m in MODELS for f in m.rglob("*") if f.is_file())
    assert total < 60e6, f"models/ holds {total / 1e6:.1f} MB"


@pytest.mark.parametrize("folder", MODELS, ids=lambda p: p.name)
def test_bundled_model_loads_and_matches_its_card(folder):
    model = Reconstructor.from_pretrained(folder)
    assert model.config.encoder_weights == "imagenet-torchvision" and model.config.preprocessing == "torchvision"
    # a few hundred thousand; block3_conv3's sub-pixel stages hold 4x the weights of resize + conv for the
    # same multiply-adds (442,739 against 338,819: training.to_pixel_shuffle); the deep layers (stride 8
    # and more) may go up to 1M, spent on width at low resolution (their model cards say why)
    assert model.decoder.count_params() <= (1_000_000 if model.config.stride >= 8 else 450_000)
    card = (folder / "README.md").read_text()
    summary = json.loads((folder / "metrics_summary.json").read_text())
    assert f"{summary['psnr']['mean']:.4f}" in card and f"{summary['lpips']['mean']:.4f}" in card
    assert summary["count"] == 15 and "LPIPS" in card and "lpips" in card.split("---")[1]  # also in model-index
    # never scored on a training photo: the held-out files are not in its training split
    trained = {Path(e["file"]).name for e in json.loads((folder / "split.json").read_text())["train"]}
    assert not trained & {r["file"] for r in summary["per_image"]}


def test_default_model_reconstructs_a_held_out_photo():
    """The astronaut photo is in the holdout split: a real decoder gets its layout and colours right."""
    model = Reconstructor.from_pretrained(DEFAULT)
    rec = model.reconstruct(load_image(ROOT / "examples" / "astronaut.jpg"))
    metrics = rec.metrics()
    assert rec.output.shape == (224, 224, 3)
    assert metrics["psnr"] > 16.0 and metrics["ssim"] > 0.5, metrics  # a constant grey output scores ~11 dB
    # the bundled copy is a 512 px JPEG of the held-out original scored in metrics_summary.json
    recorded = {r["file"]: r for r in json.loads((DEFAULT / "metrics_summary.json").read_text())["per_image"]}
    assert metrics["psnr"] == pytest.approx(recorded["skimage__astronaut.jpg"]["psnr"], abs=0.3)
    saturated = np.mean((rec.output < 0.01) | (rec.output > 0.99))
    assert saturated < 0.2


@pytest.mark.skipif(not (DEFAULT / "encoder.int8.tflite").is_file(), reason="no int8 encoder bundled")
def test_the_default_models_int8_encoder_keeps_its_reconstruction():
    """`precision="int8"` on the bundled file: the same picture as float32 (the held-out check that
    kept the file, `training.quantize`, allows 0.05 dB on average; one photo gets a little more room)."""
    image = load_image(ROOT / "examples" / "astronaut.jpg")
    exact = Reconstructor.from_pretrained(DEFAULT).reconstruct(image).metrics()
    fast = Reconstructor.from_pretrained(DEFAULT, precision="int8").reconstruct(image).metrics()
    assert fast["psnr"] == pytest.approx(exact["psnr"], abs=0.2) and fast["ssim"] == pytest.approx(exact["ssim"], abs=0.01)
