"""The int8 encoder (recon.int8): calibrated from a folder, close to the float encoder, picked by
"auto" only where the CPU has int8 dot products and the folder has the file; with or without the
decoder's residual trunk in the same file."""

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recon import ModelFolderError, Reconstructor
from recon.int8 import INT8_ENCODER_FILE, Int8Encoder, quantize_encoder
from recon.precision import resolve_precision
from tests.conftest import randomize_weights, smooth_image


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory):
    """A tiny random-encoder model folder with an int8 encoder calibrated on 8 smooth images."""
    from recon import ReconConfig
    config = ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random",
                         decoder_width=8, num_res_blocks=1, feature_scale=[1.0] * 128)
    model = Reconstructor(config)
    calibration = [model.prepare(smooth_image(40, 40, seed))[None] for seed in range(8)]
    model.int8_file = quantize_encoder(model.encoder, calibration)
    return model.save_pretrained(tmp_path_factory.mktemp("int8") / "model")  # the file and its hash


@pytest.fixture(scope="module")
def trunk_folder(int8_folder, tmp_path_factory):
    """The same model, its int8 file holding the decoder's residual trunk too."""
    model = Reconstructor.from_pretrained(int8_folder)
    calibration = [model.prepare(smooth_image(40, 40, seed))[None] for seed in range(8)]
    model.int8_file = quantize_encoder(model.encoder, calibration, decoder=model.decoder)
    return model.save_pretrained(tmp_path_factory.mktemp("trunk") / "model")


def put_int8_file(folder, content: bytes, record_hash: bool = True) -> None:
    """Place an int8 file in `folder`, with its hashes in config.json (as training.quantize does) or not."""
    import hashlib
    from recon import ReconConfig
    from recon.int8 import holds_trunk
    from recon.pipeline import DECODER_FILE, file_sha256
    (folder / INT8_ENCODER_FILE).write_bytes(content)
    if record_hash:
        config = ReconConfig.load(folder / "config.json")
        config.int8_encoder_sha256 = hashlib.sha256(content).hexdigest()
        try:
            trunk = holds_trunk(content)
        except ValueError:  # not a TFLite file at all
            trunk = False
        config.int8_decoder_sha256 = file_sha256(folder / DECODER_FILE) if trunk else None
        config.save(folder / "config.json")


def relative_error(reference: np.ndarray, test: np.ndarray) -> float:
    return float(np.linalg.norm(test - reference) / np.linalg.norm(reference))


def test_the_int8_encoder_matches_the_float_one_at_any_batch_and_size(int8_folder):
    exact = Reconstructor.from_pretrained(int8_folder, precision="float32")
    int8 = Int8Encoder.load(int8_folder / INT8_ENCODER_FILE)
    assert int8.channels == 128
    for shape in [(1, 32, 32), (3, 32, 32), (2, 48, 64), (1, 32, 32)]:  # resized and back
        batch = np.stack([exact.prepare(smooth_image(60, 60, 10 + i), shape[1:]) for i in range(shape[0])])
        features = int8(batch)
        assert features.dtype == np.float32 and features.shape == (shape[0], shape[1] // 2, shape[2] // 2, 128)  # stride 2
        # int8 steps are ~1/255 of a layer's range: a few percent in all, not a different feature map
        assert relative_error(exact.encode(batch), features) < 0.08


def test_an_int8_model_returns_float32_arrays_close_to_float32(int8_folder, tmp_path):
    from recon.metrics import psnr
    exact = Reconstructor.from_pretrained(int8_folder, precision="float32")
    fast = Reconstructor.from_pretrained(int8_folder, precision="int8")
    assert fast.precision == "int8" and fast.int8_encoder is not None and "int8 encoder" in fast.describe()
    image = smooth_image(50, 70, seed=3)
    for size in ["trained", (48, 64), "trained"]:
        rec, reference = fast.reconstruct(image, size), exact.reconstruct(image, size)
        assert rec.output.dtype == rec.features.dtype == np.float32
        assert rec.output.shape == reference.output.shape and rec.features.shape == reference.features.shape
        assert psnr(reference.output, rec.output) > 30
    outputs, features = fast.reconstruct_batch(np.stack([exact.prepare(smooth_image(40, 40, s)) for s in range(4)]))
    assert outputs.shape == (4, 32, 32, 3) and features.shape == (4, 16, 16, 128)
    original = (int8_folder / INT8_ENCODER_FILE).read_bytes()
    copy = fast.save_pretrained(tmp_path / "copy")  # the int8 encoder travels with the folder
    assert (copy / INT8_ENCODER_FILE).read_bytes() == original
    exact.save_pretrained(tmp_path / "float")  # also when the folder was loaded in float32
    assert (tmp_path / "float" / INT8_ENCODER_FILE).read_bytes() == original
    from recon import ReconConfig
    other = Reconstructor(ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random", encoder_seed=7,
                                      decoder_width=8, num_res_blocks=1, feature_scale=[1.0] * 128))
    other.save_pretrained(copy)  # a different encoder saved over it: the stale int8 copy goes
    assert not (copy / INT8_ENCODER_FILE).exists()


def test_trunk_and_tail_make_the_decoder():
    from recon import ReconConfig
    from recon.decoder import build_decoder, decoder_trunk, inference_decoder
    for upsample in ("resize", "pixel_shuffle"):
        config = ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random", decoder_width=8,
                             num_res_blocks=2, upsample=upsample, feature_scale=[2.0] * 128)
        decoder = build_decoder(config)
        randomize_weights(decoder)
        features = np.random.default_rng(9).random((2, 12, 20, 128)).astype(np.float32)
        trunk = decoder_trunk(decoder)(features)
        assert trunk.shape == (2, 12, 20, 8)
        np.testing.assert_allclose(inference_decoder(decoder, config, from_trunk=True)(trunk), decoder(features), atol=1e-6)


def test_an_int8_file_with_the_trunk_runs_only_the_upsampling_in_floating_point(int8_folder, trunk_folder):
    from recon.metrics import psnr
    exact = Reconstructor.from_pretrained(trunk_folder, precision="float32")
    fast = Reconstructor.from_pretrained(trunk_folder, precision="int8")
    assert fast.int8_encoder.has_trunk and fast.int8_encoder.trunk_channels == 8
    assert "int8 encoder and residual blocks" in fast.precision_name
    assert not Int8Encoder.load(int8_folder / INT8_ENCODER_FILE).has_trunk
    image = smooth_image(50, 70, seed=3)
    for size in ["trained", (48, 64), "trained"]:  # the compiled graph, the eager tail, the graph again
        rec, reference = fast.reconstruct(image, size), exact.reconstruct(image, size)
        assert rec.output.dtype == rec.features.dtype == np.float32
        assert rec.output.shape == reference.output.shape and rec.features.shape == reference.features.shape
        assert relative_error(reference.features, rec.features) < 0.08  # the file's first output: the feature map
        assert psnr(reference.output, rec.output) > 30  # near the float32 reconstruction, not another one
    (features, trunk) = fast.int8_encoder.front(fast.prepare(image)[None])
    from recon.decoder import decoder_trunk
    assert relative_error(decoder_trunk(exact.decoder)(features).numpy(), trunk) < 0.1


def test_auto_picks_int8_only_with_vnni_and_a_quantized_encoder():
    assert resolve_precision("auto", flags={"avx512_vnni", "avx512_bf16"}, gpu=False, int8_ready=True) == "int8"
    assert resolve_precision("auto", flags={"amx_int8", "amx_bf16"}, gpu=False, int8_ready=True) == "int8"
    assert resolve_precision("auto", flags={"avx512_vnni", "avx512_bf16"}, gpu=False) == "bfloat16"  # no file
    assert resolve_precision("auto", flags={"avx2"}, gpu=False, int8_ready=True) == "float32"  # no VNNI: not measured
    assert resolve_precision("auto", flags={"avx512_vnni"}, gpu=True, int8_ready=True) == "float16"


def test_auto_loads_the_int8_encoder_where_the_cpu_has_vnni(int8_folder, monkeypatch):
    import recon.precision
    monkeypatch.setattr(recon.precision, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(recon.precision, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    model = Reconstructor.from_pretrained(int8_folder, precision="auto")
    assert model.precision == "int8" and model.layer_precision == "float32"  # no bf16 on that CPU
    monkeypatch.setattr(recon.precision, "cpu_flags", lambda: {"avx2"})
    assert Reconstructor.from_pretrained(int8_folder, precision="auto").precision == "float32"


def test_int8_without_the_file_or_with_a_wrong_one_says_what_to_do(int8_folder, tmp_path):
    from recon import ReconConfig
    plain = Reconstructor.from_pretrained(int8_folder).save_pretrained(tmp_path / "plain")
    original = (plain / INT8_ENCODER_FILE).read_bytes()
    (plain / INT8_ENCODER_FILE).unlink()
    with pytest.raises(ModelFolderError, match="python -m training.quantize"):
        Reconstructor.from_pretrained(plain, precision="int8")
    put_int8_file(plain, original[:-4] + b"junk", record_hash=False)  # not the file the config names
    with pytest.raises(ModelFolderError, match="quantize again"):
        Reconstructor.from_pretrained(plain, precision="int8")
    other = Reconstructor(ReconConfig(layer="block1_conv2", image_size=32, encoder_weights="random",
                                      decoder_width=8, num_res_blocks=1, feature_scale=[1.0] * 64))
    put_int8_file(plain, quantize_encoder(other.encoder, [other.prepare(smooth_image(40, 40, 0))[None]]))
    with pytest.raises(ModelFolderError, match="64 channels"):
        Reconstructor.from_pretrained(plain, precision="int8")
    wider = Reconstructor(replace(ReconConfig.load(plain / "config.json"), decoder_width=16))
    put_int8_file(plain, quantize_encoder(wider.encoder, [wider.prepare(smooth_image(40, 40, 0))[None]], decoder=wider.decoder))
    with pytest.raises(ModelFolderError, match="decoder trunk gives 16 channels, the config's decoder_width is 8"):
        Reconstructor.from_pretrained(plain, precision="int8")
    put_int8_file(plain, b"not a flatbuffer" * 8)
    with pytest.raises(ModelFolderError, match="not a TFLite model"):
        Reconstructor.from_pretrained(plain, precision="int8")


def test_auto_runs_a_folder_whose_int8_file_cannot_be_used_in_floating_point(int8_folder, tmp_path, monkeypatch):
    import recon.precision
    monkeypatch.setattr(recon.precision, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(recon.precision, "cpu_flags", lambda: {"avx512_vnni", "avx512_bf16"})
    stale = Reconstructor.from_pretrained(int8_folder).save_pretrained(tmp_path / "stale")
    put_int8_file(stale, (stale / INT8_ENCODER_FILE).read_bytes() + b"\0", record_hash=False)
    with pytest.warns(UserWarning, match="quantize again.*running it in bfloat16"):
        model = Reconstructor.from_pretrained(stale, precision="auto")
    assert model.precision == "bfloat16" and model.int8_encoder is None
    assert model.reconstruct(smooth_image(40, 40, 1)).output.shape == (32, 32, 3)
    model.save_pretrained(tmp_path / "resaved")  # the stale file is not carried on
    assert not (tmp_path / "resaved" / INT8_ENCODER_FILE).exists()


def test_refine_descends_through_the_float_encoder_of_an_int8_model(int8_folder):
    from recon.refine import feature_error, refine
    model = Reconstructor.from_pretrained(int8_folder, precision="int8")
    rec = model.reconstruct(smooth_image(40, 40, seed=4))
    start_error = feature_error(model, rec.output, rec.features)
    image, error = refine(model, rec.features, rec.output, steps=20, learning_rate=1e-2)
    assert image.dtype == np.float32 and image.shape == rec.output.shape
    assert error < start_error


def test_the_quantize_command_writes_the_file_and_checks_it(int8_folder, photo_dir, tmp_path, capsys):
    import json
    from training import quantize
    folder = Reconstructor.from_pretrained(int8_folder).save_pretrained(tmp_path / "model")
    (folder / INT8_ENCODER_FILE).unlink()
    path = quantize.main([str(folder), "--data", str(photo_dir), "--images", "4", "--holdout", str(photo_dir / "a"),
                          "--max-psnr-change", "5", "--max-ssim-change", "0.5"])
    assert path == folder / INT8_ENCODER_FILE and path.stat().st_size > 0
    out = capsys.readouterr().out
    assert "on 4 photos" in out and "held-out check" in out and "SSIM" in out and "wrote" in out
    assert "with the decoder's residual trunk" in out  # tried first, and within these limits
    assert json.loads((folder / "config.json").read_text())["int8_encoder_sha256"]
    assert Reconstructor.from_pretrained(folder, precision="int8").int8_encoder.has_trunk
    quantize.main([str(folder), "--data", str(photo_dir), "--images", "4", "--holdout", str(photo_dir / "a"),
                   "--max-psnr-change", "5", "--max-ssim-change", "0.5", "--scope", "encoder"])
    assert not Reconstructor.from_pretrained(folder, precision="int8").int8_encoder.has_trunk
    with pytest.raises(SystemExit):
        quantize.parse_args([str(folder), "--data", str(photo_dir)])  # --holdout is required


def test_the_quantize_command_writes_nothing_that_moves_the_scores(int8_folder, photo_dir, tmp_path, capsys):
    from training import quantize
    folder = Reconstructor.from_pretrained(int8_folder).save_pretrained(tmp_path / "model")
    before = (folder / INT8_ENCODER_FILE).read_bytes()
    with pytest.raises(SystemExit, match="not written: .*residual trunk: .*moves the held-out PSNR by .* and SSIM by "
                                         ".*; the block2_conv2 encoder: .*keeps its current encoder.int8.tflite"):
        quantize.main([str(folder), "--data", str(photo_dir), "--images", "2", "--holdout", str(photo_dir / "a"),
                       "--max-psnr-change", "0", "--max-ssim-change", "0"])
    assert (folder / INT8_ENCODER_FILE).read_bytes() == before  # a file that passed before stays
    assert Reconstructor.from_pretrained(folder, precision="int8").int8_encoder is not None


def test_the_quantize_command_falls_back_to_the_encoder_alone(int8_folder, photo_dir, tmp_path, monkeypatch, capsys):
    from training import quantize
    folder = Reconstructor.from_pretrained(int8_folder).save_pretrained(tmp_path / "model")
    real = quantize.quantize_encoder

    def no_trunk(encoder, calibration, decoder=None, **kwargs):
        if decoder is not None:
            raise RuntimeError("a converter that cannot take the trunk")
        return real(encoder, calibration, **kwargs)
    monkeypatch.setattr(quantize, "quantize_encoder", no_trunk)
    quantize.main([str(folder), "--data", str(photo_dir), "--images", "2", "--holdout", str(photo_dir / "a"),
                   "--max-psnr-change", "5", "--max-ssim-change", "0.5"])
    assert "not kept: RuntimeError: a converter that cannot take the trunk" in capsys.readouterr().out
    model = Reconstructor.from_pretrained(folder, precision="int8")
    assert not model.int8_encoder.has_trunk and model.config.int8_decoder_sha256 is None


def test_the_quantize_command_checks_the_holdout_folder_before_the_work(int8_folder, photo_dir, tmp_path, monkeypatch):
    from training import quantize
    monkeypatch.setattr(quantize, "quantize_encoder", lambda *a, **k: pytest.fail("quantized before the check"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="--holdout: no images found"):
        quantize.main([str(int8_folder), "--data", str(photo_dir), "--images", "2", "--holdout", str(tmp_path / "empty")])


def test_the_model_card_says_what_the_int8_file_is(int8_folder, tmp_path):
    from hub.card import write_model_card
    with_file = Reconstructor.from_pretrained(int8_folder).save_pretrained(tmp_path / "with")
    without = Reconstructor.from_pretrained(int8_folder).save_pretrained(tmp_path / "without")
    (without / INT8_ENCODER_FILE).unlink()
    assert "encoder.int8.tflite" in write_model_card(with_file).read_text()
    assert "int8" not in write_model_card(without).read_text()


def test_a_call_does_not_overwrite_what_the_last_one_returned(trunk_folder):
    # front() hands out what the interpreter's get_tensor returns without copying it again
    int8 = Int8Encoder.load(trunk_folder / INT8_ENCODER_FILE)
    rng = np.random.default_rng(2)
    first, second = (rng.random((1, 32, 32, 3)).astype(np.float32) for _ in range(2))
    outputs = int8.front(first)
    kept = [o.copy() for o in outputs]
    int8.front(second)
    assert all(np.array_equal(o, k) for o, k in zip(outputs, kept))
    assert not np.array_equal(outputs[0], int8.front(second)[0])


def test_the_int8_encoder_takes_calls_from_several_threads(int8_folder):
    from concurrent.futures import ThreadPoolExecutor
    int8 = Int8Encoder.load(int8_folder / INT8_ENCODER_FILE)
    rng = np.random.default_rng(0)
    batches = [rng.random((1 + i % 3, 32 + 16 * (i % 2), 32, 3)).astype(np.float32) for i in range(24)]
    expected = [int8(b) for b in batches]  # one at a time
    with ThreadPoolExecutor(4) as pool:  # the demo's events: different shapes at once, one interpreter
        got = list(pool.map(int8, batches))
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))


def test_a_trunk_file_takes_calls_from_several_threads(trunk_folder):
    from concurrent.futures import ThreadPoolExecutor
    int8 = Int8Encoder.load(trunk_folder / INT8_ENCODER_FILE)
    rng = np.random.default_rng(1)
    batches = [rng.random((1 + i % 2, 32, 32 + 16 * (i % 3), 3)).astype(np.float32) for i in range(18)]
    expected = [int8.front(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:  # both outputs of one call stay together
        got = list(pool.map(int8.front, batches))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(expected, got))


def test_a_trunk_file_is_stale_once_the_decoder_changes(trunk_folder, tmp_path):
    import json
    from recon.pipeline import DECODER_FILE
    copy = Reconstructor.from_pretrained(trunk_folder).save_pretrained(tmp_path / "copy")  # carried, still valid
    assert json.loads((copy / "config.json").read_text())["int8_decoder_sha256"]
    assert Reconstructor.from_pretrained(copy, precision="int8").int8_encoder.has_trunk
    retrained = Reconstructor.from_pretrained(copy)
    retrained.decoder.set_weights([w * 1.01 for w in retrained.decoder.get_weights()])
    retrained.decoder.save_weights(copy / DECODER_FILE)  # as training.fit's best checkpoint would
    with pytest.raises(ModelFolderError, match="not the decoder whose residual blocks .* quantize again"):
        Reconstructor.from_pretrained(copy, precision="int8")
    with pytest.warns(UserWarning, match="quantize again"):
        fallback = Reconstructor.from_pretrained(copy, precision="auto")
    assert fallback.int8_encoder is None and fallback.int8_file is None  # and not carried on by save_pretrained
    assert not (fallback.save_pretrained(tmp_path / "resaved") / INT8_ENCODER_FILE).exists()


def test_save_pretrained_drops_a_trunk_file_once_the_decoder_changes_in_memory(trunk_folder, tmp_path):
    for precision in ("float32", "int8"):
        model = Reconstructor.from_pretrained(trunk_folder, precision=precision)
        model.decoder.set_weights([w * 1.01 for w in model.decoder.get_weights()])  # fine-tuned, say
        with pytest.warns(UserWarning, match="not saved: the decoder has changed .* python -m training.quantize"):
            saved = model.save_pretrained(tmp_path / precision)
        assert not (saved / INT8_ENCODER_FILE).exists()
        assert Reconstructor.from_pretrained(saved, precision="auto").int8_encoder is None


def test_a_model_loaded_in_bfloat16_saves_float32_weights(trunk_folder, tmp_path):
    import h5py
    from recon.pipeline import DECODER_FILE
    model = Reconstructor.from_pretrained(trunk_folder, precision="bfloat16")
    with pytest.warns(UserWarning, match='loaded in bfloat16: .*precision="float32" for an exact copy'):
        saved = model.save_pretrained(tmp_path / "copy")
    with h5py.File(saved / DECODER_FILE) as f:
        dtypes = set()
        f.visititems(lambda name, obj: dtypes.add(str(obj.dtype)) if isinstance(obj, h5py.Dataset) else None)
    assert dtypes == {"float32"}
    assert Reconstructor.from_pretrained(saved, precision="int8").int8_encoder.has_trunk  # still its file


def test_running_an_int8_file_prints_nothing(int8_folder):
    """LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." goes to the native stderr,
    where pytest's capture cannot see it: a fresh process can."""
    import subprocess
    import sys
    code = ("import numpy as np; from recon.int8 import Int8Encoder; "
            f"e = Int8Encoder.load({str(int8_folder / INT8_ENCODER_FILE)!r}); "
            "e(np.zeros((1, 32, 32, 3), 'float32')); e(np.zeros((2, 16, 16, 3), 'float32')); print('ran')")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "ran", result.stderr
    assert "XNNPACK" not in result.stderr and "Created TensorFlow Lite" not in result.stderr
