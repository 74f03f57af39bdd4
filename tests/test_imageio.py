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


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ImageLoadError, match="nowhere.png: no such file"):
        load_image(tmp_path / "nowhere.png")


def test_one_pixel_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    assert load_image(tmp_path / "dot.png").tolist() == [[[10, 20, 30]]]


# -- every Pillow mode, each with an expected colour ------------------------------------------------
COLOUR = (200, 100, 50)
GREY = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # ITU-R 601-2 luma, Pillow's L conversion: 124


def written_in_mode(mode: str, tmp_path):
    """(file, expected RGB, tolerance): COLOUR stored in `mode` in a format that keeps the mode."""
    from PIL import ImageCms
    rgb = Image.new("RGB", (6, 5), COLOUR)
    grey16 = np.full((5, 6), GREY * 257, np.uint16)
    cases = {
        "1": (rgb.convert("L").point(lambda v: 255).convert("1"), "png", (255,) * 3, 0),
        "L": (rgb.convert("L"), "png", (GREY,) * 3, 0),
        "LA": (rgb.convert("LA"), "png", (GREY,) * 3, 0),
        "P": (rgb.convert("P", palette=Image.Palette.ADAPTIVE), "png", COLOUR, 0),
        "PA": (rgb.convert("RGBA").convert("PA"), "webp", COLOUR, 8),
        "RGB": (rgb, "png", COLOUR, 0),
        "RGBA": (rgb.convert("RGBA"), "png", COLOUR, 0),
        "CMYK": (rgb.convert("CMYK"), "tiff", COLOUR, 1),
        "CMYK-jpeg": (rgb.convert("CMYK"), "jpg", COLOUR, 6),
        "YCbCr": (rgb.convert("YCbCr"), "jpg", COLOUR, 6),
        "LAB": (ImageCms.profileToProfile(rgb, ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                          outputMode="LAB"), "tiff", COLOUR, 3),
        "I": (Image.fromarray(grey16.astype(np.int32)), "tiff", (GREY,) * 3, 1),
        "I;16": (Image.fromarray(grey16), "png", (GREY,) * 3, 1),
        "I;16B": (Image.frombytes("I;16B", (6, 5), grey16.astype(">u2").tobytes()), "tiff", (GREY,) * 3, 1),
        "F": (Image.fromarray(np.full((5, 6), GREY / 255, np.float32)), "tiff", (GREY,) * 3, 1),
        "F-0..255": (Image.fromarray(np.full((5, 6), float(GREY), np.float32)), "tiff", (GREY,) * 3, 1),
    }
    im, fmt, expected, tolerance = cases[mode]
    path = tmp_path / f"image.{fmt}"
    im.save(path)
    return path, expected, tolerance


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "CMYK-jpeg", "YCbCr", "LAB",
                                  "I", "I;16", "I;16B", "F", "F-0..255"])
def test_every_writable_mode_loads_as_the_right_colour(mode, tmp_path):
    path, expected, tolerance = written_in_mode(mode, tmp_path)
    out = load_image(path)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected).max() <= tolerance, (Image.open(path).mode, out[0, 0], expected)


def test_unreadable_modes_in_memory_still_convert():
    """Modes no file format here writes (HSV, premultiplied alpha) are handled too, not clipped."""
    from recon.imageio import to_rgb_array
    rgb = Image.new("RGB", (3, 2), COLOUR)
    assert np.abs(to_rgb_array(rgb.convert("HSV")).astype(int) - COLOUR).max() <= 1
    assert np.abs(to_rgb_array(rgb.convert("RGBA").convert("RGBa")).astype(int) - COLOUR).max() <= 1
    assert np.abs(to_rgb_array(rgb.convert("RGBX")).astype(int) - COLOUR).max() == 0


@pytest.mark.parametrize("mode, key", [("L", 0), ("RGB", (0, 0, 0))])
def test_a_trns_colour_key_is_transparent_like_alpha(mode, key, tmp_path):
    """A PNG tRNS colour key (no alpha channel) marks the keyed pixels transparent: white, not black."""
    array = np.zeros((4, 4) if mode == "L" else (4, 4, 3), np.uint8)
    array[0, 0] = 90
    Image.fromarray(array, mode).save(tmp_path / "keyed.png", transparency=key)
    out = load_image(tmp_path / "keyed.png")
    assert (out[1:, 1:] == 255).all() and (out[0, 0] == 90).all()


# -- whatever Pillow raises is ours to catch ----------------------------------------------------------
def test_unparsable_exif_loads_unrotated_with_a_warning(tmp_path, monkeypatch):
    """As a 40x96 JPEG with Orientation 6 and a zero-denominator ExposureBiasValue did with Pillow 11."""
    import struct

    from PIL import ImageOps
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (96, 40), COLOUR).save(tmp_path / "bad_exif.jpg", exif=exif)

    def broken_exif(im, **kwargs):
        raise struct.error("unpack requires a buffer of 8 bytes")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken_exif)
    with pytest.warns(UserWarning, match="EXIF orientation unreadable"):
        out = load_image(tmp_path / "bad_exif.jpg")
    assert out.shape == (40, 96, 3)


def test_any_decoder_exception_becomes_image_load_error(tmp_path, monkeypatch):
    import struct
    Image.new("RGB", (8, 8), COLOUR).save(tmp_path / "x.png")

    def broken_load(self, *args):
        raise struct.error("bad chunk")

    monkeypatch.setattr(Image.Image, "convert", broken_load)
    with pytest.raises(ImageLoadError, match="x.png.*struct.error|x.png.*error"):
        load_image(tmp_path / "x.png")


# -- the folder walk asks Pillow --------------------------------------------------------------------
def test_folder_walk_takes_every_format_pillow_opens_and_lists_unreadable_ones(tmp_path):
    from PIL import features

    from recon.imageio import list_images
    from training.data import load_image_set
    Image.new("RGB", (8, 8), COLOUR).save(tmp_path / "a.jfif", "JPEG")
    Image.new("RGB", (8, 8), COLOUR).save(tmp_path / "b.mpo", "JPEG")
    if features.check("avif"):
        Image.new("RGB", (8, 8), COLOUR).save(tmp_path / "c.avif")
    (tmp_path / "d.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 32)  # no HEIF plugin here
    (tmp_path / "notes.txt").write_text("not an image")
    files = list_images(tmp_path)
    names = [p.name for p in files]
    assert "notes.txt" not in names and {"a.jfif", "b.mpo", "d.heic"} <= set(names)
    assert ("c.avif" in names) == features.check("avif")
    loaded = load_image_set(files)
    assert [p.name for p, _ in loaded.skipped] == ["d.heic"]
    assert len(loaded.images) == len(files) - 1


# -- a path or a PIL image where an array belongs; save_image --------------------------------------
def test_a_path_or_a_pil_image_where_an_array_belongs_points_at_load_image(tiny_config, tmp_path):
    from recon import Reconstructor
    model = Reconstructor(tiny_config)
    with pytest.raises(TypeError, match=r"got the path 'photo.jpg': read it with recon.load_image\('photo.jpg'\)"):
        model.reconstruct("photo.jpg")
    with pytest.raises(TypeError, match=r"got the path .*x.png.*recon.load_image"):
        model.reconstruct(tmp_path / "x.png")
    with pytest.raises(TypeError, match=r"got a PIL image: .*recon.load_image"):
        model.reconstruct(Image.new("RGB", (32, 32)))


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_save_image_writes_floats_in_0_1_and_uint8_from_the_package_root(dtype, tmp_path):
    from recon import save_image
    image = np.random.default_rng(0).random((12, 20, 3)).astype(np.float32)
    if dtype == "uint8":
        image = (image * 255).round().astype(np.uint8)
    save_image(image, tmp_path / "out.png")
    back = load_image(tmp_path / "out.png")
    expected = image if dtype == "uint8" else (image * 255 + 0.5).astype(np.uint8)
    assert back.shape == (12, 20, 3) and np.array_equal(back, expected)
    in_0_255 = image.astype(np.float32) * (255 if dtype == "float32" else 1)
    with pytest.raises(ValueError, match="looks like 0..255"):
        save_image(in_0_255, tmp_path / "bad.png")


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_a_16_bit_image_is_read_as_16_bit_whatever_its_brightest_pixel(fmt, tmp_path):
    """A dark 16-bit frame is dark: its values are 0..65535 because the format says so, not 0..255
    because none exceeds 255 (one pixel of 256 used to make the same frame 257 times darker)."""
    frame = np.arange(30, dtype=np.uint16).reshape(5, 6) * 8  # 0..232
    loaded = []
    for top in (255, 256):
        frame[0, 0] = top
        Image.fromarray(frame).save(tmp_path / f"dark{top}.{fmt}")
        assert Image.open(tmp_path / f"dark{top}.{fmt}").mode.startswith("I;16")
        loaded.append(load_image(tmp_path / f"dark{top}.{fmt}"))
    assert np.array_equal(loaded[0], loaded[1]) and loaded[0].max() == 1  # 256 / 65535 * 255, rounded
