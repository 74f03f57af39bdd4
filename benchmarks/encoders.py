"""Which encoder weights keep more of the image: the same decoder trained on each, same crops,
budget and seed, scored on held-out photos.

    python benchmarks/encoders.py --data ../shared/photos/train --holdout ../shared/photos/holdout

At block3_conv3, every source gets the bundled decoder architecture (`ours-deep` in quality.py: width 48, 7
residual blocks, [48, 32]), built from the same seed, trained on the same random crops (cut from
the same seed, so only the features differ) in the same order, with the same loss
(0.8 L1 + 0.2 (1-SSIM)) and cosine schedule, and scored with recon.metrics at --image-size.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.quality import build_ours, crop_features, train_and_score  # noqa: E402
from recon.config import ReconConfig  # noqa: E402
from recon.encoder import build_encoder  # noqa: E402
from training.data import (CachedCrops, encode_batches, feature_rms, find_images, load_image_set,  # noqa: E402
                           square_image)
from training.losses import make_loss  # noqa: E402

VARIANT = "ours-deep"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--holdout", required=True)
    p.add_argument("--sources", default="hed-bsds500,imagenet-torchvision", help="comma-separated weight sources")
    p.add_argument("--crop-size", type=int, default=96)
    p.add_argument("--crops-per-image", type=int, default=16)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "recon" / "features"))
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="benchmarks/results/encoders.json")
    args = p.parse_args(argv)
    train = load_image_set(find_images(args.data, args.limit), "loading train images")
    holdout = load_image_set(find_images(args.holdout), "loading holdout images")
    holdout_u8 = np.stack([square_image(im, args.image_size) for im in holdout.images])
    sources = args.sources.split(",")

    results = {}
    for source in sources:
        cfg = ReconConfig(layer="block3_conv3", image_size=args.image_size, encoder_weights=source)
        encoder = build_encoder(cfg)
        features, targets = crop_features(encoder, cfg, train, args.crop_size, args.crops_per_image, args.seed,
                                          args.cache_dir)
        scale = feature_rms(features[:256])
        data = CachedCrops(features, targets, batch_size=8, seed=args.seed)
        _, scores, params = train_and_score(partial(build_ours, cfg, VARIANT, scale), make_loss(0.8), 1e-3, data,
                                            args.epochs, encode_batches(encoder, holdout_u8),
                                            holdout_u8.astype(np.float32) / 255.0, args.seed)
        results[source] = scores | {"params": params, "crops_seen": len(targets) * args.epochs}
        print(f"{source}: {scores['psnr'][0]:.2f} dB, SSIM {scores['ssim'][0]:.4f}, LPIPS {scores['lpips'][0]:.4f} "
              f"({scores['train_seconds']:.0f} s)", flush=True)

    print(f"\n{len(holdout_u8)} held-out photos at {args.image_size}; decoder `{VARIANT}` "
          f"({results[sources[0]]['params']:,} parameters), {results[sources[0]]['crops_seen']:,} crops of "
          f"{args.crop_size} px seen, seed {args.seed}\n")
    print("| encoder weights | PSNR (dB) | SSIM | LPIPS | training s |\n|---|---|---|---|---|")
    for source, r in results.items():
        print(f"| `{source}` | {r['psnr'][0]:.2f} ± {r['psnr'][1]:.2f} | {r['ssim'][0]:.4f} | {r['lpips'][0]:.4f} "
              f"| {r['train_seconds']:.0f} |")
    if len(sources) > 1:
        gain = results[sources[-1]]["psnr"][0] - results[sources[0]]["psnr"][0]
        print(f"\n{sources[-1]} vs {sources[0]}: {gain:+.2f} dB PSNR")
    record = {"results": results, "layer": "block3_conv3", "crop_size": args.crop_size, "seed": args.seed,
              "holdout": str(args.holdout), "command": " ".join(sys.argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
