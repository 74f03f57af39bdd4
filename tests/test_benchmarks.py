import importlib.util
import json
import math
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from recon import ReconConfig
from training.data import CachedCrops
from training.losses import make_loss

ROOT_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


def load_benchmark(name: str):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_quality():
    return load_benchmark("quality")


def tiny_crops(n: int) -> tuple[CachedCrops, tuple[np.ndarray, np.ndarray]]:
    """`n` random 4x4x256 feature crops with 16x16 targets in batches of 4, and two held-out pairs."""
    rng = np.random.default_rng(0)
    data = CachedCrops(rng.random((n, 4, 4, 256), np.float32), rng.random((n, 16, 16, 3), np.float32),
                       batch_size=4, seed=0)
    return data, (rng.random((2, 4, 4, 256), np.float32), rng.random((2, 16, 16, 3), np.float32))


def test_quality_benchmark_quick_mode(photo_dir, tmp_path):
    quality = load_quality()
    out = tmp_path / "quality"
    record = quality.main(["--data", str(photo_dir), "--holdout", str(photo_dir), "--quick", "--out", str(out),
                           "--encoder-weights", "random", "--cache-dir", str(tmp_path / "cache"), "--curve-every", "1"])
    assert set(record["results"]) == {"original (lr 1e-4)", "original (lr 0.001)", "ours"}
    assert record["budget_crops_seen"] == 20  # 10 photos x 2 crops x 1 epoch, the same for every decoder
    assert record["params"]["ours"] <= record["params"]["original (lr 1e-4)"] == 370_563
    for result in record["results"].values():
        assert math.isfinite(result["psnr"][0]) and 0 <= result["ssim"][0] <= 1
    assert json.loads((out / "quality.json").read_text())["gain"] == record["gain"]
    assert (out / "quality_comparison.png").stat().st_size > 0
    curve = record["results"]["ours"]["curve"]  # 20 crops in batches of 8, scored after every step
    assert [p["crops_seen"] for p in curve] == [8, 16, 20]
    assert curve[-1]["psnr"] == record["results"]["ours"]["psnr"][0]  # the last point is the final model
    assert (out / "heldout_curve.png").stat().st_size > 0


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
    data, holdout = tiny_crops(8)
    build = lambda: quality.build_original_decoder(256)  # noqa: E731
    first = quality.train_and_score(build, make_loss(), 1e-3, data, 1, *holdout, seed=7)[1]
    np.random.default_rng(1).random(5), quality.build_original_decoder(256)  # draws from the RNGs in between
    again = quality.train_and_score(build, make_loss(), 1e-3, data, 1, *holdout, seed=7)[1]
    assert first["psnr"] == again["psnr"] and first["ssim"] == again["ssim"]


def test_live_units_counts_a_channel_that_is_zero_everywhere_as_dead():
    live_units = load_benchmark("live_units")
    quality = load_quality()
    cfg = ReconConfig(image_size=32, encoder_weights="random")
    decoder = quality.build_ours(cfg, "ours-deep", [1.0] * cfg.channels)
    conv = decoder.get_layer("up1_conv")
    kernel, bias = conv.get_weights()
    kernel[..., :12], bias[:12] = 0.0, -1.0  # 12 of 48 channels: relu(-1) = 0 whatever the input
    bias[12:] = 10.0  # and the other 36 surely positive somewhere
    conv.set_weights([kernel, bias])
    probe = keras.Model(decoder.input, [decoder.get_layer(n).output for n in ("up1_conv", "up2_conv")]
                        + [decoder.output])
    sample = np.random.default_rng(0).random((4, 8, 8, cfg.channels), np.float32)
    callback = live_units.LiveUnits(probe, ["up1_conv", "up2_conv"], sample)
    callback.report(0)
    record = callback.records[0]
    assert record["live"]["up1_conv"] == 36 / 48
    assert record["live"]["up2_conv"] > 0.5 and record["output_std"] > 0


def test_live_units_reports_every_stage_while_it_trains(photo_dir, tmp_path):
    live_units = load_benchmark("live_units")
    args = ["--data", str(photo_dir), "--encoder-weights", "random", "--cache-dir", str(tmp_path / "cache"),
            "--crop-size", "32", "--crops-per-image", "2", "--image-size", "32", "--steps", "2", "--every", "1"]
    shuffle = live_units.main(args + ["--variant", "ours-deep-pixelshuffle"])
    resize = live_units.main(args + ["--variant", "ours-deep"])
    assert [r["step"] for r in shuffle] == [r["step"] for r in resize] == [0, 1, 2]
    assert list(shuffle[0]["live"]) == ["up1_relu", "up2_relu"] and list(resize[0]["live"]) == ["up1_conv", "up2_conv"]
    for record in shuffle + resize:
        assert all(0 <= v <= 1 for v in record["live"].values()) and np.isfinite(record["output_std"])
    assert resize[0]["output_std"] != resize[-1]["output_std"]  # it trained between the reports


def test_heldout_curve_counts_crops_across_epochs_and_partial_batches():
    quality = load_quality()
    data, holdout = tiny_crops(10)
    build = lambda: quality.build_original_decoder(256)  # noqa: E731
    result = quality.train_and_score(build, make_loss(), 1e-3, data, 2, *holdout, seed=0, curve_every=2)[1]
    # steps end after 4, 8, 10 crops, then 14, 18, 20: every second one is scored
    assert [p["crops_seen"] for p in result["curve"]] == [8, 14, 20]
    assert len({p["psnr"] for p in result["curve"]}) == 3


def test_dead_channels_counts_a_channel_that_never_fires(tmp_path):
    from recon import build_encoder
    from recon.encoder import save_encoder_weights
    dead_channels = load_benchmark("dead_channels")
    encoder = build_encoder(ReconConfig(layer="block2_conv2", encoder_weights="random"))
    bias = encoder.get_layer("block1_conv2").bias
    bias.assign(keras.ops.convert_to_numpy(bias) - np.eye(64, dtype="float32")[5] * 1e6)  # channel 5: never > 0
    weights = tmp_path / "weights.h5"
    save_encoder_weights(encoder, weights)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    stats = dead_channels.channel_stats(str(weights), images, layers=("block1_conv2", "block2_conv2"))
    assert stats["block1_conv2"]["dead"] == 1 and stats["block1_conv2"]["channels"] == 64
    assert stats["block2_conv2"]["channels"] == 128
    assert 1 / 64 < stats["block1_conv2"]["zeros"] < 1


def test_encoders_benchmark_trains_the_same_decoder_on_each_source(photo_dir, tmp_path):
    from recon import build_encoder
    from recon.encoder import save_encoder_weights
    encoders = load_benchmark("encoders")
    weights = tmp_path / "other.h5"
    save_encoder_weights(build_encoder(ReconConfig(encoder_weights="random", encoder_seed=1)), weights)
    record = encoders.main(["--data", str(photo_dir), "--holdout", str(photo_dir), "--sources", f"random,{weights}",
                            "--crop-size", "32", "--crops-per-image", "1", "--epochs", "1", "--image-size", "32",
                            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "encoders.json")])
    first, second = record["results"]["random"], record["results"][str(weights)]
    assert first["params"] == second["params"] == 338_819 and first["crops_seen"] == second["crops_seen"] == 10
    assert first["psnr"][0] != second["psnr"][0]  # other features, other result
    assert all(math.isfinite(r["lpips"][0]) for r in (first, second))
    assert json.loads((tmp_path / "encoders.json").read_text())["results"].keys() == {"random", str(weights)}


def test_data_pipeline_benchmark_quick_mode(tmp_path):
    data_pipeline = load_benchmark("data_pipeline")
    record = data_pipeline.main(["--quick", "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "dp.json")])
    assert list(record["results"]) == ["streaming, N=8", "streaming, N=12", "streaming, N=6", "feature cache, N=6",
                                       "in memory (before), N=6", "float32, streaming, N=6", "auto, streaming, N=6"]
    for result in record["results"].values():
        assert result["peak_rss_mb"] > 0 and result["images_per_s"] > 0 and math.isfinite(result["val_psnr"])
    assert record["results"]["auto, streaming, N=6"]["precision"] in ("float32", "mixed_bfloat16", "mixed_float16")
    assert json.loads((tmp_path / "dp.json").read_text())["rss_growth"] == record["rss_growth"]
    assert len(list((tmp_path / "photos" / "train").glob("*.jpg"))) == 12


def test_speed_benchmark_counts_the_convolutions_flops(tiny_config):
    from recon import Reconstructor, build_decoder, build_encoder
    speed = load_benchmark("speed")
    model = Reconstructor(tiny_config, build_encoder(tiny_config), build_decoder(tiny_config))
    flops = speed.convolution_flops(model, 32)
    # block2_conv2 at 32x32: two 3x3 convolutions at full size (3->64, 64->64), two at half (64->128, 128->128)
    encoder = 2 * 9 * (32 * 32 * (3 * 64 + 64 * 64) + 16 * 16 * (64 * 128 + 128 * 128))
    assert flops["encoder"] == encoder
    assert 0 < flops["decoder"] < encoder  # a tiny decoder


def test_int8_scope_scores_each_part_in_int8_against_float32(photo_dir, tmp_path, tiny_config):
    from recon import Reconstructor
    int8_scope = load_benchmark("int8_scope")
    folder = Reconstructor(tiny_config).save_pretrained(tmp_path / "model")
    results = int8_scope.main(["--data", str(photo_dir), "--holdout", str(photo_dir / "a"), "--model", str(folder),
                               "--images", "4"])
    assert list(results) == ["float32", "int8 encoder", "int8 encoder and residual trunk", "int8 decoder",
                             "int8 encoder and decoder"]
    base_psnr, _ = results["float32"]
    assert all(np.isfinite(v) for pair in results.values() for v in pair)
    assert all(abs(psnr - base_psnr) < 3 for psnr, _ in results.values())  # quantized, not broken


def test_speed_benchmark_times_each_precision_in_turns(tiny_config):
    from recon import Reconstructor
    speed = load_benchmark("speed")
    folder_free = {"float32": Reconstructor(tiny_config), "bfloat16": Reconstructor(tiny_config, precision="bfloat16")}
    speeds = speed.inference_speeds(folder_free, tiny_config.image_size, rounds=1)
    assert list(speeds) == ["float32", "bfloat16"]
    assert list(speeds["float32"]) == ["reconstruct(), batch 1", "reconstruct_batch(), batch 8", "encoder only, batch 1",
                                       "encoder only, batch 8", "webcam path (frames/s)"]
    assert all(v > 0 for rows in speeds.values() for v in rows.values())


def warm_start_chain(tmp_path, tiny_config, kept=((2, [5, 10, 15]), (1, [4, 8]), (2, [3, 6]))) -> list[str]:
    """Model folders of a run from scratch and its warm starts: (kept epoch, steps per epoch) each."""
    from recon import Reconstructor
    folders = []
    for i, (best_epoch, steps) in enumerate(kept):
        folder = tmp_path / f"run{i}"
        Reconstructor(tiny_config).save_pretrained(folder)
        history = [{"epoch": e + 1, "step": s, "loss": 0.1, "val_loss": 0.1, "val_ssim": 0.5,
                    "val_psnr": 20.0 + (e + 1 == best_epoch)} for e, s in enumerate(steps)]
        (folder / "history.json").write_text(json.dumps(history))
        run = {"batch_size": 2, "crop_size": 32, "init_from": folders[-1] if folders else None}
        (folder / "run_config.json").write_text(json.dumps(run))
        folders.append(str(folder))
    return folders


def test_warm_start_curve_counts_only_the_crops_behind_each_kept_checkpoint(photo_dir, tmp_path, tiny_config):
    curve = load_benchmark("warm_start_curve")
    folders = warm_start_chain(tmp_path, tiny_config)
    result = curve.main([*folders, "--holdout", str(photo_dir), "--out", str(tmp_path / "out")])
    assert [p["crops"] for p in result["points"]] == [20, 28, 40]  # 10 x 2, 4 x 2, 6 x 2: not the runs' ends
    assert [p["kept_epoch"] for p in result["points"]] == [2, 1, 2]
    assert result["fit_over"] == folders[1:]  # the warm starts, not the run from scratch
    assert all(0 < p["ssim"] <= 1 and p["psnr"] > 0 for p in result["points"])
    assert (tmp_path / "out" / "warm_start_curve.png").is_file()
    assert sorted(f.name for f in (tmp_path / "out" / "eval").iterdir()) == ["1-run0.json", "2-run1.json", "3-run2.json"]


def test_warm_start_curve_refuses_what_is_not_a_chain_before_loading_tensorflow(photo_dir, tmp_path, tiny_config,
                                                                               capsys):
    curve = load_benchmark("warm_start_curve")
    folders = warm_start_chain(tmp_path, tiny_config)
    other = tmp_path / "other"
    shutil.copytree(folders[2], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"layer": "block1_conv2"}))
    cases = [(folders[:2], "at least 3 folders"),
             ([*folders[:2], str(tmp_path / "nope")], "nope: no such folder"),
             ([folders[1], folders[1], folders[2]], "should be a run from scratch"),
             ([*folders[:2], str(other)], "layer 'block1_conv2'"),
             ([folders[0], folders[0], folders[2]], "a run from scratch, not a warm start")]
    for given, message in cases:
        with pytest.raises(SystemExit):
            curve.main([*given, "--holdout", str(photo_dir), "--out", str(tmp_path / "out")])
        assert message in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        curve.main([*folders, "--holdout", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert "no images in it" in capsys.readouterr().err


def test_warm_start_curve_fit_finds_where_a_log_linear_trend_crosses_a_target():
    curve = load_benchmark("warm_start_curve")
    fit = curve.log2_fit([1000, 2000, 4000], [0.70, 0.71, 0.72])
    assert math.isclose(fit[0], 0.01, abs_tol=1e-9)
    assert math.isclose(curve.crossing(fit, 0.75), 32000, rel_tol=1e-6)
    assert curve.crossing((0.0, 0.7), 0.8) is None  # a flat line never gets there


def test_warm_start_curve_counts_an_epoch_as_its_crops_not_its_batches(tmp_path):
    curve = load_benchmark("warm_start_curve")
    history = [{"epoch": 1, "step": 2, "val_psnr": 20.0}, {"epoch": 2, "step": 4, "val_psnr": 21.0}]
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "run_config.json").write_text(json.dumps({"batch_size": 4, "crops_per_image": 2}))
    assert curve.kept_crops(tmp_path)[0] == 16  # 4 steps x batch 4: no split.json to count from
    (tmp_path / "split.json").write_text(json.dumps({"train": [{"path": "a"}, {"path": "b"}, {"path": "c"}]}))
    assert curve.kept_crops(tmp_path)[0] == 12  # 2 epochs x 3 photos x 2 crops (the last batch of 4 held 2)


def test_rgb_layer_benchmark_times_each_form_and_refuses_a_resize_decoder(tmp_path, tiny_config, capsys):
    from recon import Reconstructor
    rgb_layer = load_benchmark("rgb_layer")
    shuffle = ReconConfig(**(tiny_config.to_dict() | {"upsample": "pixel_shuffle"}))
    folder = Reconstructor(shuffle).save_pretrained(tmp_path / "shuffle")
    results = rgb_layer.main(["--model", str(folder), "--size", "32", "--rounds", "1"])
    assert list(results["float32"]) == ["as trained", "rearranged"]  # and what auto picks here, if not float32
    assert results["float32"]["rearranged"]["max difference"] < 1e-5
    for forms in results.values():
        assert all(r["ms"] > 0 for r in forms.values()) and forms["as trained"]["max difference"] == 0
    assert "largest difference from as trained" in capsys.readouterr().out
    resize = Reconstructor(tiny_config).save_pretrained(tmp_path / "resize")
    with pytest.raises(SystemExit, match="no pixel-shuffle stage"):
        rgb_layer.main(["--model", str(resize), "--rounds", "1"])


def test_webcam_browser_codes_frames_readably_and_summarizes_what_the_page_saw(tmp_path):
    webcam = load_benchmark("webcam_browser")
    assert webcam.frame_code(0)[:12] == [0] * 12 and webcam.frame_code(4095)[:12] == [1] * 12
    assert len({tuple(webcam.frame_code(i)) for i in range(4096)}) == 4096
    flipped = webcam.frame_code(1 << 4)  # one index bit differs from frame 0: its check bits differ too
    assert flipped[12:] != webcam.frame_code(0)[12:]
    frame = np.full((48, 64, 3), 128, np.uint8)
    coded = webcam.draw_code(frame, 1234)
    side, margin = 48, webcam.CODE_MARGIN
    square = coded[:, 8:56]  # the center square, which is what the app reconstructs
    np.testing.assert_array_equal(square, square[:, ::-1])  # a mirrored camera reads the same
    code = slice(int(margin * side) + 1, int((1 - margin) * side) - 1)
    inner = square[code, code]
    assert set(np.unique(inner)) == {0, 255} and (coded[:, :8] == 128).all()
    video = webcam.write_numbered_y4m(tmp_path / "v.y4m", 3, width=64, height=48, background=ROOT_EXAMPLE)
    header, *frames = video.read_bytes().split(b"FRAME\n")
    assert header.startswith(b"YUV4MPEG2 W64 H48 F30:1") and [len(f) for f in frames] == [64 * 48 * 3 // 2] * 3
    probe = {"inputs": [[0, 7], [33, 8], [66, 9], [100, 7]], "outputs": [[80, 8], [120, 9], [130, 7]], "misreads": 2}
    summary = webcam.summarize(probe, 50, 1050)
    assert summary["frames_shown"] == 3 and summary["frames_shown_per_s"] == 3.0
    assert webcam.matched_latencies(probe["inputs"], probe["outputs"]) == [47, 54, 30]  # frame 7 again: its last arrival
    assert summary["latency_ms_median"] == 47 and summary["misreads"] == 2
