"""Training runs that survive kills, resume as they were started and read what they were pointed at:
atomic writes, `--resume --out RUN` alone, a run folder inside its own data, symlinked data folders,
output and Hub checks before training, a full disk; tiny images and a random-weights encoder."""

import errno
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from recon import ReconConfig, Reconstructor
from recon.atomic import PART_PREFIX
from tests.conftest import free_port, smooth_image
from tests.test_fit import TINY, StopMidEpoch, run_fit
from training import data, fit

ROOT = Path(__file__).resolve().parents[1]


def interrupted_run(photo_dir, out, cache, *extra):
    """A 3-epoch run stopped by Ctrl-C in its second epoch; returns the resume command it printed."""
    with pytest.raises(KeyboardInterrupt):
        run_fit(photo_dir, out, cache, "--epochs", "3", *extra, callbacks=[StopMidEpoch()])
    return out


def printed_resume_command(log: str) -> list[str]:
    """The arguments of the `python -m training.fit ...` command an interrupted run printed."""
    line = next(line for line in log.splitlines() if line.startswith("interrupted in epoch"))
    command = shlex.split(line.split("continue with ")[1].split(" (from")[0])
    assert command[:3] == ["python", "-m", "training.fit"]
    return command[3:]


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_every_file_a_run_writes_is_written_aside_and_renamed_into_place(tmp_path, photo_dir, monkeypatch):
    replaced, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: replaced.append(Path(dst)) or real_replace(src, dst))
    (photo_dir / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # so that skipped.json is written
    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "2", "--save-every", "2")
    written = files_under(out)
    assert {"config.json", "encoder.weights.h5", "decoder.weights.h5", "history.json", "run_config.json",
            "split.json", "skipped.json", "loss_curve.png", "training.json", "samples/epoch_002.png"} <= written
    assert written <= {str(p.relative_to(out)) for p in replaced if p.is_relative_to(out)}
    assert not any(PART_PREFIX in name for name in written) and not (out / "backup").exists()
    assert "optimizer" not in h5py.File(out / "decoder.weights.h5", "r")  # the decoder's weights only
    Reconstructor.from_pretrained(out)


def test_a_resume_that_cannot_be_answers_before_tensorflow_loads(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"lr": 0.001, "epochs": 3, "data": str(tmp_path)}))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.fit", "--resume", "--out", str(run),
                             "--lr", "0.01"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "--lr 0.01 (the run's: 0.001)" in result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "argparse" in imported and "tensorflow" not in imported and "keras" not in imported


def test_resume_alone_continues_the_run_with_its_own_settings(tmp_path, photo_dir, capsys):
    out = interrupted_run(photo_dir, tmp_path / "run", tmp_path / "cache", "--lr", "0.002", "--alpha", "0.7")
    command = printed_resume_command(capsys.readouterr().out)
    assert command == ["--resume", "--out", str(out)]

    with pytest.raises(SystemExit) as refused:  # before TensorFlow does anything, the run untouched
        fit.parse_args([*command, "--lr", "0.01", "--data", str(tmp_path), "--alpha", "0.7"])
    message = str(refused.value)
    assert "--lr 0.01 (the run's: 0.002)" in message and f"--data {tmp_path} (the run's: {photo_dir})" in message
    assert "--alpha" not in message  # the same as the run's
    applied = fit.parse_args([*command, "--epochs", "5", "--data", str(photo_dir) + "/", "--verbose", "0"])
    assert "applying --epochs 5 (was 3)" in capsys.readouterr().out  # a path typed another way is the same
    assert (applied.epochs, applied.lr, applied.alpha, applied.resume) == (5, 0.002, 0.7, True)
    assert json.loads((out / "run_config.json").read_text())["epochs"] == 3

    fit.main(command)  # the printed command as it is: the run's 3 epochs, not the default 10
    log = capsys.readouterr().out
    assert "resuming from the backup: epoch 2, after step 0" in log and "epoch 3/3" in log
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2, 3]
    saved = json.loads((out / "run_config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["alpha"]) == (3, 0.002, 0.7)
    with pytest.raises(SystemExit, match="finished .3 epochs"):
        fit.parse_args(command)


def test_an_unreadable_history_is_rebuilt_from_the_backup(tmp_path, photo_dir, capsys):
    """A kill while an older version wrote history.json left half a file: the resume goes on."""
    out = interrupted_run(photo_dir, tmp_path / "run", tmp_path / "cache")
    history = (out / "history.json").read_text()
    (out / "history.json").write_text(history[:len(history) // 2])
    capsys.readouterr()
    fit.main(["--resume", "--out", str(out)])
    assert "history.json is unreadable; rebuilt from the backup's copy (1 epochs)" in capsys.readouterr().out
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2, 3]


def test_the_run_folder_is_never_part_of_its_data(tmp_path, photo_dir, capsys):
    old = photo_dir / "old_run"  # a run from before, with its figures
    (old / "samples").mkdir(parents=True)
    (old / "run_config.json").write_text("{}")
    Image.fromarray(smooth_image(40, 40, 1)).save(old / "samples" / "epoch_001.png")
    out = interrupted_run(photo_dir, photo_dir / "runs" / "new", tmp_path / "cache")
    assert f"data: left out 1 files of run folders under {photo_dir}: {old}" in capsys.readouterr().out
    listed = lambda: [e["file"] for part in ("train", "val")  # noqa: E731
                      for e in json.loads((out / "split.json").read_text())[part]]
    before = listed()
    assert len(before) == 10 and not any("old_run" in f or "runs" in f for f in before)

    moved = Path(before[0]).rename(tmp_path / "moved.png")  # a file of the run's data goes away
    with pytest.raises(SystemExit, match=f"1 of the 10 files .* are gone: {before[0]}"):
        fit.main(["--resume", "--out", str(out)])
    moved.rename(before[0])
    Image.fromarray(smooth_image(48, 48, 77)).save(photo_dir / "new_photo.png")  # and one is added
    fit.main(["--resume", "--out", str(out)])
    assert "split: the run's own (split.json), " in capsys.readouterr().out
    assert listed() == before  # the same files to the end; its own figures never among them
    assert (out / "samples" / "epoch_003.png").is_file()


def test_symlinked_folders_are_followed_once_and_loops_end(tmp_path):
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    Image.fromarray(smooth_image(20, 20, 1)).save(tmp_path / "elsewhere" / "deep" / "a.png")
    root = tmp_path / "data"
    root.mkdir()
    Image.fromarray(smooth_image(20, 20, 2)).save(root / "b.png")
    (root / "linked").symlink_to(tmp_path / "elsewhere")
    (root / "linked_again").symlink_to(tmp_path / "elsewhere")  # the same folder twice: listed once
    (tmp_path / "elsewhere" / "loop").symlink_to(tmp_path / "elsewhere")  # a link back up the tree
    (root / "self").symlink_to(root)
    (root / "dangling").symlink_to(tmp_path / "gone")
    assert data.list_images(root) == [root / "b.png", root / "linked" / "deep" / "a.png"]


def test_an_unwritable_out_is_one_line_before_tensorflow(tmp_path, photo_dir, capsys):
    if os.geteuid() == 0:  # root writes anywhere permissions allow; /sys refuses everyone
        if not Path("/sys").is_dir():
            pytest.skip("no /sys to stand for an unwritable folder")
        out, where = Path("/sys/recon-run"), "/sys"
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out, where = locked / "run", str(locked)
    with pytest.raises(SystemExit) as e:
        fit.parse_args(["--data", str(photo_dir), "--out", str(out)])
    assert e.value.code == 2 and f"--out {out}: cannot write in {where} (" in capsys.readouterr().err


def test_too_little_disk_for_the_first_checkpoint_stops_before_training(tmp_path, photo_dir, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**5, 10**5))
    with pytest.raises(SystemExit, match=r"0\.1 MB free on its disk, and the run's first checkpoints need about "):
        run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1", "--no-cache")
    assert not (tmp_path / "run" / "history.json").exists()


def test_a_full_disk_ends_in_one_line_and_the_last_good_state(tmp_path, photo_dir, monkeypatch, capsys):
    class DiskFillsAfterTheFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(keras.Model, "save_weights", full)
            monkeypatch.setattr(Image.Image, "save", full)

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        run_fit(photo_dir, out, tmp_path / "cache", "--epochs", "2", callbacks=[DiskFillsAfterTheFirstEpoch()])
    assert str(e.value).count("\n") == 0 and "the disk is full (No space left on device)" in str(e.value)
    assert f"then python -m training.fit --resume --out {out}" in str(e.value)
    assert not [p for p in out.rglob("*") if p.name.startswith(PART_PREFIX)]  # nothing half written left
    monkeypatch.undo()  # space freed
    first = Reconstructor.from_pretrained(out)  # epoch 1's checkpoint, whole
    fit.main(["--resume", "--out", str(out)])  # the run goes on
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
    assert Reconstructor.from_pretrained(out).config == first.config


def test_init_from_uses_the_folders_own_encoder_file(tmp_path, photo_dir):
    from recon.encoder import build_encoder, save_encoder_weights
    weights = tmp_path / "mine.weights.h5"
    save_encoder_weights(build_encoder(ReconConfig(layer="block2_conv2", encoder_weights="random")), weights)
    first = run_fit(photo_dir, tmp_path / "first", tmp_path / "cache", "--epochs", "1",
                    "--encoder-weights", str(weights))
    other = ReconConfig(layer="block2_conv2", encoder_weights="random", encoder_seed=7)
    save_encoder_weights(build_encoder(other), weights)  # another file where the config says
    warm = run_fit(photo_dir, tmp_path / "warm", tmp_path / "cache", "--epochs", "1", "--init-from", str(first))
    for a, b in zip(Reconstructor.from_pretrained(warm).encoder.get_weights(),
                    Reconstructor.from_pretrained(first).encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    weights.unlink()  # and none there at all
    encoder = fit.run_encoder(Reconstructor.from_pretrained(first).config, first)
    assert len(encoder.get_weights()) == 8  # block2_conv2: four convolutions


def test_push_to_hub_is_checked_before_training(tmp_path, photo_dir, monkeypatch, capsys, isolated_hf, fake_hub):
    from huggingface_hub import constants
    argv = ["--data", str(photo_dir), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
            *TINY, "--push-to-hub", "me/tiny"]
    with pytest.raises(SystemExit, match=r"^--push-to-hub me/tiny: no Hub token: set HF_TOKEN"):
        fit.main(argv)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SystemExit, match=r"^--push-to-hub me/tiny: cannot reach the Hub at http://127\.0\.0\.1"):
        fit.main(argv)
    assert not (tmp_path / "run").exists()  # nothing trained
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    fit.check_hub("me/tiny")
    assert f"push-to-hub: me/tiny on {fake_hub.url}, token found" in capsys.readouterr().out


def test_the_defaults_are_the_bundled_recipe(tmp_path, photo_dir):
    from recon.decoder import build_decoder
    args = fit.parse_args(["--data", str(photo_dir), "--out", str(tmp_path / "run")])
    cfg = fit.starting_config(args, tmp_path / "run", kept=False)[0]
    assert build_decoder(cfg).count_params() == 442_739
    bundled = json.loads((ROOT / "models" / "vgg16-block3_conv3" / "config.json").read_text())
    recipe = json.loads((ROOT / "models" / "vgg16-block3_conv3" / "run_config.json").read_text())
    for key in ("layer", "image_size", "decoder_width", "num_res_blocks", "upsample", "upsample_widths",
                "encoder_weights"):
        assert getattr(cfg, key) == bundled[key], key
    for key in ("batch_size", "crop_size", "crops_per_image"):
        assert getattr(args, key) == recipe[key], key
    assert fit.parse_args(["--data", str(photo_dir), "--out", "x", "--crop-size", "0"]).crop_size is None
    help_text = " ".join(fit.build_parser().format_help().split())
    assert f"default {fit.DEFAULT_CACHE_DIR}" in help_text and "28 MB per 4:3 photo at block3_conv3" in help_text


def test_progress_into_a_log_file_is_plain_lines(capsys, monkeypatch):
    with data.progress(25, "encoding photos", "photo") as bar:
        for _ in range(25):
            bar.update(1)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "\r" not in captured.out + captured.err and len(lines) == 10
    assert lines[-1].startswith("encoding photos: 25/25 photos (100%")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with data.progress(3, "x", "photo") as bar:
        assert not isinstance(bar, data.LogProgress)  # a tqdm bar on a terminal


# `python -m training.fit ARGS` with every os.replace announced on stdout ("REPLACING path") and held
# back RENAME_PAUSE seconds, so that the test can count them, and kill just before or after one.
ANNOUNCED_RENAMES = """
import os, runpy, sys, time
real_replace, pause = os.replace, float(os.environ["RENAME_PAUSE"])
def announced(src, dst):
    print("REPLACING", dst, flush=True)
    time.sleep(pause)
    real_replace(src, dst)
os.replace = announced
sys.argv = ["training.fit", *sys.argv[1:]]
runpy.run_module("training.fit", run_name="__main__", alter_sys=True)
"""
KILLS, EPOCHS, STEPS = 21, 16, 5  # 10 photos: 9 train x 2 crops / batches of 4 = 5 steps an epoch
# A process is killed by its 14th rename or its 3rd backup at the latest (a few steps), so that the kills
# fall before the run's 80 steps are done, on a quiet machine as on a busy one (about 50 on a quiet one)
MOST_RENAMES, MOST_BACKUPS = 14, 3


@pytest.mark.slow
def test_a_run_killed_at_random_instants_always_resumes_to_a_whole_model(tmp_path, photo_dir, capsys):
    """SIGKILL at 21 seeded random instants, half at a random time after the start (many in the
    start-up, many in a save: a backup every step), half just before or just after the n-th file
    is renamed into place; then `--resume --out RUN` each time, and once more to the end."""
    rng, out = random.Random(30), tmp_path / "run"
    start = ["--data", str(photo_dir), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TINY,
             "--epochs", str(EPOCHS), "--save-every", "1"]
    resume, kills, log = ["--resume", "--out", str(out)], [], []
    for k in range(KILLS):
        argv = resume if (out / "run_config.json").exists() else start
        at_rename = k % 2 == 1
        proc = subprocess.Popen([sys.executable, "-c", ANNOUNCED_RENAMES, *argv], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=os.environ | {"RENAME_PAUSE": "0.03" if at_rename else "0"})
        lines, renames, backups = [], threading.Semaphore(0), threading.Semaphore(0)
        reader = threading.Thread(target=read_lines, args=(proc, lines, renames, backups), daemon=True)
        reader.start()
        if at_rename:
            nth, delay = rng.randint(1, MOST_RENAMES), rng.uniform(0, 0.06)  # the rename waits 30 ms
            wait_for(proc, renames, nth, deadline=None)
            time.sleep(delay)
            instant = f"rename {nth} + {delay * 1000:.0f} ms"
        else:
            delay = rng.uniform(0, 8)
            seen = wait_for(proc, backups, MOST_BACKUPS, deadline=time.time() + delay)
            instant = f"{delay:.1f} s" + (f" (backup {seen})" if seen == MOST_BACKUPS else "")
        while argv is start and not (out / "run_config.json").exists() and proc.poll() is None:
            time.sleep(0.01)  # the first kill comes once there is a run to resume
        proc.kill()
        proc.wait()
        reader.join()
        log.append(f"--- kill {k} at {instant}: exit {proc.returncode}\n" + "".join(lines[-15:]))
        ended = proc.returncode == 0 or "finished" in "".join(lines[-3:])  # done before this kill
        assert proc.returncode == -9 or ended, log[-1]
        if ended:
            break
        kills.append(instant)
    done = subprocess.run([sys.executable, "-m", "training.fit", *resume], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 or "finished" in done.stderr, "\n".join(log) + done.stdout + done.stderr
    with capsys.disabled():
        print(f"\n{len(kills)} kills, then resumed: " + "; ".join(kills))
    assert len(kills) >= 20, "\n".join(log)

    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert [h["step"] for h in history] == [STEPS * e for e in range(1, EPOCHS + 1)]  # no step lost or twice
    model = Reconstructor.from_pretrained(out)
    assert model.reconstruct(smooth_image(40, 48, 3)).output.shape == (32, 32, 3)
    assert not (out / "backup").exists() and not [p for p in out.rglob("*") if p.name.startswith(PART_PREFIX)]
    assert json.loads((out / "run_config.json").read_text())["epochs"] == EPOCHS


def wait_for(proc, renames: threading.Semaphore, count: int, deadline: float | None) -> int:
    """Wait until the process has announced `count` renames, ended, or `deadline` passed; how many it did."""
    seen = 0
    while seen < count and proc.poll() is None and (deadline is None or time.time() < deadline):
        if renames.acquire(timeout=0.01):
            seen += 1
    return seen


def read_lines(proc, lines: list, renames: threading.Semaphore, backups: threading.Semaphore) -> None:
    """Collect the process's output; count its renames, and among them its backups' commits."""
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("REPLACING"):
            renames.release()
            if line.rstrip().endswith("training_metadata.json"):
                backups.release()
