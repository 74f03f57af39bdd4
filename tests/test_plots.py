"""training.plots: figures that can be read and compared (the PNGs themselves are not checked)."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from recon.metrics import ERROR_MAP_MAX, error_map
from tests.conftest import smooth_image
from training.plots import plot_histogram, plot_history, plot_reconstructions


def test_histogram_counts_whole_images(tmp_path):
    values = [24.1, 24.3, 25.0, 26.2, 26.3]
    fig = plot_histogram(values, "PSNR", "dB", tmp_path / "psnr_histogram.png")
    ax = fig.axes[0]
    assert sum(bar.get_height() for bar in ax.patches) == len(values)  # counts, not a density
    ticks = ax.get_yticks()
    assert len(ticks) >= 2 and np.all(ticks == np.round(ticks))  # no 0.5 of an image
    assert (tmp_path / "psnr_histogram.png").is_file()


def test_error_maps_use_the_apps_fixed_colour_range(tmp_path):
    original = smooth_image(32, 32, 0).astype(np.float32) / 255
    output = np.clip(original + 0.1, 0, 1)
    fig = plot_reconstructions([("a.png", original, output, {"psnr": 20.0, "ssim": 0.9})], tmp_path / "s.png")
    heat = fig.axes[2].images[0]
    assert heat.get_clim() == (0, ERROR_MAP_MAX)  # the same scale as the app's error map
    np.testing.assert_allclose(heat.get_array(), error_map(original, output))
    assert str(ERROR_MAP_MAX) in fig.axes[2].get_title()


def test_loss_curve_legend_covers_no_curve(tmp_path):
    history = [{"epoch": e, "loss": 0.2 / e, "val_loss": 0.25 / e, "val_psnr": 18 + e} for e in range(1, 9)]
    fig = plot_history(history, tmp_path / "loss_curve.png")
    renderer = FigureCanvasAgg(fig).get_renderer()  # pyplot detached the closed figure's canvas
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()] == ["train loss", "val loss", "val PSNR"]
    box, plot_area = legends[0].get_window_extent(renderer), fig.axes[0].get_window_extent(renderer)
    assert box.y0 >= plot_area.y1  # above the axes, where no data is drawn
    assert box.y1 <= fig.bbox.y1  # and not cut off
