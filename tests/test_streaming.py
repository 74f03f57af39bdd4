"""The streaming input pipeline: unreadable files met mid-epoch, resuming mid-epoch on the same
batches, and the feature cache's size limit; tiny images and a random-weights encoder."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from recon.imageio import list_images
from tests.conftest import smooth_image
from tests.test_fit import TINY, run_fit
from training import fit
from training.data import EvalViews, OnTheFlyCrops, StreamingCrops, load_image_set

CORRUPT = b"\xff\xd8\xff\xe0 definitely not a jpeg"


@pytest.fixture
def held_out(tmp_path):
    """Two validation photos in their own folder, so that the split puts every photo_dir file in training."""
    folder = tmp_path / "held"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(40, 44, 50 + i)).save(folder / f"held{i}.png")
    return folder


def test_streamed_batches_are_the_in_memory_ones_and_resume_at_any_batch(photo_dir):
    files = list_images(photo_dir)
    streamed = StreamingCrops(files, 32, 32, 2, 4, seed=5, workers=2)
    in_memory = OnTheFlyCrops(load_image_set(files).images, 32, 32, 2, 4, seed=5)
    assert len(streamed) == len(in_memory) == 5
    for epoch in (0, 1):
        streamed.set_epoch(epoch), in_memory.set_epoch(epoch)
        batches = [streamed[i][0] for i in range(5)]
        for i in range(5):
            np.testing.assert_array_equal(batches[i], in_memory[i][0])
        streamed.set_epoch(epoch, first_batch=3)  # a run resumed after 3 steps of this epoch
        assert len(streamed) == 2
        np.testing.assert_array_equal(streamed[0][0], batches[3])
        np.testing.assert_array_equal(streamed[1][0], batches[4])


def test_an_unreadable_file_is_replaced_by_the_next_readable_one(photo_dir):
    files = list_images(photo_dir)
    (photo_dir / "a" / "img1.png").write_bytes(CORRUPT)  # files[0]
    data = StreamingCrops(files, 32, 32, 2, 4, seed=5)
    batches = [data[i][0] for i in range(len(data))]
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4]  # every batch keeps its size
    assert list(data.take_skipped()) == [str(photo_dir / "a" / "img1.png")] and data.take_skipped() == {}
    again = StreamingCrops(files, 32, 32, 2, 4, seed=5)
    np.testing.assert_array_equal(again[2][0], batches[2])  # and the order stays deterministic
    views = EvalViews(files[:3], 32, 2)
    assert len(views[0][0]) == 1 and len(views[1][0]) == 1  # validation: it drops out of its batch
    assert "corrupt or unreadable" in views.take_skipped()[str(files[0])]


def test_a_file_unreadable_mid_epoch_is_skipped_counted_and_recorded(tmp_path, photo_dir, held_out, capsys):
    # readable when listed and when the first batches were sampled, corrupt by the time training
    # reads it (a disk error, a sync in progress)
    victim = photo_dir / "b" / "img4.png"

    class CorruptAfterFirstStep(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            victim.write_bytes(CORRUPT)

    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "2", "--no-cache", "--workers", "1",
                  "--val-data", str(held_out), callbacks=[CorruptAfterFirstStep()])
    log = capsys.readouterr().out
    lines = [line for line in log.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all(line.endswith(", 1 unreadable skipped") for line in lines)
    assert f"skipped {victim}: corrupt or unreadable image" in log
    history = json.loads((out / "history.json").read_text())
    assert [h["skipped"] for h in history] == [1, 1] and all(np.isfinite(h["loss"]) for h in history)
    skipped = json.loads((out / "skipped.json").read_text())
    assert [(s["file"], s["epoch"]) for s in skipped] == [(str(victim), 1)] and "corrupt" in skipped[0]["reason"]
    split = json.loads((out / "split.json").read_text())
    assert [s["file"] for s in split["skipped"]] == [str(victim)] and len(split["train"]) == 10


class Recorder(keras.callbacks.Callback):
    """What each epoch trained on: the dataset batches served once training began (hashes of their
    crops, by epoch and batch), and the number of steps run."""

    def __init__(self, monkeypatch, crash_at=None):
        super().__init__()
        self.served, self.steps, self.crash_at, self.on = {}, {}, crash_at, False
        original = getattr(StreamingCrops.__getitem__, "original", StreamingCrops.__getitem__)

        def recording(data, index):
            batch = original(data, index)
            if self.on:
                self.served[(data.epoch, data.first_batch + index)] = hashlib.sha1(batch[0].tobytes()).hexdigest()
            return batch

        recording.original = original
        monkeypatch.setattr(StreamingCrops, "__getitem__", recording)

    def on_train_begin(self, logs=None):
        self.on = True
        self.iterations_at_start = int(self.model.optimizer.iterations)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.crash_at:
            raise KeyboardInterrupt  # a crash: Ctrl-C, a killed job, a lost machine

    def on_train_batch_end(self, batch, logs=None):
        self.steps[self.epoch] = self.steps.get(self.epoch, 0) + 1


def test_a_crash_mid_epoch_resumes_on_the_same_batches_losing_at_most_save_every_steps(
        tmp_path, photo_dir, monkeypatch, capsys):
    flags = ["--epochs", "3", "--no-cache", "--workers", "1", "--save-every", "2"]  # 5 steps an epoch
    out, cache = tmp_path / "run", tmp_path / "cache"
    crashed = Recorder(monkeypatch, crash_at=(1, 3))  # after 3 steps of the second epoch (8 in all)
    with pytest.raises(KeyboardInterrupt):
        run_fit(photo_dir, out, cache, *flags, callbacks=[crashed])
    assert "(from the last 2-step backup)" in capsys.readouterr().out
    backup = json.loads((out / "backup" / "training_metadata.json").read_text())
    assert (backup["epoch"], backup["steps_done"], [h["epoch"] for h in backup["history"]]) == (1, 2, [1])

    resumed = Recorder(monkeypatch)
    fit.main(["--out", str(out), "--data", str(photo_dir), "--resume", "--epochs", "3", "--verbose", "0"],
             callbacks=[resumed])
    assert resumed.iterations_at_start == 5 + 2  # 8 steps done, 1 lost: at most --save-every
    assert resumed.steps == {1: 3, 2: 5}  # the rest of the interrupted epoch, then a whole one
    assert sorted(k for k in resumed.served if k[0] == 1) == [(1, 2), (1, 3), (1, 4)]
    assert "epoch 2/3" in capsys.readouterr().out

    straight = Recorder(monkeypatch)
    run_fit(photo_dir, tmp_path / "straight", cache, *flags, callbacks=[straight])
    assert {k: h for k, h in straight.served.items() if k >= (1, 2)} == resumed.served  # same batches, same order
    history, reference = (json.loads((run / "history.json").read_text()) for run in (out, tmp_path / "straight"))
    assert [h["step"] for h in history] == [h["step"] for h in reference] == [5, 10, 15]
    assert [h["learning_rate"] for h in history] == pytest.approx([h["learning_rate"] for h in reference])
    assert history[-1]["val_loss"] == pytest.approx(reference[-1]["val_loss"], rel=1e-3)
    assert not (out / "backup").exists()


def test_a_cache_over_the_limit_streams_instead_and_says_why(tmp_path, photo_dir, capsys):
    out = run_fit(photo_dir, tmp_path / "run", tmp_path / "cache", "--epochs", "1", "--cache-max-gb", "0.0001")
    log = capsys.readouterr().out
    assert re.search(r"feature cache: \d+ photos x 3 scales \(short side \[32, 45, 64\] px\) x 2 flips = [\d.e-]+ GB, "
                     r"over --cache-max-gb 0\.0001: streaming instead", log) and "epoch 1/1: loss" in log
    assert not (tmp_path / "cache").exists()
    assert json.loads((out / "run_config.json").read_text())["no_cache"]  # so a --resume streams too


def test_a_cache_larger_than_the_free_disk_is_not_built(tmp_path, monkeypatch):
    assert fit.cache_problem("1000 views", 68_600_000, 20.0, tmp_path / "not" / "yet") is None
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    problem = fit.cache_problem("1000 views", 68_600_000, 20.0, tmp_path / "not" / "yet")
    assert problem == f"1000 views = 0.0686 GB, more than the 0.0 GB free on {tmp_path}"


def test_jax_fit_trains_on_the_same_batches_with_decoding_threads(tmp_path, photo_dir):
    """Keras 3.15's JAX fit takes a batch from the decoding threads' queue to build the loss and
    metrics, and the queue would then serve every epoch one batch late; fit builds them first."""
    script = f"""
import json, sys
from training import fit
TINY = {TINY!r}
losses = []
for workers in ("1", "2"):
    out = fit.main(["--data", {str(photo_dir)!r}, "--out", {str(tmp_path)!r} + "/run" + workers, "--no-cache",
                    "--epochs", "2", "--workers", workers, *TINY])
    losses.append([h["val_loss"] for h in json.loads((out / "history.json").read_text())])
print("LOSSES", json.dumps(losses))
"""
    env = os.environ | {"KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one_thread, two_threads = json.loads(done.stdout.split("LOSSES ")[-1])
    assert one_thread == two_threads
