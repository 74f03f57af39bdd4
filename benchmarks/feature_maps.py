"""Training from cached whole-photo feature maps against --no-cache: speed per layer, and held-out
quality after the same number of crops.

    python benchmarks/feature_maps.py --data ../shared/photos/train --holdout ../shared/photos/holdout

Speed (per layer): one decoder (the layer's bundled-recipe shape), training steps of batch 16 on
128 px crops, the two paths taking turns in each round, best round kept:
  - feature maps: crops cut from `FeatureMapCache` (decoder step only);
  - --no-cache: the same number of crops cut from the photos in memory, encoded inside the step.
The cache's own build time is printed too, and the feature-map path's rate with the build counted
in, over a run of --amortize-crops crops.

Quality (--quality-layer): two copies of one initial decoder, the same learning-rate schedule,
--quality-crops crops each, one path each; both scored on --holdout at 224 (PSNR, SSIM), as
`training.evaluate` views them (center square).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon.startup import start_tensorflow_quietly  # noqa: E402

start_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from recon import ReconConfig, build_decoder, build_encoder  # noqa: E402
from recon.metrics import psnr, ssim  # noqa: E402
from training.data import (FeatureMapCache, FeatureMapCrops, OnTheFlyCrops, cache_short_sides,  # noqa: E402
                           encode_batches, encoder_cache_id, feature_rms, find_images, hash_split, load_image_set, square_image)
from training.losses import make_loss  # noqa: E402

# the decoders fit trains at each layer (training/train_models_cpu.sh): width, residual blocks, x2 stages
RECIPES = {"block3_conv3": (48, 7, [48, 32]), "block4_conv3": (64, 8, [64, 32, 16]),
           "block5_conv3": (80, 5, [48, 32, 16, 8])}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="training photos (the hash split's training side is used)")
    p.add_argument("--holdout", required=True, help="held-out photos for the quality comparison")
    p.add_argument("--layers", nargs="*", default=list(RECIPES), choices=list(RECIPES),
                   help="layers of the speed rows; none: quality only")
    p.add_argument("--encoder-weights", default="imagenet-torchvision")
    p.add_argument("--precision", default="mixed_bfloat16", help="Keras dtype policy of both paths")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--speed-photos", type=int, default=16, help="photos encoded for the speed rows")
    p.add_argument("--speed-steps", type=int, default=8, help="training steps per path per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--amortize-crops", type=int, default=200_000,
                   help="run length over which the cache's build time is counted in")
    p.add_argument("--quality-layer", default="block4_conv3", choices=list(RECIPES), help="'' to skip")
    p.add_argument("--quality-crops", type=int, default=4096)
    p.add_argument("--quality-seeds", type=int, default=1,
                   help="repeat the quality pair with seeds --seed, --seed + 1, ... (decoder init and crops)")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "recon" / "features"),
                   help="where the quality run's cache is kept (the one training.fit builds is reused)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default="benchmarks/results/feature_maps.json")
    return p.parse_args(argv)


def recipe_config(layer: str, args) -> ReconConfig:
    width, blocks, stages = RECIPES[layer]
    return ReconConfig(layer=layer, image_size=args.image_size, encoder_weights=args.encoder_weights,
                       decoder_width=width, num_res_blocks=blocks, upsample_widths=stages, upsample="pixel_shuffle")


def compiled(cfg: ReconConfig, encoder, initial, end_to_end: bool, lr=1e-3, steps: int = 1000):
    """(model to train, its decoder): the decoder from `initial` weights, alone or behind the encoder."""
    decoder = build_decoder(cfg)
    decoder.set_weights(initial)
    model = keras.Model(encoder.input, decoder(encoder.output)) if end_to_end else decoder
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=make_loss())
    return model, decoder


def speed(layer: str, files, args) -> dict:
    cfg = recipe_config(layer, args)
    encoder = build_encoder(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        maps = FeatureMapCache(Path(tmp), "speed").build(
            encoder, files, cache_short_sides(cfg.image_size, args.crop_size, 3))
        build_seconds = time.perf_counter() - start
        cached = FeatureMapCrops(maps, args.crop_size, 64, args.batch_size, args.seed)
        cfg.feature_scale = feature_rms(cached[0][0])
        images = load_image_set(files, None).images
        live = OnTheFlyCrops(images, args.crop_size, cfg.image_size, 64, args.batch_size, args.seed)
        initial = build_decoder(cfg).get_weights()
        paths = {"feature maps": (compiled(cfg, encoder, initial, False)[0], cached),
                 "no-cache": (compiled(cfg, encoder, initial, True)[0], live)}
        batches = {name: [data[i] for i in range(args.speed_steps)] for name, (_, data) in paths.items()}
        for name, (model, _) in paths.items():  # warm-up: tracing
            model.train_on_batch(*batches[name][0])
        best = {name: float("inf") for name in paths}
        for _ in range(args.rounds):
            for name, (model, _) in paths.items():
                start = time.perf_counter()
                for x, y in batches[name]:
                    model.train_on_batch(x, y)
                best[name] = min(best[name], time.perf_counter() - start)
    crops = args.speed_steps * args.batch_size
    rate = {name: crops / seconds for name, seconds in best.items()}
    per_photo = build_seconds / len(files)
    amortized = args.amortize_crops / (per_photo * args.train_photos + args.amortize_crops / rate["feature maps"])
    return {"layer": layer, "params": paths["feature maps"][0].count_params(),
            "cache_crops_per_s": rate["feature maps"], "no_cache_crops_per_s": rate["no-cache"],
            "speedup": rate["feature maps"] / rate["no-cache"], "build_s_per_photo": per_photo,
            "amortized_crops_per_s": amortized, "amortized_speedup": amortized / rate["no-cache"]}


def holdout_score(decoder, encoder, views: np.ndarray) -> dict:
    outputs = keras.ops.convert_to_numpy(decoder.predict(encode_batches(encoder, views, 4), batch_size=4, verbose=0))
    targets = views.astype(np.float32) / 255
    return {"psnr": float(np.mean([psnr(t, o) for t, o in zip(targets, outputs)])),
            "ssim": float(np.mean([ssim(t, o) for t, o in zip(targets, outputs)]))}


def quality_data(layer: str, train_files, holdout_files, args) -> dict:
    """What every seed of the quality comparison shares, loaded once: the encoder, the cached maps,
    the decoded training photos and the held-out views."""
    cfg = recipe_config(layer, args)
    encoder = build_encoder(cfg)
    sides = cache_short_sides(cfg.image_size, args.crop_size, 3)
    key = FeatureMapCache.key_for(encoder_cache_id(cfg, encoder), train_files, sides)  # fit's cache, if it built one
    cache = FeatureMapCache(Path(args.cache_dir), key)
    maps = cache.open() if cache.is_complete() else cache.build(encoder, train_files, sides)
    images = load_image_set(train_files, "loading train images").images
    views = np.stack([square_image(im, cfg.image_size) for im in load_image_set(holdout_files, None).images])
    return {"layer": layer, "encoder": encoder, "maps": maps, "images": images, "views": views,
            "photos": len(train_files)}


def quality(data: dict, args, seed: int) -> dict:
    """Held-out PSNR/SSIM after the same crops on both paths, from the same initial decoder (`seed`)."""
    layer, encoder, views = data["layer"], data["encoder"], data["views"]
    cfg = recipe_config(layer, args)
    steps = args.quality_crops // args.batch_size
    per_image = -(-args.quality_crops // data["photos"])
    cached = FeatureMapCrops(data["maps"], args.crop_size, per_image, args.batch_size, seed)
    cfg.feature_scale = feature_rms(np.concatenate([cached[i][0] for i in range(min(16, len(cached)))]))
    live = OnTheFlyCrops(data["images"], args.crop_size, cfg.image_size, per_image, args.batch_size, seed)
    keras.utils.set_random_seed(seed)
    initial = build_decoder(cfg).get_weights()
    scores = {}
    for name, data, end_to_end in (("feature maps", cached, False), ("no-cache", live, True)):
        model, decoder = compiled(cfg, encoder, initial, end_to_end, steps=steps)
        start = time.perf_counter()
        for step in range(steps):
            model.train_on_batch(*data[step])
        scores[name] = holdout_score(decoder, encoder, views) | {"train_s": time.perf_counter() - start}
        print(f"  {name}: {scores[name]['psnr']:.2f} dB, SSIM {scores[name]['ssim']:.4f} after "
              f"{steps * args.batch_size} crops ({scores[name]['train_s']:.0f} s)", flush=True)
    return {"layer": layer, "seed": seed, "crops": steps * args.batch_size, "holdout_images": len(views), **scores,
            "psnr_difference": scores["feature maps"]["psnr"] - scores["no-cache"]["psnr"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    keras.config.set_dtype_policy(args.precision)
    train_files = hash_split(find_images(args.data), Path(args.data))[0]
    args.train_photos = len(train_files)
    record = {"args": {k: v for k, v in vars(args).items()}, "speed": [], "quality": None}
    print(f"speed: {args.speed_photos} photos, {args.speed_steps} steps of {args.batch_size} {args.crop_size} px "
          f"crops per path per round, best of {args.rounds}; policy {args.precision}")
    print("| layer | decoder parameters | feature maps (crops/s) | --no-cache (crops/s) | speedup "
          f"| cache build (s per photo) | with the build, over {args.amortize_crops:,} crops |")
    print("|---|---|---|---|---|---|---|")
    for layer in args.layers:
        row = speed(layer, train_files[:args.speed_photos], args)
        record["speed"].append(row)
        print(f"| `{layer}` | {row['params']:,} | {row['cache_crops_per_s']:.1f} | {row['no_cache_crops_per_s']:.1f} "
              f"| {row['speedup']:.1f}x | {row['build_s_per_photo']:.2f} | {row['amortized_speedup']:.1f}x |",
              flush=True)
    if args.quality_layer:
        print(f"quality at {args.quality_layer}: {args.quality_crops} crops per path, held out on {args.holdout}, "
              f"{args.quality_seeds} seed(s)")
        data = quality_data(args.quality_layer, train_files, find_images(args.holdout), args)
        runs = [quality(data, args, args.seed + i) for i in range(args.quality_seeds)]
        differences = np.array([run["psnr_difference"] for run in runs])
        record["quality"] = runs[0] | {"seeds": runs, "psnr_difference_mean": float(differences.mean()),
                                       "psnr_difference_std": float(differences.std(ddof=1)) if len(runs) > 1 else None}
        print(f"feature maps - no-cache: {differences.mean():+.2f} dB held out"
              + (f" (± {differences.std(ddof=1):.2f} over {len(runs)} seeds: "
                 + ", ".join(f"{d:+.2f}" for d in differences) + ")" if len(runs) > 1 else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"results: {out}")
    return record


if __name__ == "__main__":
    main()
