"""Held-out learning curve of one training run: its backups, taken along the way, scored on photos it
never saw, against the crops each had trained on (log scale).

    python benchmarks/snapshot_curve.py --run runs/deep/block4 --snapshots runs/deep/snapshots/block4 \
        --data ../shared/photos/holdout --out benchmarks/results/deep_layers/block4_conv3

A snapshot is a copy of the run's `backup/` (training_metadata.json and the weights file it names,
latest.weights.h5 in runs from before the two backup slots, as `training.fit` writes them every
--save-every steps), e.g. taken every few minutes by
`cp -r RUN/backup SNAPSHOTS/$(date +%H%M%S)`. Its crops: (epoch x steps per epoch + steps done in the
epoch) x batch size, plus the run's `crops_before` (a warm start's chain). The run folder's own kept
weights are scored too; `--earlier` adds the curve of the run a warm start began from. Prints a table, writes curve.json and curve.png (PSNR, SSIM, LPIPS against
crops, log x), and the PSNR gained over the last doubling of crops.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recon.startup import start_tensorflow_quietly  # noqa: E402

start_tensorflow_quietly()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recon import Reconstructor, build_decoder  # noqa: E402
from recon.metrics import image_metrics  # noqa: E402
from recon.training_record import from_curve  # noqa: E402
from training.data import find_images, load_image_set  # noqa: E402


def snapshot_crops(metadata: dict, run_config: dict, steps_per_epoch: int) -> int:
    return (int(metadata["epoch"]) * steps_per_epoch + int(metadata.get("steps_done", 0))) \
        * int(run_config["batch_size"]) + int(run_config.get("crops_before") or 0)


def score(model: Reconstructor, views: np.ndarray) -> dict:
    outputs = model.reconstruct_batch(views)[0]
    per_image = [image_metrics(x, y) for x, y in zip(views, outputs)]
    return {k: float(np.mean([m[k] for m in per_image])) for k in ("psnr", "ssim", "lpips")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="the run (model) folder")
    p.add_argument("--snapshots", required=True, help="folder of backup copies, one subfolder each")
    p.add_argument("--data", required=True, help="held-out photos")
    p.add_argument("--out", required=True)
    p.add_argument("--earlier", action="append", default=[], metavar="CURVE_JSON",
                   help="curve.json of the run this one warm-started from (repeatable, for a longer chain): its "
                        "points up to this run's start join the curve, so the last doubling can reach back")
    args = p.parse_args(argv)
    run = Path(args.run)
    run_config = json.loads((run / "run_config.json").read_text())
    split = json.loads((run / "split.json").read_text())
    photos = len(split["train"]) - len(split.get("skipped", []))
    steps_per_epoch = math.ceil(photos * run_config["crops_per_image"] / run_config["batch_size"])
    model = Reconstructor.from_pretrained(run)
    views = np.stack([model.prepare(im) for im in load_image_set(find_images(args.data), None).images])
    points = []
    for folder in sorted(Path(args.snapshots).iterdir()):
        meta = folder / "training_metadata.json"
        metadata = json.loads(meta.read_text()) if meta.is_file() else {}
        weights = folder / metadata.get("weights", "latest.weights.h5")
        if not metadata or not weights.is_file():
            continue
        decoder = build_decoder(model.config)
        decoder.load_weights(weights)
        crops = snapshot_crops(metadata, run_config, steps_per_epoch)
        points.append({"snapshot": folder.name, "crops": crops}
                      | score(Reconstructor(model.config, model.encoder, decoder), views))
    kept = model.training.crops_seen if model.training else None
    points.append({"snapshot": "kept", "crops": kept} | score(model, views))
    start = int(run_config.get("crops_before") or 0)
    for earlier in args.earlier:  # scored by this script on the same photos when that run ended
        previous = json.loads(Path(earlier).read_text())
        if Path(previous["holdout"]).resolve() != Path(args.data).resolve():
            raise SystemExit(f"{earlier} was scored on {previous['holdout']}, not on {args.data}")
        points += [p | {"snapshot": f"earlier: {p['snapshot']}"} for p in previous["points"] if p["crops"] <= start]
    curve = sorted((p for p in points if p["crops"]), key=lambda p: p["crops"])
    last = max(p["crops"] for p in curve)
    record = from_curve([(p["crops"], p["psnr"]) for p in curve], last, "held-out")
    print(f"| crops seen | held-out PSNR (dB) | SSIM | LPIPS |\n|---|---|---|---|")
    for p in curve:
        print(f"| {p['crops']:,}{' (kept)' if p['snapshot'] == 'kept' else ''} | {p['psnr']:.2f} | {p['ssim']:.4f} "
              f"| {p['lpips']:.4f} |")
    gain = record.gain_last_doubling_db
    print(f"last doubling of crops ({last // 2:,} to {last:,}): "
          + ("not covered by the snapshots" if gain is None else f"{gain:+.2f} dB held-out PSNR"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"run": str(run), "holdout": args.data, "images": len(views), "points": curve,
              "gain_last_doubling_db": gain}
    (out / "curve.json").write_text(json.dumps(result, indent=1) + "\n")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, label in zip(axes, ("psnr", "ssim", "lpips"), ("PSNR (dB)", "SSIM", "LPIPS (lower is better)")):
        ax.plot([p["crops"] for p in curve], [p[key] for p in curve], "o-")
        ax.set_xscale("log")
        ax.set_xlabel("training crops seen (128 px)")
        ax.set_title(f"held-out {label}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{model.config.layer}: {len(views)} held-out photos at {model.config.image_size}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=90)
    print(f"curve: {out / 'curve.png'}")
    return result


if __name__ == "__main__":
    main()
