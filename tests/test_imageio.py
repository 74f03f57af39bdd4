import io

import numpy as np
import pytest
from PIL import Image

from recon import ImageLoadError, load_image


def png_bytes(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1", "I;16", "F"])
def test_modes_become_rgb_uint8(mode, tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 20, 3), dtype=np.uint8))
    im = rgb.convert(mode) if mode not in ("I;16",) else Image.fromarray(
        (np.arange(240).reshape(12, 20) * 270).astype(np.uint16))
    path = tmp_path / f"x.{'tiff' if mode in ('CMYK', 'F') else 'png'}"
    im.save(path)
    out = load_image(path)
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 30


def test_transparent_pixels_composite_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    out = load_image(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert (out == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    im = Image.fromarray(np.zeros((10, 30, 3), np.uint8))  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").shape == (30, 10, 3)


def test_corrupt_and_non_images_raise_our_error(tmp_path):
    good = png_bytes(Image.new("RGB", (50, 50), "red"))
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.jpg").write_text("hello")
    for name in ("trunc.png", "text.jpg"):
        with pytest.raises(ImageLoadError, match=name):
            load_image(tmp_path / name)


def test_decompression_bomb_refused():
    with pytest.raises(ImageLoadError, match="pixels"):
        load_image(png_bytes(Image.new("RGB", (200, 200))), max_pixels=10_000)


def test_oversized_file_refused(tmp_path, monkeypatch):
    import recon.imageio
    monkeypatch.setattr(recon.imageio, "MAX_FILE_BYTES", 100)
    (tmp_path / "big.png").write_bytes(png_bytes(Image.new("RGB", (64, 64))) + b"\0" * 200)
    with pytest.raises(ImageLoadError, match="limit"):
        load_image(tmp_path / "big.png")


def test_one_pixel_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    assert load_image(tmp_path / "dot.png").tolist() == [[[10, 20, 30]]]
