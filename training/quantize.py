"""Quantize a model folder's encoder (and the decoder's residual trunk) to int8, for `--precision int8`
(and "auto" on CPUs with VNNI/AMX).

    python -m training.quantize models/vgg16-block3_conv3 --data ../shared/photos/train \
        --holdout ../shared/photos/holdout [--images 32] [--scope auto|trunk|encoder]

Calibrates on --images photos from --data (a seeded sample; use training photos, never held-out
ones), reconstructs the --holdout photos in float32 and with the int8 file (the rest in float32 both
times) and prints the change in mean PSNR and SSIM, so the speed is never bought blind. Only if the
change is within --max-psnr-change / --max-ssim-change (0.05 dB / 0.002, the bar bfloat16 meets) is
FOLDER/encoder.int8.tflite written, its SHA-256 recorded in config.json; else exit 1.

--scope auto tries the encoder with the decoder's residual trunk first (faster: see recon.int8),
then the encoder alone, and writes the first that passes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from recon.startup import require_folders, start_tensorflow_quietly


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model folder; encoder.int8.tflite is written into it")
    p.add_argument("--data", required=True, help="photos to calibrate on (training photos)")
    p.add_argument("--images", type=int, default=32, help="how many photos to calibrate on")
    p.add_argument("--seed", type=int, default=0, help="which photos: a seeded sample of --data")
    p.add_argument("--holdout", required=True, help="held-out photos to check the int8 encoder on against float32")
    p.add_argument("--max-psnr-change", type=float, default=0.05, help="dB, mean over --holdout")
    p.add_argument("--max-ssim-change", type=float, default=0.002, help="mean over --holdout")
    p.add_argument("--scope", choices=("auto", "trunk", "encoder"), default="auto",
                   help="what runs in int8. trunk: the encoder and the decoder's residual trunk; encoder: the "
                        "encoder alone; auto: trunk if it passes the held-out check, else encoder")
    args = p.parse_args(argv)
    require_folders(p, {"model": args.model, "--data": args.data, "--holdout": args.holdout})
    if args.images < 1:
        p.error("--images must be at least 1")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answer now, before TensorFlow loads (seconds)
    start_tensorflow_quietly()

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from recon.imageio import ImageLoadError, load_image  # noqa: E402
from recon.int8 import INT8_ENCODER_FILE, Int8Encoder, quantize_encoder  # noqa: E402
from recon.metrics import psnr, ssim  # noqa: E402
from recon.pipeline import CONFIG_FILE, DECODER_FILE, ModelFolderError, Reconstructor, file_sha256  # noqa: E402
from training.data import find_images  # noqa: E402


def prepared(model: Reconstructor, files: list[Path], desc: str) -> list[np.ndarray]:
    """Each readable file as a (1, S, S, 3) float32 batch at the model's size; unreadable ones skipped."""
    images = []
    for path in tqdm(files, desc=desc, unit="image", leave=False, disable=None):  # no bar into a log file
        try:
            images.append(model.prepare(load_image(path))[None])
        except ImageLoadError as e:
            print(f"skipped {path}: {e}")
    return images


def images_in(folder: str, argument: str) -> list[Path]:
    """The images under `folder`; exit naming the argument if there are none."""
    try:
        return find_images(folder)
    except SystemExit as e:
        raise SystemExit(f"{argument}: {e}") from None


def calibration_sample(files: list[Path], count: int, seed: int = 0) -> list[Path]:
    """`count` of `files`, a seeded sample in folder order (benchmarks/int8_scope.py takes the same)."""
    picks = np.random.default_rng(seed).permutation(len(files))[:count]
    return [files[i] for i in sorted(picks)]


def holdout_scores(model: Reconstructor, images: list[np.ndarray], desc: str) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of `model`'s reconstructions of `images` ((1, S, S, 3) batches)."""
    bar = tqdm(images, desc=desc, unit="image", leave=False, disable=None)  # no bar into a log file
    outputs = [model.reconstruct_batch(image)[0][0] for image in bar]
    return {"psnr": float(np.mean([psnr(x[0], y) for x, y in zip(images, outputs)])),
            "ssim": float(np.mean([ssim(x[0], y) for x, y in zip(images, outputs)]))}


def with_int8_file(model: Reconstructor, int8_file: bytes) -> Reconstructor:
    """`model` running `int8_file`, its floating-point part float32 like `model`'s: the held-out
    check is then the same on any CPU."""
    return Reconstructor(model.config, model.encoder, model.decoder, "int8", Int8Encoder(int8_file))


def main(argv=None) -> Path:
    args = parse_args(argv)
    model_dir = Path(args.model)
    try:
        model = Reconstructor.from_pretrained(model_dir, precision="float32")
    except ModelFolderError as e:
        raise SystemExit(str(e)) from None
    holdout = images_in(args.holdout, "--holdout")  # an empty folder says so before the work
    calibration = prepared(model, calibration_sample(images_in(args.data, "--data"), args.images, args.seed),
                           "calibration photos")
    if not calibration:
        raise SystemExit(f"no readable photos to calibrate on in {args.data}")
    held_out = prepared(model, holdout, "held-out photos")
    reference = holdout_scores(model, held_out, "float32 check")
    problems = []
    for scope in ("trunk", "encoder") if args.scope == "auto" else (args.scope,):
        what = f"the {model.config.layer} encoder" + (" with the decoder's residual trunk" if scope == "trunk" else "")
        print(f"quantizing {what} on {len(calibration)} photos from {args.data} (~1 s each)")
        try:
            int8_file = quantize_encoder(model.encoder, calibration, decoder=model.decoder if scope == "trunk" else None)
            problem = check(reference, holdout_scores(with_int8_file(model, int8_file), held_out, "int8 check"), args)
        except Exception as e:  # noqa: BLE001 (the converter raises its own types); the next scope may pass
            problem = f"{type(e).__name__}: {e}"
        if problem is None:
            break
        problems.append(f"{what}: {problem}")
        print(f"not kept: {problem}")
    else:
        kept = (f"{model_dir} keeps its current {INT8_ENCODER_FILE}" if model.int8_file is not None
                else "this model stays in floating point")
        raise SystemExit(f"not written: {'; '.join(problems)}; {kept}")
    # only a checked file reaches the folder, whole (a reader never sees half of it), with its hash in
    # the config, so that a stale or foreign encoder.int8.tflite is never run for this model
    path = model_dir / INT8_ENCODER_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(int8_file)
    os.replace(partial, path)
    model.config.int8_encoder_sha256 = hashlib.sha256(int8_file).hexdigest()
    # a file with the trunk holds a copy of these decoder weights: it is stale once they change
    model.config.int8_decoder_sha256 = file_sha256(model_dir / DECODER_FILE) if scope == "trunk" else None
    model.config.save(model_dir / CONFIG_FILE)
    print(f"wrote {path} ({len(int8_file) / 1e3:,.0f} kB) and its SHA-256 into {CONFIG_FILE}")
    return path


def check(reference: dict[str, float], scores: dict[str, float], args: argparse.Namespace) -> str | None:
    """Print the held-out change; say how it is beyond the limits, if it is (better or worse: a
    score that moves is no longer the float32 model's)."""
    psnr_change, ssim_change = scores["psnr"] - reference["psnr"], scores["ssim"] - reference["ssim"]
    print(f"held-out check on {args.holdout}: PSNR {reference['psnr']:.3f} -> {scores['psnr']:.3f} dB "
          f"({psnr_change:+.3f}), SSIM {reference['ssim']:.4f} -> {scores['ssim']:.4f} ({ssim_change:+.4f})")
    beyond = []  # one digit more than the line above: a change just past a limit shows as past it
    if abs(psnr_change) > args.max_psnr_change:
        beyond.append(f"PSNR by {psnr_change:+.4f} dB (--max-psnr-change {args.max_psnr_change})")
    if abs(ssim_change) > args.max_ssim_change:
        beyond.append(f"SSIM by {ssim_change:+.5f} (--max-ssim-change {args.max_ssim_change})")
    return f"int8 moves the held-out {' and '.join(beyond)}" if beyond else None


if __name__ == "__main__":
    main()
