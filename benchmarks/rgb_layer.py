"""The decoder's last layers as trained against as inference runs them: time and difference at 224.

    python benchmarks/rgb_layer.py [--model models/vgg16-block3_conv3] [--rounds 15]

For float32 and the precision "auto" picks here, times the floating-point part of the decoder that
`reconstruct` runs at batch 1 (the whole decoder, or after an int8 file holding the residual trunk,
the upsampling) in the forms below, which share the weights:
  - "as trained": the decoder's own layer order (each ReLU after its pixel shuffle, a 3x3 RGB conv
    with 3 filters on the full-size map), its sigmoid in float32;
  - "sigmoid in bfloat16" (or float16; only where the layers compute in it): the same with the
    sigmoid in the layers' dtype, as inference ran it until 2026-11-30;
  - "rearranged": `recon.decoder.inference_decoder`, what `Reconstructor` runs (each ReLU before its
    shuffle, the RGB conv as 4x32 -> 4x3 channels on the half-size map before the last shuffle,
    `ConvBeforeShuffle`).
Each is compiled once (tf.function, as `reconstruct_batch` does) and the forms take turns within each
round; the best round is shown, and the largest difference from "as trained" of each form's output.
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
from recon.decoder import UPSAMPLE_LAYERS, decoder_trunk, inference_decoder  # noqa: E402


def as_trained(model: Reconstructor, from_trunk: bool, sigmoid_dtype: str) -> keras.Model:
    """The floating-point part in the decoder's own layer order, its sigmoid in `sigmoid_dtype`."""
    decoder, cfg = model.decoder, model.config
    x = inputs = keras.Input(shape=(None, None, cfg.decoder_width if from_trunk else cfg.channels))
    if not from_trunk:
        x = decoder_trunk(decoder)(x)
    for i in range(len(cfg.upsample_widths)):
        for part in UPSAMPLE_LAYERS[cfg.upsample]:
            x = decoder.get_layer(f"up{i + 1}_{part}")(x)
    x = decoder.get_layer("rgb")(x)
    return keras.Model(inputs, keras.layers.Activation("sigmoid", dtype=sigmoid_dtype)(x))


def compare(model: Reconstructor, size: int, rounds: int, calls: int = 10) -> dict[str, dict[str, float]]:
    """{form: {"ms": best ms per call, "max difference": from "as trained"}} for `model`."""
    import tensorflow as tf
    from_trunk = model.int8_encoder is not None and model.int8_encoder.has_trunk
    image = np.random.default_rng(0).random((1, size, size, 3)).astype("float32")
    start = tf.constant(model.int8_encoder.front(image)[1] if from_trunk else model.encode(image))
    forms = {"as trained": as_trained(model, from_trunk, "float32")}
    layers_dtype = model.decoder.get_layer("rgb").compute_dtype
    if layers_dtype != "float32":
        forms[f"sigmoid in {layers_dtype}"] = as_trained(model, from_trunk, layers_dtype)
    forms["rearranged"] = inference_decoder(model.decoder, model.config, from_trunk)
    runs = {name: tf.function(form, autograph=False) for name, form in forms.items()}
    outputs = {name: keras.ops.convert_to_numpy(run(start)) for name, run in runs.items()}  # traced here
    best = dict.fromkeys(runs, np.inf)
    for _ in range(rounds):
        for name, run in runs.items():
            begin = time.perf_counter()
            for _ in range(calls):
                run(start).numpy()
            best[name] = min(best[name], (time.perf_counter() - begin) / calls * 1000)
    return {name: {"ms": best[name], "max difference": float(np.abs(outputs[name] - outputs["as trained"]).max())}
            for name in runs}


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
            raise SystemExit(f"{args.model} has no pixel-shuffle stage: inference runs its decoder as trained")
        results[model.precision_name] = compare(model, args.size, args.rounds)
    print(f"\nfloating-point part of the decoder at batch 1, {args.size}x{args.size}, best of {args.rounds} rounds:")
    for precision, forms in results.items():
        print(f"  {precision}")
        for name, r in forms.items():
            print(f"    {name:<24}{r['ms']:>8.2f} ms   largest difference from as trained {r['max difference']:.1e}")
    return results


if __name__ == "__main__":
    main()
