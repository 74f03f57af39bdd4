"""Held-out PSNR, SSIM and LPIPS against crops seen, along a chain of warm-started runs.

    python benchmarks/warm_start_curve.py runs/models/vgg16-block3_conv3 runs/bundled-warm \\
        runs/bundled-third runs/bundled-fourth models/vgg16-block3_conv3 --holdout ../shared/photos/holdout

Each folder is a model folder whose run started (`--init-from`) from the previous folder's kept
checkpoint, the first from scratch. A folder holds the checkpoint with the best validation PSNR
(`training.fit` keeps it), so the crops its weights have seen are the kept epoch's optimizer steps
times the batch size (history.json, run_config.json) plus those of every folder before it: crops
that later epochs of a run saw and that were thrown away with their weights do not count. They
are training samples, repeats included: before `training.fit --crop-seed` (a warm start now cuts
crops from one more than its starting run's seed), every warm start served again, in the same order,
the crops its starting run had served (crop i of epoch e came from (seed 42, e, i) in every run).

Every folder is scored on the holdout with `training.evaluate` (224 px, float32), and a straight line
in log2(crops) is fitted to the warm starts (every folder after the first, which must be a run
from scratch; the others must be warm starts of the same layer, encoder and crop size) to say what
each doubling of the crops buys and where the line would cross a target. That is an extrapolation
of a trend, not a prediction the data can guarantee.
Writes warm_start_curve.json, warm_start_curve.png and each folder's per-image scores
(eval/<position>-<folder name>.json) to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recon.imageio import list_images  # noqa: E402  (light: no TensorFlow)

METRICS = (("psnr", "held-out PSNR (dB)", 24.0), ("ssim", "held-out SSIM", 0.80),
           ("lpips", "held-out LPIPS (AlexNet)", None))  # (key, axis label, target)


def kept_crops(folder: Path) -> tuple[int, dict]:
    """Crops the kept checkpoint of one run saw: its epochs times the crops of an epoch (training
    photos in split.json times crops_per_image), or where those are not recorded, the kept epoch's
    optimizer steps times the batch size (which counts an epoch's last, partial batch as whole)."""
    history = json.loads((folder / "history.json").read_text())
    run = json.loads((folder / "run_config.json").read_text())
    kept = max((record for record in history if "val_psnr" in record), key=lambda record: record["val_psnr"])
    split = folder / "split.json"
    if run.get("crops_per_image") and split.is_file():
        return kept["epoch"] * len(json.loads(split.read_text())["train"]) * run["crops_per_image"], kept
    return kept["step"] * run["batch_size"], kept


def chain_problem(folders: list[Path]) -> str | None:
    """Why `folders` are not a chain of warm starts this script can draw, or None."""
    if len(folders) < 3:
        return "give at least 3 folders: a run from scratch and 2 warm starts (the line is fitted to the warm starts)"
    runs, configs = [], []
    for folder in folders:
        if not folder.is_dir():
            return f"{folder}: no such folder"
        for name in ("config.json", "history.json", "run_config.json"):
            if not (folder / name).is_file():
                return f"{folder}: no {name} (a model folder from training.fit or training.export has one)"
        history = json.loads((folder / "history.json").read_text())
        if not any("val_psnr" in record for record in history):
            return f"{folder}: its history.json has no epoch with a validation PSNR"
        runs.append(json.loads((folder / "run_config.json").read_text()))
        configs.append(json.loads((folder / "config.json").read_text()))
    if runs[0].get("init_from"):
        return f"{folders[0]}: the first folder should be a run from scratch, not one started from {runs[0]['init_from']}"
    for folder, run, config in zip(folders[1:], runs[1:], configs[1:]):
        if not run.get("init_from"):
            return f"{folder}: a run from scratch, not a warm start from the folder before it"
        for key, mine, first in (("layer", config, configs[0]), ("encoder_weights", config, configs[0]),
                                 ("crop_size", run, runs[0])):
            if mine.get(key) != first.get(key):
                return f"{folder}: {key} {mine.get(key)!r}, not {folders[0]}'s; the runs of one chain share it"
    return None


def holdout_problem(holdout: Path) -> str | None:
    if not holdout.is_dir():
        return f"--holdout {holdout}: no such folder"
    if not list_images(holdout):
        return f"--holdout {holdout}: no images in it"
    return None


def log2_fit(crops: list[int], values: list[float]) -> tuple[float, float]:
    """(per doubling, intercept) of values = intercept + per_doubling * log2(crops)."""
    per_doubling, intercept = np.polyfit(np.log2(crops), values, 1)
    return float(per_doubling), float(intercept)


def crossing(fit: tuple[float, float], target: float) -> float | None:
    """Crops at which the fitted line reaches `target`; None if it never does within 2^64 (a flat
    or falling line)."""
    per_doubling, intercept = fit
    doublings = (target - intercept) / per_doubling if per_doubling > 0 else np.inf
    return float(2 ** doublings) if doublings < 64 else None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="model folders, each warm-started from the one before")
    p.add_argument("--holdout", default="../shared/photos/holdout", help="held-out photos (never trained on)")
    p.add_argument("--out", default="benchmarks/results/warm_start_curve")
    args = p.parse_args(argv)
    folders = [Path(f) for f in args.folders]
    problem = chain_problem(folders) or holdout_problem(Path(args.holdout))
    if problem:
        p.error(problem)
    crop_size = json.loads((folders[0] / "run_config.json").read_text())["crop_size"]

    from recon.startup import start_tensorflow_quietly
    start_tensorflow_quietly()  # TensorFlow loads here, after the arguments are checked
    import tensorflow as tf

    from training import evaluate
    tf.get_logger().setLevel("ERROR")  # each model's own compiled graph, traced in turn, reads as "retracing"

    out = Path(args.out)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    points, total = [], 0
    for i, folder in enumerate(folders, 1):
        crops, kept = kept_crops(folder)
        total += crops
        with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()) as said:
            summary = evaluate.main(["--model", str(folder), "--data", args.holdout, "--save-dir", scratch])
            shutil.copy(Path(scratch) / "metrics_summary.json", out / "eval" / f"{i}-{folder.name}.json")
        print(f"{folder}: {said.getvalue().strip().splitlines()[-1].split('  -> ')[0]}")  # the scores, not the scratch
        points.append({"folder": str(folder), "crops_in_run": crops, "crops": total, "kept_epoch": kept["epoch"],
                       "val_psnr": kept["val_psnr"], "val_ssim": kept["val_ssim"]}
                      | {name: summary[name]["mean"] for name, _, _ in METRICS})

    crops = [point["crops"] for point in points]
    warm = points[1:]
    fits = {name: log2_fit([q["crops"] for q in warm], [q[name] for q in warm]) for name, _, _ in METRICS}
    result = {"holdout": args.holdout, "points": points,
              "fit_over": [q["folder"] for q in warm],
              "per_doubling": {name: fit[0] for name, fit in fits.items()},
              "crops_to_reach": {name: crossing(fits[name], target) for name, _, target in METRICS if target}}

    print(f"\n{'folder':<34}{'crops':>10}{'PSNR':>8}{'SSIM':>8}{'LPIPS':>8}{'val PSNR':>10}")
    for q in points:
        print(f"{q['folder']:<34}{q['crops']:>10,}{q['psnr']:>8.2f}{q['ssim']:>8.4f}{q['lpips']:>8.4f}{q['val_psnr']:>10.2f}")
    print(f"\nper doubling of the crops (fitted over {len(warm)} points): "
          + ", ".join(f"{name} {fits[name][0]:+.4f}" for name, _, _ in METRICS))
    for name, label, target in METRICS:
        if target:
            reach = result["crops_to_reach"][name]
            reached = (points[-1][name] >= target) if name != "lpips" else (points[-1][name] <= target)
            print(f"the line reaches {name.upper()} {target} at "
                  + (f"{reach / 1e6:.2f}M crops ({reach / crops[-1]:.1f}x the last model's)" if reach
                     else "no crossing: the line is flat or falling")
                  + (" (the last model is past it)" if reached else ""))

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    line = np.geomspace(warm[0]["crops"], max(crops) * 8, 50)
    for ax, (name, label, target) in zip(axes, METRICS):
        ax.plot(crops, [q[name] for q in points], "o-", label="kept checkpoints")
        ax.plot(line, fits[name][1] + fits[name][0] * np.log2(line), "--", color="gray", lw=1,
                label=f"line fitted to the {len(warm)} warm starts, {fits[name][0]:+.3g} per doubling")
        if target:
            ax.axhline(target, color="tab:red", lw=1, label=f"target {target}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"crops seen ({crop_size} px, repeats included), log scale")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower left" if name == "lpips" else "upper left")  # clear of the points
    fig.suptitle(f"{folders[-1].name} on {args.holdout}: the kept checkpoints of a run from scratch and "
                 f"{len(warm)} warm starts, each from the one before", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "warm_start_curve.png", dpi=90)
    (out / "warm_start_curve.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"figure and numbers: {out}")
    return result


if __name__ == "__main__":
    main()
