"""Speed on this machine: training with and without the feature cache, and inference at 224.

    python benchmarks/speed.py --data ../shared/photos/train [--model models/vgg16-block3_conv3]
    python benchmarks/speed.py --inference-only      # float32 vs auto precision, and the webcam path

Training rows time one epoch of `training.fit`'s two paths after a warm-up epoch: the cache path
(decoder only, on float16 features read from the memory-mapped cache) and the no-cache path (fresh
crops encoded inside the training step). Inference rows time `Reconstructor.reconstruct` (batch 1,
a 224x224 image) and `reconstruct_batch` (batch 8) and the encoder alone, in float32, bfloat16 and the
precision "auto" picks here (recon.precision), plus the demo's webcam handler
(`app.reconstruct_frame` on 640x480 frames: crop, resize, encode, decode, PSNR/SSIM). Each is the
best of --rounds timings, the three precisions taking turns within each round.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from recon import Reconstructor  # noqa: E402
from recon.precision import cpu_flags  # noqa: E402
from training.data import CachedCrops, FeatureCache, OnTheFlyCrops, find_images, load_image_set  # noqa: E402
from training.losses import make_loss  # noqa: E402


def images_per_second(run, count: int, repeats: int = 3) -> float:
    run()  # warm-up: graph tracing, memory allocation
    best = min(timed(run) for _ in range(repeats))
    return count / best


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def training_speeds(model: Reconstructor, images, crop_size: int, crops: int, batch_size: int) -> dict:
    cfg, encoder = model.config, model.encoder
    per_image = max(1, crops // len(images))
    count = per_image * len(images)
    with tempfile.TemporaryDirectory() as cache_dir:
        features, targets = FeatureCache(Path(cache_dir), "speed").build(
            encoder, images, crop_size, cfg.image_size, per_image, seed=0)
        cached = CachedCrops(features, targets, batch_size, seed=0)
        decoder = keras.models.clone_model(model.decoder)
        decoder.compile(optimizer="adam", loss=make_loss())
        with_cache = images_per_second(lambda: decoder.fit(cached, epochs=1, verbose=0), count, repeats=2)
    live = OnTheFlyCrops(images, crop_size, cfg.image_size, per_image, batch_size, seed=0)
    decoder = keras.models.clone_model(model.decoder)
    both = keras.Model(encoder.input, decoder(encoder.output))
    both.compile(optimizer="adam", loss=make_loss())
    without = images_per_second(lambda: both.fit(live, epochs=1, verbose=0), count, repeats=2)
    return {"with feature cache": with_cache, "without cache (encoder in the step)": without}


def inference_speeds(models: dict[str, Reconstructor], size: int, rounds: int = 5) -> dict[str, dict[str, float]]:
    """images/s of each model on each row: the best of `rounds` rounds, the models taking turns in
    each round, so that a slow spell of a shared machine (other processes, a busy neighbour of the
    VM) falls on all of them rather than on whichever ran then."""
    image = np.random.default_rng(0).random((size, size, 3)).astype("float32")
    x = np.random.default_rng(0).random((8, size, size, 3)).astype("float32")
    camera = (np.random.default_rng(0).random((10, 480, 640, 3)) * 255).astype(np.uint8)
    rows = {  # what one call runs, images per call, calls per timing
        "reconstruct(), batch 1": (lambda m: m.reconstruct(image), 1, 10),
        "reconstruct_batch(), batch 8": (lambda m: m.reconstruct_batch(x), 8, 2),
        "encoder only, batch 1": (lambda m: m.encode(x[:1]), 1, 10),
        "encoder only, batch 8": (lambda m: m.encode(x), 8, 2),
        "webcam path (frames/s)": (lambda m: webcam_frames(m, camera), len(camera), 1),
    }
    speeds = {name: {} for name in models}
    for row, (run, count, calls) in rows.items():
        for model in models.values():
            run(model)  # warm-up: graph tracing, memory allocation
        for name, model in models.items():
            speeds[name][row] = 0.0
        for _ in range(rounds):
            for name, model in models.items():
                seconds = timed(lambda: [run(model) for _ in range(calls)])
                speeds[name][row] = max(speeds[name][row], count * calls / seconds)
    return speeds


def webcam_frames(model: Reconstructor, camera: np.ndarray) -> None:
    """The demo's streaming handler on (N, 480, 640, 3) uint8 camera frames (crop, resize, encode,
    decode, PSNR/SSIM)."""
    import app
    stats = {}
    for frame in camera:
        _, _, stats = app.reconstruct_frame(model, frame, stats)


def convolution_flops(model: Reconstructor, size: int) -> dict[str, float]:
    """Floating-point operations (2 per multiply-add) of every Conv2D in encoder and decoder, for
    one size x size image, from each layer's kernel and the output shape it gives on a probe."""
    def count(net: keras.Model, inputs: np.ndarray) -> float:
        convs = [layer for layer in net._flatten_layers(include_self=False) if isinstance(layer, keras.layers.Conv2D)]
        outputs = keras.Model(net.inputs, [layer.output for layer in convs]).predict(inputs, verbose=0)
        return float(sum(2 * out.shape[1] * out.shape[2] * np.prod(layer.kernel.shape)
                         for out, layer in zip(outputs, convs)))
    image = np.zeros((1, size, size, 3), "float32")
    return {"encoder": count(model.encoder, image), "decoder": count(model.decoder, model.encode(image))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="folder of training photos (for the training rows)")
    p.add_argument("--inference-only", action="store_true", help="skip the training rows")
    p.add_argument("--model", default="models/vgg16-block3_conv3")
    p.add_argument("--limit", type=int, default=32, help="photos to crop from")
    p.add_argument("--crops", type=int, default=128, help="crops per timed epoch")
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="inference image size")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per inference row (the best is shown)")
    args = p.parse_args(argv)

    if not args.inference_only and not args.data:
        p.error("--data is needed for the training rows (or pass --inference-only)")
    model = Reconstructor.from_pretrained(args.model)
    print(f"model: {model.describe()}")
    train = {}
    if not args.inference_only:
        images = load_image_set(find_images(args.data, args.limit)).images
        train = training_speeds(model, images, args.crop_size, args.crops, args.batch_size)
        print(f"\ntraining, {args.crop_size} px crops, batch {args.batch_size}:")
        for name, speed in train.items():
            print(f"  {name:<40}{speed:8.1f} images/s")
        print(f"  cache speed-up: {train['with feature cache'] / train['without cache (encoder in the step)']:.1f}x")
    models = {precision: Reconstructor.from_pretrained(args.model, precision=precision)
              for precision in ("float32", "bfloat16", "auto")}
    model = models["auto"]
    infer = inference_speeds(models, args.size, args.rounds)
    infer[f"auto ({model.precision})"] = infer.pop("auto")
    print(f"\ninference at {args.size}x{args.size}, images/s ({model.precision_name} under auto):")
    names = list(infer)
    print(f"  {'':<32}" + "".join(f"{n:>16}" for n in names) + f"{'auto / float32':>16}")
    for row in infer[names[0]]:
        speeds = [infer[n][row] for n in names]
        print(f"  {row:<32}" + "".join(f"{s:>16.1f}" for s in speeds) + f"{speeds[-1] / speeds[0]:>15.2f}x")
    flops = convolution_flops(model, args.size)
    total = sum(flops.values())
    float32_rate = infer[names[0]]["reconstruct(), batch 1"]
    print(f"\nconvolutions per image: {total / 1e9:.1f} GFLOP ({flops['encoder'] / 1e9:.1f} encoder, "
          f"{flops['decoder'] / 1e9:.1f} decoder); float32 at batch 1 sustains {total * float32_rate / 1e9:.0f} GFLOP/s")
    flags = cpu_flags()
    isa = {name: name in flags for name in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "amx_int8")}
    listed = ", ".join(f"{name} {'yes' if present else 'no'}" for name, present in isa.items())
    print(f"\nCPU bfloat16 and int8 instructions: {listed}. "
          + ("Without AMX, oneDNN runs bfloat16 convolutions on AVX512-BF16 dot products, which do at most twice "
             "the multiply-adds of float32 FMAs per instruction: about 2x is the ceiling for bfloat16 convolutions (int8 on VNNI goes further)."
             if isa["avx512_bf16"] and not isa["amx_bf16"] else ""))
    return {"training": train, "inference": infer, "cpu": isa, "convolution_flops": flops}


if __name__ == "__main__":
    main()
