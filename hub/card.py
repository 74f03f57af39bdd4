"""The model card (README.md) of a model folder, written from what the folder records about itself.

Sources, each optional except the model: config.json (encoder, layer, decoder), run_config.json,
split.json and history.json (training data and budget), metrics_summary.json (held-out scores
from `training.evaluate`) and samples.png. A card is only ever written where none exists, so a
hand-edited README.md is never overwritten.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from recon.config import NETWORK_NAMES
from recon.int8 import INT8_ENCODER_FILE as INT8_FILE
from recon.training_record import PLATEAU_DB, TRAINING_FILE, TrainingRecord

CARD_FILE = "README.md"
# (key, label) of each score a card reports; the first three go into model-index as well
METRIC_LABELS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("lpips", "LPIPS (AlexNet, lower is better)"),
                 ("mse", "MSE"))
SAMPLES_FILE = "samples.png"
ENCODER_LABELS = {  # (backbone, encoder weights) -> what the card calls the encoder
    ("vgg16", "imagenet-torchvision"): "VGG16 (ImageNet, torchvision weights)",
    ("vgg16", "hed-bsds500"): "VGG16 (HED-BSDS500 fine-tune of ImageNet)",
    ("vgg16", "imagenet"): "VGG16 (ImageNet, Keras Applications)",
    ("alexnet", "imagenet-torchvision"): "AlexNet (ImageNet, torchvision weights)",
    ("efficientnet_lite0", "imagenet"): "EfficientNet-Lite0 (ImageNet, Google's checkpoint)",
}


def encoder_label(cfg) -> str:
    """What a card calls a config's encoder: network and weights."""
    network = NETWORK_NAMES[cfg.backbone]
    if (cfg.backbone, cfg.encoder_weights) in ENCODER_LABELS:
        return ENCODER_LABELS[(cfg.backbone, cfg.encoder_weights)]
    if cfg.encoder_weights == "random":
        return f"{network} with random weights (tests only: not a useful model)"
    return f"{network}, weights from `{Path(cfg.encoder_weights).name}`"


def write_samples_image(folder: str | Path) -> Path | None:
    """Copy the best sample grid to samples.png where the folder has none; return its path, if any.

    Prefers `sample_reconstructions.png` (held-out images, from `training.evaluate`) over the
    last training grid `samples/epoch_NNN.png`.
    """
    folder = Path(folder)
    target = folder / SAMPLES_FILE
    if not target.exists():
        sources = [folder / "sample_reconstructions.png", *sorted((folder / "samples").glob("epoch_*.png"))[-1:]]
        source = next((s for s in sources if s.is_file()), None)
        if source is None:
            return None
        shutil.copyfile(source, target)
    return target


def write_model_card(folder: str | Path, repo_id: str | None = None, model=None) -> Path | None:
    """Write README.md into a model folder unless it has one; return the path if written.

    Args:
        folder: the model folder.
        repo_id: "user/name", for the title and the usage snippet; default the folder's name.
        model: the folder's `recon.Reconstructor`, if already loaded (else it is loaded).

    Example:
        >>> write_model_card("runs/block3", "me/vgg16-block3-inversion")
        PosixPath('runs/block3/README.md')
    """
    path = Path(folder) / CARD_FILE
    if path.exists():
        return None
    build_model_card(folder, repo_id, model).save(path)
    return path


def build_model_card(folder: str | Path, repo_id: str | None = None, model=None,
                     license: str = "other") -> ModelCard:
    """The model card of a model folder: YAML metadata (with a model-index) and a markdown body.

    Args:
        folder: the model folder.
        repo_id: "user/name", for the title and the usage snippet; default the folder's name.
        model: the folder's `recon.Reconstructor`, if already loaded (else it is loaded).
        license: the card's license id (https://hf.co/docs/hub/repositories-licenses).

    Example:
        >>> print(build_model_card("runs/block3", "me/vgg16-block3-inversion").data.to_yaml())
    """
    folder = Path(folder)
    if model is None:
        from recon import Reconstructor
        model = Reconstructor.from_pretrained(folder)
    cfg = model.config
    repo_id = repo_id or folder.resolve().name
    scores = _scores(folder)
    data = ModelCardData(
        library_name="keras", pipeline_tag="image-to-image", license=license,
        tags=["keras", "feature-inversion", "image-reconstruction", cfg.backbone, cfg.layer],
        model_name=repo_id.split("/")[-1],
        eval_results=[EvalResult(task_type="image-to-image", task_name="Image reconstruction from features",
                                 dataset_type="imagefolder", dataset_name=scores["data"],
                                 dataset_split=scores["split"], metric_type=name, metric_name=label,
                                 metric_value=round(scores[name][0], 4))
                      for name, label in METRIC_LABELS[:3] if name in scores] or None,
    )
    sections = [_summary(repo_id, model), _training(folder), _evaluation(scores),
                _samples(folder), _usage(repo_id, cfg.layer, (folder / INT8_FILE).is_file(), cfg.int8_decoder_sha256 is not None)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n")


MAX_RECORD_BYTES = 64_000_000  # history.json of 100k epochs, metrics_summary.json of 100k images


def _read_json(path: Path):
    """A record file of the folder, or None where it is missing, too large or not JSON. The result
    is untrusted (a folder from the Hub): callers check each value's type (`_number`)."""
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _number(value):
    """`value` if it is an int or float (not a bool) within +-1e15 (so finite), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if -1e15 <= value <= 1e15 else None  # False for NaN; exact for a 1000-digit int


def _scores(folder: Path) -> dict:
    """PSNR/SSIM (mean, std) from held-out evaluation if there is one, else from the best validation
    epoch; a value of the wrong type counts as absent."""
    summary = _read_json(folder / "metrics_summary.json")
    if isinstance(summary, dict) and isinstance(summary.get("psnr"), dict) and _number(summary["psnr"].get("mean")) is not None:
        per_image = summary.get("per_image")
        count = len(per_image) if isinstance(per_image, list) else 0
        data = summary.get("data")
        name = Path(data if isinstance(data, str) and data else "held-out photos").name[:100]
        scores = {"split": "held-out", "source": f"{count or 'the'} held-out images, with `training.evaluate`",
                  "data": name}
        for key, _ in METRIC_LABELS:
            value = summary.get(key)
            if isinstance(value, dict) and _number(value.get("mean")) is not None:
                scores[key] = (float(value["mean"]), _number(value.get("std")))
        return scores
    history = _read_json(folder / "history.json")
    epochs = [h for h in history if isinstance(h, dict) and _number(h.get("val_psnr")) is not None] \
        if isinstance(history, list) else []
    if not epochs:
        return {}
    best = max(epochs, key=lambda h: h["val_psnr"])
    scores = {"split": "validation", "data": "validation images",
              "source": f"validation images at the best epoch ({str(best.get('epoch', '?'))[:20]}), which also "
                        "chose the checkpoint",
              "psnr": (float(best["val_psnr"]), None)}
    if _number(best.get("val_ssim")) is not None:
        scores["ssim"] = (float(best["val_ssim"]), None)
    return scores


def _summary(repo_id: str, model) -> str:
    cfg = model.config
    encoder = encoder_label(cfg)
    stages = f"{len(cfg.upsample_widths)} x2 {cfg.upsample} stages {cfg.upsample_widths}" if cfg.upsample_widths \
        else "no upsampling"
    return f"""# {repo_id.split("/")[-1]}

Reconstructs an image from the feature map of a frozen {NETWORK_NAMES[cfg.backbone]} layer (feature inversion): the
encoder turns a photo into `{cfg.layer}` features, and this small Keras decoder turns them back
into pixels.

| | |
|---|---|
| Encoder (frozen) | {encoder} |
| Feature layer | `{cfg.layer}`: stride {cfg.stride}, {cfg.channels} channels |
| Decoder | {model.decoder.count_params():,} parameters: 1x1 reduction to {cfg.decoder_width} channels, \
{cfg.num_res_blocks} residual blocks, {stages} |
| Training size | {cfg.image_size} px; inference at any multiple of {cfg.stride} px |"""


def _training(folder: Path) -> str | None:
    run = _read_json(folder / "run_config.json")
    split = _read_json(folder / "split.json")
    history = _read_json(folder / "history.json")
    if not isinstance(run, dict):
        return None
    history = history if isinstance(history, list) else []
    split = split if isinstance(split, dict) else None
    train = split.get("train") if split else None
    photos = len(train) if isinstance(train, list) else 0
    val = split.get("val") if split else None
    lines = ["## Training", ""]
    if split:
        lines.append(f"- Data: {photos} training photos (`{Path(str(split.get('data'))[:200]).name}`), "
                     f"{len(val) if isinstance(val, list) else 0} validation photos "
                     f"({str(split.get('val_source', 'split'))[:200]})")
    crop_size, per_image = _number(run.get("crop_size")), _number(run.get("crops_per_image"))
    crops = f"random {crop_size} px crops, {per_image} per image per epoch" if crop_size else "whole images"
    seconds = sum(_number(h.get("seconds")) or 0 for h in history if isinstance(h, dict))
    # every epoch serves each training photo crops_per_image times (steps x batch would count the
    # last, partial batch of each epoch as full)
    seen = len(history) * photos * (per_image or 1)
    epochs = len(history) or _number(run.get("epochs"))
    lines.append(f"- Budget: {epochs} epoch{'' if epochs == 1 else 's'} of {crops}, batch {_number(run.get('batch_size'))}"
                 + (f", {seen:,.0f} {'crops' if crop_size else 'images'} seen" if seen else "")
                 + (f", {seconds / 60:.0f} min" if seconds else ""))
    if isinstance(run.get("init_from"), str) and run["init_from"]:
        lines.append(f"- Warm start: from the model folder `{Path(run['init_from'][:4096]).name}` as it was then "
                     "(its own training came before the budget above)")
    record = TrainingRecord.load(folder)
    if record is not None:
        caveat = "; its artefacts may be undertraining, not what the layer keeps" if record.plateaued is False else ""
        lines.append(f"- How sure: {record.summary()}{caveat} (`{TRAINING_FILE}`; flat means under {PLATEAU_DB} dB)")
    minutes, alpha, perceptual = _number(run.get("minutes")), _number(run.get("alpha")), _number(run.get("perceptual_weight"))
    decay = f"cosine decay over {minutes:g} min" if minutes else "cosine decay"
    alpha_shown = 0.8 if alpha is None else alpha
    lines.append(f"- Optimizer: Adam, peak learning rate {_number(run.get('lr'))} with {decay}; loss "
                 f"{_number(run.get('alpha'))} x L1 + {1 - alpha_shown:.2g} x (1 - SSIM)"
                 + (f" + {perceptual} x feature matching" if perceptual else ""))
    return "\n".join(lines)


def _evaluation(scores: dict) -> str | None:
    if not scores:
        return None
    rows = [f"| {label} | {scores[key][0]:.4f} | {'' if scores[key][1] is None else f'{scores[key][1]:.4f}'} |"
            for key, label in METRIC_LABELS if key in scores]
    return "\n".join(["## Evaluation", "", f"On {scores['source']}:", "", "| metric | mean | std |",
                      "|---|---|---|", *rows])


def _samples(folder: Path) -> str | None:
    if not (folder / SAMPLES_FILE).is_file():
        return None
    return f"## Samples\n\nOriginals and their reconstructions:\n\n![samples]({SAMPLES_FILE})"


def _usage(repo_id: str, layer: str, int8: bool = False, int8_trunk: bool = False) -> str:
    what = "the encoder and the decoder's residual blocks" if int8_trunk else "the encoder"
    rest = "the upsampling stages" if int8_trunk else "the decoder"
    int8_note = (f"\n\n`encoder.int8.tflite` is {what} quantized to int8 (`python -m training.quantize`, which keeps it "
                 "only if the held-out PSNR and SSIM move by at most 0.05 dB and 0.002 by default): `precision=\"int8\"`, "
                 f"or `\"auto\"` on CPUs with VNNI or AMX, runs it, with {rest} in floating point. A TFLite flatbuffer "
                 "holds no code either.") if int8 else ""
    return f"""## How to use

With the `recon` library (`pip install .` in a clone of its repository):

```python
from recon import hub, load_image

model = hub.from_pretrained("{repo_id}")  # a recon.Reconstructor, cached after the first download
rec = model.reconstruct(load_image("photo.jpg"), size="native")
rec.output  # (H, W, 3) floats in [0, 1]; rec.features: the {layer} feature map
```

Offline, from a local copy: `recon-hub pull {repo_id} --to my-model` (`python -m hub` in a clone), then
`recon.Reconstructor.from_pretrained("my-model")`. In the demo app: `python app.py --model {repo_id}`.

Loading reads only `config.json` (validated) and the `.weights.h5` arrays: no code or pickles.{int8_note}"""
