"""The OpenVINO engine (recon.openvino_engine, precision "openvino"): converted from the Keras models, int8 by
NNCF on the example photos but for the upsampling, cached; asked for by name only ("auto" keeps the int8
file, as fast here); a clear error where OpenVINO is missing or fails."""

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
    """A CPU with VNNI and AVX512-BF16, no GPU."""
    import recon.precision
    monkeypatch.setattr(recon.precision, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(recon.precision, "cpu_flags", lambda: {"avx512_vnni", "avx512_bf16"})


def test_auto_never_picks_openvino_it_keeps_the_int8_file(int8_folder, vnni):
    assert resolve_precision("auto", flags={"avx512_vnni", "avx512_bf16"}, gpu=False, int8_ready=True) == "int8"
    model = Reconstructor.from_pretrained(int8_folder, precision="auto")
    assert model.precision == "int8" and model.openvino is None


def test_openvino_runs_the_whole_model_close_to_float32_at_any_size(int8_folder, vnni):
    exact = Reconstructor.from_pretrained(int8_folder, precision="float32")
    model = Reconstructor.from_pretrained(int8_folder, precision="openvino")
    assert model.precision == "openvino" and model.layer_precision == "float32" and model.int8_encoder is None
    assert model.precision_name == "int8 encoder and decoder (OpenVINO), bfloat16 where not quantized"
    assert model.openvino.side is None  # a pixel-shuffle decoder converts for any size
    for size in ("trained", "native"):
        image = smooth_image(40, 48, 1)
        ours, theirs = model.reconstruct(image, size), exact.reconstruct(image, size)
        assert ours.output.shape == theirs.output.shape and ours.features.shape == theirs.features.shape
        assert ours.output.dtype == np.float32 and 0 <= ours.output.min() and ours.output.max() <= 1
        error = np.linalg.norm(ours.features - theirs.features) / np.linalg.norm(theirs.features)
        assert 0 < error < 0.1  # int8, not float32, and not another model
    batch = np.stack([exact.prepare(smooth_image(40, 40, s)) for s in range(3)])
    outputs, features = model.reconstruct_batch(batch)
    assert outputs.shape == (3, 32, 32, 3) and np.allclose(model.encode(batch), features)
    saved = model.save_pretrained(int8_folder.parent / "resaved")
    assert (saved / INT8_ENCODER_FILE).read_bytes() == (int8_folder / INT8_ENCODER_FILE).read_bytes()  # the check stays
    assert not list(saved.glob("*.xml")) and not list(saved.glob("*.bin"))  # nothing of OpenVINO's in a folder


def test_the_upsampling_and_rgb_convolutions_stay_out_of_int8(int8_folder):
    from recon.openvino_engine import convert, float_tail_of, quantize
    model = Reconstructor.from_pretrained(int8_folder)
    assert float_tail_of(model._fast_decoder) == 1 + len(model.config.upsample_widths)  # each stage, then RGB
    converted = convert(model.encoder, model._fast_decoder)
    calibration = [model.prepare(smooth_image(40, 40, s))[None] for s in range(2)]
    quantized = quantize(converted, calibration, float_tail_of(model._fast_decoder))
    convolutions = [op for op in quantized.get_ordered_ops() if op.get_type_name() == "Convolution"]

    def int8_weights(conv):  # NNCF stores a quantized convolution's weights as int8, scaled back by a Multiply
        return conv.input_value(1).get_node().get_type_name() == "Multiply"
    tail = float_tail_of(model._fast_decoder)
    assert all(map(int8_weights, convolutions[:-tail])) and not any(map(int8_weights, convolutions[-tail:]))
    with pytest.raises(Exception, match="fewer than"):
        quantize(converted, calibration, len(convolutions) + 1)


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
    first = Reconstructor.from_pretrained(int8_folder, precision="openvino")
    entries = sorted((tmp_path / "cache").iterdir())
    assert [p.suffix for p in entries] == [".bin", ".xml"]
    image = smooth_image(40, 40, 2)
    convert = engine.convert

    def no_conversion(*args):
        raise AssertionError("converted again")
    monkeypatch.setattr(engine, "convert", no_conversion)
    cached = Reconstructor.from_pretrained(int8_folder, precision="openvino")
    np.testing.assert_array_equal(cached.reconstruct(image).output, first.reconstruct(image).output)
    monkeypatch.setattr(engine, "convert", convert)
    entries[1].write_text("<net truncated")
    again = Reconstructor.from_pretrained(int8_folder, precision="openvino")
    assert again.precision == "openvino" and "<net truncated" not in entries[1].read_text()
    np.testing.assert_allclose(again.reconstruct(image).output, first.reconstruct(image).output, atol=1e-6)


def test_openvino_by_name_says_what_is_missing_or_failed(int8_folder, monkeypatch):
    import recon.openvino_engine as engine

    def missing():
        raise engine.OpenVinoUnavailable("OpenVINO is not installed (pip install openvino nncf): No module named 'openvino'")
    monkeypatch.setattr(engine, "versions", missing)
    with pytest.raises(engine.OpenVinoUnavailable, match="pip install openvino nncf"):
        Reconstructor.from_pretrained(int8_folder, precision="openvino")
    monkeypatch.undo()

    def fails(*args, **kwargs):
        raise engine.OpenVinoUnavailable("OpenVINO could not convert the model (OpConversionFailure: x)")
    monkeypatch.setattr(engine, "build_engine", fails)
    with pytest.raises(engine.OpenVinoUnavailable, match="could not convert"):
        Reconstructor.from_pretrained(int8_folder, precision="openvino")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "auto" never tries it: nothing to warn about
        assert Reconstructor.from_pretrained(int8_folder, precision="auto").openvino is None


def test_an_openvino_failure_at_run_time_is_an_error_that_names_it(int8_folder):
    import openvino as ov
    from recon.openvino_engine import OpenVinoEngine
    model = Reconstructor.from_pretrained(int8_folder, precision="openvino")
    fixed = ov.Core().read_model(next(iter(sorted(_cache().glob("*.xml")))))  # a model of one size only
    fixed.reshape([1, 32, 32, 3])
    model.openvino = OpenVinoEngine(fixed)
    model.openvino.side = None  # as if it took any size
    with pytest.raises(RuntimeError, match="OpenVINO failed to run the model: .*"):
        model.reconstruct(smooth_image(40, 48, 1), "native")


def _cache():
    from recon.openvino_engine import cache_dir
    return cache_dir()


def test_calibration_images_are_the_same_everywhere_and_cover_the_examples():
    from recon.openvino_engine import calibration_images
    first, again = calibration_images(32, 8), calibration_images(32, 8)
    assert len(first) == 8 and all(x.shape == (1, 32, 32, 3) and x.dtype == np.float32 for x in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(0 <= x.min() and x.max() <= 1 for x in first) and len({x.tobytes() for x in first}) == 8
