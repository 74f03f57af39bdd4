"""Which part of a model can run in int8: held-out PSNR/SSIM with the encoder, the decoder, or both quantized.

    python benchmarks/int8_scope.py --data ../shared/photos/train --holdout ../shared/photos/holdout \
        [--model models/vgg16-block3_conv3] [--images 32]

Each part is converted with TFLite's post-training quantization (`recon.int8.quantize_encoder`'s
recipe: int8 weights per channel, int8 activations per tensor, calibrated on --images training photos)
and the rest stays float32. Prints the mean held-out PSNR and SSIM of each against float32; the
reason `recon.int8` quantizes the encoder and at most the decoder's residual trunk (its blocks
before any upsampling), never the upsampling stages.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from recon import Reconstructor  # noqa: E402
from recon.int8 import Int8Encoder, quantize_encoder  # noqa: E402
from recon.metrics import psnr, ssim  # noqa: E402
from training.data import find_images  # noqa: E402
from training.quantize import calibration_sample, prepared  # noqa: E402


def scores(images: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[float, float]:
    return (float(np.mean([psnr(x[0], y) for x, y in zip(images, outputs)])),
            float(np.mean([ssim(x[0], y) for x, y in zip(images, outputs)])))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="training photos to calibrate on")
    p.add_argument("--holdout", required=True, help="held-out photos to score on")
    p.add_argument("--model", default="models/vgg16-block3_conv3")
    p.add_argument("--images", type=int, default=32)
    args = p.parse_args(argv)

    model = Reconstructor.from_pretrained(args.model)
    calibration = prepared(model, calibration_sample(find_images(args.data), args.images), "calibration photos")
    held_out = prepared(model, find_images(args.holdout), "held-out photos")
    encode, decode = model.encode, model.decode
    int8_encoder = Int8Encoder(quantize_encoder(model.encoder, calibration))
    features = [encode(x) for x in calibration]
    # Int8Encoder runs any TFLite model with one input and one output: here the decoder
    int8_decoder = Int8Encoder(quantize_encoder(model.decoder, features, input_shape=features[0].shape[1:]))
    # the float32 decoder given: the upsampling after the int8 trunk stays float32 too
    with_trunk = Reconstructor(model.config, model.encoder, model.decoder, "int8",
                               Int8Encoder(quantize_encoder(model.encoder, calibration, decoder=model.decoder)))
    parts = {"float32": lambda x: decode(encode(x)),
             "int8 encoder": lambda x: decode(int8_encoder(x)),
             "int8 encoder and residual trunk": lambda x: with_trunk.reconstruct_batch(x)[0],
             "int8 decoder": lambda x: int8_decoder(encode(x)),
             "int8 encoder and decoder": lambda x: int8_decoder(int8_encoder(x))}
    results = {name: scores(held_out, [run(x)[0] for x in held_out]) for name, run in parts.items()}
    base_psnr, base_ssim = results["float32"]
    print(f"{model.config.layer}, {len(held_out)} held-out photos, calibrated on {len(calibration)} from {args.data}:")
    for name, (mean_psnr, mean_ssim) in results.items():
        print(f"  {name:<32} PSNR {mean_psnr:7.3f} dB ({mean_psnr - base_psnr:+.3f})   "
              f"SSIM {mean_ssim:.4f} ({mean_ssim - base_ssim:+.4f})")
    return results


if __name__ == "__main__":
    main()
