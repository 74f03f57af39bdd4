"""The RGB layer before the last pixel shuffle against after it: time and difference at 224.

    python benchmarks/rgb_layer.py [--model models/vgg16-block3_conv3] [--rounds 15]

For float32 and the precision "auto" picks here, times the floating-point part of the decoder that
`reconstruct` runs at batch 1 (the whole decoder, or after an int8 file holding the residual trunk,
the upsampling) in two forms that share the weights: as trained (a 3x3 RGB conv with 3 filters
on the 224 px map) and as `Reconstructor` runs it (`recon.decoder.inference_decoder`: the same conv
rearranged to 4x32 -> 4x3 channels on the 112 px map before the last shuffle, `ConvBeforeShuffle`).
Each is compiled once (tf.function, as `reconstruct_batch` does) and the two take turns within each
round; the best round is shown, and the largest difference between their outputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from recon import Reconstructor  # noqa: E402
from recon.decoder import inference_decoder  # noqa: E402


def compare(model: Reconstructor, size: int, rounds: int, calls: int = 10) -> dict[str, float]:
    """Best ms per call of each form of `model`'s floating-point part, and their largest difference."""
    import tensorflow as tf
    from_trunk = model.int8_encoder is not None and model.int8_encoder.has_trunk
    image = np.random.default_rng(0).random((1, size, size, 3)).astype("float32")
    start = tf.constant(model.int8_encoder.front(image)[1] if from_trunk else model.encode(image))
    forms = {name: tf.function(inference_decoder(model.decoder, model.config, from_trunk, rgb_before_shuffle=before),
                               autograph=False)
             for name, before in (("after", False), ("before", True))}
    outputs = {name: keras.ops.convert_to_numpy(run(start)) for name, run in forms.items()}  # traced here
    best = dict.fromkeys(forms, np.inf)
    for _ in range(rounds):
        for name, run in forms.items():
            begin = time.perf_counter()
            for _ in range(calls):
                run(start).numpy()
            best[name] = min(best[name], (time.perf_counter() - begin) / calls * 1000)
    return {"after ms": best["after"], "before ms": best["before"],
            "max difference": float(np.abs(outputs["after"] - outputs["before"]).max())}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/vgg16-block3_conv3")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=15, help="timed rounds (the best is shown)")
    args = p.parse_args(argv)

    results = {}
    for precision in ("float32", "auto"):
        model = Reconstructor.from_pretrained(args.model, precision=precision)
        if model.config.upsample != "pixel_shuffle" or not model.config.upsample_widths:
            raise SystemExit(f"{args.model} has no pixel-shuffle stage: its RGB layer has no other form")
        results[model.precision_name] = compare(model, args.size, args.rounds)
    print(f"\nfloating-point part of the decoder at batch 1, {args.size}x{args.size}, best of {args.rounds} rounds:")
    print(f"  {'precision':<55}{'RGB after (ms)':>15}{'before (ms)':>13}{'max difference':>16}")
    for name, r in results.items():
        print(f"  {name:<55}{r['after ms']:>15.2f}{r['before ms']:>13.2f}{r['max difference']:>16.1e}")
    return results


if __name__ == "__main__":
    main()
