"""Validation PSNR against images seen, for training runs side by side: where does each flatten?

    python benchmarks/curves.py benchmarks/results/gpu_runs/* --out benchmarks/results/psnr_vs_images_seen.png

Reads each run folder's history.json (val PSNR per epoch, optimizer step) and run_config.json (batch
size). A run started with --init-from is drawn after the images its starting model had seen, when
that model's history is at hand. Validation images are the runs' hash split of the training folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def images_seen(history: list[dict], batch_size: int) -> list[int]:
    return [h["step"] * batch_size for h in history]


def load_run(folder: Path) -> tuple[list[int], list[float], dict]:
    history = json.loads((folder / "history.json").read_text())
    run = json.loads((folder / "run_config.json").read_text())
    seen = images_seen(history, run["batch_size"])
    start = Path(run["init_from"]) / "history.json" if run.get("init_from") else None
    if start is not None and start.is_file():
        before = json.loads(start.read_text())
        seen = [s + before[-1]["step"] * run["batch_size"] for s in seen]
    return seen, [h["val_psnr"] for h in history], run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (history.json + run_config.json)")
    p.add_argument("--out", default="runs/psnr_vs_images_seen.png")
    args = p.parse_args(argv)
    fig, ax = plt.subplots(figsize=(9, 5))
    for folder in sorted(Path(r) for r in args.runs if (Path(r) / "history.json").is_file()):
        seen, psnr, run = load_run(folder)
        ax.plot([s / 1000 for s in seen], psnr, "-", lw=1.5, label=folder.name)
        print(f"{folder.name:<40} {seen[-1]:>9,} images seen  final {psnr[-1]:6.2f} dB  best {max(psnr):6.2f} dB")
    ax.set_xlabel("training crops seen (thousands, 128 px)")
    ax.set_ylabel("validation PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
