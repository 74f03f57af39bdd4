"""Shared fixtures: tiny images and tiny models, so the suite stays fast on 2 cores."""

import atexit
import os
import shutil
import tempfile

# The suite sets every environment variable it relies on, before anything reads them (huggingface_hub
# reads its variables at import): a caller's HF_HUB_OFFLINE=1, HF_HOME, token or weight-file override
# must not change what the tests see.
for variable in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                 "HF_HUB_DISABLE_TELEMETRY", "HF_TOKEN_PATH", "RECON_HED_BSDS500_FILE", "RECON_TORCHVISION_VGG16_FILE"):
    os.environ.pop(variable, None)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="recon-tests-hf-home-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ["RECON_OPENVINO_CACHE"] = tempfile.mkdtemp(prefix="recon-tests-openvino-")  # tiny models' engines
atexit.register(shutil.rmtree, os.environ["RECON_OPENVINO_CACHE"], ignore_errors=True)
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import socket  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like test image: smooth colour gradients plus a little texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    f = rng.uniform(2, 6, 3)
    im = np.stack([np.sin(f[0] * x + f[1] * y), np.cos(f[1] * x - f[2] * y), np.sin(f[2] * (x + y))], -1)
    im = (im + 1) / 2 * 0.9 + rng.uniform(0, 0.1, (h, w, 3))
    return (im * 255).astype(np.uint8)


def randomize_weights(model) -> None:
    """Every weight of `model` drawn from N(0, 0.2), weight i with seed i: no zero-initialized conv or
    bias left to hide a layer run in the wrong order."""
    model.set_weights([np.random.default_rng(i).normal(0, 0.2, w.shape) for i, w in enumerate(model.get_weights())])


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def photo_dir(tmp_path):
    """Ten small RGB photos of mixed sizes in nested folders."""
    root = tmp_path / "photos"
    for i in range(10):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = 40 + 4 * i, 56 + 3 * i
        Image.fromarray(smooth_image(h, w, i)).save(folder / f"img{i}.{'png' if i % 3 else 'jpg'}")
    return root


@pytest.fixture
def tiny_config():
    from recon import ReconConfig
    return ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random",
                       decoder_width=8, num_res_blocks=1, feature_scale=[1.0] * 128)


@pytest.fixture
def isolated_hf(tmp_path, monkeypatch):
    """For Hub tests: caches and HF_HOME in tmp; no token, no telemetry (whose agent lookup would go
    to huggingface.co)."""
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture
def fake_hub():
    """A local stand-in for the Hugging Face Hub (tests/hub_server.py), serving for one test."""
    from tests.hub_server import FakeHub
    with FakeHub() as server:
        yield server
