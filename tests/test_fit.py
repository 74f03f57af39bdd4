"""training.fit and training.evaluate end to end, on tiny images with a random-weights encoder."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from recon import Reconstructor
from tests.conftest import smooth_image
from training import evaluate, export, fit
from training.data import split_folders

TINY = ["--layer", "block2_conv2", "--image-size", "32", "--crop-size", "32", "--crops-per-image", "2",
        "--encoder-weights", "random", "--decoder-width", "8", "--res-blocks", "1", "--batch-size", "4",
        "--precision", "float32", "--verbose", "0"]


def run_fit(data, out, cache, *extra, callbacks=()):
    return fit.main(["--data", str(data), "--out", str(out), "--cache-dir", str(cache), *TINY, *extra],
                    callbacks=callbacks)


def celeba_like(root: Path, splits=("train", "val"), per_folder: int = 2) -> Path:
    """A folder laid out like the common CelebA-HQ download: {train,val}/{female,male}/*.jpg."""
    for s, split in enumerate(splits):
        for g, gender in enumerate(("female", "male")):
            (root / split / gender).mkdir(parents=True)
            for i in range(per_folder):
                seed = 100 * s + 10 * g + i
                Image.fromarray(smooth_image(48, 48, seed)).save(root / split / gender / f"{seed:05d}.jpg")
    return root


def test_awkward_folder_trains_and_skips_the_corrupt_file(tmp_path, photo_dir, capsys):
    odd = photo_dir / "odd"
    odd.mkdir()
    (odd / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(odd / "dot.png")
    Image.fromarray(smooth_image(40, 50, 7)[..., 0]).save(odd / "grey.png")
    Image.fromarray(smooth_image(40, 50, 8)).convert("RGBA").save(odd / "alpha.png")
    Image.fromarray((smooth_image(40, 50, 9)[..., 0].astype(np.uint16) * 257)).save(odd / "deep.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(smooth_image(30, 60, 10)).save(odd / "rotated.jpg", exif=exif)

    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "2")
    log = capsys.readouterr().out
    assert "1 unreadable skipped" in log and "corrupt.jpg" in log
    assert "epoch 2/2: loss" in log and "val_psnr" in log
    for name in ["config.json", "encoder.weights.h5", "decoder.weights.h5", "history.json", "loss_curve.png",
                 "split.json", "run_config.json", "samples/epoch_001.png", "samples/epoch_002.png"]:
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["val_psnr"]) for h in history)
    split = json.loads((out / "split.json").read_text())
    assert len(split["skipped"]) == 1 and len(split["train"]) + len(split["val"]) == 16  # listed, read later
    model = Reconstructor.from_pretrained(out)
    assert model.reconstruct(smooth_image(50, 70, 0), size="native").output.shape == (50, 70, 3)


def test_progress_bar_only_on_a_terminal_and_finished_before_the_epoch_line(tmp_path, photo_dir, capsys,
                                                                           monkeypatch):
    argv = ["--data", str(photo_dir), "--out", str(tmp_path / "run")]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert fit.parse_args(argv).verbose == 0  # a log file gets fit's own line per epoch, no bar redraws
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert fit.parse_args(argv).verbose == 1

    run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1", "--verbose", "1")
    lines = capsys.readouterr().out.splitlines()
    epoch_line = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/1: loss"))
    assert "\u2501" in lines[epoch_line - 1]  # Keras' bar (━) has ended its line first


class StopMidEpoch(keras.callbacks.Callback):
    """Simulates Ctrl-C in the middle of the second epoch."""

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            raise KeyboardInterrupt

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


def test_resume_continues_from_the_last_finished_epoch(tmp_path, photo_dir, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        run_fit(photo_dir, out, cache, "--epochs", "3", "--no-cache", callbacks=[StopMidEpoch()])
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1]
    assert f"continue with python -m training.fit --resume --out {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--resume"):
        run_fit(photo_dir, out, cache, "--epochs", "3")
    checkpoint = (out / "decoder.weights.h5").read_bytes()
    at_start = {}

    class SeeCheckpoint(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            at_start["decoder"] = (out / "decoder.weights.h5").read_bytes()

    fit.main(["--out", str(out), "--data", str(photo_dir), "--resume", "--epochs", "3", "--verbose", "0"],
             callbacks=[SeeCheckpoint()])
    assert at_start["decoder"] == checkpoint  # resuming keeps the best checkpoint until an epoch beats it
    log = capsys.readouterr().out
    assert "epoch 1/3" not in log and "epoch 2/3" in log and "epoch 3/3" in log
    assert "resuming from the backup: epoch 2, after step 0" in log
    resumed = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    # weights, optimizer state (step count, so the learning-rate schedule) and data order all came
    # back: the resumed run matches one that was never interrupted
    straight = json.loads((run_fit(photo_dir, tmp_path / "straight", cache, "--epochs", "3", "--no-cache")
                           / "history.json").read_text())
    assert [h["step"] for h in resumed] == [h["step"] for h in straight]
    assert [h["learning_rate"] for h in resumed] == pytest.approx([h["learning_rate"] for h in straight])
    assert [h["val_loss"] for h in resumed] == pytest.approx([h["val_loss"] for h in straight], rel=1e-2)
    assert not (out / "backup").exists()  # BackupAndRestore cleans up after a finished run
    with pytest.raises(SystemExit, match="finished .3 epochs.*--init-from"):  # not a silent retrain
        fit.main(["--out", str(out), "--data", str(photo_dir), "--resume", "--epochs", "5", "--verbose", "0"])
    # the folder holds the best epoch's decoder, not one re-initialized by the resumed run
    scored = evaluate.main(["--model", str(out), "--data", str(photo_dir), "--save-dir", str(tmp_path / "ev")])
    assert scored["psnr"]["mean"] == pytest.approx(max(h["val_psnr"] for h in resumed), abs=0.05)


def test_cache_is_reused_and_rebuilt_when_stale(tmp_path, photo_dir, capsys):
    cache = tmp_path / "cache"
    first = run_fit(photo_dir, tmp_path / "a", cache, "--epochs", "1")
    assert "GB in" in capsys.readouterr().out  # built, its size announced first
    run_fit(photo_dir, tmp_path / "b", cache, "--epochs", "1")
    assert "feature cache: reusing" in capsys.readouterr().out
    a_training_file = json.loads((first / "split.json").read_text())["train"][0]["file"]
    Image.fromarray(smooth_image(44, 60, 99)).save(a_training_file)  # its content changes
    run_fit(photo_dir, tmp_path / "c", cache, "--epochs", "1")
    out = capsys.readouterr().out
    assert "reusing" not in out and "GB in" in out and len(list(cache.iterdir())) == 2


def test_cached_and_uncached_batches_agree(tmp_path, photo_dir):
    """The cache stores float16 features of its crops; the on-the-fly path yields crops of the same kind."""
    from recon import ReconConfig, build_encoder
    from recon.imageio import list_images
    from training.data import CachedCrops, FeatureCache, OnTheFlyCrops, encode_batches, load_image_set, sample_view
    enc = build_encoder(ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random"))
    images = load_image_set(list_images(photo_dir)).images
    feats, targets = FeatureCache(tmp_path, "k").build(enc, images, 32, 32, 2, seed=5)
    assert feats.dtype == np.float16 and len(feats) == 20
    np.testing.assert_array_equal(targets[0], sample_view(images[0], 32, 32, np.random.default_rng([5, 0, 0])))
    np.testing.assert_allclose(feats[:4], encode_batches(enc, np.asarray(targets[:4])), rtol=2e-3, atol=1e-2)
    cached, live = CachedCrops(feats, targets, 4, 5), OnTheFlyCrops(images, 32, 32, 2, 4, 5, workers=2)
    assert len(cached) == len(live) == 5
    (f, y), (x, y2) = cached[0], live[0]
    assert f.shape == (4, 16, 16, 128) and y.shape == x.shape == (4, 32, 32, 3)
    assert x is y2 and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    again = OnTheFlyCrops(images, 32, 32, 2, 4, 5)
    np.testing.assert_array_equal(again[0][0], x)  # reproducible from the seed
    again.set_epoch(1)
    assert not np.array_equal(again[0][0], x)  # fresh crops each epoch


def test_evaluate_never_scores_training_images(tmp_path, photo_dir, capsys):
    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1")
    summary = evaluate.main(["--model", str(out), "--data", str(photo_dir), "--save-dir", str(tmp_path / "ev")])
    split = json.loads((out / "split.json").read_text())
    assert summary["count"] == len(split["val"])
    assert {r["file"] for r in summary["per_image"]} == {e["file"].split("/")[-1] for e in split["val"]}
    assert f"excluded {len(split['train'])} image(s)" in capsys.readouterr().out
    saved = json.loads((tmp_path / "ev" / "metrics_summary.json").read_text())
    assert set(saved["psnr"]) == {"mean", "std"} and saved["model"]["layer"] == "block2_conv2"
    for name in ["psnr_histogram.png", "ssim_histogram.png", "sample_reconstructions.png",
                 "training_loss_curve.png"]:
        assert (tmp_path / "ev" / name).is_file()
    native = evaluate.main(["--model", str(out), "--data", str(photo_dir), "--native",
                            "--save-dir", str(tmp_path / "ev2")])
    assert native["size"] == "native" and np.isfinite(native["psnr"]["mean"])


def test_evaluate_decodes_batch_by_batch_and_skips_unreadable_files(tmp_path, photo_dir, monkeypatch, capsys):
    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1")
    held = tmp_path / "held"
    held.mkdir()
    for seed in range(5):
        Image.fromarray(smooth_image(40, 44, 500 + seed)).save(held / f"{seed}.png")
    (held / "3_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    decoded, load = [], evaluate.load_image_set
    monkeypatch.setattr(evaluate, "load_image_set", lambda files, desc=None: decoded.append(len(files)) or load(files, desc))

    small = evaluate.main(["--model", str(out), "--data", str(held), "--batch-size", "2",
                           "--save-dir", str(tmp_path / "ev")])
    assert max(decoded) == 2 and sum(decoded) == 6  # never more than a batch in memory
    assert small["count"] == 5 and "3_broken.jpg" in capsys.readouterr().out
    assert [entry["file"] for entry in small["skipped"]] == ["3_broken.jpg"]
    whole = evaluate.main(["--model", str(out), "--data", str(held), "--batch-size", "8",
                           "--save-dir", str(tmp_path / "ev8")])
    assert [r["file"] for r in small["per_image"]] == [r["file"] for r in whole["per_image"]]
    np.testing.assert_allclose([r["psnr"] for r in small["per_image"]], [r["psnr"] for r in whole["per_image"]],
                               rtol=1e-4)
    for seed in range(4):  # a sample that drew the broken file takes the next readable one instead
        sample = evaluate.main(["--model", str(out), "--data", str(held), "--num-samples", "3", "--seed", str(seed),
                                "--save-dir", str(tmp_path / "sample")])
        assert sample["count"] == 3
    broken_only = tmp_path / "broken_only"
    broken_only.mkdir()
    (broken_only / "a.jpg").write_bytes(b"not an image")
    with pytest.raises(SystemExit, match="no scorable images"):
        evaluate.main(["--model", str(out), "--data", str(broken_only), "--save-dir", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()  # nothing written for a failed evaluation
    with pytest.raises(SystemExit, match="no scorable images"):
        export.main([str(out), str(tmp_path / "exported"), "--holdout", str(broken_only)])
    assert not (tmp_path / "exported").exists()  # taken back, so a rerun into it works


def test_minutes_budget_stops_training_and_decays_the_learning_rate(tmp_path, photo_dir, capsys):
    """--minutes: cosine over wall-clock time, stop before an epoch would overrun the budget."""
    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "50", "--minutes", "0.05",
                  "--lr", "0.002")
    history = json.loads((out / "history.json").read_text())
    assert 1 <= len(history) < 50  # stopped by the budget, not by --epochs
    spent = sum(h["seconds"] for h in history)
    assert spent <= 3.0 + history[-1]["seconds"]
    assert history[0]["learning_rate"] == pytest.approx(0.002)
    rates = [h["learning_rate"] for h in history]
    assert rates == sorted(rates, reverse=True)
    if len(history) > 1:
        assert rates[-1] < 0.002


def test_export_makes_a_lean_loadable_folder(tmp_path, photo_dir):
    run = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1")
    export.main([str(run), str(tmp_path / "lean"), "--float16"])
    lean = tmp_path / "lean"
    assert not (lean / "backup").exists() and not (lean / "samples").exists()
    assert (lean / "training_samples.png").is_file() and (lean / "split.json").is_file()
    assert (lean / "encoder.weights.h5").stat().st_size < 0.6 * (run / "encoder.weights.h5").stat().st_size
    image = smooth_image(40, 48, 3)
    full, half = Reconstructor.from_pretrained(run), Reconstructor.from_pretrained(lean)
    np.testing.assert_allclose(half.reconstruct(image).output, full.reconstruct(image).output, atol=0.02)


def test_init_from_starts_with_the_given_models_decoder_and_normalization(tmp_path, photo_dir):
    first = run_fit(photo_dir, tmp_path / "first", tmp_path / "cache", "--epochs", "1")
    seen = {}

    class AtStart(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["start"] = Reconstructor.from_pretrained(tmp_path / "warm")

    run_fit(photo_dir, tmp_path / "warm", tmp_path / "cache", "--epochs", "1", "--init-from", str(first),
            "--decoder-width", "16", callbacks=[AtStart()])  # the folder's architecture wins over flags
    before, start = Reconstructor.from_pretrained(first), seen["start"]
    assert start.config.feature_scale == before.config.feature_scale and start.config.decoder_width == 8
    image = smooth_image(40, 48, 5)
    np.testing.assert_array_equal(start.reconstruct(image).output, before.reconstruct(image).output)


def test_mixed_bfloat16_trains_and_saves_float32_weights(tmp_path, photo_dir, capsys):
    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1", "--precision", "mixed_bfloat16",
                  "--no-cache")
    assert "precision: mixed_bfloat16" in capsys.readouterr().out
    assert keras.config.dtype_policy().name == "float32"  # restored for whatever runs next
    history = json.loads((out / "history.json").read_text())
    assert np.isfinite(history[-1]["loss"]) and np.isfinite(history[-1]["val_psnr"])
    model = Reconstructor.from_pretrained(out)  # a plain float32 model, whatever trained it
    assert {w.dtype for w in model.decoder.weights} == {"float32"}
    output = model.reconstruct(smooth_image(40, 48, 5)).output
    assert output.dtype == np.float32 and output.shape == (32, 32, 3)


def test_auto_precision_follows_the_cpu_flags():
    from recon.precision import resolve_precision
    assert resolve_precision("auto", flags={"avx512f", "avx512_bf16"}, gpu=False) == "bfloat16"
    assert resolve_precision("auto", flags={"avx512f", "amx_bf16", "amx_tile"}, gpu=False) == "bfloat16"
    assert resolve_precision("auto", flags={"avx2", "avx512f"}, gpu=False) == "float32"  # bf16 emulated: slower
    assert resolve_precision("auto", flags=set(), gpu=True) == "float16"
    assert resolve_precision("float32", flags={"avx512_bf16"}) == "float32"
    with pytest.raises(ValueError, match="must be one of"):
        resolve_precision("int4")


def test_export_with_a_holdout_scores_the_model_and_writes_its_card(tmp_path, photo_dir, capsys):
    run = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1")
    holdout = tmp_path / "holdout"
    holdout.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(40, 44, 50 + i)).save(holdout / f"held{i}.png")
    out = tmp_path / "bundled"
    export.main([str(run), str(out), "--holdout", str(holdout)])
    summary = json.loads((out / "metrics_summary.json").read_text())
    assert summary["count"] == 3 and 0 < summary["lpips"]["mean"] < 1
    card = (out / "README.md").read_text()
    assert f"{summary['lpips']['mean']:.4f}" in card and "held-out" in card
    assert (out / "samples.png").is_file() and (out / "lpips_histogram.png").is_file()
    assert not (out / "sample_reconstructions.png").exists()
    with pytest.raises(SystemExit) as e:
        export.main([str(run), str(out)])
    assert e.value.code == 2 and "is not empty: export into a new folder" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--layer", "block3_conv3", "--crop-size", "30"], "--crop-size 30: block3_conv3 needs a multiple of its stride 4"),
    (["--crop-size", "8"], "at least 12 px"),
    (["--image-size", "31"], "--image-size 31"),
    (["--batch-size", "0"], "positive integer"),
    (["--val-data", "/nonexistent/photos"], "--val-data /nonexistent/photos: no such folder"),
    (["--init-from", "/nonexistent/model"], "--init-from /nonexistent/model: no such folder"),
])
def test_bad_sizes_are_refused_before_any_work(tmp_path, photo_dir, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", *flags)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_outputs_that_are_files_are_refused(tmp_path, photo_dir, capsys):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as e:
        run_fit(photo_dir, tmp_path / "a_file", tmp_path / "cache")
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        export.main([str(photo_dir), str(tmp_path / "a_file")])
    assert e.value.code == 2 and "a file, not a folder" in capsys.readouterr().err


def test_a_start_that_failed_before_its_first_epoch_does_not_block_a_rerun(tmp_path, photo_dir):
    class Crash(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            raise RuntimeError("out of memory, say")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1", callbacks=[Crash()])
    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1")  # a plain rerun
    assert len(json.loads((out / "history.json").read_text())) == 1
    with pytest.raises(SystemExit, match="already holds a run"):  # a run with an epoch is protected
        run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1")


def test_evaluate_at_native_size_scores_tiny_images_without_aborting(tmp_path, photo_dir):
    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1")
    held = tmp_path / "held"
    held.mkdir()
    Image.fromarray(smooth_image(40, 44, 1)).save(held / "normal.png")
    Image.fromarray(smooth_image(9, 40, 2)).save(held / "strip.png")
    summary = evaluate.main(["--model", str(out), "--data", str(held), "--native", "--save-dir", str(tmp_path / "ev")])
    assert summary["count"] == 2
    strip = next(r for r in summary["per_image"] if r["file"] == "strip.png")
    assert strip["ssim"] is None and np.isfinite(strip["psnr"])
    assert np.isfinite(summary["ssim"]["mean"])  # the mean over the images where it is defined


@pytest.mark.parametrize("val_folder, val_source", [("val", "val/ folder"), ("valid", "valid/ folder"),
                                                    ("test", "hash split")])
def test_train_and_val_subfolders_are_the_split(tmp_path, capsys, val_folder, val_source):
    data = celeba_like(tmp_path / "celeba_hq", splits=("train", val_folder))
    out = run_fit(data, tmp_path / "run", tmp_path / "cache", "--epochs", "1")
    split = json.loads((out / "split.json").read_text())
    assert split["val_source"] == val_source
    train, val = ({Path(e["file"]).relative_to(data).parts[0] for e in split[k]} for k in ("train", "val"))
    if val_source == "hash split":  # train/ and test/ are just two folders of photos: mixed by the hash
        assert len(split["train"]) + len(split["val"]) == 8 and "a hash of each path" in capsys.readouterr().out
    else:
        assert train == {"train"} and val == {val_folder} and len(split["train"]) == len(split["val"]) == 4
        assert f"validate on {data / val_folder}" in capsys.readouterr().out


def test_val_data_overrides_the_folders_split(tmp_path):
    data = celeba_like(tmp_path / "celeba_hq")
    held = celeba_like(tmp_path / "held", splits=("faces",), per_folder=1)
    out = run_fit(data / "train", tmp_path / "run", tmp_path / "cache", "--epochs", "1", "--val-data", str(held))
    split = json.loads((out / "split.json").read_text())
    assert split["val_source"] == "val-data" and len(split["train"]) == 4 and len(split["val"]) == 2
    assert split_folders(data / "train") is None and split_folders(data) == (data / "train", data / "val")


@pytest.mark.slow
def test_celeba_hq_folder_trains_with_only_data_and_out(tmp_path):
    """The plain command on the common download, every setting its default (torchvision VGG16
    weights, 224 px, 10 epochs): 55-75 s on 2 cores with 4 photos."""
    data = celeba_like(tmp_path / "celeba_hq", per_folder=1)
    env = os.environ | {"HOME": str(tmp_path / "home")}  # the default feature cache is under ~/.cache
    command = [sys.executable, "-m", "training.fit", "--data", str(data), "--out", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch 10/10: loss" in done.stdout and f"validate on {data / 'val'}" in done.stdout
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["val_source"] == "val/ folder" and len(split["train"]) == len(split["val"]) == 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["image_size"] == 224 and config["encoder_weights"] == "imagenet-torchvision"


def test_a_warm_start_cuts_other_crops_than_the_run_it_starts_from(tmp_path, photo_dir):
    first = run_fit(photo_dir, tmp_path / "first", tmp_path / "cache", "--epochs", "1", "--no-cache")
    warm = run_fit(photo_dir, tmp_path / "warm", tmp_path / "cache", "--epochs", "1", "--no-cache",
                   "--init-from", str(first))
    seeds = [json.loads((folder / "run_config.json").read_text())["crop_seed"] for folder in (first, warm)]
    assert seeds == [42, 43]  # one more than the starting run's: crop i of epoch e comes from (seed, e, i)

    def chosen(init_from, crop_seed=None):
        return fit.crop_seed(argparse.Namespace(seed=42, crop_seed=crop_seed, init_from=init_from))
    assert chosen(str(warm)) == 44 and chosen(str(warm), crop_seed=7) == 7
    assert chosen(str(tmp_path)) == 43  # a folder without run_config.json (pulled from the Hub): --seed + 1


def test_crops_differ_between_crop_seeds(photo_dir):
    from training.data import StreamingCrops, find_images
    files = find_images(photo_dir)
    def first_batch(seed):
        return StreamingCrops(files, 32, 32, 2, 4, seed)[0][0]
    np.testing.assert_array_equal(first_batch(42), first_batch(42))
    assert not np.array_equal(first_batch(42), first_batch(43))


def test_minutes_alone_lifts_the_default_epoch_limit(tmp_path, photo_dir):
    base = ["--data", str(photo_dir), "--out", str(tmp_path / "run")]
    assert fit.parse_args(base + ["--minutes", "60"]).epochs == fit.UNLIMITED_EPOCHS
    assert fit.parse_args(base + ["--minutes", "60", "--epochs", "4"]).epochs == 4  # given: an upper bound
    assert fit.parse_args(base).epochs == 10
