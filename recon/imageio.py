"""One safe image loader for the whole project: files in, RGB uint8 arrays out, or ImageLoadError."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_FILE_BYTES = 50 * 1024 * 1024  # refuse larger files before decoding anything
MAX_PIXELS = 40_000_000  # about 7300x5500; larger headers are decompression bombs for our purpose
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


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
                im = ImageOps.exif_transpose(im)
                return to_rgb_array(im)
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{name}: not a readable image ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(f"{name}: corrupt or unreadable image ({type(e).__name__}: {e})") from None


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8: 16-bit scaled down, alpha composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def list_images(folder: str | Path) -> list[Path]:
    """All files with an image suffix under `folder`, recursively, sorted for determinism."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


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


def to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(image: np.ndarray, path: str | Path) -> None:
    Image.fromarray(to_uint8(image)).save(path)
