"""Why the pixel-shuffle decoder collapses: live ReLU channels and output spread while it trains.

    python benchmarks/live_units.py --data ../shared/photos/train --variant ours-deep-pixelshuffle
    python benchmarks/live_units.py --data ../shared/photos/train --variant ours-deep

Same crops, seed, loss and learning rate as one epoch of benchmarks/quality.py (it shares its
feature cache). Every 50 steps, on 32 fixed training crops: the fraction of each upsampling stage's
channels that are positive anywhere (a channel at 0 everywhere is dead), and the std of the output
(near 0: the decoder paints one flat colour).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.quality import OURS, build_ours, crop_features  # noqa: E402
from recon.config import ReconConfig  # noqa: E402
from recon.encoder import build_encoder  # noqa: E402
from training.data import CachedCrops, feature_rms, find_images, load_image_set  # noqa: E402
from training.losses import make_loss  # noqa: E402


class LiveUnits(keras.callbacks.Callback):
    """Every `every` steps, record the live fraction of each stage's channels and the output std."""

    def __init__(self, probe: keras.Model, names: list[str], sample: np.ndarray, every: int = 50):
        super().__init__()
        self.probe, self.names, self.sample, self.every = probe, names, sample, every
        self.records: list[dict] = []

    def report(self, step: int) -> None:
        *stages, output = (np.asarray(o) for o in self.probe(self.sample, training=False))
        live = {n: float(np.mean(np.max(s > 0, axis=(0, 1, 2)))) for n, s in zip(self.names, stages)}
        self.records.append({"step": step, "live": live, "output_std": float(np.std(output))})
        print(f"step {step:4d}: live channels " + ", ".join(f"{n} {v:.2f}" for n, v in live.items())
              + f"; output std {np.std(output):.4f}", flush=True)

    def on_train_begin(self, logs=None):
        self.report(0)

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0:
            self.report(batch + 1)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--variant", default="ours-deep-pixelshuffle", choices=list(OURS))
    p.add_argument("--steps", type=int, default=300, help="batches of 8 crops")
    p.add_argument("--every", type=int, default=50, help="steps between reports")
    # the rest are benchmarks/quality.py's defaults, so the crops come from its feature cache
    p.add_argument("--crop-size", type=int, default=96)
    p.add_argument("--crops-per-image", type=int, default=12)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--encoder-weights", default="imagenet-torchvision")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "recon" / "features"))
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)

    cfg = ReconConfig(image_size=args.image_size, encoder_weights=args.encoder_weights)
    encoder = build_encoder(cfg)
    train = load_image_set(find_images(args.data), "loading train images")
    features, targets = crop_features(encoder, cfg, train, args.crop_size, args.crops_per_image, args.seed,
                                      args.cache_dir)
    data = CachedCrops(features[:args.steps * 8], targets[:args.steps * 8], batch_size=8, seed=args.seed)
    scale = feature_rms(features[:256])

    keras.utils.set_random_seed(args.seed)
    decoder = build_ours(cfg, args.variant, scale)
    # the ReLU outputs of the upsampling stages: a separate layer after pixel shuffle, inside the conv otherwise
    suffix = "_relu" if OURS[args.variant].get("upsample") == "pixel_shuffle" else "_conv"
    names = [layer.name for layer in decoder.layers if layer.name.startswith("up") and layer.name.endswith(suffix)]
    probe = keras.Model(decoder.input, [decoder.get_layer(n).output for n in names] + [decoder.output])
    # the learning rate follows one quality.py epoch over all the crops, however few steps run here
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, len(features) // 8, alpha=0.05)
    decoder.compile(optimizer=keras.optimizers.Adam(schedule), loss=make_loss(0.8, 0.0, encoder, scale))
    data.set_epoch(0)
    live_units = LiveUnits(probe, names, features[:32].astype(np.float32), every=args.every)
    decoder.fit(data, epochs=1, verbose=0, callbacks=[live_units])
    return live_units.records


if __name__ == "__main__":
    main()
