"""Figures people would rather look at than read: loss curves, histograms, sample grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_history(history: list[dict], path: Path) -> None:
    """Train/val loss and val PSNR against epoch."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [h["loss"] for h in history], "o-", label="train loss")
    if "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if "val_psnr" in history[0]:
        ax2 = ax.twinx()
        ax2.plot(epochs, [h["val_psnr"] for h in history], "s--", color="tab:green", label="val PSNR")
        ax2.set_ylabel("val PSNR (dB)")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_histogram(values: list[float], name: str, unit: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=min(30, max(5, len(values) // 2)), color="tab:blue", edgecolor="white")
    ax.axvline(float(np.mean(values)), color="tab:red", label=f"mean {np.mean(values):.3f}")
    ax.set_xlabel(f"{name}{f' ({unit})' if unit else ''}")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reconstructions(rows: list[tuple[str, np.ndarray, np.ndarray, dict]], path: Path) -> None:
    """One row per image: original | reconstruction | absolute-error heat map, with its metrics."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for ax_row, (name, original, output, metrics) in zip(axes, rows):
        error = np.abs(original.astype(np.float32) - output.astype(np.float32)).mean(axis=-1)
        ax_row[0].imshow(original)
        ax_row[0].set_title(name, fontsize=8)
        ax_row[1].imshow(np.clip(output, 0, 1))
        ax_row[1].set_title(f"{metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}"
                            + (f", LPIPS {metrics['lpips']:.3f}" if "lpips" in metrics else ""), fontsize=8)
        im = ax_row[2].imshow(error, cmap="inferno", vmin=0, vmax=0.5)
        ax_row[2].set_title("|error|", fontsize=8)
        fig.colorbar(im, ax=ax_row[2], fraction=0.046)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
