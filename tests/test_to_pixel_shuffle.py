"""training.to_pixel_shuffle: a bilinear resize + 3x3 convolution rewritten as a sub-pixel convolution
computes the same away from the border, stage by stage and for a whole decoder."""

import json
from dataclasses import replace

import numpy as np
import pytest

from recon import Reconstructor
from tests.conftest import smooth_image
from training import to_pixel_shuffle
from training.to_pixel_shuffle import subpixel_weights


def test_a_resize_and_convolution_is_a_subpixel_convolution_inside_the_border():
    import tensorflow as tf
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 11, 5)).astype(np.float32)
    kernel, bias = rng.normal(size=(3, 3, 5, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    resized = tf.image.resize(x, (18, 22), method="bilinear")  # what UpSampling2D(interpolation="bilinear") runs
    expected = tf.nn.conv2d(resized, kernel, 1, "SAME") + bias
    k, b = subpixel_weights(kernel, bias)
    assert k.shape == (3, 3, 5, 16) and b.shape == (16,) and k.dtype == b.dtype == np.float32
    got = tf.nn.depth_to_space(tf.nn.conv2d(x, k, 1, "SAME") + b, 2)
    error = np.abs(np.asarray(got) - np.asarray(expected))
    assert error[:, 2:-2, 2:-2].max() < 1e-4  # exact inside: the edge row's two output rows differ
    assert error[:, 0].max() > 1e-2  # the border differs: why the converted model needs a warm start


def test_subpixel_weights_want_a_3x3_kernel_and_its_bias():
    with pytest.raises(ValueError, match="3, 3, C_in, C_out"):
        subpixel_weights(np.zeros((1, 1, 4, 4), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="3, 3, C_in, C_out"):
        subpixel_weights(np.zeros((3, 3, 4, 4), np.float32), np.zeros(3, np.float32))


def randomized(model: Reconstructor) -> Reconstructor:
    """The zero-initialized convolutions of a new decoder would hide a wrong conversion."""
    rng = np.random.default_rng(1)
    for layer in model.decoder.layers:
        layer.set_weights([rng.normal(scale=0.1, size=w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


@pytest.mark.parametrize("layer, band", [("block2_conv2", 3), ("block3_conv3", 7)])
def test_a_converted_decoder_decodes_the_same_inside_a_border_band(tiny_config, layer, band):
    # each stage's two outer rows differ and the next stage doubles them: 2^(k+1) - 1 px for k stages
    stages = band.bit_length() - 1
    config = replace(tiny_config, layer=layer, upsample_widths=[8] * stages, feature_scale=None)
    model = randomized(Reconstructor(config))
    converted = to_pixel_shuffle.to_pixel_shuffle(model)
    assert converted.config.upsample == "pixel_shuffle" and model.config.upsample == "resize"
    features = np.random.default_rng(2).random((2, 12, 16, config.channels)).astype(np.float32)
    error = np.abs(converted.decode(features) - model.decode(features)).max(axis=(0, 3))
    assert error.shape == (12 * 2 ** stages, 16 * 2 ** stages)
    assert error[band:-band, band:-band].max() < 1e-5
    assert error[band - 1, band:-band].max() > 1e-4 and error[band:-band, -band].max() > 1e-4
    with pytest.raises(ValueError, match='"pixel_shuffle" already'):
        to_pixel_shuffle.to_pixel_shuffle(converted)


def test_a_model_without_x2_stages_has_nothing_to_rewrite(tiny_config):
    with pytest.raises(ValueError, match="no x2 stages"):
        to_pixel_shuffle.to_pixel_shuffle(Reconstructor(replace(tiny_config, layer="block1_conv2", upsample_widths=[],
                                                                feature_scale=None)))


def test_the_command_writes_a_folder_a_warm_start_can_start_from(tiny_config, tmp_path, capsys):
    source = tmp_path / "source"
    Reconstructor(tiny_config).save_pretrained(source)
    (source / "run_config.json").write_text(json.dumps({"seed": 3, "crop_seed": 7}))
    (source / "split.json").write_text(json.dumps({"train": ["a.jpg"], "val": ["b.jpg"]}))
    (tmp_path / "shuffle").mkdir()  # an empty folder will do
    out = to_pixel_shuffle.main([str(source), "--out", str(tmp_path / "shuffle")])
    loaded = Reconstructor.from_pretrained(out)
    assert loaded.config.upsample == "pixel_shuffle" and loaded.int8_encoder is None
    assert json.loads((out / "run_config.json").read_text())["crop_seed"] == 7  # the next run draws seed 8
    assert json.loads((out / "split.json").read_text())["val"] == ["b.jpg"]
    assert "warm start it" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # never over a folder with something in it
        to_pixel_shuffle.main([str(source), "--out", str(out)])
    assert e.value.code == 2 and "is not an empty folder" in capsys.readouterr().err
    with pytest.raises(SystemExit, match='upsamples by "pixel_shuffle" already'):
        to_pixel_shuffle.main([str(out), "--out", str(tmp_path / "again")])
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(SystemExit, match="missing config.json"):
        to_pixel_shuffle.main([str(tmp_path / "not_a_model"), "--out", str(tmp_path / "again")])
    assert not (tmp_path / "again").exists()


def test_the_command_drops_the_int8_file_of_the_source(tiny_config, tmp_path):
    from recon.int8 import INT8_ENCODER_FILE, quantize_encoder
    model = Reconstructor(tiny_config)
    calibration = [model.prepare(smooth_image(40, 40, seed))[None] for seed in range(2)]
    model.int8_file = quantize_encoder(model.encoder, calibration, decoder=model.decoder)
    source = model.save_pretrained(tmp_path / "source")
    assert (source / INT8_ENCODER_FILE).is_file()
    out = to_pixel_shuffle.main([str(source), "--out", str(tmp_path / "shuffle")])
    config = json.loads((out / "config.json").read_text())
    assert not (out / INT8_ENCODER_FILE).exists()
    assert config["int8_encoder_sha256"] is None and config["int8_decoder_sha256"] is None
