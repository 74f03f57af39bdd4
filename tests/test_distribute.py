"""--devices: data-parallel training on several devices (training/distribute.py).

The comparison runs in a subprocess: the backend (JAX) and its virtual CPU devices must be chosen
before keras is imported, and this test process runs TensorFlow (conftest.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from tests.conftest import smooth_image
from training import fit
from training.distribute import EvenBatches, even_indices

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--layer", "block2_conv2", "--image-size", "32", "--crop-size", "32", "--crops-per-image", "2",
        "--encoder-weights", "random", "--decoder-width", "8", "--res-blocks", "1", "--batch-size", "4",
        "--precision", "float32", "--verbose", "0", "--epochs", "2", "--workers", "1"]
# Measured here (2 virtual CPU devices vs 1, same global batch, float32, 6 steps): the history's
# losses and metrics agree to 1.1e-6 relative, decoder weights to 1.5e-7 absolute; data parallelism
# only reorders the sums. (mixed_bfloat16: 3.5e-4 and 8e-4.) A wrong split (a loss scaled by the
# device count, replicas that do not share gradients) is off by far more than these bounds.
RTOL, WEIGHT_ATOL = 1e-4, 1e-5

# Runs in the subprocess: fit on 1 then 2 devices, both paths (features cached; encoder in the
# training step), then the errors, each printed as one JSON line.
SCRIPT = """
import json, sys
from training import fit
data, out, tiny = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for path in ("cached", "no-cache"):
    for devices in ("1", "2"):
        extra = ["--no-cache"] if path == "no-cache" else []
        fit.main(["--data", data, "--out", f"{out}/{path}-{devices}", "--cache-dir", f"{out}/cache",
                  *tiny, *extra, "--devices", devices])
errors = {}
for name, flags in {"indivisible": ["--devices", "2", "--batch-size", "3"], "too_many": ["--devices", "3"]}.items():
    try:
        fit.main(["--data", data, "--out", f"{out}/{name}", *tiny, *flags])
    except SystemExit as e:
        errors[name] = str(e)
print("ERRORS " + json.dumps(errors))
"""


def split_folder(root: Path, train: int, val: int) -> Path:
    for split, count in (("train", train), ("val", val)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(smooth_image(40, 48, 50 * (split == "val") + i)).save(root / split / f"{i}.png")
    return root


def decoder_weights(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


def test_two_devices_match_one_device(tmp_path):
    # 6 images x 2 crops in batches of 4, 4 validation images: every batch splits evenly, so both
    # runs train on exactly the same batches
    data = split_folder(tmp_path / "data", train=6, val=4)
    env = os.environ | {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                        "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(tmp_path), json.dumps(TINY)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "devices: 2 devices (cpu:0, cpu:1), data-parallel: 2 of each batch of 4 per device" in done.stdout
    for path in ("cached", "no-cache"):
        one, two = tmp_path / f"{path}-1", tmp_path / f"{path}-2"
        assert json.loads((two / "run_config.json").read_text())["devices"] == 2
        h1, h2 = (json.loads((run / "history.json").read_text()) for run in (one, two))
        assert [h["step"] for h in h2] == [h["step"] for h in h1] == [3, 6]
        for r1, r2 in zip(h1, h2):
            for key in ("loss", "psnr", "ssim", "val_loss", "val_psnr", "val_ssim", "learning_rate"):
                assert r2[key] == pytest.approx(r1[key], rel=RTOL), (path, r1["epoch"], key)
        w1, w2 = decoder_weights(one / "decoder.weights.h5"), decoder_weights(two / "decoder.weights.h5")
        assert w1.keys() == w2.keys()
        for name in w1:
            np.testing.assert_allclose(w2[name], w1[name], rtol=0, atol=WEIGHT_ATOL, err_msg=f"{path} {name}")
    errors = json.loads(done.stdout.split("ERRORS ", 1)[1])
    assert "--batch-size 3 does not split evenly over 2 devices" in errors["indivisible"]
    assert "--devices 3: only 2 visible" in errors["too_many"]


def test_several_devices_on_tensorflow_say_to_use_jax(tmp_path, photo_dir):
    assert keras.backend.backend() == "tensorflow"  # conftest.py
    with pytest.raises(SystemExit, match="KERAS_BACKEND=jax"):
        fit.main(["--data", str(photo_dir), "--out", str(tmp_path / "run"), *TINY, "--devices", "2"])
    assert fit.parse_args(["--data", str(photo_dir), "--out", "x", "--devices"]).devices == "all"
    assert fit.parse_args(["--data", str(photo_dir), "--out", "x"]).devices is None  # 1: today's path
    with pytest.raises(SystemExit):
        fit.parse_args(["--data", str(photo_dir), "--out", "x", "--devices", "0"])


class Batches(keras.utils.PyDataset):
    """Batches of 4, 4 and 3 samples (the last short, as an epoch's last batch is), numbered."""

    def __init__(self):
        super().__init__(workers=2)
        self.epoch = None

    def __len__(self):
        return 3

    def __getitem__(self, index):
        ids = np.arange(4 * index, min(4 * index + 4, 11))
        return ids, ids * 10

    def set_epoch(self, epoch, first_batch=0):
        self.epoch = epoch


def test_batches_are_rounded_to_the_device_count_and_shared_by_process():
    assert even_indices(4, 2).tolist() == [0, 1, 2, 3]
    assert even_indices(3, 2).tolist() == [0, 1]  # one sample sits out
    assert even_indices(1, 2).tolist() == [0, 0]  # fewer than the devices: repeated
    assert even_indices(5, 4).tolist() == [0, 1, 2, 3] and even_indices(2, 4).tolist() == [0, 1, 0, 1]

    inner = Batches()
    even = EvenBatches(inner, devices=2)
    assert len(even) == 3 and even.workers == 2
    assert [even[i][0].tolist() for i in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert even[2][1].tolist() == [80, 90]
    even.set_epoch(5)  # what the wrapped dataset offers stays reachable
    assert inner.epoch == 5
    # two processes, one device each: each feeds its slice, together the rounded batch
    shares = [EvenBatches(inner, devices=2, processes=2, process_id=p) for p in (0, 1)]
    assert [[s[i][0].tolist() for s in shares] for i in range(3)] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]],
                                                                      [[8], [9]]]
