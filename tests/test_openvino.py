"""The OpenVINO engine (recon.openvino_engine): converted from the Keras models, int8 by NNCF on the example
photos, cached; picked by "auto" where OpenVINO is installed, the CPU has int8 dot products and the folder's
int8 check passed; and the fallbacks, with their reasons, where it is missing or fails."""

import warnings

import numpy as np
import pytest

from recon import Reconstructor
from recon.int8 import INT8_ENCODER_FILE, quantize_encoder
from recon.precision import resolve_precision
from tests.conftest import smooth_image

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory):
    """A tiny random-encoder model folder whose int8 file (its check) is in place, as training.quantize leaves it."""
    from recon import ReconConfig
    config = ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random", decoder_width=8,
                         num_res_blocks=1, feature_scale=[1.0] * 128, upsample="pixel_shuffle")  # as the bundled block3_conv3
    model = Reconstructor(config)
    model.int8_file = quantize_encoder(model.encoder, [model.prepare(smooth_image(40, 40, s))[None] for s in range(4)])
    return model.save_pretrained(tmp_path_factory.mktemp("int8") / "model")


@pytest.fixture
def vnni(monkeypatch):
    """A CPU with VNNI and AVX512-BF16, no GPU, OpenVINO installed (the real one runs)."""
    import recon.precision
    monkeypatch.setattr(recon.precision, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(recon.precision, "cpu_flags", lambda: {"avx512_vnni", "avx512_bf16"})
    monkeypatch.setattr(recon.precision, "openvino_installed", lambda: True)


def test_auto_picks_openvino_where_installed_and_int8_passed():
    flags = {"avx512_vnni", "avx512_bf16"}
    assert resolve_precision("auto", flags=flags, gpu=False, int8_ready=True, openvino=True) == "openvino"
    assert resolve_precision("auto", flags=flags, gpu=False, int8_ready=True, openvino=False) == "int8"
    assert resolve_precision("auto", flags=flags, gpu=False, int8_ready=False, openvino=True) == "bfloat16"
    assert resolve_precision("auto", flags={"avx2"}, gpu=False, int8_ready=True, openvino=True) == "float32"
    assert resolve_precision("auto", flags=flags, gpu=True, int8_ready=True, openvino=True) == "float16"


def test_openvino_runs_the_whole_model_close_to_float32_at_any_size(int8_folder, vnni):
    exact = Reconstructor.from_pretrained(int8_folder, precision="float32")
    model = Reconstructor.from_pretrained(int8_folder, precision="auto")
    assert model.precision == "openvino" and model.layer_precision == "float32" and model.int8_encoder is None
    assert "OpenVINO" in model.precision_name
    for size in ("trained", "native"):
        image = smooth_image(40, 48, 1)
        ours, theirs = model.reconstruct(image, size), exact.reconstruct(image, size)
        assert ours.output.shape == theirs.output.shape and ours.features.shape == theirs.features.shape
        assert ours.output.dtype == np.float32 and 0 <= ours.output.min() and ours.output.max() <= 1
        error = np.linalg.norm(ours.features - theirs.features) / np.linalg.norm(theirs.features)
        assert error < 0.1  # int8, not another model
    batch = np.stack([exact.prepare(smooth_image(40, 40, s)) for s in range(3)])
    outputs, features = model.reconstruct_batch(batch)
    assert outputs.shape == (3, 32, 32, 3) and np.allclose(model.encode(batch), features)
    saved = model.save_pretrained(int8_folder.parent / "resaved")
    assert (saved / INT8_ENCODER_FILE).read_bytes() == (int8_folder / INT8_ENCODER_FILE).read_bytes()  # the check stays


def test_a_resize_decoder_converts_at_its_trained_size_and_other_sizes_run_in_keras(tiny_config):
    model = Reconstructor(tiny_config, precision="openvino")  # bilinear UpSampling2D: no graph of any size
    assert tiny_config.upsample == "resize" and model.openvino.side == 32
    exact = Reconstructor(tiny_config, model.encoder, model.decoder, precision="float32")
    image = smooth_image(40, 48, 3)
    trained, native = model.reconstruct(image), model.reconstruct(image, "native")
    assert trained.output.shape == (32, 32, 3) and not np.array_equal(trained.output, exact.reconstruct(image).output)
    np.testing.assert_allclose(native.output, exact.reconstruct(image, "native").output, atol=1e-5)  # Keras, float32
    assert model.precision == "openvino"  # another size is no failure


def test_the_converted_model_is_cached_and_a_broken_cache_entry_is_made_again(int8_folder, vnni, monkeypatch, tmp_path):
    import recon.openvino_engine as engine
    monkeypatch.setenv(engine.CACHE_ENV, str(tmp_path / "cache"))
    first = Reconstructor.from_pretrained(int8_folder, precision="auto")
    entries = sorted((tmp_path / "cache").iterdir())
    assert [p.suffix for p in entries] == [".bin", ".xml"]
    image = smooth_image(40, 40, 2)
    convert = engine.convert

    def no_conversion(*args):
        raise AssertionError("converted again")
    monkeypatch.setattr(engine, "convert", no_conversion)
    cached = Reconstructor.from_pretrained(int8_folder, precision="auto")
    np.testing.assert_array_equal(cached.reconstruct(image).output, first.reconstruct(image).output)
    monkeypatch.setattr(engine, "convert", convert)
    entries[1].write_text("<net truncated")
    again = Reconstructor.from_pretrained(int8_folder, precision="auto")
    assert again.precision == "openvino" and "<net truncated" not in entries[1].read_text()
    np.testing.assert_allclose(again.reconstruct(image).output, first.reconstruct(image).output, atol=1e-6)


def test_auto_falls_back_to_the_int8_file_saying_why_when_openvino_cannot_build(int8_folder, vnni, monkeypatch):
    import recon.openvino_engine as engine

    def fails(*args, **kwargs):
        raise engine.OpenVinoUnavailable("OpenVINO could not convert the model (OpConversionFailure: x)")
    monkeypatch.setattr(engine, "build_engine", fails)
    with pytest.warns(UserWarning, match="OpenVINO not used .OpenVINO could not convert.*running the int8 file"):
        model = Reconstructor.from_pretrained(int8_folder, precision="auto")
    assert model.precision == "int8" and model.layer_precision == "bfloat16" and model.openvino is None
    assert model.reconstruct(smooth_image(40, 40, 1)).output.shape == (32, 32, 3)
    with pytest.raises(engine.OpenVinoUnavailable, match="could not convert"):
        Reconstructor.from_pretrained(int8_folder, precision="openvino")  # asked for by name: no fallback


def test_without_openvino_installed_auto_runs_the_int8_file_and_openvino_by_name_says_what_to_install(
        int8_folder, vnni, monkeypatch):
    import recon.openvino_engine as engine
    import recon.precision

    monkeypatch.setattr(recon.precision, "openvino_installed", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing failed: no warning
        assert Reconstructor.from_pretrained(int8_folder, precision="auto").precision == "int8"

    def missing():
        raise engine.OpenVinoUnavailable("OpenVINO is not installed (pip install openvino nncf): No module named 'openvino'")
    monkeypatch.setattr(engine, "versions", missing)
    with pytest.raises(engine.OpenVinoUnavailable, match="pip install openvino nncf"):
        Reconstructor.from_pretrained(int8_folder, precision="openvino")


def test_a_folder_whose_int8_check_is_stale_gets_no_openvino_and_one_warning(int8_folder, vnni, tmp_path):
    import shutil
    stale = shutil.copytree(int8_folder, tmp_path / "stale")
    (stale / INT8_ENCODER_FILE).write_bytes((stale / INT8_ENCODER_FILE).read_bytes() + b"\0")  # hash no longer the config's
    with pytest.warns(UserWarning) as caught:
        model = Reconstructor.from_pretrained(stale, precision="auto")
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(said) == 1 and "quantize again" in said[0] and "OpenVINO" not in said[0]
    assert model.precision == "bfloat16" and model.openvino is None
    shutil.rmtree(stale)
    plain = Reconstructor.from_pretrained(int8_folder, precision="float32").save_pretrained(tmp_path / "plain")
    (plain / INT8_ENCODER_FILE).unlink()  # no int8 check at all: bfloat16, as before
    assert Reconstructor.from_pretrained(plain, precision="auto").precision == "bfloat16"


def test_openvino_failing_at_run_time_falls_back_once_under_auto_and_raises_by_name(int8_folder, vnni):
    model = Reconstructor.from_pretrained(int8_folder, precision="auto")
    exact = Reconstructor.from_pretrained(int8_folder, precision="float32").reconstruct(smooth_image(40, 40, 1))

    class Broken:
        precision_name = "bfloat16"

        def accepts(self, batch):
            return True

        def __call__(self, batch):
            raise RuntimeError("Exception: Can not clone with new dims")
    model.openvino = Broken()
    with pytest.warns(UserWarning, match="OpenVINO failed to run the model .*new dims.*float32 from now on"):
        first = model.reconstruct(smooth_image(40, 40, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.encode(np.zeros((32, 32, 3), np.float32))
    np.testing.assert_allclose(first.output, exact.output, atol=1e-5)
    assert model.precision == "float32" and model.openvino is None

    named = Reconstructor.from_pretrained(int8_folder, precision="openvino")
    named.openvino = Broken()
    with pytest.raises(RuntimeError, match="OpenVINO failed to run the model"):
        named.reconstruct(smooth_image(40, 40, 1))


def test_calibration_images_are_the_same_everywhere_and_cover_the_examples():
    from recon.openvino_engine import calibration_images
    first, again = calibration_images(32, 8), calibration_images(32, 8)
    assert len(first) == 8 and all(x.shape == (1, 32, 32, 3) and x.dtype == np.float32 for x in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(0 <= x.min() and x.max() <= 1 for x in first) and len({x.tobytes() for x in first}) == 8
