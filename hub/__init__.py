"""Share model folders through the Hugging Face Hub: `push_to_hub`, `from_pretrained`, `download`.

A model repo is a model folder (config.json, encoder and decoder .weights.h5, and for one's own Keras
model encoder.json, its architecture) plus its model card.
Loading never unpickles or executes anything from a repo: only those files are downloaded, the
config is validated against `recon.ReconConfig` and the weights are read as HDF5 arrays.
`recon` (and with it Keras) is imported only once there is a model to build, so a pull that
cannot reach the Hub fails within a second. Tokens come from `token=`, `HF_TOKEN` or
`hf auth login`, and are blanked out of every message this module raises. `hub.space` publishes the
demo itself as a Hugging Face Space.
"""

from __future__ import annotations

from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its transport errors mean "no network"
from huggingface_hub import HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RepositoryNotFoundError, RevisionNotFoundError)

from .card import CARD_FILE, SAMPLES_FILE, build_model_card, write_model_card, write_samples_image
from recon.int8 import INT8_ENCODER_FILE as INT8_FILE  # no Keras; pushed and pulled where a folder has it
from recon.training_record import TRAINING_FILE  # likewise

# recon.pipeline.MODEL_FILES, spelled out so that a download needs no Keras (a test keeps the two equal).
MODEL_FILES = ("config.json", "encoder.weights.h5", "decoder.weights.h5")
# recon.own_encoder.ARCHITECTURE_FILE, likewise: one's own Keras encoder's architecture, pushed and pulled
# where a folder has it (backbone "keras")
ARCHITECTURE_FILE = "encoder.json"
# The training record the card summarizes, pushed where the folder has it. Never pushed: run_config.json
# and split.json (local paths), backup/ and samples/ (checkpoints, one grid per epoch).
RECORD_FILES = ("history.json", "metrics_summary.json", "loss_curve.png", TRAINING_FILE)

__all__ = ["HubError", "build_model_card", "download", "from_pretrained", "push_to_hub", "write_model_card",
           "write_samples_image"]


class HubError(RuntimeError):
    """A model that cannot be pushed to or loaded from the Hub; the message names the repo and the problem."""


def push_to_hub(model_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None, token: str | None = None, endpoint: str | None = None) -> str:
    """Publish a model folder as one commit to a Hub model repo (created if needed); return the commit URL.

    The folder must load (it is rebuilt first, so a broken model is never published). Where it has
    none, a model card (README.md) and samples.png are written into it before the upload.

    Args:
        model_dir: a model folder, e.g. a finished `training.fit` run.
        repo_id: "user/name" on the Hub.
        private: make a new repo private (an existing repo keeps its visibility).
        revision: branch to commit to, created from main if missing; default main.
        commit_message: default "Upload <layer> reconstruction model".
        token: a Hub token with write access; default HF_TOKEN or the one saved by `hf auth login`.
        endpoint: the Hub's URL; default HF_ENDPOINT or https://huggingface.co.

    Example:
        >>> push_to_hub("runs/block3", "me/vgg16-block3-inversion")
        'https://huggingface.co/me/vgg16-block3-inversion/commit/3f2a...'
    """
    model_dir = Path(model_dir)
    model = _load(model_dir, f"cannot push {model_dir}")
    write_samples_image(model_dir)
    write_model_card(model_dir, repo_id, model)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, constants.DEFAULT_REVISION):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=model_dir, revision=revision,
            allow_patterns=[*MODEL_FILES, ARCHITECTURE_FILE, INT8_FILE, CARD_FILE, SAMPLES_FILE, *RECORD_FILES],
            commit_message=commit_message or f"Upload {model.config.layer} reconstruction model")
    except (httpx2.HTTPError, HFValidationError, OfflineModeIsEnabled) as e:
        raise HubError(_reason(f"cannot push {model_dir} to {repo_id}", e, api.endpoint, token)) from e
    return info.commit_url


def download(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
             local_dir: str | Path | None = None, token: str | None = None, endpoint: str | None = None) -> Path:
    """Fetch the files a model needs (and its card) from a Hub repo; return the local folder.

    Files go to the Hugging Face cache (or `local_dir`), so a second call, and one with
    HF_HUB_OFFLINE=1, is answered from disk.

    Args:
        repo_id: "user/name" on the Hub.
        revision: branch, tag or commit; default main.
        cache_dir: default HF_HUB_CACHE (~/.cache/huggingface/hub).
        local_dir: put plain files into this folder instead of the cache.
        token: for private repos; default HF_TOKEN or `hf auth login`.
        endpoint: the Hub's URL; default HF_ENDPOINT or https://huggingface.co.

    Example:
        >>> download("me/vgg16-block3-inversion")
        PosixPath('/home/me/.cache/huggingface/hub/models--me--vgg16-block3-inversion/snapshots/3f2a...')
    """
    endpoint = endpoint or constants.ENDPOINT
    what = f"cannot load {repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_dir=local_dir,
                                      allow_patterns=[*MODEL_FILES, ARCHITECTURE_FILE, INT8_FILE, CARD_FILE, TRAINING_FILE], token=token, endpoint=endpoint))
    except LocalEntryNotFoundError as e:  # the Hub unreachable (or offline mode) and nothing usable cached
        cache = local_dir or cache_dir or constants.HF_HUB_CACHE
        offline = isinstance(e.__cause__, OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE
        retry = "unset HF_HUB_OFFLINE and try again" if offline else "try again once the Hub can be reached"
        raise HubError(_reason(what, e.__cause__ or e, endpoint, token)
                       + f", and it is not cached in {cache}. {retry[0].upper()}{retry[1:]}; or, on a machine with "
                       f"network, save it as a folder with `python -m hub pull {repo_id} --to DIR`, copy DIR here "
                       "and pass DIR instead") from e
    except RepositoryNotFoundError as e:
        raise HubError(f"{what}: it is neither a local model folder nor a repo on {endpoint} (a private repo "
                       "needs a token: set HF_TOKEN or run `hf auth login`)") from e
    except (httpx2.HTTPError, HFValidationError) as e:
        raise HubError(_reason(what, e, endpoint, token)) from e


def from_pretrained(repo_id_or_dir: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
                    *, token: str | None = None, endpoint: str | None = None, precision: str = "float32"):
    """Load a `recon.Reconstructor` from a local model folder or a Hub repo.

    A local folder is used as is (its errors are `recon.ModelFolderError`); anything else is taken
    as a repo id and fetched with `download`. A repo that cannot be fetched, or whose files do not
    make a valid model, raises `HubError` naming the repo and the problem.

    Args:
        repo_id_or_dir: a model folder, or "user/name" on the Hub.
        revision: branch, tag or commit of the repo; default main.
        cache_dir: default HF_HUB_CACHE.
        token, endpoint: as for `download`.
        precision: as for `recon.Reconstructor.from_pretrained` ("auto" picks the fastest here).

    Example:
        >>> from recon import load_image
        >>> model = from_pretrained("me/vgg16-block3-inversion")
        >>> model.reconstruct(load_image("photo.jpg"), size="native").output.shape
    """
    folder = Path(repo_id_or_dir).expanduser()
    if folder.is_dir():
        from recon import Reconstructor
        return Reconstructor.from_pretrained(folder, precision=precision)
    folder = download(str(repo_id_or_dir), revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint)
    return _load(folder, f"Hub repo {repo_id_or_dir}" + (f" at revision {revision}" if revision else ""), precision)


def _load(folder: Path, source: str, precision: str = "float32"):
    """Rebuild the model in `folder`, turning a bad folder into a HubError that names `source`."""
    from recon import ModelFolderError, Reconstructor

    try:
        return Reconstructor.from_pretrained(folder, precision=precision)
    except ModelFolderError as e:
        raise HubError(f"{source}: {e}") from None


def _reason(what: str, error: BaseException, endpoint: str, token: str | None) -> str:
    """One line saying why a Hub call failed, with any token blanked out."""
    if isinstance(error, OfflineModeIsEnabled):
        why = "HF_HUB_OFFLINE is set, so the Hub is not contacted"
    elif isinstance(error, RevisionNotFoundError):
        why = "no such revision"
    elif isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        why = f"the Hub at {endpoint} answered HTTP {status}"
        if error.server_message:
            why += f" ({error.server_message.strip()})"
        if status in (401, 403):
            why += "; check the token (HF_TOKEN or `hf auth login`) and its write access"
    elif isinstance(error, httpx2.TransportError):
        why = f"the Hub at {endpoint} cannot be reached ({type(error).__name__}: no network?)"
    elif isinstance(error, HFValidationError):
        why = f"not a valid repo id ({error})"
    else:
        why = str(error)
    message = " ".join(f"{what}: {why}".split())
    for secret in {token, get_token()} - {None, ""}:
        message = message.replace(secret, "***")
    return message
