"""The feature-map cache: views, crops that match their pixels, and the benchmark end to end."""

import importlib.util
from pathlib import Path

import numpy as np

from recon import ReconConfig, build_encoder
from training.data import (FeatureMapCache, FeatureMapCrops, cache_short_sides, encode_batches, load_image_set,
                           view_sizes)


def test_short_sides_span_the_streamed_crops_scales():
    assert cache_short_sides(224, 128, 3) == [168, 274, 448]
    assert cache_short_sides(32, 32, 2) == [32, 64]  # never under the crop
    assert view_sizes(300, 400, [168], 8) == [(168, 224, 168, 224)]
    assert view_sizes(301, 403, [170], 8) == [(170, 228, 168, 224)]  # kept part: multiples of the stride


def test_crops_are_the_encoders_features_of_their_own_pixels(tmp_path, photo_dir):
    """A crop's features are the encoder's output on the whole view at that place, and its target the
    pixels under it; away from the crop's border they equal the crop's own features (the receptive
    field sees real context, not padding, at the border)."""
    encoder = build_encoder(ReconConfig(layer="block2_conv2", encoder_weights="random"))
    files = sorted(photo_dir.rglob("*.*"))[:3]
    maps = FeatureMapCache(tmp_path, "k").build(encoder, files, [32, 48])
    assert len(maps.views) == 3 * 2 * 2 and maps.stride == 2 and maps.features.dtype == np.float16
    data = FeatureMapCrops(maps, 16, 4, 5, seed=1)
    assert len(data) == 3 and data.count == 12
    features, targets = data[0]
    assert features.shape == (5, 8, 8, 128) and targets.shape == (5, 16, 16, 3)
    assert features.dtype == targets.dtype == np.float32 and 0 <= targets.min() and targets.max() <= 1
    for i in range(5):
        crop_features = encode_batches(encoder, (targets[i:i + 1] * 255).round().astype(np.uint8))[0]
        inner = (slice(3, 5), slice(3, 5))  # more than the receptive field's reach from the crop's edges
        np.testing.assert_allclose(features[i][inner], crop_features[inner], rtol=2e-2, atol=2e-2 * np.abs(
            crop_features).max())
    again = FeatureMapCrops(maps, 16, 4, 5, seed=1)
    again.set_epoch(0, first_batch=1)
    np.testing.assert_array_equal(again[0][0], data[1][0])  # a resumed epoch serves the same batches
    data.set_epoch(1)
    assert not np.array_equal(data[0][1], again[0][1])


def test_flipped_views_hold_the_mirrored_photo(tmp_path, photo_dir):
    encoder = build_encoder(ReconConfig(layer="block2_conv2", encoder_weights="random"))
    maps = FeatureMapCache(tmp_path, "k").build(encoder, sorted(photo_dir.rglob("*.*"))[:1], [32])
    (_, _, f0, h, w, _, p0), (_, _, f1, _, _, _, p1) = maps.views
    assert (f0, f1) == (0, 1)
    first = maps.pixels[p0:p0 + h * w * 3].reshape(h, w, 3)
    second = maps.pixels[p1:p1 + h * w * 3].reshape(h, w, 3)
    np.testing.assert_array_equal(first[:, ::-1], second)


def test_an_unreadable_photo_is_skipped_and_named(tmp_path, photo_dir):
    bad = photo_dir / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    encoder = build_encoder(ReconConfig(layer="block2_conv2", encoder_weights="random"))
    cache = FeatureMapCache(tmp_path, "k")
    maps = cache.build(encoder, [bad, *sorted(photo_dir.rglob("*.png"))[:1]], [32])
    assert cache.skipped()[0][0] == str(bad) and len(maps.views) == 2 and set(maps.views[:, 0]) == {1}


def test_benchmark_compares_both_paths_end_to_end(tmp_path, photo_dir):
    spec = importlib.util.spec_from_file_location("feature_maps", Path(__file__).parents[1] / "benchmarks/feature_maps.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.RECIPES = {"block3_conv3": (8, 1, [8, 8])}
    record = bench.main(["--data", str(photo_dir), "--holdout", str(photo_dir), "--layers", "block3_conv3",
                         "--quality-layer", "block3_conv3", "--encoder-weights", "random", "--precision", "float32",
                         "--image-size", "32", "--crop-size", "32", "--batch-size", "4", "--speed-photos", "2",
                         "--speed-steps", "2", "--rounds", "1", "--quality-crops", "8",
                         "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "fm.json")])
    row = record["speed"][0]
    assert row["cache_crops_per_s"] > 0 and row["no_cache_crops_per_s"] > 0 and row["build_s_per_photo"] > 0
    assert record["quality"]["crops"] == 8 and np.isfinite(record["quality"]["psnr_difference"])
    assert (tmp_path / "fm.json").is_file()
