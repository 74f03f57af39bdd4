"""Training data: image folders, a deterministic split, random crops and the on-disk feature cache."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from recon.imageio import ImageLoadError, center_crop_square, list_images, load_image, resize

CACHE_FORMAT = 1


@dataclass
class ImageSet:
    """Decoded images of a folder, with the files that could not be read and why."""

    files: list[Path]
    images: list[np.ndarray]
    skipped: list[tuple[Path, str]]


def file_sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def load_image_set(files: list[Path], desc: str = "loading images") -> ImageSet:
    kept, images, skipped = [], [], []
    for path in tqdm(files, desc=desc, unit="img", leave=False):
        try:
            images.append(load_image(path))
            kept.append(path)
        except ImageLoadError as e:
            skipped.append((path, str(e)))
    return ImageSet(kept, images, skipped)


def hash_split(files: list[Path], root: Path, val_percent: int = 10) -> tuple[list[Path], list[Path]]:
    """Deterministic train/val split by a hash of each file's path relative to `root`."""
    def is_val(path: Path) -> bool:
        digest = hashlib.sha1(path.relative_to(root).as_posix().encode()).digest()
        return int.from_bytes(digest[:4], "big") % 100 < val_percent
    val = [p for p in files if is_val(p)]
    train = [p for p in files if not is_val(p)]
    if not val or not train:  # tiny folders: keep at least one image on each side
        train, val = files[:-1] or files, files[-1:]
    return train, val


def square_image(image: np.ndarray, size: int) -> np.ndarray:
    """The evaluation view of an image: center square, resized to size x size, uint8."""
    return resize(center_crop_square(image), size, size)


def random_crop(image: np.ndarray, crop_size: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """A crop_size square at a random position and scale, randomly flipped.

    The scale is drawn so that the image's short side spans between 0.75x and 2x the training
    image size: the same range of detail per pixel as whole photos shown at `image_size`.
    """
    h, w = image.shape[:2]
    short = min(h, w)
    target_short = image_size * math.exp(rng.uniform(math.log(0.75), math.log(2.0)))
    side = min(short, max(1, round(crop_size * short / max(target_short, crop_size))))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = resize(image[top:top + side, left:left + side], crop_size, crop_size)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def sample_view(image: np.ndarray, crop_size: int | None, image_size: int, rng: np.random.Generator) -> np.ndarray:
    if crop_size:
        return random_crop(image, crop_size, image_size, rng)
    view = square_image(image, image_size)
    return view[:, ::-1] if rng.random() < 0.5 else view


def encode_batches(encoder: keras.Model, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Encode uint8 (0..255) or float ([0,1]) images in batches; returns float32 features."""
    scale = 1 / 255.0 if images.dtype == np.uint8 else 1.0
    out = [keras.ops.convert_to_numpy(encoder(images[i:i + batch_size].astype("float32") * scale, training=False))
           .astype(np.float32) for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def feature_rms(features: np.ndarray) -> list[float]:
    """Per-channel root mean square, floored so silent channels do not blow up."""
    f = np.asarray(features, dtype=np.float32).reshape(-1, features.shape[-1])
    rms = np.sqrt(np.mean(f.astype(np.float64) ** 2, axis=0))
    floor = max(1e-3, 1e-3 * float(rms.max()))
    return [float(max(r, floor)) for r in rms]


class FeatureCache:
    """Encoder features of a fixed set of training crops, float16 on disk, memory-mapped.

    The folder name is a hash of everything the features depend on (encoder, sizes, seed, and
    each file's path, size and mtime), so a stale cache is never reused; `meta.json` is written
    last, so a half-built cache is rebuilt.
    """

    def __init__(self, root: Path, key: str):
        self.dir = Path(root) / key
        self.meta_path = self.dir / "meta.json"

    @staticmethod
    def key_for(encoder_id: dict, files: list[Path], crop_size, image_size, crops_per_image, seed) -> str:
        stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        blob = json.dumps([CACHE_FORMAT, encoder_id, stats, crop_size, image_size, crops_per_image, seed],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def is_complete(self) -> bool:
        return self.meta_path.is_file()

    def open(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.load(self.dir / "features.npy", mmap_mode="r"),
                np.load(self.dir / "targets.npy", mmap_mode="r"))

    def build(self, encoder, images: list[np.ndarray], crop_size, image_size, crops_per_image, seed,
              batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        side = crop_size or image_size
        count = len(images) * crops_per_image
        feature_shape = encoder.compute_output_shape((None, side, side, 3))[1:]
        size_gb = count * math.prod(feature_shape) * 2 / 1e9
        print(f"feature cache: {count} crops x {feature_shape} float16 = {size_gb:.2f} GB in {self.dir}")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        features = np.lib.format.open_memmap(self.dir / "features.npy", "w+", np.float16, (count, *feature_shape))
        targets = np.lib.format.open_memmap(self.dir / "targets.npy", "w+", np.uint8, (count, side, side, 3))
        views = (sample_view(image, crop_size, image_size, np.random.default_rng([seed, i, k]))
                 for i, image in enumerate(images) for k in range(crops_per_image))
        with tqdm(total=count, desc="extracting features", unit="crop") as bar:
            for start in range(0, count, batch_size):
                batch = np.stack([next(views) for _ in range(min(batch_size, count - start))])
                targets[start:start + len(batch)] = batch
                features[start:start + len(batch)] = encode_batches(encoder, batch, batch_size)
                bar.update(len(batch))
        features.flush(), targets.flush()
        self.meta_path.write_text(json.dumps({"count": count, "feature_shape": list(feature_shape)}))
        return self.open()


class CachedCrops(keras.utils.PyDataset):
    """Batches of (features, target image) from the cache; every epoch covers every crop once,
    in an order reshuffled from (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, features, targets, batch_size: int, seed: int):
        super().__init__()
        self.features, self.targets = features, targets
        self.batch_size, self.seed = batch_size, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.targets))

    def __len__(self):
        return math.ceil(len(self.targets) / self.batch_size)

    def __getitem__(self, index):
        idx = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        return (np.asarray(self.features[idx], dtype=np.float32),
                np.asarray(self.targets[idx], dtype=np.float32) / 255.0)


class OnTheFlyCrops(keras.utils.PyDataset):
    """The same kind of samples without a cache: fresh crops every epoch, as (image, image) pairs.

    The encoder runs inside the training graph (see `training.fit`), so on a GPU the whole step is
    one compiled program and the `workers` threads only cut crops (PIL releases the GIL).
    """

    def __init__(self, images, crop_size, image_size, crops_per_image, batch_size, seed, workers: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.images = images
        self.crop_size, self.image_size = crop_size, image_size
        self.count = len(images) * crops_per_image
        self.batch_size, self.seed = batch_size, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(self.count)

    def __len__(self):
        return math.ceil(self.count / self.batch_size)

    def __getitem__(self, index):
        ids = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        n = len(self.images)
        crops = np.stack([sample_view(self.images[i % n], self.crop_size, self.image_size,
                                      np.random.default_rng([self.seed, self.epoch, int(i)])) for i in ids])
        crops = crops.astype(np.float32) / 255.0
        return crops, crops


def save_split(path: Path, data_root, train: ImageSet, val: ImageSet, val_source: str) -> None:
    """Record exactly which files trained the model (with content hashes), for evaluate to exclude."""
    record = {
        "data": str(data_root), "val_source": val_source,
        "train": [{"file": str(p), "sha1": file_sha1(p)} for p in train.files],
        "val": [{"file": str(p), "sha1": file_sha1(p)} for p in val.files],
        "skipped": [{"file": str(p), "reason": r} for p, r in train.skipped + val.skipped],
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile equally sized uint8 images into one array, rows by columns, with white gaps."""
    h, w = rows[0][0].shape[:2]
    grid = np.full((len(rows) * (h + pad) - pad, max(map(len, rows)) * (w + pad) - pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = im
    return grid


def save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path)


def find_images(folder, limit: int | None = None) -> list[Path]:
    try:
        files = list_images(folder)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    if not files:
        raise SystemExit(f"no images found under {folder}")
    return files[:limit] if limit else files
