"""One safe image loader for the whole project: files in, RGB uint8 arrays out, or ImageLoadError."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_FILE_BYTES = 50 * 1024 * 1024  # refuse larger files before decoding anything
MAX_PIXELS = 40_000_000  # about 7300x5500; larger headers are decompression bombs for our purpose
# Formats Pillow registers that hold no photo (stubs for scientific data, video, vector graphics): their
# suffixes (.h5 model weights, .mpg, .eps, ...) are not taken for images in a folder walk.
NOT_PHOTO_FORMATS = {"BUFR", "GRIB", "HDF5", "MPEG", "EPS", "WMF", "FITS"}
# Formats Pillow opens by their content but registers no suffix for: MPO (multi-picture JPEG, from
# 3D and burst cameras).
CONTENT_READABLE_SUFFIXES = {".mpo"}
# Image formats Pillow cannot open here (without plugins), listed so that a folder walk names and counts
# them as unreadable instead of passing over them in silence.
UNREADABLE_IMAGE_SUFFIXES = {".heic", ".heif", ".jxl", ".avif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf",
                             ".orf", ".rw2", ".svg", ".exr", ".hdr"}


class ImageLoadError(ValueError):
    """An image that cannot be used: unreadable, corrupt, too large, or not an image."""


def load_image(source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load any PIL-readable image as an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Args:
        source: a path, raw bytes, or a file-like object.
        max_pixels: images with more pixels are refused (decompression-bomb guard).

    Example:
        >>> load_image("photo.png").shape
        (240, 320, 3)
    """
    name = str(source) if isinstance(source, (str, Path)) else "image"
    try:
        if isinstance(source, (str, Path)):
            size = Path(source).stat().st_size
            if size > MAX_FILE_BYTES:
                raise ImageLoadError(f"{name}: file is {size / 2**20:.0f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit")
        elif isinstance(source, bytes):
            source = io.BytesIO(source)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.width * im.height > max_pixels:
                    raise ImageLoadError(
                        f"{name}: {im.width}x{im.height} has more than {max_pixels:,} pixels")
                im.load()  # decoding errors surface here, before EXIF parsing gets the blame
                return to_rgb_array(exif_upright(im, name))
    except (ImageLoadError, MemoryError):
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"{name}: no such file") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{name}: not a readable image ({e})") from None
    except Exception as e:  # whatever Pillow, its plugins or its EXIF parsing raise (struct.error, ...)
        raise ImageLoadError(f"{name}: corrupt or unreadable image ({type(e).__name__}: {e})") from None


def exif_upright(im: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation; where the EXIF cannot be parsed, keep the image as stored, with a warning."""
    try:
        return ImageOps.exif_transpose(im)
    except MemoryError:
        raise
    except Exception as e:  # malformed EXIF (zero denominators, truncated IFDs) raises all kinds of errors
        warnings.warn(f"{name}: EXIF orientation unreadable ({type(e).__name__}: {e}); loaded as stored",
                      stacklevel=3)
        return im


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 sRGB, each mode handled explicitly.

    Transparency (an alpha channel, premultiplied or not, or a PNG tRNS colour key) is composited on
    white. 1/L/P/RGB/RGBX/CMYK/YCbCr/HSV use Pillow's exact conversions; LAB goes through a LAB ->
    sRGB colour transform; I;16* (16-bit PNG and TIFF) by 65535, what the format says, whatever
    the values (the maximum is no guide: a dark frame has a small one); I (32-bit integers,
    whose range no format states) by 255 when no value exceeds 255, else by 65535; F by 1 when no
    value exceeds 1, else as I. Anything else raises ValueError.
    """
    mode = im.mode
    if mode in ("1", "L", "P", "RGB") and im.has_transparency_data:  # a colour key or an RGBA palette
        mode = "RGBA" if mode in ("P", "RGB") else "LA"
        im = im.convert(mode)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        im = im.convert("RGBA") if mode != "La" else im.convert("LA").convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, im).convert("RGB"), dtype=np.uint8).copy()
    if mode in ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"):
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    if mode == "LAB":
        from PIL import ImageCms  # needs Pillow built with LittleCMS; only LAB images need it
        srgb = ImageCms.profileToProfile(im, ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                         outputMode="RGB")
        return np.asarray(srgb, dtype=np.uint8).copy()
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(a.max()) if a.size else 0.0
        if mode.startswith("I;16"):
            peak = 65535.0
        else:
            peak = 1.0 if mode == "F" and top <= 1.0 else 255.0 if top <= 255 else 65535.0
        grey = np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    raise ValueError(f"unsupported image mode {mode!r}")  # load_image names the file


def image_suffixes() -> set[str]:
    """File suffixes of every format Pillow can open here (its plugins decide, e.g. .avif, .jfif, .mpo),
    plus image formats it cannot, so that a folder walk reports those instead of skipping them silently."""
    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items()
                if fmt in Image.OPEN and fmt not in NOT_PHOTO_FORMATS}
    return readable | CONTENT_READABLE_SUFFIXES | UNREADABLE_IMAGE_SUFFIXES


def list_images(folder: str | Path) -> list[Path]:
    """All files under `folder` (recursively) that are or look like images, sorted for determinism.

    Files of formats Pillow cannot open here (.heic without a plugin, raw camera files) are listed
    too: loading them raises ImageLoadError, so callers count and name them. Symlinked folders are
    followed (the usual way to assemble a data set without copying), each real folder once: a link
    back up the tree, or a second link to a folder already walked, adds nothing. Paths are listed as
    reached, through the links.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    suffixes = image_suffixes()
    found, walked = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            status = os.stat(root)
        except OSError:  # a link whose target went away under the walk
            dirs[:] = []
            continue
        if (status.st_dev, status.st_ino) in walked:
            dirs[:] = []  # a loop, or a folder reached before by another path
            continue
        walked.add((status.st_dev, status.st_ino))
        dirs.sort()  # the walk's order, so that which of two links to one folder counts is deterministic
        found += [p for p in (Path(root) / name for name in files) if p.suffix.lower() in suffixes and p.is_file()]
    return sorted(found)


def center_crop_square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side]


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 or [0,1] float RGB with PIL's antialiased bicubic filter; dtype is kept."""
    if image.shape[:2] == (height, width):
        return image
    is_float = image.dtype != np.uint8
    u8 = to_uint8(image) if is_float else image
    out = np.asarray(Image.fromarray(u8).resize((width, height), Image.BICUBIC))
    return out.astype(np.float32) / 255.0 if is_float else out


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0,1]; floats are passed through as float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)


FLOAT_TOLERANCE = 1e-3  # float images may overshoot [0, 1] by rounding (a bicubic resize, a decoder)


def checked_image(image, what: str = "image") -> np.ndarray:
    """The one rule for image arrays handed to the library: uint8 (0..255) is kept; uint16
    (0..65535) and floats in [0, 1] become float32 in [0, 1] (floats within FLOAT_TOLERANCE outside
    are clipped).

    Raises:
        TypeError: a file path or a PIL image instead of an array; the message points at `load_image`,
            which reads either the way the library expects (EXIF orientation, any mode, transparency).
        ValueError: any other dtype (bool, signed or wider integers, complex), non-finite values, or
            floats outside [0, 1] (a 0..255 float image, say), with what was found.
    """
    if isinstance(image, (str, os.PathLike)):
        raise TypeError(f"{what}: expected an image array, got the path {str(image)!r}: "
                        f"read it with recon.load_image({str(image)!r}) first")
    if isinstance(image, (bytes, Image.Image)):
        kind = "bytes" if isinstance(image, bytes) else "a PIL image"
        raise TypeError(f"{what}: expected an image array, got {kind}: read the file (or its bytes) with "
                        "recon.load_image(...) first")
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{what}: expected uint8, uint16 or float in [0, 1], got dtype {image.dtype}")
    if image.size:
        low, high = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{what}: contains NaN or infinite values")
        if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
            hint = " (looks like 0..255: divide by 255 or pass uint8)" if high > 1.5 and low >= 0 else ""
            raise ValueError(f"{what}: float values must lie in [0, 1], found {low:.4g} to {high:.4g}{hint}")
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(image: np.ndarray, path: str | Path) -> None:
    """Write an image to a file, in the format its suffix names (.png, .jpg, .webp, ...).

    Args:
        image: (H, W, 3) or (H, W): floats in [0, 1] (a reconstruction's `output`), uint8 or uint16;
            see `checked_image`. Floats are rounded to 8 bits.
        path: the file to write; its folder must exist.

    Example:
        >>> rec = model.reconstruct(load_image("photo.jpg"))
        >>> save_image(rec.output, "photo_block3.png")
    """
    Image.fromarray(to_uint8(checked_image(image))).save(path)
