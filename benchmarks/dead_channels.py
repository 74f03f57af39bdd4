"""Dead channels and sparsity of VGG16 feature maps, per layer, per encoder weight source.

    python benchmarks/dead_channels.py --data ../shared/photos/train

A channel is dead when it is never above zero on any pixel of any image: whatever it was meant to
carry, the decoder cannot get it back. Images are center-cropped and resized to --size; the first
--count files (sorted) are used. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from recon import ReconConfig, build_encoder  # noqa: E402
from training.data import find_images, load_image_set, square_image  # noqa: E402

LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")


def channel_stats(source: str, images: np.ndarray, layers=LAYERS, batch_size: int = 8) -> dict[str, dict]:
    """For each layer: channels, dead channels (never > 0) and the share of zeros over all activations."""
    encoder = build_encoder(ReconConfig(layer=layers[-1], encoder_weights=source))
    taps = keras.Model(encoder.input, [encoder.get_layer(name).output for name in layers])
    alive = {name: None for name in layers}
    zeros = dict.fromkeys(layers, 0)
    total = dict.fromkeys(layers, 0)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype("float32") / 255.0
        for name, fmap in zip(layers, taps(batch, training=False)):
            fmap = keras.ops.convert_to_numpy(fmap).reshape(-1, fmap.shape[-1])
            positive = (fmap > 0).any(axis=0)
            alive[name] = positive if alive[name] is None else alive[name] | positive
            zeros[name] += int((fmap <= 0).sum())
            total[name] += fmap.size
    return {name: {"channels": int(alive[name].size), "dead": int((~alive[name]).sum()),
                   "zeros": zeros[name] / total[name]} for name in layers}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of photos (training photos are fine: nothing is trained)")
    p.add_argument("--count", type=int, default=48, help="number of photos")
    p.add_argument("--size", type=int, default=224, help="square side the photos are shown at")
    p.add_argument("--sources", default="imagenet-torchvision,hed-bsds500,random", help="comma-separated")
    p.add_argument("--out", default="benchmarks/results/dead_channels.json")
    args = p.parse_args(argv)
    loaded = load_image_set(find_images(args.data)[:args.count])
    images = np.stack([square_image(im, args.size) for im in loaded.images])
    sources = args.sources.split(",")
    results = {source: channel_stats(source, images) for source in sources}

    print(f"\n{len(images)} photos from {args.data} at {args.size}x{args.size}: dead channels (never above zero) "
          "of all channels, and the share of zeros\n")
    print("| layer | " + " | ".join(f"`{s}`" for s in sources) + " |")
    print("|---|" + "---|" * len(sources))
    for name in LAYERS:
        cells = [f"{r[name]['dead']} of {r[name]['channels']}, {r[name]['zeros']:.0%} zeros" for r in results.values()]
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    record = {"data": str(args.data), "count": len(images), "size": args.size, "sources": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
