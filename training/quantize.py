"""Quantize a model folder's encoder to int8, for `--precision int8` (and "auto" on CPUs with VNNI/AMX).

    python -m training.quantize models/vgg16-block3_conv3 --data ../shared/photos/train \
        [--images 32] [--holdout ../shared/photos/holdout]

Calibrates on --images photos from --data (a seeded sample; use training photos, never held-out
ones), writes FOLDER/encoder.int8.tflite, and with --holdout reconstructs those photos in float32
and in int8 and prints the change in mean PSNR and SSIM, so the speed is never bought blind: a
change beyond --max-psnr-change / --max-ssim-change (0.05 dB / 0.002, the bar bfloat16 meets) takes
the file back out and exits 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recon.startup import require_folders, start_tensorflow_quietly


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="model folder; encoder.int8.tflite is written into it")
    p.add_argument("--data", required=True, help="photos to calibrate on (training photos)")
    p.add_argument("--images", type=int, default=32, help="how many photos to calibrate on")
    p.add_argument("--seed", type=int, default=0, help="which photos: a seeded sample of --data")
    p.add_argument("--holdout", help="photos to check the int8 model on against float32")
    p.add_argument("--max-psnr-change", type=float, default=0.05, help="dB, mean over --holdout")
    p.add_argument("--max-ssim-change", type=float, default=0.002, help="mean over --holdout")
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
from recon.int8 import INT8_ENCODER_FILE, quantize_encoder  # noqa: E402
from recon.metrics import psnr, ssim  # noqa: E402
from recon.pipeline import ModelFolderError, Reconstructor  # noqa: E402
from training.data import find_images  # noqa: E402


def prepared(model: Reconstructor, files: list[Path], desc: str) -> list[np.ndarray]:
    """Each readable file as a (1, S, S, 3) float32 batch at the model's size; unreadable ones skipped."""
    images = []
    for path in tqdm(files, desc=desc, unit="image", leave=False):
        try:
            images.append(model.prepare(load_image(path))[None])
        except ImageLoadError as e:
            print(f"skipped {path}: {e}")
    return images


def holdout_check(model_dir: Path, files: list[Path]) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of float32 and int8 reconstructions of `files`."""
    exact = Reconstructor.from_pretrained(model_dir, precision="float32")
    fast = Reconstructor.from_pretrained(model_dir, precision="int8")
    scores = {}
    for image in prepared(exact, files, "holdout check"):
        for name, model in (("float32", exact), ("int8", fast)):
            output = model.reconstruct_batch(image)[0][0]
            scores.setdefault(f"{name}_psnr", []).append(psnr(image[0], output))
            scores.setdefault(f"{name}_ssim", []).append(ssim(image[0], output))
    return {key: float(np.mean(values)) for key, values in scores.items()}


def main(argv=None) -> Path:
    args = parse_args(argv)
    model_dir = Path(args.model)
    try:
        model = Reconstructor.from_pretrained(model_dir, precision="float32")
    except ModelFolderError as e:
        raise SystemExit(str(e)) from None
    files = find_images(args.data)
    holdout = find_images(args.holdout) if args.holdout else []  # an empty folder says so before the work
    picks = np.random.default_rng(args.seed).permutation(len(files))[:args.images]
    calibration = prepared(model, [files[i] for i in sorted(picks)], "calibration photos")
    if not calibration:
        raise SystemExit(f"no readable photos to calibrate on in {args.data}")
    print(f"quantizing the {model.config.layer} encoder on {len(calibration)} photos from {args.data} (~1 s each)")
    path = model_dir / INT8_ENCODER_FILE
    path.write_bytes(quantize_encoder(model.encoder, calibration))
    print(f"wrote {path} ({path.stat().st_size / 1e3:,.0f} kB)")
    if holdout:
        try:
            check_or_remove(model_dir, path, holdout, args)
        except BaseException:  # unchecked (an error, Ctrl-C) is not kept either
            path.unlink(missing_ok=True)
            raise
    return path


def check_or_remove(model_dir: Path, path: Path, holdout: list[Path], args: argparse.Namespace) -> None:
    s = holdout_check(model_dir, holdout)
    psnr_change, ssim_change = s["int8_psnr"] - s["float32_psnr"], s["int8_ssim"] - s["float32_ssim"]
    print(f"held-out check on {args.holdout}: PSNR {s['float32_psnr']:.3f} -> {s['int8_psnr']:.3f} dB "
          f"({psnr_change:+.3f}), SSIM {s['float32_ssim']:.4f} -> {s['int8_ssim']:.4f} ({ssim_change:+.4f})")
    beyond = []
    if abs(psnr_change) > args.max_psnr_change:
        beyond.append(f"PSNR by {psnr_change:+.3f} dB (--max-psnr-change {args.max_psnr_change})")
    if abs(ssim_change) > args.max_ssim_change:
        beyond.append(f"SSIM by {ssim_change:+.4f} (--max-ssim-change {args.max_ssim_change})")
    if beyond:  # either way: a score that moves is no longer the float32 model's, better or worse
        path.unlink()
        raise SystemExit(f"removed {path}: int8 moves the held-out {' and '.join(beyond)}; "
                         f"this model stays in floating point")


if __name__ == "__main__":
    main()
