"""Is the decoder or the encoder the limit? Refine each reconstruction by feature matching and watch PSNR.

    python benchmarks/feature_match.py --data ../shared/photos/holdout \
        --models models/vgg16-block2_conv2 models/vgg16-block3_conv3 --steps 100

Starting from the decoder's output, gradient descent on the pixels drives the encoder's features
towards the image's own (recon/refine.py). If the features pin the image down, matching them more
closely brings the image closer to the original and PSNR rises; if PSNR stays flat while the feature
error falls many times over, images as far from the original as the decoder's guess look the same to
the encoder, and no decoder can do better from these features. For scale, it also measures the feature
error of the original itself with a little Gaussian noise added (--noise): what "close" means at each layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from recon import Reconstruction, Reconstructor, image_metrics  # noqa: E402
from recon.refine import feature_error, feature_matching  # noqa: E402
from training.data import find_images, load_image_set  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="held-out photos")
    p.add_argument("--models", nargs="+", default=["models/vgg16-block2_conv2", "models/vgg16-block3_conv3"])
    p.add_argument("--steps", type=int, default=100, help="Adam steps on the pixels, per image")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--every", type=int, default=10, help="record metrics every this many steps")
    p.add_argument("--num-samples", type=int, default=None, help="first N images only (default: all)")
    p.add_argument("--image", default=None, help="file in --data shown in the figure (default: the first)")
    p.add_argument("--noise", type=float, nargs="+", default=[4 / 255, 8 / 255],
                   help="noise std devs for the calibration: feature error of original + noise")
    p.add_argument("--out", default="runs/feature_match", help="results JSON and figures")
    return p.parse_args(argv)


def trace_one(model: Reconstructor, rec: Reconstruction, args) -> tuple[list[dict], np.ndarray]:
    """Metrics at every recorded step of refining one reconstruction, and the final refined image."""
    trace = []
    for step, refined, error in feature_matching(model, rec.features, rec.output, args.steps, args.lr, args.every):
        trace.append({"step": step, "feature_error": error} | image_metrics(rec.input, refined))
    return trace, refined


def noise_calibration(model: Reconstructor, original: np.ndarray, features: np.ndarray, sigmas: list[float],
                      seed: int = 0) -> list[dict]:
    """Feature error and PSNR of the original plus Gaussian noise: the yardstick for 'close' features."""
    rng = np.random.default_rng(seed)
    rows = []
    for sigma in sigmas:
        noisy = np.clip(original + rng.normal(0, sigma, original.shape), 0, 1).astype(np.float32)
        rows.append({"sigma": sigma, "feature_error": feature_error(model, noisy, features),
                     "psnr": image_metrics(original, noisy)["psnr"]})
    return rows


def summarize(traces: list[list[dict]]) -> dict:
    """Mean over images of each metric at each recorded step."""
    steps = [row["step"] for row in traces[0]]
    return {"step": steps} | {key: [float(np.mean([t[i][key] for t in traces])) for i in range(len(steps))]
                              for key in ("feature_error", "psnr", "ssim")}


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = find_images(args.data, args.num_samples)
    images = load_image_set(files, "loading images")
    shown = next((i for i, f in enumerate(images.files) if f.name == args.image), 0)

    results, panels = {}, []
    for folder in args.models:
        model = Reconstructor.from_pretrained(folder)
        traces, noisy = [], []
        for i, image in enumerate(tqdm(images.images, desc=f"{model.config.layer}: feature matching")):
            rec = model.reconstruct(image)
            trace, refined = trace_one(model, rec, args)
            traces.append(trace)
            noisy.append(noise_calibration(model, rec.input, rec.features, args.noise))
            if i == shown:
                panels.append((model.config.layer, rec.input, rec.output, refined, trace))
        calibration = [{key: float(np.mean([rows[j][key] for rows in noisy])) for key in noisy[0][j]}
                       for j in range(len(args.noise))]
        results[model.config.layer] = {"model": str(folder), "images": len(traces), "mean": summarize(traces),
                                       "noise_calibration": calibration,
                                       "per_image": {f.name: t for f, t in zip(images.files, traces)}}

    record = {"command": "python benchmarks/feature_match.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "steps": args.steps, "lr": args.lr, "data": str(args.data), "results": results}
    (out / "feature_match.json").write_text(json.dumps(record, indent=1) + "\n")
    print_table(results, args)
    plot_curves(results, out / "feature_match_curves.png")
    plot_panels(panels, out / "feature_match_examples.jpg")
    print(f"results: {out / 'feature_match.json'}; figures in {out}")
    return record


def print_table(results: dict, args) -> None:
    print(f"\nFeature matching, {args.steps} Adam steps at lr {args.lr}, from the decoder's output "
          f"(mean over held-out images, at 224):\n")
    noise = " | ".join(f"original + noise σ={s * 255:.0f}/255" for s in args.noise)
    print(f"| layer | images | relative feature error | PSNR (dB) | SSIM | {noise} |")
    print("|---|---|---|---|---|" + "---|" * len(args.noise))
    for layer, r in results.items():
        m = r["mean"]
        yardstick = " | ".join(f"{c['feature_error']:.3g} at {c['psnr']:.1f} dB" for c in r["noise_calibration"])
        print(f"| `{layer}` | {r['images']} | {m['feature_error'][0]:.3g} -> {m['feature_error'][-1]:.3g} "
              f"| {m['psnr'][0]:.2f} -> {m['psnr'][-1]:.2f} ({m['psnr'][-1] - m['psnr'][0]:+.2f}) "
              f"| {m['ssim'][0]:.3f} -> {m['ssim'][-1]:.3f} ({m['ssim'][-1] - m['ssim'][0]:+.3f}) | {yardstick} |")


def plot_curves(results: dict, path: Path) -> None:
    fig, (ax_err, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.6))
    for layer, r in results.items():
        m = r["mean"]
        ax_err.plot(m["step"], m["feature_error"], marker=".", label=layer)
        ax_psnr.plot(m["step"], np.subtract(m["psnr"], m["psnr"][0]), marker=".", label=layer)
    ax_err.set(yscale="log", xlabel="feature-matching step", ylabel="relative feature error",
               title="the features match ever closer")
    ax_psnr.set(xlabel="feature-matching step", ylabel="PSNR gain over the decoder (dB)",
                title="does the image follow?")
    ax_psnr.axhline(0, color="gray", lw=0.8)
    for ax in (ax_err, ax_psnr):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_panels(panels: list, path: Path) -> None:
    """One row per layer: original | decoder | refined | |refined - decoder|."""
    fig, axes = plt.subplots(len(panels), 4, figsize=(10, 3.1 * len(panels)), squeeze=False)
    for row, (layer, original, decoded, refined, trace) in zip(axes, panels):
        first, last = trace[0], trace[-1]
        shown = [(original, f"original\n{layer}"),
                 (decoded, f"decoder\n{first['psnr']:.2f} dB, feature error {first['feature_error']:.3g}"),
                 (refined, f"+ {last['step']} matching steps\n{last['psnr']:.2f} dB, "
                           f"feature error {last['feature_error']:.3g}"),
                 (np.abs(refined - decoded).mean(-1) * 4, "what matching changed (x4)")]
        for ax, (picture, title) in zip(row, shown):
            ax.imshow(picture.clip(0, 1), cmap="magma" if picture.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80, pil_kwargs={"quality": 88})
    plt.close(fig)


if __name__ == "__main__":
    main()
