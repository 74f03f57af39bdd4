"""Training data: image folders, a deterministic split, random crops streamed from the files, and
the on-disk feature cache."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from recon.atomic import write_atomically, write_json_atomically
from recon.imageio import ImageLoadError, center_crop_square, list_images, load_image, resize
from recon.pipeline import weights_fingerprint

CACHE_FORMAT = 1


@dataclass
class ImageSet:
    """Decoded images of a folder, with the files that could not be read and why."""

    files: list[Path]
    images: list[np.ndarray]
    skipped: list[tuple[Path, str]]


class LogProgress:
    """tqdm's `update` and context manager, printing a plain line at every tenth of the total: a bar's
    carriage-return redraws pile up in a log file (a cache build of 30,000 photos would write
    thousands of them into one line)."""

    def __init__(self, total: int, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.shown, self.start = 0, 0, time.time()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        self.done += n
        tenth = 10 * self.done // max(self.total, 1)
        if tenth > self.shown:
            self.shown = tenth
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s ({10 * tenth}%, "
                  f"{time.time() - self.start:.0f} s)", flush=True)


def progress(total: int, desc: str, unit: str):
    """A tqdm bar on a terminal; into a file or pipe, a `LogProgress` line at every tenth done."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit)
    return LogProgress(total, desc, unit)


def file_sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def load_image_set(files: list[Path], desc: str | None = "loading images") -> ImageSet:
    """Decode `files`, setting aside the unreadable ones with the reason; a progress bar unless desc is None."""
    kept, images, skipped = [], [], []
    for path in tqdm(files, desc=desc, unit="img", leave=False, disable=True if desc is None else None):
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


def split_folders(root) -> tuple[Path, Path] | None:
    """The split a dataset ships with, as (train folder, val folder): `root` holding train/ and val/
    (or valid/), as CelebA-HQ's train/{female,male} and val/{female,male} do; None for any other
    layout (then the split is hash_split's). Images are searched in them recursively."""
    root = Path(root)
    val = next((root / name for name in ("val", "valid") if (root / name).is_dir()), None)
    return (root / "train", val) if (root / "train").is_dir() and val else None


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

    @staticmethod
    def size_bytes(encoder, count: int, side: int) -> tuple[int, tuple]:
        """(bytes on disk, feature shape) of `count` crops of side x side: float16 features + uint8 targets."""
        feature_shape = tuple(encoder.compute_output_shape((None, side, side, 3))[1:])
        return count * (math.prod(feature_shape) * 2 + side * side * 3), feature_shape

    def is_complete(self) -> bool:
        return self.meta_path.is_file()

    def open(self) -> tuple[np.ndarray, np.ndarray]:
        count = json.loads(self.meta_path.read_text())["count"]  # the crops of the readable files
        return (np.load(self.dir / "features.npy", mmap_mode="r")[:count],
                np.load(self.dir / "targets.npy", mmap_mode="r")[:count])

    def skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of the files the build could not read."""
        return [tuple(s) for s in json.loads(self.meta_path.read_text()).get("skipped", [])]

    def build(self, encoder, sources, crop_size, image_size, crops_per_image, seed, batch_size: int = 16,
              workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Cut, encode and store every crop. `sources` are decoded images or files; files are decoded
        `workers` at a time, never all at once, and an unreadable one is skipped (see `skipped`)."""
        side = crop_size or image_size
        count = len(sources) * crops_per_image
        size, feature_shape = self.size_bytes(encoder, count, side)
        print(f"feature cache: {count} crops x {feature_shape} float16 + targets = {size / 1e9:.2f} GB in {self.dir}")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        features = np.lib.format.open_memmap(self.dir / "features.npy", "w+", np.float16, (count, *feature_shape))
        targets = np.lib.format.open_memmap(self.dir / "targets.npy", "w+", np.uint8, (count, side, side, 3))

        def views(i: int) -> list[np.ndarray] | str:  # the crops of source i, or why it cannot be read
            try:
                image = sources[i] if isinstance(sources[i], np.ndarray) else load_image(sources[i])
            except ImageLoadError as e:
                return str(e)
            return [sample_view(image, crop_size, image_size, np.random.default_rng([seed, i, k]))
                    for k in range(crops_per_image)]

        done, pending, skipped = 0, [], []

        def store(batch: np.ndarray) -> None:
            nonlocal done
            targets[done:done + len(batch)] = batch
            features[done:done + len(batch)] = encode_batches(encoder, batch, batch_size)
            done += len(batch)
            bar.update(len(batch))

        with ThreadPoolExecutor(workers) as pool, progress(count, "extracting features", "crop") as bar:
            for first in range(0, len(sources), 4 * batch_size):  # a few batches of files in flight at a time
                chunk = range(first, min(first + 4 * batch_size, len(sources)))
                for i, crops in zip(chunk, pool.map(views, chunk)):
                    if isinstance(crops, str):
                        skipped.append((str(sources[i]), crops))
                    else:
                        pending += crops
                while len(pending) >= batch_size:
                    store(np.stack(pending[:batch_size]))
                    pending = pending[batch_size:]
            if pending:
                store(np.stack(pending))
        features.flush(), targets.flush()
        write_json_atomically(self.meta_path, {"count": done, "feature_shape": list(feature_shape),
                                               "skipped": skipped})
        return self.open()


class CachedCrops(keras.utils.PyDataset):
    """Batches of (features, target image) from the cache; every epoch covers every crop once,
    in an order reshuffled from (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, features, targets, batch_size: int, seed: int):
        super().__init__()
        self.features, self.targets = features, targets
        self.batch_size, self.seed = batch_size, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Serve `epoch`'s batches from `first_batch` on (a run resumed mid-epoch skips what it trained)."""
        self.first_batch = first_batch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.targets))

    def __len__(self):
        return math.ceil(len(self.targets) / self.batch_size) - self.first_batch

    @property
    def samples_per_epoch(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        start = (self.first_batch + index) * self.batch_size
        idx = np.sort(self.order[start:start + self.batch_size])
        return (np.asarray(self.features[idx], dtype=np.float32),
                np.asarray(self.targets[idx], dtype=np.float32) / 255.0)

    def take_skipped(self) -> dict[str, str]:
        return {}  # the cache holds only readable files' crops (FeatureCache.skipped names the others)


def view_sizes(height: int, width: int, short_sides: list[int], stride: int) -> list[tuple[int, int, int, int]]:
    """Per short side s: (resized height, resized width, kept height, kept width) of a photo resized so
    its short side is s, aspect kept; the kept part (top left) is rounded down to a multiple of the
    layer's stride, so its feature map covers every kept pixel."""
    short = min(height, width)
    sizes = [(max(1, round(height * s / short)), max(1, round(width * s / short))) for s in short_sides]
    return [(h, w, h // stride * stride, w // stride * stride) for h, w in sizes]


def cache_short_sides(image_size: int, crop_size: int, count: int) -> list[int]:
    """`count` short sides, evenly spaced in log scale over the range random_crop draws from
    (0.75x to 2x image_size, never under crop_size): whole photos at these scales hold the crops."""
    low, high = max(0.75 * image_size, crop_size), max(2.0 * image_size, crop_size)
    if count == 1:
        return [round(math.sqrt(low * high))]
    return [round(low * (high / low) ** (k / (count - 1))) for k in range(count)]


@dataclass
class FeatureMaps:
    """An opened FeatureMapCache: flat memory maps and the table that cuts them into views."""

    features: np.ndarray  # float16, every view's (h/stride - border, w/stride - border, channels) map, in turn
    pixels: np.ndarray  # uint8, every view's (h, w, 3) RGB, likewise
    views: np.ndarray  # int64 (views, 7): photo, scale, flip, h, w, feature offset, pixel offset
    stride: int
    channels: int
    border: int = 0  # cells a view of stride*m pixels falls short of m (ReconConfig.border_cells)

    def cells(self, pixels: int) -> int:
        """A view side's feature-map cells."""
        return pixels // self.stride - self.border


def encoder_cache_id(cfg, encoder) -> dict:
    """What a feature cache's maps depend on besides the files: the layer, what the encoder's weights
    hold (not their name or file: a warm start from a model folder's own copy of the ImageNet encoder
    reuses the maps of a run that named the weights) and the dtype policy they were computed in."""
    return {"backbone": cfg.backbone, "layer": cfg.layer, "weights_sha256": weights_fingerprint(encoder),
            "policy": keras.config.dtype_policy().name}


class FeatureMapCache:
    """The encoder's feature maps of whole training photos, each at a few scales and both flips,
    float16 on disk, memory-mapped; `FeatureMapCrops` cuts random crops from them in feature space.

    The encoder runs once per view of a photo, not once per training crop: a crop of k x k feature
    cells (k = crop_size / stride) at any cell of any view is a training sample, its target the
    matching crop_size x crop_size pixels. Crops see their real surroundings through the encoder's
    receptive field, as the same region of a whole photo does at inference.

    Files: `features.npy` (all views' feature maps, flattened one after another, float16),
    `pixels.npy` (their RGB views, uint8, flattened likewise), `views.npy` (per view: photo index,
    scale index, flip, height, width, feature offset, pixel offset; int64) and `meta.json`, written
    last, so a half-built cache is rebuilt. The folder name hashes everything the maps depend on
    (encoder, short sides, each file's path, size and mtime): a stale cache is never reused.
    """

    def __init__(self, root: Path, key: str):
        self.dir = Path(root) / key
        self.meta_path = self.dir / "meta.json"

    @staticmethod
    def key_for(encoder_id: dict, files: list[Path], short_sides: list[int]) -> str:
        stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        blob = json.dumps(["maps", CACHE_FORMAT, encoder_id, stats, list(short_sides)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @staticmethod
    def size_bytes(encoder, shapes: list[tuple[int, int]], short_sides: list[int]) -> int:
        """Bytes on disk for photos of `shapes` (height, width) at `short_sides`, both flips."""
        channels, stride, border = feature_geometry(encoder)
        total = 0
        for h, w in shapes:
            for _, _, vh, vw in view_sizes(h, w, short_sides, stride):
                cells = max(vh // stride - border, 0) * max(vw // stride - border, 0)
                total += 2 * (cells * channels * 2 + vh * vw * 3)
        return total

    def is_complete(self) -> bool:
        return self.meta_path.is_file()

    def open(self) -> FeatureMaps:
        meta = json.loads(self.meta_path.read_text())
        return FeatureMaps(np.load(self.dir / "features.npy", mmap_mode="r"),
                           np.load(self.dir / "pixels.npy", mmap_mode="r"), np.load(self.dir / "views.npy"),
                           int(meta["stride"]), int(meta["channels"]), int(meta.get("border", 0)))

    def skipped(self) -> list[tuple[str, str]]:
        """(file, reason) of the files the build could not read."""
        return [tuple(s) for s in json.loads(self.meta_path.read_text()).get("skipped", [])]

    def build(self, encoder, files: list[Path], short_sides: list[int], workers: int = 1):
        """Encode every view of every readable file and store it; returns `open()`. Photos are
        decoded `workers` at a time, never all at once."""
        channels, stride, border = feature_geometry(encoder)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        table, skipped = [], []
        feature_offset = pixel_offset = 0
        with (open(self.dir / "features.raw", "wb") as feature_file, open(self.dir / "pixels.raw", "wb") as pixel_file,
              ThreadPoolExecutor(workers) as pool,
              progress(len(files), "encoding photos", "photo") as bar):
            def decoded(path):
                try:
                    return load_image(path)
                except ImageLoadError as e:
                    return str(e)
            for index, image in enumerate(pool.map(decoded, files)):
                bar.update(1)
                if isinstance(image, str):
                    skipped.append((str(files[index]), image))
                    continue
                for scale, (rh, rw, vh, vw) in enumerate(view_sizes(*image.shape[:2], short_sides, stride)):
                    view = resize(image, rh, rw)[:vh, :vw]
                    for flip in (0, 1):
                        pixels = np.ascontiguousarray(view[:, ::-1] if flip else view)
                        maps = encode_batches(encoder, pixels[None], 1)[0].astype(np.float16)
                        feature_file.write(maps.tobytes())
                        pixel_file.write(pixels.tobytes())
                        table.append((index, scale, flip, vh, vw, feature_offset, pixel_offset))
                        feature_offset += maps.size
                        pixel_offset += pixels.size
        for name, dtype, count in (("features", np.float16, feature_offset), ("pixels", np.uint8, pixel_offset)):
            raw = self.dir / f"{name}.raw"
            array = np.lib.format.open_memmap(self.dir / f"{name}.npy", "w+", dtype, (count,))
            array[:] = np.fromfile(raw, dtype)
            array.flush()
            del array
            raw.unlink()
        np.save(self.dir / "views.npy", np.array(table, np.int64).reshape(-1, 7))
        write_json_atomically(self.meta_path, {"stride": stride, "channels": int(channels), "border": border,
                                               "short_sides": list(short_sides), "views": len(table),
                                               "skipped": skipped})
        return self.open()


def feature_geometry(encoder) -> tuple[int, int, int]:
    """The encoder's (channels, stride, border cells): an input of stride*m pixels gives m - border
    cells (VGG16: stride 2 ** pooling layers, no border; AlexNet: one border cell)."""
    from recon.own_encoder import feature_geometry as measured
    return measured(encoder)


class EpochOrder(keras.utils.PyDataset):
    """`count` samples an epoch, in an order drawn from (seed, epoch), served from `first_batch` on:
    batch b of an epoch is the same on every run, so a run resumed mid-epoch continues where it
    stopped. Subclasses set count, batch_size and seed, then call set_epoch(0)."""

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Serve `epoch`'s batches from `first_batch` on (a run resumed mid-epoch skips what it trained)."""
        self.epoch, self.first_batch = epoch, first_batch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(self.count)

    def __len__(self):
        return math.ceil(self.count / self.batch_size) - self.first_batch

    @property
    def samples_per_epoch(self) -> int:
        return self.count

    def batch_order(self, index: int) -> list[int]:
        """The sample numbers of batch `index` (counted from first_batch)."""
        start = (self.first_batch + index) * self.batch_size
        return [int(i) for i in self.order[start:start + self.batch_size]]


class FeatureMapCrops(EpochOrder):
    """Random crops of cached feature maps (`FeatureMaps`), as (features, target pixels) batches,
    float32, the targets in [0, 1].

    Sample i of an epoch comes from photo i mod n (n readable photos), its view (scale, flip) and
    position drawn from (seed, epoch, i), the position on the stride grid: batch b of an epoch is the
    same on every run, and a run resumed mid-epoch starts at any batch (`set_epoch(epoch, first_batch)`).
    """

    def __init__(self, maps: FeatureMaps, crop_size: int, crops_per_image: int, batch_size: int, seed: int):
        super().__init__()
        if crop_size % maps.stride or maps.cells(crop_size) < 1:
            raise ValueError(f"crop size {crop_size} is not a multiple of the feature maps' stride {maps.stride} "
                             f"of at least {(maps.border + 1) * maps.stride} px")
        self.maps, self.crop_size, self.batch_size, self.seed = maps, crop_size, batch_size, seed
        photos = maps.views[:, 0]
        self.views_of = [np.flatnonzero(photos == p) for p in np.unique(photos)]
        self.count = len(self.views_of) * crops_per_image
        self.set_epoch(0)

    def __getitem__(self, index):
        pairs = [self.sample(i) for i in self.batch_order(index)]
        return (np.stack([f for f, _ in pairs]).astype(np.float32),
                np.stack([p for _, p in pairs]).astype(np.float32) / 255.0)

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(feature crop (k, k, C) float16, pixel crop (crop_size, crop_size, 3) uint8) of sample i,
        k = crop_size / stride - border cells: the cells whose decoding is those pixels (a view's cell
        j covers the pixels from j * stride on; recon.decoder.build_decoder). Every view's kept short
        side is at least crop_size (cache_short_sides)."""
        rng = np.random.default_rng([self.seed, self.epoch, i])
        view = rng.choice(self.views_of[i % len(self.views_of)])
        _, _, _, h, w, feature_offset, pixel_offset = (int(x) for x in self.maps.views[view])
        s, k, c = self.maps.stride, self.maps.cells(self.crop_size), self.maps.channels
        rows, cols = self.maps.cells(h), self.maps.cells(w)
        maps = self.maps.features[feature_offset:feature_offset + rows * cols * c].reshape(rows, cols, c)
        pixels = self.maps.pixels[pixel_offset:pixel_offset + h * w * 3].reshape(h, w, 3)
        top, left = int(rng.integers(0, rows - k + 1)), int(rng.integers(0, cols - k + 1))
        return (np.asarray(maps[top:top + k, left:left + k]),
                np.asarray(pixels[top * s:top * s + self.crop_size, left * s:left * s + self.crop_size]))

    def take_skipped(self) -> dict[str, str]:
        return {}  # the cache holds only readable files' views (FeatureMapCache.skipped names the others)


class UnreadableFiles:
    """The files a streaming dataset could not read, with why; `take` returns those met since it was
    last called (fit asks once an epoch, for that epoch's log line)."""

    def __init__(self):
        self.reasons: dict[str, str] = {}
        self.recent: set[str] = set()

    def load(self, path) -> np.ndarray | None:
        """The image, or None for an unreadable file (decoded once: it is remembered)."""
        if str(path) not in self.reasons:
            try:
                return load_image(path)
            except ImageLoadError as e:
                self.reasons[str(path)] = str(e)
        self.recent.add(str(path))
        return None

    def take(self) -> dict[str, str]:
        recent, self.recent = self.recent, set()
        return {path: self.reasons[path] for path in sorted(recent)}


class StreamingCrops(EpochOrder):
    """Random crops decoded from the files batch by batch, in `workers` threads (PIL releases the
    GIL): memory holds a few batches whatever the size of the folder, so it trains on CelebA-HQ's
    30,000 1024 px photos as on 300. The samples are (crop, crop): the encoder runs inside the
    training step (see `training.fit`).

    Sample i of an epoch is a crop of file i mod n, the order a permutation drawn from (seed, epoch)
    and each crop from (seed, epoch, i): batch b of an epoch is the same on every run, and a run
    resumed mid-epoch starts at any batch (`set_epoch(epoch, first_batch)`). An unreadable file is
    skipped: its crop comes from the next readable file, so the batch keeps its size and the order
    stays deterministic; `take_skipped` names it.
    """

    def __init__(self, files, crop_size, image_size, crops_per_image, batch_size, seed, workers: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.files = list(files)
        self.crop_size, self.image_size = crop_size, image_size
        self.count = len(self.files) * crops_per_image
        self.batch_size, self.seed = batch_size, seed
        self.unreadable = UnreadableFiles()
        self.set_epoch(0)

    def __getitem__(self, index):
        crops = np.stack([self.sample(i) for i in self.batch_order(index)])
        crops = crops.astype(np.float32) / 255.0
        return crops, crops

    def sample(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return sample_view(self.image(i % len(self.files)), self.crop_size, self.image_size, rng)

    def image(self, index: int) -> np.ndarray:
        """File `index`'s image, or that of the first readable file after it."""
        for k in range(len(self.files)):
            image = self.unreadable.load(self.files[(index + k) % len(self.files)])
            if image is not None:
                return image
        raise SystemExit(f"none of the {len(self.files)} training files is a readable image")

    def take_skipped(self) -> dict[str, str]:
        """{file: reason} of the unreadable files met since the last call."""
        return self.unreadable.take()


class OnTheFlyCrops(StreamingCrops):
    """StreamingCrops' samples, batch for batch, cut from images decoded into memory up front
    (`load_image_set`): the path before streaming, quick on a small folder, but about 3 bytes of
    RAM per pixel of the dataset (100 GB for CelebA-HQ)."""

    def __init__(self, images, crop_size, image_size, crops_per_image, batch_size, seed, workers: int = 1):
        super().__init__(range(len(images)), crop_size, image_size, crops_per_image, batch_size, seed, workers)
        self.images = images

    def image(self, index: int) -> np.ndarray:
        return self.images[index]


class EvalViews(keras.utils.PyDataset):
    """The validation images at their evaluation view (`square_image`), decoded batch by batch in
    `workers` threads, as (inputs, targets): the inputs are the views, or with `encoder` their
    features (for a decoder trained on cached features). An unreadable file drops out of its batch
    (a batch of nothing else takes the first readable image) and `take_skipped` names it."""

    def __init__(self, files, image_size: int, batch_size: int, encoder=None, workers: int = 1):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.files, self.image_size, self.batch_size, self.encoder = list(files), image_size, batch_size, encoder
        self.unreadable = UnreadableFiles()

    def __len__(self):
        return math.ceil(len(self.files) / self.batch_size)

    def __getitem__(self, index):
        batch = self.files[index * self.batch_size:(index + 1) * self.batch_size]
        images = [im for im in map(self.unreadable.load, batch) if im is not None]
        images = images or [next((im for im in map(self.unreadable.load, self.files) if im is not None), None)]
        if images[0] is None:
            raise SystemExit(f"none of the {len(self.files)} validation files is a readable image")
        views = np.stack([square_image(im, self.image_size) for im in images])
        inputs = encode_batches(self.encoder, views, self.batch_size) if self.encoder else None
        views = views.astype(np.float32) / 255.0
        return (views if inputs is None else inputs), views

    def take_skipped(self) -> dict[str, str]:
        """{file: reason} of the unreadable files met since the last call."""
        return self.unreadable.take()


def save_split(path: Path, data_root, train_files: list[Path], val_files: list[Path], val_source: str,
               skipped=()) -> None:
    """Record exactly which files trained the model (with content hashes), for evaluate to exclude.
    Unreadable files met later, while streaming, are added by `record_skipped`."""
    record = {
        "data": str(data_root), "val_source": val_source,
        "train": [{"file": str(p), "sha1": file_sha1(p)} for p in train_files],
        "val": [{"file": str(p), "sha1": file_sha1(p)} for p in val_files],
        "skipped": [{"file": str(p), "reason": r} for p, r in skipped],
    }
    write_json_atomically(path, record)


def record_skipped(out: Path, skipped: dict[str, str], epoch: int | None) -> list[dict]:
    """Add unreadable files to the run folder's skipped.json ({file, reason, epoch}: the first epoch
    that met it, null before training) and to split.json's "skipped"; returns the entries added."""
    path = out / "skipped.json"
    known = json.loads(path.read_text()) if path.exists() else []
    seen = {entry["file"] for entry in known}
    new = [{"file": str(f), "reason": r, "epoch": epoch} for f, r in skipped.items() if str(f) not in seen]
    if not new:
        return new
    write_json_atomically(path, known + new)
    split_path = out / "split.json"
    if split_path.exists():
        split = json.loads(split_path.read_text())
        listed = {entry["file"] for entry in split["skipped"]}
        split["skipped"] += [{"file": e["file"], "reason": e["reason"]} for e in new if e["file"] not in listed]
        write_json_atomically(split_path, split)
    return new


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile equally sized uint8 images into one array, rows by columns, with white gaps."""
    h, w = rows[0][0].shape[:2]
    grid = np.full((len(rows) * (h + pad) - pad, max(map(len, rows)) * (w + pad) - pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = im
    return grid


def save_png(array: np.ndarray, path: Path) -> None:
    """Written aside and renamed into place (training writes its grids into a run folder that may be killed)."""
    write_atomically(path, lambda part: Image.fromarray(array).save(part))


def find_images(folder, limit: int | None = None, out=None) -> list[Path]:
    """The images under `folder` (`list_images`), less those of run folders in it (`outside_runs`),
    the first `limit` if given; SystemExit if there are none."""
    try:
        files = list_images(folder)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    kept, runs = outside_runs(files, folder, out)
    if runs:
        print(f"data: left out {len(files) - len(kept)} files of run folders under {folder}: "
              + ", ".join(str(r) for r in runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else ""))
    if not kept:
        raise SystemExit(f"no images found under {folder}")
    return kept[:limit] if limit else kept


RUN_MARKER = "run_config.json"  # training.fit writes it first into every run folder


def outside_runs(files: list[Path], root, out=None) -> tuple[list[Path], list[Path]]:
    """`files` (found under `root`) less those inside a run folder: `out`, the run being started, and
    any folder holding a run_config.json. A run's loss curve and sample grids are no photos, and a
    run inside its own --data would otherwise train on them from its next start on.

    Returns:
        (the files kept, the run folders met, sorted).
    """
    root, own = Path(root), (Path(out).resolve() if out is not None else None)
    marked: dict[Path, bool] = {}

    def is_run(folder: Path) -> bool:
        if folder not in marked:
            marked[folder] = (folder / RUN_MARKER).is_file()
        return marked[folder]

    runs, kept = set(), []
    for path in files:
        run = next((root / f for f in path.relative_to(root).parents if f != Path(".") and is_run(root / f)), None)
        if run is None and own is not None and path.resolve().is_relative_to(own):
            run = Path(out)
        if run is None:
            kept.append(path)
        else:
            runs.add(run)
    return kept, sorted(runs)
