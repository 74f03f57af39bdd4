"""Quality benchmark: our decoder against the original project's, same encoder, data, budget and seed.

    python benchmarks/quality.py --data ../shared/photos/train --holdout ../shared/photos/holdout
    python benchmarks/quality.py ... --quick          # a few seconds of training, for the test

The original decoder: Conv2DTranspose(128,3,s2,relu) -> Conv2DTranspose(64,3,s2,relu) ->
Conv2D(3,3,sigmoid) on raw block3_conv3 features, MSE, Adam 1e-4; run again at the best learning
rate from a short search, so our gain is not an artefact of its learning rate. Every decoder sees
the same cached crops in the same order (images seen = crops x epochs) and is scored on the
held-out photos at 224 with recon.metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recon.config import ReconConfig  # noqa: E402
from recon.decoder import build_decoder  # noqa: E402
from recon.encoder import build_encoder  # noqa: E402
from recon.metrics import image_metrics  # noqa: E402
from training.data import (CachedCrops, FeatureCache, encode_batches, feature_rms, find_images,  # noqa: E402
                           load_image_set, square_image)
from training.losses import make_loss  # noqa: E402
from training.plots import plot_reconstructions  # noqa: E402

# name -> ReconConfig overrides for our decoder variants (all <= the original's parameters)
OURS = {
    "ours": {},
    "ours-pixelshuffle": {"upsample": "pixel_shuffle", "upsample_widths": [16, 16]},
    "ours-wide": {"decoder_width": 86, "num_res_blocks": 2},
    "ours-deep": {"decoder_width": 48, "num_res_blocks": 7, "upsample_widths": [48, 32]},
    # the same, upsampling by pixel shuffle instead of resize-conv (about the same parameter count)
    "ours-deep-pixelshuffle": {"decoder_width": 48, "num_res_blocks": 7, "upsample": "pixel_shuffle",
                               "upsample_widths": [16, 16]},
    # the same, with residual blocks NOT starting as the identity (the usual Glorot init everywhere)
    "ours-deep-glorot": {"decoder_width": 48, "num_res_blocks": 7, "upsample_widths": [48, 32],
                         "residual_init": "glorot_uniform"},
    # wider upsampling stages, paid for with one residual block fewer (318,451 parameters)
    "ours-wide-stages": {"decoder_width": 48, "num_res_blocks": 6, "upsample_widths": [64, 48]},
    # the same, trained with the feature-matching term on top of L1+SSIM (the encoder runs in the loss)
    "ours-deep-perceptual": {"decoder_width": 48, "num_res_blocks": 7, "upsample_widths": [48, 32],
                             "perceptual_weight": 0.1},
}
TRAINING_ONLY = ("residual_init", "perceptual_weight")  # variant keys that are not ReconConfig fields


def build_ours(cfg: ReconConfig, variant: str, scale: list[float]) -> keras.Model:
    overrides = {k: v for k, v in OURS[variant].items() if k not in TRAINING_ONLY}
    residual_init = OURS[variant].get("residual_init")
    decoder = build_decoder(ReconConfig(**(cfg.to_dict() | overrides | {"feature_scale": scale})))
    if residual_init:
        for layer in decoder.layers:
            if layer.name.startswith("res") and layer.name.endswith("_conv2"):
                layer.kernel.assign(keras.initializers.get(residual_init)(layer.kernel.shape))
    return decoder


def build_original_decoder(channels: int) -> keras.Model:
    """The original project's decoder (two transposed convs, about 370k parameters at 256 channels)."""
    inputs = keras.Input((None, None, channels))
    x = layers.Conv2DTranspose(128, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Conv2D(3, 3, padding="same", activation="sigmoid")(x), name="original")


def crop_features(encoder, cfg: ReconConfig, train, crop_size: int, crops_per_image: int, seed: int,
                  cache_dir) -> tuple[np.ndarray, np.ndarray]:
    """(features, target crops) of the training crops, from the feature cache (built on first use)."""
    key = FeatureCache.key_for({"layer": cfg.layer, "weights": cfg.encoder_weights}, train.files,
                               crop_size, cfg.image_size, crops_per_image, seed)
    cache = FeatureCache(Path(cache_dir), key)
    return cache.open() if cache.is_complete() else cache.build(
        encoder, train.images, crop_size, cfg.image_size, crops_per_image, seed)


def score(decoder, holdout_features, holdout_images) -> tuple[np.ndarray, dict]:
    """(outputs, {"psnr"|"ssim"|"lpips": (mean, std)}) of `decoder` on the held-out images."""
    outputs = np.concatenate([keras.ops.convert_to_numpy(decoder(holdout_features[i:i + 4], training=False))
                              for i in range(0, len(holdout_features), 4)])
    scores = [image_metrics(x, y) for x, y in zip(holdout_images, outputs)]
    return outputs, {k: (float(np.mean([s[k] for s in scores])), float(np.std([s[k] for s in scores])))
                     for k in ("psnr", "ssim", "lpips")}


class HeldoutCurve(keras.callbacks.Callback):
    """Held-out PSNR and SSIM every `every` steps, over all epochs: where does training flatten?"""

    def __init__(self, holdout_features, holdout_images, every: int, data: CachedCrops):
        super().__init__()
        self.holdout, self.every = (holdout_features, holdout_images), every
        self.batch_size, self.crops_per_epoch = data.batch_size, len(data.targets)
        self.step, self.epochs_done, self.points = 0, 0, []

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            seen = self.epochs_done * self.crops_per_epoch + min((batch + 1) * self.batch_size, self.crops_per_epoch)
            result = score(self.model, *self.holdout)[1]
            self.points.append({"crops_seen": seen, "psnr": result["psnr"][0], "ssim": result["ssim"][0]})
            print(f"    {seen:>7,} crops seen: held-out {result['psnr'][0]:.2f} dB, SSIM {result['ssim'][0]:.4f}",
                  flush=True)

    def on_train_end(self, logs=None):
        self.epochs_done += 1  # train_and_score runs fit() once per epoch


def train_and_score(build, loss, lr, data, epochs, holdout_features, holdout_images, seed, curve_every=0):
    """Build a decoder with `build()` from a freshly seeded RNG, so every decoder starts from the same
    random state whatever was built or trained before it; train it on `data`; score it on the holdout
    (also every `curve_every` steps while it trains, when given: the result's "curve").
    Returns (holdout outputs, scores, parameter count)."""
    keras.utils.set_random_seed(seed)
    decoder = build()
    schedule = keras.optimizers.schedules.CosineDecay(lr, len(data) * epochs, alpha=0.05) if lr else None
    decoder.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    curve = [HeldoutCurve(holdout_features, holdout_images, curve_every, data)] if curve_every else []
    start = time.time()
    for epoch in range(epochs):
        data.set_epoch(epoch)
        decoder.fit(data, epochs=1, verbose=0, callbacks=curve)
    seconds = time.time() - start  # includes the curve's scoring, when asked for
    outputs, result = score(decoder, holdout_features, holdout_images)
    result["train_seconds"] = round(seconds, 1)
    if curve:
        result["curve"] = curve[0].points
    print(f"  {decoder.name} at lr {lr:g}, {epochs} epoch(s): {result['psnr'][0]:.2f} dB, SSIM {result['ssim'][0]:.4f} "
          f"({seconds:.0f} s)", flush=True)
    return outputs, result, decoder.count_params()


def plot_curves(results: dict, crop_size: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, result in results.items():
        if result.get("curve"):
            ax.plot([p["crops_seen"] / 1000 for p in result["curve"]], [p["psnr"] for p in result["curve"]],
                    "o-", ms=3, label=name)
    ax.set_xlabel(f"training crops seen (thousands, {crop_size} px)")
    ax.set_ylabel("held-out PSNR at 224 (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--holdout", required=True)
    p.add_argument("--out", default="runs/quality")
    p.add_argument("--crop-size", type=int, default=96)
    p.add_argument("--crops-per-image", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--encoder-weights", default="imagenet-torchvision")
    p.add_argument("--variants", default="ours", help=f"comma list of {list(OURS)}")
    p.add_argument("--lr-search", default="3e-4,1e-3,3e-3", help="learning rates tried for the original")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "recon" / "features"))
    p.add_argument("--limit", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-original", action="store_true", help="train only our variants (ablations)")
    p.add_argument("--curve-every", type=int, default=0,
                   help="also score the holdout every N steps (batches of 8) and plot PSNR against crops seen")
    p.add_argument("--quick", action="store_true", help="tiny sizes and budget (for tests)")
    args = p.parse_args(argv)
    if args.quick:
        args.crop_size, args.crops_per_image, args.epochs, args.image_size = 32, 2, 1, 32
        args.lr_search = "1e-3"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    cfg = ReconConfig(image_size=args.image_size, encoder_weights=args.encoder_weights)
    encoder = build_encoder(cfg)
    train = load_image_set(find_images(args.data, args.limit), "loading train images")
    holdout = load_image_set(find_images(args.holdout), "loading holdout images")
    features, targets = crop_features(encoder, cfg, train, args.crop_size, args.crops_per_image, args.seed,
                                      args.cache_dir)
    data = CachedCrops(features, targets, batch_size=8, seed=args.seed)
    holdout_u8 = np.stack([square_image(im, args.image_size) for im in holdout.images])
    holdout_features = encode_batches(encoder, holdout_u8)
    holdout_images = holdout_u8.astype(np.float32) / 255.0
    scale = feature_rms(features[:256])
    seen = len(targets) * args.epochs
    print(f"budget: {seen} crops of {args.crop_size}px seen by every decoder; "
          f"scored on {len(holdout_images)} held-out images at {args.image_size}")

    results, outputs, params, search = {}, {}, {}, {}
    if not args.no_original:
        mse = keras.losses.MeanSquaredError()
        original = partial(build_original_decoder, cfg.channels)
        name = "original (lr 1e-4)"
        outputs[name], results[name], params[name] = train_and_score(original, mse, 1e-4, data, args.epochs,
                                                                     holdout_features, holdout_images, args.seed,
                                                                     args.curve_every)
        # a short search (a third of the budget) for the original's best learning rate
        for lr in [float(v) for v in args.lr_search.split(",")]:
            short = max(1, args.epochs // 3)
            search[lr] = train_and_score(original, mse, lr, data, short,
                                         holdout_features, holdout_images, args.seed)[1]["psnr"][0]
            print(f"  lr search: original at lr {lr:g}, {short} epoch(s): {search[lr]:.2f} dB")
        best_lr = max(search, key=search.get)
        name = f"original (lr {best_lr:g})"
        outputs[name], results[name], params[name] = train_and_score(original, mse, best_lr, data, args.epochs,
                                                                     holdout_features, holdout_images, args.seed,
                                                                     args.curve_every)
    for variant in args.variants.split(","):
        loss = make_loss(0.8, OURS[variant].get("perceptual_weight", 0.0), encoder, scale)
        outputs[variant], results[variant], params[variant] = train_and_score(
            partial(build_ours, cfg, variant, scale), loss, 1e-3, data, args.epochs, holdout_features,
            holdout_images, args.seed, args.curve_every)

    print(f"\n{'decoder':<24}{'params':>9}{'PSNR (dB)':>16}{'SSIM':>18}{'train s':>9}")
    for k, r in results.items():
        print(f"{k:<24}{params[k]:>9,}{r['psnr'][0]:>9.2f} ± {r['psnr'][1]:<4.2f}"
              f"{r['ssim'][0]:>10.4f} ± {r['ssim'][1]:<5.3f}{r['train_seconds']:>9.0f}")
    def best(names):
        return max(names, key=lambda k: results[k]["psnr"][0])

    ours = best(k for k in results if not k.startswith("original"))
    # against the best original run; with --no-original, against the best other variant
    rivals = [k for k in results if k.startswith("original")] or [k for k in results if k != ours] or [ours]
    base = best(rivals)
    gain = {m: results[ours][m][0] - results[base][m][0] for m in ("psnr", "ssim")}
    print(f"\n{ours} vs {base}: {gain['psnr']:+.2f} dB PSNR, {gain['ssim']:+.4f} SSIM")
    record = {"budget_crops_seen": seen, "crop_size": args.crop_size, "lr_search": search,
              "params": params, "results": results, "best_original": base, "best_ours": ours, "gain": gain,
              "command": " ".join(sys.argv)}
    (out / "quality.json").write_text(json.dumps(record, indent=1) + "\n")
    rows = []
    for i in range(min(4, len(holdout_images))):
        x = holdout_images[i]
        rows += [(f"{holdout.files[i].name}: {k}", x, outputs[k][i], image_metrics(x, outputs[k][i]))
                 for k in dict.fromkeys((base, ours))]
    plot_reconstructions(rows, out / "quality_comparison.png")
    if args.curve_every:
        plot_curves(results, args.crop_size, out / "heldout_curve.png")
    return record


if __name__ == "__main__":
    main()
