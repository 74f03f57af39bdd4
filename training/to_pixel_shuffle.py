"""Rewrite a decoder's upsampling stages from bilinear resize + conv to sub-pixel convolutions.

    python -m training.to_pixel_shuffle models/vgg16-block3_conv3 --out runs/shuffle-start

A x2 bilinear resize followed by a 3x3 convolution is itself a 3x3 convolution on the low-resolution
input with four times the output channels, one group per output phase, then a depth-to-space (Shi et
al. 2016, "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network"): the same multiply-adds, without the resize or its 4x larger tensor.
That is `upsample="pixel_shuffle"` (recon.decoder). Each stage's convolution holds 4x the weights
(block3_conv3's decoder: 442,739 parameters instead of 338,819), all of them trainable afterwards.

The rewrite is exact away from the image border. At the border it is not: the resize repeats the
edge row and the full-resolution convolution pads with zeros, where the low-resolution convolution
pads its input with zeros. Each stage's error covers the two outer rows and columns of its output
and the next stage doubles it, so the band is about 2^(k+1) - 1 pixels wide for k stages: 3 for
block2_conv2, 7 for block3_conv3, 15 for block4_conv3. So the folder written here is a starting point
for a warm start (`python -m training.fit --init-from OUT`), which learns the border. It keeps the
source's split.json and run_config.json (so the warm start draws new crops: training.fit's
crop_seed) and drops its int8 file: that file holds the decoder's residual trunk, which the warm start
retrains (`training.quantize` makes a new one).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import numpy as np

from recon.startup import require_folders, start_tensorflow_quietly

# BILINEAR_TAPS[r, d + 1, e + 1]: the weight of low-resolution row i + e in the resized row 2i + r + d
# (phase r of output row i, convolution tap d), for a x2 resize with half-pixel centres (TensorFlow's
# and PyTorch's align_corners=False): resized row 2i is 0.25 x[i-1] + 0.75 x[i], row 2i+1 is
# 0.75 x[i] + 0.25 x[i+1].
BILINEAR_TAPS = np.array([
    [[0.75, 0.25, 0.00], [0.25, 0.75, 0.00], [0.00, 0.75, 0.25]],  # phase 0: rows 2i-1, 2i, 2i+1
    [[0.25, 0.75, 0.00], [0.00, 0.75, 0.25], [0.00, 0.25, 0.75]],  # phase 1: rows 2i, 2i+1, 2i+2
])


def subpixel_weights(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3x3 convolution after a x2 bilinear resize -> the 3x3 convolution before a depth-to-space
    that computes the same away from the border.

    Args:
        kernel: (3, 3, C_in, C_out) float32, the convolution's kernel (Keras layout).
        bias: (C_out,) float32.

    Returns:
        (3, 3, C_in, 4 * C_out) kernel and (4 * C_out,) bias, float32; output channel
        (2 * row_phase + column_phase) * C_out + c, the order depth_to_space reads.

    Raises:
        ValueError: a kernel that is not 3x3, or a bias that does not match it.
    """
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3) or bias.shape != kernel.shape[-1:]:
        raise ValueError(f"expected a (3, 3, C_in, C_out) kernel and (C_out,) bias, got {kernel.shape} and {bias.shape}")
    phases = [np.einsum("de,fg,dfio->egio", BILINEAR_TAPS[row], BILINEAR_TAPS[col], kernel.astype(np.float64))
              for row in (0, 1) for col in (0, 1)]
    return np.concatenate(phases, axis=-1).astype(np.float32), np.tile(bias, 4).astype(np.float32)


def to_pixel_shuffle(model):
    """A resize-mode `Reconstructor` -> a pixel_shuffle one (float32) with the same encoder and the
    converted decoder weights. Raises ValueError for a model that is not in resize mode or has no
    x2 stages."""
    from recon import Reconstructor
    from recon.decoder import build_decoder
    if model.config.upsample != "resize":
        raise ValueError(f'the decoder upsamples by "{model.config.upsample}" already, not "resize"')
    if not model.config.upsample_widths:
        raise ValueError(f"{model.config.layer} has no x2 stages (stride 1): nothing to rewrite")
    config = dataclasses.replace(model.config, upsample="pixel_shuffle", int8_encoder_sha256=None,
                                 int8_decoder_sha256=None)
    decoder = build_decoder(config)
    for layer in model.decoder.layers:
        weights = [np.asarray(w, np.float32) for w in layer.get_weights()]
        if not weights:
            continue
        if layer.name.startswith("up") and layer.name.endswith("_conv"):
            weights = list(subpixel_weights(*weights))
        decoder.get_layer(layer.name).set_weights(weights)
    return Reconstructor(config, encoder=model.encoder, decoder=decoder)


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(
        prog="python -m training.to_pixel_shuffle", description=__doc__.split("\n")[0],
        epilog="The result is exact except in a band along the image border (7 px for block3_conv3): "
               "warm-start it with python -m training.fit --init-from OUT, which learns the border.")
    p.add_argument("model", help="model folder whose decoder upsamples by resize")
    p.add_argument("--out", required=True, help="new (or empty) model folder")
    args = p.parse_args(argv)
    require_folders(p, {"model": args.model})
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        p.error(f"--out {out} exists and is not an empty folder; choose a new one")
    start_tensorflow_quietly()
    from recon import ModelFolderError, Reconstructor
    try:
        source = Reconstructor.from_pretrained(args.model)
    except ModelFolderError as e:
        raise SystemExit(str(e)) from None  # it names the folder
    try:
        converted = to_pixel_shuffle(source)
    except ValueError as e:
        raise SystemExit(f"{args.model}: {e}") from None
    converted.save_pretrained(out)
    for name in ("run_config.json", "split.json"):  # the warm start's crop seed; the train/validation split
        if (Path(args.model) / name).is_file():
            shutil.copy2(Path(args.model) / name, out / name)
    print(f"wrote {out}: {converted.describe()}\n"
          f"exact away from the border only: warm start it, e.g. python -m training.fit --init-from {out} ...")
    return out


if __name__ == "__main__":
    main()
