"""recon.features: the numbers behind the demo's feature viewer and ablations."""

import numpy as np
import pytest

from recon import features as F


@pytest.fixture
def feats():
    """4x5 map with 6 channels of known means; channel 4 is all zeros, channel 1 half zeros."""
    rng = np.random.default_rng(0)
    f = np.zeros((4, 5, 6), np.float32)
    for c, level in enumerate([1.0, 3.0, 0.5, 2.0, 0.0, 2.0]):
        f[..., c] = level * (0.5 + rng.random((4, 5)))
    f[:2, :, 1] = 0.0
    return f


def test_channel_means_and_top_channels(feats):
    means = F.channel_means(feats)
    assert means.shape == (6,)
    np.testing.assert_allclose(means, feats.mean(axis=(0, 1)), rtol=1e-6)
    top = F.top_channels(feats, 3)
    assert list(top) == list(np.argsort(-means)[:3])
    assert means[top[0]] >= means[top[1]] >= means[top[2]]
    assert len(F.top_channels(feats, 100)) == 6 and len(F.top_channels(feats, 0)) == 0


def test_top_channels_ties_keep_index_order():
    f = np.ones((2, 2, 5), np.float32)
    assert list(F.top_channels(f, 5)) == [0, 1, 2, 3, 4]


def test_sparsity_counts_exact_zeros(feats):
    expected = (4 * 5 + 2 * 5) / feats.size  # channel 4 entirely, half of channel 1
    assert F.sparsity(feats) == pytest.approx(expected)
    assert F.sparsity(np.zeros((2, 2, 3))) == 1.0
    assert F.sparsity(np.ones((2, 2, 3))) == 0.0


def test_rejects_non_feature_maps():
    with pytest.raises(ValueError, match="feature map"):
        F.channel_means(np.zeros((4, 4)))


def test_colormap_range_and_ends():
    values = np.array([[0.0, 0.5], [1.0, 2.0]], np.float32)
    rgb = F.colormap(values, vmin=0.0, vmax=1.0)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].sum() < 10  # inferno starts near black
    assert (rgb[1, 0] == rgb[1, 1]).all()  # clipped at vmax
    assert rgb[1, 0].sum() > 600  # and ends near pale yellow
    flat = F.colormap(np.full((3, 3), 7.0))  # constant input: no division by zero
    assert flat.shape == (3, 3, 3) and len(np.unique(flat.reshape(-1, 3), axis=0)) == 1
    nan = F.colormap(np.array([[np.nan, 1.0]]), vmin=0.0, vmax=1.0)
    assert nan.dtype == np.uint8


def test_channel_image_and_tiles(feats):
    im = F.channel_image(feats, 1, size=40)
    assert im.dtype == np.uint8 and im.shape == (4 * 8, 5 * 8, 3)  # nearest upscaling by 40 // 5
    assert (im[:16] == im[0, 0]).all()  # zeros (top half of channel 1) are one colour: black
    tiles = F.channel_tiles(feats, 3, size=20)
    assert [c for _, c, _ in tiles] == list(F.top_channels(feats, 3))
    assert all(mean == pytest.approx(float(feats[..., c].mean())) for _, c, mean in tiles)
    with pytest.raises(ValueError, match="out of range"):
        F.channel_image(feats, 6)


def test_channel_grid_layout(feats):
    grid = F.channel_grid(feats, [0, 1, 2], cols=2, size=10, pad=2)
    tile = F.channel_image(feats, 0, size=10)
    th, tw = tile.shape[:2]
    assert grid.shape == (2 * th + 2, 2 * tw + 2, 3)
    assert (grid[:th, :tw] == tile).all()
    assert (grid[th:th + 2] == 255).all()  # white gap between rows
    assert F.channel_grid(feats, [], size=8).shape == (8, 8, 3)


def test_keep_top_k(feats):
    kept = F.keep_top_k(feats, 2)
    top = set(F.top_channels(feats, 2).tolist())
    for c in range(6):
        if c in top:
            np.testing.assert_array_equal(kept[..., c], feats[..., c])
        else:
            assert not kept[..., c].any()
    assert not F.keep_top_k(feats, 0).any()
    np.testing.assert_array_equal(F.keep_top_k(feats, 6), feats)


def test_zero_channel_leaves_input_alone(feats):
    before = feats.copy()
    out = F.zero_channel(feats, 3)
    assert not out[..., 3].any()
    np.testing.assert_array_equal(np.delete(out, 3, axis=-1), np.delete(feats, 3, axis=-1))
    np.testing.assert_array_equal(feats, before)
    with pytest.raises(ValueError):
        F.zero_channel(feats, -1)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantize_levels_and_error(feats, bits):
    q = F.quantize(feats, bits)
    assert q.shape == feats.shape and q.dtype == np.float32
    for c in range(6):
        assert len(np.unique(q[..., c])) <= 2 ** bits
        step = feats[..., c].max() / (2 ** bits - 1) if feats[..., c].max() > 0 else 0.0
        assert np.abs(q[..., c] - feats[..., c]).max() <= step / 2 + 1e-5  # round to nearest level
    assert (q[feats == 0] == 0).all()  # ReLU zeros stay zero
    np.testing.assert_allclose(q.max(axis=(0, 1)), feats.max(axis=(0, 1)), rtol=1e-5)  # the peak is a level


def test_quantize_more_bits_is_closer(feats):
    errors = [np.abs(F.quantize(feats, b) - feats).mean() for b in (1, 2, 4, 8)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.01
    with pytest.raises(ValueError, match="bits"):
        F.quantize(feats, 0)


def test_quantize_handles_negative_values():
    f = np.linspace(-1, 1, 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    q = F.quantize(f, 8)
    assert np.abs(q - f).max() < 2 / 255
