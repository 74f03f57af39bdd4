"""How reconstruction degrades with depth: every model under models/, scored on the same held-out photos.

    python benchmarks/layers.py --data ../shared/photos/holdout [--image skimage__astronaut.jpg]

Prints a markdown table (layer, feature shape at 224, decoder parameters, held-out PSNR/SSIM/LPIPS
from `training.evaluate`) and writes a figure with one held-out image reconstructed from each layer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recon import ReconConfig, Reconstructor, load_image  # noqa: E402
from recon.config import VGG16_LAYERS  # noqa: E402
from training import evaluate  # noqa: E402


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="held-out photos")
    p.add_argument("--models", default="models", help="folder of model folders, one per layer")
    p.add_argument("--image", default="skimage__astronaut.jpg", help="file in --data shown in the figure")
    p.add_argument("--out", default="runs/layers", help="evaluation results and the figure")
    args = p.parse_args(argv)
    out = Path(args.out)
    folders = sorted((f for f in Path(args.models).iterdir() if (f / "config.json").is_file()),
                     key=lambda f: list(VGG16_LAYERS).index(ReconConfig.load(f / "config.json").layer))
    image = load_image(Path(args.data) / args.image)
    rows, panels = [], []
    for folder in folders:
        model = Reconstructor.from_pretrained(folder)
        summary = evaluate.main(["--model", str(folder), "--data", args.data, "--save-dir", str(out / folder.name)])
        rec = model.reconstruct(image)
        c, s = model.config, model.config.image_size // model.config.stride
        rows.append({"layer": c.layer, "shape": f"{s}x{s}x{c.channels}", "params": model.decoder.count_params(),
                     "psnr": summary["psnr"], "ssim": summary["ssim"], "lpips": summary["lpips"],
                     "count": summary["count"]})
        panels.append((c.layer, rec.input, rec.output, rec.metrics()))

    print("\n| layer | feature shape at 224 | decoder parameters | held-out PSNR (dB) | held-out SSIM "
          "| held-out LPIPS (lower is better) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['layer']}` | {r['shape']} | {r['params']:,} | {r['psnr']['mean']:.2f} ± {r['psnr']['std']:.2f} "
              f"| {r['ssim']['mean']:.3f} ± {r['ssim']['std']:.3f} "
              f"| {r['lpips']['mean']:.3f} ± {r['lpips']['std']:.3f} |")
    print(f"\n({rows[0]['count']} held-out images from {args.data}, center-cropped to 224x224)")

    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.6 * (len(panels) + 1), 3.5))
    axes[0].imshow(panels[0][1])
    axes[0].set_title("original", fontsize=9)
    for ax, (layer, _, output, m) in zip(axes[1:], panels):
        ax.imshow(output.clip(0, 1))
        ax.set_title(f"{layer}\n{m['psnr']:.1f} dB, SSIM {m['ssim']:.2f}\nLPIPS {m['lpips']:.3f}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "layers.png", dpi=80)
    print(f"figure: {out / 'layers.png'}")
    return rows


if __name__ == "__main__":
    main()
