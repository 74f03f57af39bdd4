"""Publish the Gradio demo as a Hugging Face Space: `push_space`, and the pieces it is made of.

A Space is a repo the Hub runs: for `sdk: gradio` it installs requirements.txt on the Python and Gradio
versions that the front matter of its README.md names, and starts `app_file`. So a push carries the
demo's code (app.py, recon/, hub/), requirements.txt, the example photos, the model folders the Space
bundles (only what loading a model needs, plus the card and held-out metrics that the Model tab shows),
and a README.md that pins Gradio to the version installed here, the one the demo is tested with.
Tests, training/, runs/ and caches stay out. A model repo on the Hub is not copied: the Space pulls it
when it starts (the app reads RECON_MODEL, which the push sets as a Space variable), and the card lists
it under `models:` so that the Hub links the two.

The bundled default model (models/vgg16-block3_conv3) always goes along: the app opens on it when no
RECON_MODEL is set, and falls back to it (saying so) when a Hub model cannot be pulled.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its transport errors mean "no network"
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, SpaceCard, SpaceCardData
from huggingface_hub.errors import HFValidationError, OfflineModeIsEnabled, RepositoryNotFoundError

from . import ARCHITECTURE_FILE, INT8_FILE, MODEL_FILES, HubError, _load, _reason
from .card import CARD_FILE

ROOT = Path(__file__).resolve().parents[1]
APP_FILE = "app.py"
# What the demo needs to run, as globs under the checkout: *.py leaves out __pycache__/ and editor files.
CODE_FILES = (APP_FILE, "requirements.txt", "recon/*.py", "hub/*.py", "examples/*")
MODELS_DIR = "models"  # app.MODELS_DIR: every folder under it is in the app's model picker
# app.BUNDLED_MODEL, spelled out: importing app would load Gradio and TensorFlow
DEFAULT_MODEL = f"{MODELS_DIR}/vgg16-block3_conv3"
# Of a model folder: what loading needs (encoder.weights.h5 only where the encoder is not packaged), the
# card and the held-out metrics (both shown in the Model tab). Not run_config.json or split.json (local
# paths), nor samples and plots (megabytes the app never shows).
MODEL_FOLDER_FILES = (*MODEL_FILES, ARCHITECTURE_FILE, INT8_FILE, CARD_FILE, "metrics_summary.json")
# A push replaces what is under these: a module or model dropped here is deleted from the Space too.
# Files elsewhere (added on the Hub by hand) are kept.
MANAGED_DIRS = ("recon/", "hub/", "examples/", f"{MODELS_DIR}/")
PYTHON_VERSION = "3.11"  # what the project is tested on (README "Requirements"), not whatever pushes
MODEL_VARIABLE = "RECON_MODEL"  # app.py's default for --model
SPACE_TITLE = "Reconstruct images from VGG16 features"

__all__ = ["build_space_card", "push_space", "space_files", "space_models"]


def space_models(models=(), root: str | Path = ROOT) -> tuple[list[Path], str | None, str | None]:
    """Sort `--model` values into the folders to bundle, the Hub repo to pull, and the default.

    The first value is what the Space opens on; the rest are bundled folders for the picker. The app
    pulls one Hub model (RECON_MODEL), so at most one value may be a repo, and it must come first.

    Args:
        models: local model folders and/or one Hub repo id; none: just the bundled default.
        root: the checkout whose default model is bundled.

    Returns:
        (folders to bundle under models/, the Hub repo or None, the RECON_MODEL value or None where
        the app's own default applies).

    Example:
        >>> space_models(["me/vgg16-block2-inversion", "runs/block3"])
        ([PosixPath('runs/block3'), PosixPath('.../models/vgg16-block3_conv3')], 'me/vgg16-block2-inversion',
         'me/vgg16-block2-inversion')
    """
    models, folders, repos = [str(m) for m in models], [], []
    for value in models:
        (folders if Path(value).expanduser().is_dir() else repos).append(value)
    if len(repos) > 1 or (repos and models[0] != repos[0]):
        raise HubError(f"cannot publish a Space with {', '.join(repos)}: the app pulls one Hub model, the first "
                       "--model (RECON_MODEL); bundle any other as a folder (python -m hub pull REPO --to DIR)")
    default = Path(root) / DEFAULT_MODEL
    bundled = [Path(f).expanduser() for f in folders]
    names = [f.resolve().name for f in bundled]
    if len(set(names)) < len(names):
        raise HubError(f"cannot publish a Space with two model folders of one name ({', '.join(names)}): the "
                       f"app lists {MODELS_DIR}/ by folder name")
    if default.name not in names:
        bundled.append(default)
    if repos:
        variable = repos[0]
    elif bundled[0].resolve().name == default.name:
        variable = None  # the app opens on models/vgg16-block3_conv3 by itself
    else:
        variable = f"{MODELS_DIR}/{bundled[0].resolve().name}"  # relative: a Space runs in its repo's root
    return bundled, (repos[0] if repos else None), variable


def space_files(model_folders=(), root: str | Path = ROOT) -> dict[str, Path]:
    """Every file a push uploads, but README.md (`build_space_card`): {path in the Space: local file}.

    Args:
        model_folders: the folders to bundle under models/ (from `space_models`); none: just the default.
        root: the checkout to publish.

    Example:
        >>> sorted(space_files())[:3]
        ['app.py', 'examples/LICENSES.md', 'examples/astronaut.jpg']
    """
    root = Path(root)
    files = {p.relative_to(root).as_posix(): p for pattern in CODE_FILES for p in sorted(root.glob(pattern))
             if p.is_file()}
    missing = [pattern for pattern in CODE_FILES if not any(Path(path).match(pattern) for path in files)]
    if missing:
        raise HubError(f"cannot publish {root} as a Space: it has no {', '.join(missing)} "
                       "(not a checkout of the demo?)")
    for folder in [Path(f) for f in model_folders] or [root / DEFAULT_MODEL]:
        for name in MODEL_FOLDER_FILES:
            if (folder / name).is_file():
                files[f"{MODELS_DIR}/{folder.resolve().name}/{name}"] = folder / name
    return dict(sorted(files.items()))


def gradio_version() -> str:
    """The installed Gradio's version: the Space runs the one the demo was tested with here."""
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        raise HubError("cannot publish a Space: gradio is not installed here, so there is no version to pin "
                       "(pip install -r requirements.txt)") from None


def build_space_card(space_id: str, model_repo: str | None = None, bundled=(), default: str | None = None) -> SpaceCard:
    """The Space's README.md: the front matter the Hub reads to build and run it, and a short description.

    Args:
        space_id: "user/name" of the Space.
        model_repo: the Hub model the Space pulls, listed under `models:`; None if it pulls none.
        bundled: names of the model folders under models/.
        default: what the Space opens on (RECON_MODEL), if not the bundled default.

    Example:
        >>> print(build_space_card("me/recon-demo", "me/vgg16-block3-inversion").data.to_yaml())
    """
    data = SpaceCardData(title=SPACE_TITLE, sdk="gradio", sdk_version=gradio_version(), python_version=PYTHON_VERSION,
                         app_file=APP_FILE, models=[model_repo] if model_repo else None, emoji="🔍", colorFrom="gray",
                         colorTo="blue", pinned=False, short_description="What a VGG16 layer keeps of an image")
    opens = f"`{default}`" if default else f"the bundled `{DEFAULT_MODEL}`"
    body = [f"# {SPACE_TITLE}",
            "A frozen VGG16 turns an image into a feature map; a small decoder trained to invert that layer turns it "
            "back into pixels. What survives shows what the layer keeps. Tabs: upload, webcam, the strongest "
            "feature channels, ablations, refinement by feature matching, and the model's held-out scores.",
            f"The Space opens on {opens}"
            + (f" (the `{MODEL_VARIABLE}` variable; if it cannot be pulled, the app falls back to the bundled "
               "model and says so)" if default else "")
            + ". Bundled models, in the picker: " + ", ".join(f"`{name}`" for name in bundled) + ".",
            f"Published with `python -m hub space push {space_id}`: the code, `requirements.txt`, the example "
            f"photos (see `examples/LICENSES.md`) and `{MODELS_DIR}/` are replaced by each push."]
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(body) + "\n")


def push_space(space_id: str, models=(), *, private: bool = False, commit_message: str | None = None,
               token: str | None = None, endpoint: str | None = None, root: str | Path = ROOT) -> str:
    """Publish the demo as a Gradio Space, in one commit (created if needed); return the commit URL.

    Every bundled folder is loaded first and a Hub model is looked up, so a broken model is never
    published. The commit holds `space_files`, README.md (`build_space_card`) and the deletion of
    files under the managed folders that are no longer part of the demo. Then the Space's RECON_MODEL
    variable is set to the first model, or deleted where the bundled default is the first. A private
    Hub model also needs an HF_TOKEN secret in the Space's settings to be pulled there.

    Args:
        space_id: "user/name" of the Space.
        models: local model folders to bundle and/or, first, one Hub model repo; see `space_models`.
        private: make a new Space private (an existing one keeps its visibility).
        commit_message: default "Publish the recon demo (gradio <version>)".
        token: a Hub token with write access; default HF_TOKEN or the one saved by `hf auth login`.
        endpoint: the Hub's URL; default HF_ENDPOINT or https://huggingface.co.
        root: the checkout to publish.

    Example:
        >>> push_space("me/recon-demo", ["me/vgg16-block3-inversion"])
        'https://huggingface.co/spaces/me/recon-demo/commit/3f2a...'
    """
    folders, model_repo, variable = space_models(models, root)
    files = space_files(folders, root)
    card = build_space_card(space_id, model_repo, [f.resolve().name for f in folders], variable)
    api = HfApi(endpoint=endpoint, token=token)
    what = f"cannot publish {space_id}"
    try:
        if model_repo:  # looked up before the (seconds of) model loading below: a typo fails at once
            try:
                api.model_info(model_repo)
            except RepositoryNotFoundError:
                raise HubError(f"{what}: {model_repo} is neither a local model folder nor a model repo on "
                               f"{api.endpoint} (a private repo needs a token: set HF_TOKEN or run `hf auth login`)")
        for folder in folders:
            _load(folder, f"cannot publish {folder} in {space_id}")
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        stale = [path for path in api.list_repo_files(space_id, repo_type="space")
                 if path.startswith(MANAGED_DIRS) and path not in files]
        operations = [*(CommitOperationDelete(path) for path in stale),
                      *(CommitOperationAdd(path, str(local)) for path, local in files.items()),
                      CommitOperationAdd(CARD_FILE, str(card).encode())]
        info = api.create_commit(space_id, operations, repo_type="space",
                                 commit_message=commit_message or f"Publish the recon demo (gradio {gradio_version()})")
        _set_model_variable(api, space_id, variable)
    except (httpx2.HTTPError, HFValidationError, OfflineModeIsEnabled) as e:
        raise HubError(_reason(what, e, api.endpoint, token)) from e
    return info.commit_url


def _set_model_variable(api: HfApi, space_id: str, value: str | None) -> None:
    """Make the Space's RECON_MODEL `value`, or absent for None; an unchanged one is left alone (a
    changed variable restarts the Space)."""
    current = api.get_space_variables(space_id).get(MODEL_VARIABLE)
    if value and (current is None or current.value != value):
        api.add_space_variable(space_id, MODEL_VARIABLE, value,
                               description="the model app.py opens on (set by python -m hub space push)")
    elif value is None and current is not None:
        api.delete_space_variable(space_id, MODEL_VARIABLE)
