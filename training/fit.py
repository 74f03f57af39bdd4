"""Train a decoder that inverts a frozen VGG16 layer.

    python -m training.fit --data PHOTOS --out runs/a --crop-size 128 --epochs 10

The run folder is a loadable model folder (config.json, encoder/decoder weights) plus
history.json, loss_curve.png, split.json, run_config.json and samples/ (a grid per epoch).
Ctrl-C loses at most the current epoch: rerun with --resume.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from recon.config import VGG16_LAYERS, ReconConfig
from recon.decoder import build_decoder
from recon.encoder import build_encoder
from recon.metrics import SSIM_MIN_SIZE
from recon.pipeline import Reconstructor
from recon.precision import resolve_precision, training_policy
from training.data import (CachedCrops, FeatureCache, OnTheFlyCrops, encode_batches, feature_rms, find_images,
                           hash_split, image_grid, load_image_set, save_png, save_split, square_image)
from training.losses import make_loss, psnr_metric, ssim_metric
from training.plots import plot_history

LR_FLOOR = 0.05  # the cosine schedule ends at this fraction of the peak learning rate
RECIPE_UPSAMPLE_WIDTHS = (48, 32, 16, 8)  # the bundled recipe's x2 stages, the first ones a layer needs
TRAINING_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.fit", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of training images (searched recursively)")
    p.add_argument("--val-data", help="folder of validation images; default: a hash split of --data")
    p.add_argument("--out", required=True, help="run folder (becomes a model folder)")
    p.add_argument("--layer", default="block3_conv3", choices=list(VGG16_LAYERS))
    p.add_argument("--image-size", type=positive_int, default=224,
                   help="model size; validation images are shown at it")
    p.add_argument("--crop-size", type=positive_int, help="train on random crops of this size (else whole images)")
    p.add_argument("--crops-per-image", type=positive_int, default=8, help="samples per image per epoch")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--minutes", type=float,
                   help="train for this long instead: cosine decay over wall-clock time, --epochs an upper bound")
    p.add_argument("--alpha", type=float, default=0.8, help="loss = alpha*L1 + (1-alpha)*(1-SSIM)")
    p.add_argument("--perceptual-weight", type=float, default=0.0, help="feature-matching loss weight; 0 = off")
    p.add_argument("--decoder-width", type=int, default=48)
    p.add_argument("--res-blocks", type=int, default=7)
    p.add_argument("--upsample-widths", type=lambda s: [int(w) for w in s.split(",")],
                   help="comma-separated channels per x2 stage; default the first of "
                        f"{','.join(map(str, RECIPE_UPSAMPLE_WIDTHS))} the layer's stride needs")
    p.add_argument("--upsample", default="resize", choices=["resize", "pixel_shuffle"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--encoder-weights", default="imagenet-torchvision",
                   help="imagenet-torchvision | imagenet | hed-bsds500 | random | FILE")
    p.add_argument("--precision", default="auto", choices=["auto", *TRAINING_POLICIES, "bfloat16", "float16"],
                   help="Keras dtype policy (bfloat16 and float16 mean their mixed_ policies); auto: "
                        "mixed_bfloat16 on CPUs with AMX/AVX512-BF16, mixed_float16 on CUDA GPUs, else float32. "
                        "Weights are saved float32 either way")
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "recon" / "features"))
    p.add_argument("--no-cache", action="store_true",
                   help="fresh crops every epoch, encoded inside the training step (fastest on a GPU)")
    p.add_argument("--workers", type=int, default=1, help="threads cutting crops with --no-cache")
    p.add_argument("--init-from", help="warm start from a model folder (its config and decoder weights)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="publish the finished model folder")
    p.add_argument("--verbose", type=int, default=1, help="Keras progress: 1 bar, 2 one line per epoch")
    args = p.parse_args(argv)
    for flag, folder in (("--data", args.data), ("--val-data", args.val_data)):
        if folder is not None and not Path(folder).is_dir():
            p.error(f"{flag} {folder}: no such folder")
    if not args.init_from:  # a warm start's layer comes from its folder: checked once that is read
        problem = size_problem(args.layer, args.image_size, args.crop_size)
        if problem:
            p.error(problem)
    return args


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def size_problem(layer: str, image_size: int, crop_size: int | None) -> str | None:
    """Why these sizes cannot train `layer`, or None: every side a multiple of the layer's stride,
    and at least the 11 px the SSIM term of the loss needs."""
    stride = VGG16_LAYERS[layer][1]
    for flag, size in (("--image-size", image_size), ("--crop-size", crop_size)):
        if size is not None and (size % stride or size < SSIM_MIN_SIZE):
            smallest = max(stride, -(-SSIM_MIN_SIZE // stride) * stride)
            return (f"{flag} {size}: {layer} needs a multiple of its stride {stride} of at least {smallest} px "
                    f"(the SSIM loss's window is {SSIM_MIN_SIZE} px)")
    return None


def main(argv=None, callbacks=()) -> Path:
    args = parse_args(argv)
    out = Path(args.out)
    if args.resume:
        if not (out / "run_config.json").is_file() or not (out / "config.json").is_file():
            raise SystemExit(f"--resume: {out} holds no run to resume")
        saved = json.loads((out / "run_config.json").read_text())
        resumed = {"resume": True, "epochs": args.epochs, "verbose": args.verbose}
        args = argparse.Namespace(**({"precision": "float32"} | saved | resumed))  # older runs trained in float32
    elif (out / "history.json").exists() or (out / "backup").exists():
        raise SystemExit(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    elif (out / "run_config.json").exists():  # a start that failed before its first epoch ended
        print(f"{out}: replacing a run that never finished an epoch")
    # the policy resolved here is what run_config.json records, so a resume elsewhere trains the same way
    args.precision = policy = (training_policy(resolve_precision()) if args.precision == "auto"
                               else args.precision if args.precision in TRAINING_POLICIES
                               else training_policy(args.precision))
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.json").write_text(json.dumps(vars(args), indent=2, sort_keys=True) + "\n")
    keras.utils.set_random_seed(args.seed)
    print(f"precision: {policy}")
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # float32 variables, so saved weights do not depend on it
    try:
        return train(args, out, callbacks)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def train(args: argparse.Namespace, out: Path, callbacks=()) -> Path:
    # data: the split is written down so evaluate never scores a training image
    files = find_images(args.data, args.limit)
    if args.val_data:
        train_files, val_files = files, find_images(args.val_data)
    else:
        train_files, val_files = hash_split(files, Path(args.data))
    train = load_image_set(train_files, "loading train images")
    val = load_image_set(val_files, "loading val images")
    for path, reason in train.skipped + val.skipped:
        print(f"skipped {reason}")
    print(f"data: {len(train.images)} train, {len(val.images)} val images "
          f"({len(train.skipped) + len(val.skipped)} unreadable skipped)")
    if not train.images or not val.images:
        raise SystemExit("need at least one readable training and one validation image")
    save_split(out / "split.json", args.data, train, val, "val-data" if args.val_data else "hash split")

    # models: the frozen encoder, and the config that rebuilds the decoder exactly
    start = Reconstructor.from_pretrained(args.init_from) if args.init_from else None
    if start is not None:
        cfg = start.config
        problem = size_problem(cfg.layer, cfg.image_size, args.crop_size)
        if problem:
            raise SystemExit(f"--init-from {args.init_from}: {problem}")
    elif args.resume:
        cfg = ReconConfig.load(out / "config.json")
    else:
        stages = VGG16_LAYERS[args.layer][1].bit_length() - 1
        cfg = ReconConfig(layer=args.layer, image_size=args.image_size, encoder_weights=args.encoder_weights,
                          decoder_width=args.decoder_width, num_res_blocks=args.res_blocks,
                          upsample_widths=args.upsample_widths or list(RECIPE_UPSAMPLE_WIDTHS[:stages]),
                          upsample=args.upsample)
    encoder = build_encoder(cfg)
    encoder_id = {"backbone": cfg.backbone, "layer": cfg.layer, "weights": cfg.encoder_weights,
                  "seed": cfg.encoder_seed, "policy": keras.config.dtype_policy().name}

    if args.no_cache:
        train_data = OnTheFlyCrops(train.images, args.crop_size, cfg.image_size, args.crops_per_image,
                                   args.batch_size, args.seed, workers=args.workers)
        first_crops = np.concatenate([train_data[i][0] for i in range(min(len(train_data), 256 // args.batch_size))])
        sample_features = encode_batches(encoder, first_crops, args.batch_size)
    else:
        key = FeatureCache.key_for(encoder_id, train.files, args.crop_size, cfg.image_size,
                                   args.crops_per_image, args.seed)
        cache = FeatureCache(Path(args.cache_dir), key)
        if cache.is_complete():
            print(f"feature cache: reusing {cache.dir}")
            features, targets = cache.open()
        else:
            features, targets = cache.build(encoder, train.images, args.crop_size, cfg.image_size,
                                            args.crops_per_image, args.seed)
        train_data = CachedCrops(features, targets, args.batch_size, args.seed)
        sample_features = features[:256]
    if cfg.feature_scale is None:
        cfg.feature_scale = feature_rms(sample_features)
    # a warm start trains the loaded decoder's weights on (in this run's precision); a resumed run
    # gets its weights from the backup
    decoder = build_decoder(cfg)
    if start is not None and not args.resume:
        decoder.set_weights(start.decoder.get_weights())
    if not args.resume:  # loadable from the start; a resumed run keeps its best checkpoint
        Reconstructor(cfg, encoder, decoder).save_pretrained(out)

    val_targets = np.stack([square_image(im, cfg.image_size) for im in val.images])
    val_features = encode_batches(encoder, val_targets, args.batch_size)
    val_targets = val_targets.astype(np.float32) / 255.0
    print(f"decoder: {decoder.count_params():,} parameters; encoder {cfg.encoder_weights} {cfg.layer} "
          f"{tuple(val_features.shape[1:])}")
    # With the cache the decoder trains on stored features; without it, on images, through the
    # frozen encoder inside the same graph (one compiled step on a GPU).
    model, val_inputs = (keras.Model(encoder.input, decoder(encoder.output), name="encoder_decoder"), val_targets) \
        if args.no_cache else (decoder, val_features)
    if args.minutes:  # cosine over wall-clock time instead of steps (see TimeBudget)
        schedule = args.lr
    else:
        schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=len(train_data) * args.epochs,
                                                          alpha=LR_FLOOR)
    loss = make_loss(args.alpha, args.perceptual_weight, encoder, cfg.feature_scale)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=[psnr_metric, ssim_metric])

    history = EpochLog(out, args.epochs, train_data)
    best = max((h["val_psnr"] for h in history.records), default=None)
    fit_callbacks = [
        history,
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        BestDecoder(decoder, out / "decoder.weights.h5", best),
        SampleGrid(out / "samples", decoder, val_features[:4], val_targets[:4]),
        *([TimeBudget(args.minutes, args.lr, history)] if args.minutes else []),
        *callbacks,
    ]
    try:
        model.fit(train_data, epochs=args.epochs, validation_data=(val_inputs, val_targets),
                  batch_size=args.batch_size, callbacks=fit_callbacks, verbose=args.verbose)
    except KeyboardInterrupt:
        print(f"\ninterrupted after epoch {len(history.records)}; continue with --resume --out {out}")
        raise
    final = max(history.records, key=lambda h: h["val_psnr"])
    print(f"done: best val PSNR {final['val_psnr']:.2f} dB, SSIM {final['val_ssim']:.4f} at epoch "
          f"{final['epoch']}; model folder {out}")
    if args.push_to_hub:
        from hub import push_to_hub
        print(f"pushed: {push_to_hub(out, args.push_to_hub)}")
    return out


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch, history.json and loss_curve.png rewritten after each epoch.
    It also tells the dataset which epoch starts, so shuffles are reproducible across resumes."""

    def __init__(self, out: Path, epochs: int, dataset):
        super().__init__()
        self.path, self.out, self.epochs, self.dataset = out / "history.json", out, epochs, dataset
        self.records = json.loads(self.path.read_text()) if self.path.exists() else []

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "seconds": round(time.time() - self.start, 1)}
        record |= {k: float(v) for k, v in (logs or {}).items()}
        record |= {"step": int(self.model.optimizer.iterations),
                   "learning_rate": float(self.model.optimizer.learning_rate)}
        self.records = [r for r in self.records if r["epoch"] < epoch + 1] + [record]
        self.path.write_text(json.dumps(self.records, indent=1) + "\n")
        plot_history(self.records, self.out / "loss_curve.png")
        print(f"epoch {epoch + 1}/{self.epochs}: loss {record['loss']:.4f} val_loss {record['val_loss']:.4f} "
              f"val_psnr {record['val_psnr']:.2f} val_ssim {record['val_ssim']:.4f} ({record['seconds']:.0f} s)",
              flush=True)


class TimeBudget(keras.callbacks.Callback):
    """Fit training to a time budget on any hardware: the learning rate follows a cosine over the
    fraction of the budget spent (set at each epoch start, so keep epochs short), and training
    stops when the next epoch would overrun it. A resumed run counts the epochs already logged."""

    def __init__(self, minutes: float, lr: float, history: "EpochLog"):
        super().__init__()
        self.budget, self.lr, self.history = minutes * 60.0, lr, history

    def spent(self) -> float:
        return sum(r["seconds"] for r in self.history.records)

    def on_epoch_begin(self, epoch, logs=None):
        fraction = min(1.0, self.spent() / self.budget)
        cosine = 0.5 * (1.0 + math.cos(math.pi * fraction))
        self.model.optimizer.learning_rate = self.lr * (LR_FLOOR + (1.0 - LR_FLOOR) * cosine)

    def on_epoch_end(self, epoch, logs=None):
        last = self.history.records[-1]["seconds"] if self.history.records else 0.0
        if self.spent() + last > self.budget:
            self.model.stop_training = True


class BestDecoder(keras.callbacks.Callback):
    """Save the decoder's weights (only the decoder's, whatever model trains it) whenever the
    validation PSNR beats the best so far: the model folder always holds the best checkpoint."""

    def __init__(self, decoder, path: Path, best: float | None = None):
        super().__init__()
        self.decoder, self.path, self.best = decoder, path, best

    def on_epoch_end(self, epoch, logs=None):
        psnr = (logs or {}).get("val_psnr")
        if psnr is not None and (self.best is None or psnr > self.best):
            self.best = float(psnr)
            self.decoder.save_weights(self.path)


class SampleGrid(keras.callbacks.Callback):
    """Originals above reconstructions of a few validation images, one PNG per epoch."""

    def __init__(self, folder: Path, decoder, features, targets):
        super().__init__()
        self.folder, self.decoder, self.features, self.targets = folder, decoder, features, targets
        folder.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        outputs = keras.ops.convert_to_numpy(self.decoder(self.features, training=False))
        to_u8 = lambda a: (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
        save_png(image_grid([list(to_u8(self.targets)), list(to_u8(outputs))]),
                 self.folder / f"epoch_{epoch + 1:03d}.png")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
