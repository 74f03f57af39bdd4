"""Figures people would rather look at than read: loss curves, histograms, sample grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from recon.metrics import ERROR_MAP_MAX, error_map  # noqa: E402


def plot_history(history: list[dict], path: Path) -> plt.Figure:
    """Train/val loss and val PSNR against epoch; one legend above the axes, where it hides no curve."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [h["loss"] for h in history], "o-", label="train loss")
    if "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    axes = [ax]
    if "val_psnr" in history[0]:
        ax2 = ax.twinx()
        ax2.plot(epochs, [h["val_psnr"] for h in history], "s--", color="tab:green", label="val PSNR")
        ax2.set_ylabel("val PSNR (dB)")
        axes.append(ax2)
    # inside the axes a legend always covers some epoch of one of the two y scales ("best" only
    # avoids its own axis's lines), so all entries go in one row above
    handles = [h for a in axes for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)  # closed, but returned for tests to inspect
    return fig


def plot_histogram(values: list[float], name: str, unit: str, path: Path) -> plt.Figure:
    """How many images scored what: plain counts (no density), so the y axis has integer ticks."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=min(30, max(5, len(values) // 2)), color="tab:blue", edgecolor="white")
    ax.axvline(float(np.mean(values)), color="tab:red", label=f"mean {np.mean(values):.3f}")
    ax.set_xlabel(f"{name}{f' ({unit})' if unit else ''}")
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def plot_reconstructions(rows: list[tuple[str, np.ndarray, np.ndarray, dict]], path: Path) -> plt.Figure:
    """One row per image: original | reconstruction | absolute-error heat map, with its metrics.
    The heat map is the app's (`error_map` on 0..ERROR_MAP_MAX), so the two can be compared."""
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for ax_row, (name, original, output, metrics) in zip(axes, rows):
        error = error_map(original, np.clip(output, 0, 1))
        ax_row[0].imshow(original)
        ax_row[0].set_title(name, fontsize=8)
        ax_row[1].imshow(np.clip(output, 0, 1))
        ax_row[1].set_title(f"{metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}"
                            + (f", LPIPS {metrics['lpips']:.3f}" if "lpips" in metrics else ""), fontsize=8)
        im = ax_row[2].imshow(error, cmap="inferno", vmin=0, vmax=ERROR_MAP_MAX)
        ax_row[2].set_title(f"|error|, fixed range 0–{ERROR_MAP_MAX}", fontsize=8)
        bar = fig.colorbar(im, ax=ax_row[2], fraction=0.046, extend="max")  # the arrow: errors above are clipped
        bar.ax.tick_params(labelsize=7)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return fig
