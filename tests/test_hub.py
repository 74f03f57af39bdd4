"""Hub distribution (`hub`): push, pull, offline cache, model card, safety and token hygiene.

No Hub is reachable from the tests: `hub_server.FakeHub` stands in for the Hub's HTTP protocol on
127.0.0.1, and the real `huggingface_hub` client talks to it through `endpoint=`.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import h5py
import numpy as np
import pytest
from tests.conftest import smooth_image
from huggingface_hub import ModelCard, constants
from PIL import Image

import hub
from hub import HubError, from_pretrained, push_to_hub

ROOT = Path(__file__).resolve().parents[1]
REPO = "me/tiny-inversion"
SECRET = "hf_secret_xyz"


pytestmark = pytest.mark.usefixtures("isolated_hf")  # tests/conftest.py


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny model folder dressed like an evaluated training run (read-only: tests copy it)."""
    from recon import ReconConfig, Reconstructor
    folder = tmp_path_factory.mktemp("run") / "run"
    cfg = ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random", decoder_width=8,
                      num_res_blocks=1, feature_scale=[1.0] * 128)
    Reconstructor(cfg).save_pretrained(folder)
    history = [{"epoch": e, "loss": 0.3, "val_loss": 0.3, "val_psnr": 11.0 + e, "val_ssim": 0.2, "seconds": 60}
               for e in (1, 2)]
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "run_config.json").write_text(json.dumps(
        {"data": "/home/someone/photos/train", "epochs": 2, "crop_size": 32, "crops_per_image": 4,
         "batch_size": 8, "lr": 0.001, "alpha": 0.8, "perceptual_weight": 0.0}))
    (folder / "split.json").write_text(json.dumps(
        {"data": "/home/someone/photos/train", "val_source": "val-data", "train": [{}] * 5, "val": [{}] * 2}))
    (folder / "metrics_summary.json").write_text(json.dumps(
        {"psnr": {"mean": 17.25, "std": 1.5}, "ssim": {"mean": 0.4321, "std": 0.05},
         "mse": {"mean": 0.02, "std": 0.01}, "per_image": [{}] * 3, "data": "photos/holdout"}))
    (folder / "samples").mkdir()
    for epoch in (1, 2):
        Image.fromarray(smooth_image(16, 32, epoch)).save(folder / "samples" / f"epoch_{epoch:03d}.png")
    (folder / "backup").mkdir()
    (folder / "backup" / "latest.weights.h5").write_bytes(b"checkpoint")
    return folder


@pytest.fixture
def model_dir(trained_dir, tmp_path):
    return Path(shutil.copytree(trained_dir, tmp_path / "model"))


def reconstruct(model):
    rec = model.reconstruct(smooth_image(36, 44, 7), size="native")
    return rec.output, rec.features


def test_model_files_match_recon():
    from recon.int8 import INT8_ENCODER_FILE
    from recon.pipeline import MODEL_FILES
    assert hub.MODEL_FILES == MODEL_FILES and hub.INT8_FILE == INT8_ENCODER_FILE


def test_push_pull_is_bit_exact_and_then_works_offline(model_dir, fake_hub, monkeypatch):
    url = push_to_hub(model_dir, REPO, endpoint=fake_hub.url)
    assert url == f"{fake_hub.url}/{REPO}/commit/{fake_hub.repos[REPO]['branches']['main']}"
    assert sorted(fake_hub.files(REPO)) == sorted([*hub.MODEL_FILES, "README.md", "samples.png", "history.json",
                                                    "metrics_summary.json"])  # no backup/, samples/, local paths
    commits = [r for r in fake_hub.requests if r[1].endswith("/commit/main")]
    assert len(commits) == 1

    expected = reconstruct(from_pretrained(model_dir))
    pulled = from_pretrained(REPO, endpoint=fake_hub.url)
    assert all(np.array_equal(a, b) for a, b in zip(reconstruct(pulled), expected))
    assert list(Path(constants.HF_HUB_CACHE).glob("models--me--tiny-inversion/snapshots/*/decoder.weights.h5"))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    requests = len(fake_hub.requests)
    offline = from_pretrained(REPO, endpoint=fake_hub.url)
    assert len(fake_hub.requests) == requests  # answered from the cache alone
    assert all(np.array_equal(a, b) for a, b in zip(reconstruct(offline), expected))


def test_push_to_branch_and_pull_that_revision(model_dir, fake_hub):
    push_to_hub(model_dir, REPO, endpoint=fake_hub.url)
    (model_dir / "README.md").write_text("---\nlicense: mit\n---\n# v2\n")
    push_to_hub(model_dir, REPO, revision="v2", commit_message="second", endpoint=fake_hub.url)
    assert fake_hub.files(REPO, "v2")["README.md"].startswith(b"---\nlicense: mit")
    assert b"# v2" not in fake_hub.files(REPO, "main")["README.md"]
    folder = hub.download(REPO, revision="v2", endpoint=fake_hub.url)
    assert "# v2" in (folder / "README.md").read_text()
    assert from_pretrained(REPO, revision="v2", endpoint=fake_hub.url).config.layer == "block2_conv2"


def test_cli_push_and_pull(model_dir, fake_hub, tmp_path, monkeypatch, capsys):
    from hub import __main__ as cli
    # HF_ENDPOINT is read when huggingface_hub is imported, so hand the CLI's calls the endpoint instead.
    monkeypatch.setattr(cli, "push_to_hub", functools.partial(push_to_hub, endpoint=fake_hub.url))
    monkeypatch.setattr(cli, "download", functools.partial(hub.download, endpoint=fake_hub.url))
    cli.main(["push", str(model_dir), REPO, "--message", "from the CLI"])
    assert capsys.readouterr().out.startswith(f"{fake_hub.url}/{REPO}/commit/")
    cli.main(["pull", REPO, "--to", str(tmp_path / "copy")])
    assert capsys.readouterr().out.strip().endswith(str(tmp_path / "copy"))
    assert all((tmp_path / "copy" / name).is_file() for name in hub.MODEL_FILES)


def test_model_card_has_metrics_samples_and_usage(model_dir, fake_hub):
    push_to_hub(model_dir, REPO, endpoint=fake_hub.url)
    files = fake_hub.files(REPO)
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "keras" and card.data.pipeline_tag == "image-to-image"
    assert {(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results} == {
        ("psnr", 17.25, "held-out"), ("ssim", 0.4321, "held-out")}
    for text in ("| PSNR (dB) | 17.2500 | 1.5000 |", "3 held-out images", "random weights (tests only",
                 "`block2_conv2`", "![samples](samples.png)", "from recon import hub, load_image",
                 f'hub.from_pretrained("{REPO}")', f"python app.py --model {REPO}", "5 training photos", "2 epochs",
                 "40 crops seen"):  # 2 epochs x 5 photos x 4 crops (not steps x batch)
        assert text in card.text
    assert "/home/someone" not in card.content
    usage = card.text.split("```python\n")[1].split("```")[0]
    exec(usage.splitlines()[0], {})  # the snippet's import names what the installed library has
    assert files["samples.png"] == (model_dir / "samples" / "epoch_002.png").read_bytes()  # the last grid


def test_card_labels_hed_weights_and_keeps_an_existing_readme(model_dir):
    from recon import ReconConfig, Reconstructor
    model = Reconstructor.from_pretrained(model_dir)
    model.config = ReconConfig(**{**model.config.to_dict(), "encoder_weights": "hed-bsds500"})
    card = hub.build_model_card(model_dir, REPO, model)
    assert "VGG16 (HED-BSDS500 fine-tune of ImageNet)" in card.text
    (model_dir / "README.md").write_text("# mine\n")
    assert hub.write_model_card(model_dir, REPO, model) is None
    assert (model_dir / "README.md").read_text() == "# mine\n"


def tampered(model_dir: Path, problem: str) -> dict[str, bytes]:
    files = {name: (model_dir / name).read_bytes() for name in hub.MODEL_FILES}
    if problem == "unknown layer":
        files["config.json"] = json.dumps(json.loads(files["config.json"]) | {"layer": "block9_conv9"}).encode()
    elif problem == "unknown backbone":
        files["config.json"] = json.dumps(json.loads(files["config.json"]) | {"backbone": "resnet50"}).encode()
    elif problem == "missing weights":
        del files["decoder.weights.h5"]
    elif problem == "wrong encoder shapes":
        with h5py.File(model_dir / "bad.h5", "w") as f:
            f["block1_conv1/kernel"], f["block1_conv1/bias"] = np.zeros((3, 3, 3, 32)), np.zeros(32)
        files["encoder.weights.h5"] = (model_dir / "bad.h5").read_bytes()
    elif problem == "wrong decoder shapes":
        config = json.loads(files["config.json"]) | {"decoder_width": 16, "upsample_widths": [16]}
        files["config.json"] = json.dumps(config).encode()
    # Never fetched, so never opened: a pickle and code that would leave a mark if run.
    files["exploit.pkl"] = b"cos\nsystem\n(S'touch pwned'\ntR."
    files["model.py"] = b"open('pwned', 'w')"
    return files


@pytest.mark.parametrize("problem, message", [
    ("unknown layer", "unknown vgg16 layer 'block9_conv9'"),
    ("unknown backbone", "unknown backbone 'resnet50'"),
    ("missing weights", "missing decoder.weights.h5"),
    ("wrong encoder shapes", "encoder.weights.h5: dataset block1_conv1/kernel has shape (3, 3, 3, 32), expected (3, 3, 3, 64)"),
    ("wrong decoder shapes", "decoder.weights.h5 does not fit the config's decoder"),
])
def test_bad_repo_gives_a_clear_error_and_runs_nothing(problem, message, model_dir, fake_hub, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_hub.create("me/bad")
    fake_hub.commit("me/bad", tampered(model_dir, problem))
    with pytest.raises(HubError, match="me/bad") as error:
        from_pretrained("me/bad", endpoint=fake_hub.url)
    assert message in str(error.value)
    fetched = {Path(r[1]).name for r in fake_hub.requests if "/resolve/" in r[1]}
    assert fetched <= {*hub.MODEL_FILES, "README.md"}
    assert not list(tmp_path.rglob("pwned")) and not list(tmp_path.rglob("exploit.pkl"))


@pytest.mark.parametrize("name, message", [
    ("me/no-such-model", "neither a local model folder nor a repo on"),
    ("./models/not/here", "not a valid repo id"),
])
def test_unknown_repo_or_path_says_so(name, message, fake_hub):
    with pytest.raises(HubError, match=message):
        from_pretrained(name, endpoint=fake_hub.url)


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable"])
def test_cli_pull_without_network_or_cache_fails_in_one_line(env, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "cache"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT), **env}
    env.pop("HF_TOKEN", None)
    result = subprocess.run([sys.executable, "-m", "hub", "pull", REPO], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: cannot load {REPO}: ")
    assert "not cached in" in lines[0] and f"python -m hub pull {REPO} --to DIR" in lines[0]
    # what to do next, not the command just run again
    assert ("unset hf_hub_offline" if "HF_HUB_OFFLINE" in env else "once the hub can be reached") in lines[0].lower()


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("action", ["push", "pull"])
def test_token_never_appears_in_errors(action, status, model_dir, fake_hub):
    fake_hub.fail_status = status
    with pytest.raises(HubError) as error:
        if action == "push":
            push_to_hub(model_dir, REPO, token=SECRET, endpoint=fake_hub.url)
        else:
            from_pretrained(REPO, token=SECRET, endpoint=fake_hub.url)
    assert fake_hub.requests[0][2]["authorization"] == f"Bearer {SECRET}"  # it was sent...
    assert REPO in str(error.value)
    report = "".join(traceback.format_exception(error.value))
    assert SECRET not in report  # ...and is nowhere in the error or its causes


@pytest.mark.slow
def test_the_suite_ignores_the_callers_hub_settings(tmp_path):
    """With HF_HUB_OFFLINE=1 exported, as many users have it, 14 of these tests used to fail."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty"), "HF_TOKEN": "hf_not_ours"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_hub.py",
                           "-k", "push_pull or push_to_branch or token_never_appears", "--deselect",
                           "tests/test_hub.py::test_the_suite_ignores_the_callers_hub_settings"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


@pytest.mark.parametrize("records, scores", [
    ({"metrics_summary.json": {"psnr": {"mean": "17"}, "per_image": 5, "data": ["x"]},
      "history.json": {"epoch": 1}, "run_config.json": {"crop_size": "32", "crops_per_image": "4" * 50,
                                                        "alpha": "0.8", "minutes": "ten", "lr": [1]},
      "split.json": {"train": 5, "val": "x", "data": {"a": 1}}}, None),
    ({"metrics_summary.json": {"psnr": {"mean": 17.0, "std": "wide"}, "ssim": [0.5], "per_image": {"a": 1}},
      "history.json": [{"val_psnr": "12"}, {"val_psnr": 13.0, "epoch": [2], "seconds": "60"}, 5, None]},
     "| PSNR (dB) | 17.0000 |  |"),
    ({"metrics_summary.json": [1, 2], "history.json": [{"val_psnr": 13.0, "val_ssim": {"x": 1}, "seconds": 10**400}],
      "run_config.json": [1], "split.json": "x"}, "| PSNR (dB) | 13.0000 |"),
    ({"metrics_summary.json": "[" * 100_000, "history.json": {"x": float("nan")}}, None),
])
def test_the_model_card_survives_records_of_the_wrong_types(model_dir, records, scores):
    """metrics_summary.json, history.json, run_config.json and split.json come with folders from strangers too:
    a value of the wrong type counts as absent."""
    for name, value in records.items():
        (model_dir / name).write_text(value if isinstance(value, str) else json.dumps(value))
    card = str(hub.build_model_card(model_dir, REPO))
    assert card.startswith("---") and "## How to use" in card
    assert "4444" not in card and "wide" not in card  # a string is not taken for a number
    assert (scores in card) if scores else "## Evaluation" not in card
