"""Score a model folder on a folder of images it never trained on.

    python -m training.evaluate --model models/vgg16-block3_conv3 --data ../shared/photos/holdout

Images are center-cropped to square and resized to the model's size (or kept at their own size,
rounded to the stride, with --native). Files the model trained on (by content hash, from the
run's split.json) are never scored. Results (metrics_summary.json, histograms,
sample_reconstructions.png) go into the model folder, where the app's Model tab and the model card
read them, unless --save-dir names another folder.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from recon.precision import PRECISIONS
from recon.startup import require_folders, start_tensorflow_quietly

METRICS = ("psnr", "ssim", "lpips", "mse")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/vgg16-block3_conv3", help="model folder")
    p.add_argument("--data", required=True, help="folder of images to score")
    p.add_argument("--num-samples", type=int, default=300, help="score at most this many images")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--save-dir", help="where to write results (default: the model folder itself, whose "
                                      "metrics_summary.json the app's Model tab and the model card show)")
    p.add_argument("--native", action="store_true", help="score at each image's own size")
    p.add_argument("--seed", type=int, default=0, help="picks the sample when there are more images")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="what the model computes in (default: float32, the model's own scores). auto: the "
                        "folder's int8 file (encoder, and the decoder's residual blocks where it holds them) "
                        "where the CPU has VNNI/AMX, the rest in bfloat16 on CPUs with AVX512-BF16/AMX; "
                        "metrics stay float64")
    args = p.parse_args(argv)
    require_folders(p, {"--model": args.model, "--data": args.data})
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answer now, before TensorFlow loads (seconds)
    start_tensorflow_quietly()

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from recon.metrics import image_metrics  # noqa: E402
from recon.pipeline import ModelFolderError, Reconstructor  # noqa: E402
from training.data import file_sha1, find_images, load_image_set  # noqa: E402
from training.plots import plot_histogram, plot_history, plot_reconstructions  # noqa: E402


def nan_to_null(record: dict) -> dict:
    return {k: None if v != v else v for k, v in record.items()}


def trained_hashes(model_dir: Path) -> set[str]:
    """SHA-1 of every photo the model trained on, from its run's split.json (none without one).

    Raises:
        SystemExit: a split.json that cannot be read as one (scoring would then count training photos).
    """
    split = model_dir / "split.json"
    if not split.is_file():
        return set()
    try:
        hashes = {entry["sha1"] for entry in json.loads(split.read_text())["train"]}
    except (OSError, ValueError, RecursionError, KeyError, TypeError) as e:
        raise SystemExit(f"{split} is not a split of training photos ({type(e).__name__}: {e}); move it away to "
                         "score every photo") from None
    if not all(isinstance(h, str) for h in hashes):
        raise SystemExit(f"{split} is not a split of training photos (a sha1 that is not a string)")
    return hashes


def main(argv=None) -> dict:
    args = parse_args(argv)
    model_dir = Path(args.model)
    try:
        model = Reconstructor.from_pretrained(model_dir, precision=args.precision)
    except ModelFolderError as e:
        raise SystemExit(f"--model: {e}") from None
    print(f"model: {model.describe()}")

    files = find_images(args.data)
    seen = trained_hashes(model_dir)
    unseen = [p for p in files if file_sha1(p) not in seen]
    if len(unseen) < len(files):
        print(f"excluded {len(files) - len(unseen)} image(s) the model trained on")
    if len(unseen) > args.num_samples:  # a random sample; an unreadable pick is replaced by the next
        unseen = [unseen[i] for i in np.random.default_rng(args.seed).permutation(len(unseen))]
    wanted = min(args.num_samples, len(unseen))
    # decoded batch by batch (a CelebA-HQ folder at 1024 px would take 3 MB a photo in memory)
    per_image, samples, skipped, start = [], [], [], 0
    size = "native" if args.native else "trained"
    with tqdm(total=wanted, desc="scoring", unit="img", leave=False, disable=None) as bar:  # a bar on a terminal
        while len(per_image) < wanted and start < len(unseen):
            batch = unseen[start:start + min(args.batch_size, wanted - len(per_image))]
            start += len(batch)
            images = load_image_set(batch, desc=None)
            for path, reason in images.skipped:
                tqdm.write(f"skipped {reason}")
                skipped.append({"file": path.name, "reason": reason})
            inputs = [model.prepare(im, size) for im in images.images]
            if args.native or not inputs:  # native sizes differ, so one at a time
                outputs = [model.reconstruct_batch(x[None])[0][0] for x in inputs]
            else:
                outputs = list(model.reconstruct_batch(np.stack(inputs))[0])
            for path, x, y in zip(images.files, inputs, outputs):
                m = image_metrics(x, y)
                per_image.append({"file": path.name} | m)
                if len(samples) < 6:
                    samples.append((path.name, x, y, m))
            bar.update(len(inputs))
    if not per_image:
        raise SystemExit(f"no scorable images in {args.data}")
    save_dir = Path(args.save_dir) if args.save_dir else model_dir
    save_dir.mkdir(parents=True, exist_ok=True)

    # LPIPS is NaN for images smaller than AlexNet takes (--native); those are left out of its mean
    summary = {name: {"mean": float(np.nanmean([r[name] for r in per_image])),
                      "std": float(np.nanstd([r[name] for r in per_image]))} for name in METRICS}
    summary |= {"per_image": per_image, "count": len(per_image), "skipped": skipped, "data": str(args.data),
                "size": "native" if args.native else model.config.image_size, "precision": model.precision_name,
                "model": {"path": str(model_dir), "description": model.describe()} | model.config.to_dict()}
    summary["model"].pop("feature_scale", None)
    # NaN (a metric undefined on a tiny image, or on all of them) is written as null, which JSON has
    summary |= {name: nan_to_null(summary[name]) for name in METRICS}
    summary["per_image"] = [nan_to_null(r) for r in per_image]
    part = save_dir / "metrics_summary.json.part"  # aside, then renamed: a kill leaves the old summary whole
    part.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(part, save_dir / "metrics_summary.json")
    histograms = (("psnr", "PSNR", "dB"), ("ssim", "SSIM", ""), ("lpips", "LPIPS (AlexNet)", "lower is better"))
    for key, label, unit in histograms:
        values = [r[key] for r in per_image if np.isfinite(r[key])]
        if values:
            plot_histogram(values, label, unit, save_dir / f"{key}_histogram.png")
    plot_reconstructions(samples, save_dir / "sample_reconstructions.png")
    if (model_dir / "history.json").is_file() and save_dir.resolve() != model_dir.resolve():  # the folder has loss_curve.png
        try:
            plot_history(json.loads((model_dir / "history.json").read_text()), save_dir / "training_loss_curve.png")
        except (OSError, ValueError, RecursionError, KeyError, TypeError) as e:
            print(f"no training_loss_curve.png: {model_dir / 'history.json'} is not a training history ({e})")
    def stat(name: str, digits: int) -> str:
        mean, std = summary[name]["mean"], summary[name]["std"]
        return "undefined" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"

    print(f"{len(per_image)} images at {summary['size']}: PSNR {stat('psnr', 2)} dB, SSIM {stat('ssim', 4)}, "
          f"LPIPS {stat('lpips', 4)}, MSE {summary['mse']['mean']:.5f}  -> {save_dir}")
    return summary


if __name__ == "__main__":
    main()
