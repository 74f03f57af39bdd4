"""The whole model (encoder and decoder) in OpenVINO, int8 where calibrated, for CPUs with int8 dot products.

The same split as the TFLite int8 file (`recon.int8`): int8 for the encoder and the decoder up to its
upsampling, bfloat16 (where the CPU has it) for the upsampling stages and the RGB layer, whose int8
cost the held-out SSIM past the 0.002 limit. In one OpenVINO graph, with no handover between LiteRT
and TensorFlow; on the bundled block3_conv3 it moved the held-out scores by +0.002 dB and -0.0013 SSIM
(the TFLite file: -0.037 dB, -0.0017). Speed and quality against the alternatives:
`benchmarks/cpu_engines.py`. TensorFlow stays for training and gradients.

Nothing here reads an OpenVINO file from a model folder: a folder's IR would be untrusted input to a
C++ parser. The network is converted here from the Keras models `recon.pipeline` has already checked
and loaded, quantized here on photos that ship with the package (`calibration_images`), and the result
is cached under ~/.cache/recon/openvino (RECON_OPENVINO_CACHE), keyed by everything that made it
(weights, config, size, recipe, OpenVINO and NNCF versions); a cached file that fails to load is
rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

CACHE_ENV = "RECON_OPENVINO_CACHE"
RECIPE = "3: encoder + inference_decoder, any size, NNCF int8 (performance preset) but the upsampling and RGB"  # bump to rebuild caches
CALIBRATION_CROPS = 32  # inputs NNCF calibrates on: crops and flips of the example photos
log = logging.getLogger(__name__)


class OpenVinoUnavailable(RuntimeError):
    """OpenVINO or NNCF is missing, or cannot convert, quantize or compile this model: the reason."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "recon" / "openvino")


def versions() -> dict[str, str]:
    """OpenVINO's and NNCF's versions; raises OpenVinoUnavailable naming what is missing."""
    try:
        import openvino
    except ImportError as e:
        raise OpenVinoUnavailable(f"OpenVINO is not installed (pip install openvino nncf): {e}") from None
    try:
        import nncf
    except ImportError as e:
        raise OpenVinoUnavailable(f"NNCF is not installed (pip install nncf): {e}") from None
    return {"openvino": openvino.__version__, "nncf": nncf.__version__}


def calibration_images(side: int, count: int = CALIBRATION_CROPS, seed: int = 0) -> list[np.ndarray]:
    """`count` (1, side, side, 3) float32 [0, 1] inputs: random square crops (half to all of the short
    side) of the example photos that ship with the package (recon.EXAMPLE_PHOTOS), half of them
    mirrored. The same on every machine: an int8 model made here is the one the benchmark checked."""
    from PIL import Image

    from recon import EXAMPLE_PHOTOS
    from recon.imageio import load_image
    photos = [load_image(path) for path in sorted(Path(EXAMPLE_PHOTOS).glob("*.jpg"))]
    if not photos:
        raise OpenVinoUnavailable(f"no example photos to calibrate on in {EXAMPLE_PHOTOS}")
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        crop = int(min(height, width) * rng.uniform(0.5, 1.0))
        top, left = rng.integers(0, height - crop + 1), rng.integers(0, width - crop + 1)
        image = Image.fromarray(photo[top:top + crop, left:left + crop]).resize((side, side), Image.BICUBIC)
        array = np.asarray(image, np.float32) / 255.0
        crops.append((array[:, ::-1] if i % 2 else array)[None].copy())
    return crops


def convert(encoder, decoder, side: int | None = None):
    """An OpenVINO float32 model of `decoder(encoder(x))` for (N, H, W, 3) float32 [0, 1] inputs:
    outputs (reconstruction (N, H, W, 3), feature map). `decoder` is the one inference runs
    (recon.decoder.inference_decoder), TensorFlow backend. Any H and W (multiples of the layer's
    stride; as fast at 224 as a model fixed to it), or, where the graph needs them fixed (Keras'
    bilinear UpSampling2D does), `side` x `side` only.

    Raises:
        OpenVinoUnavailable: OpenVINO is missing or cannot convert the graph.
    """
    versions()
    import openvino as ov
    import tensorflow as tf

    def forward(x):
        features = encoder(x, training=False)
        return decoder(features, training=False), features

    error = None
    for size in (None, side) if side else (None,):
        function = tf.function(forward, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
                               autograph=False)
        try:
            with warnings.catch_warnings():  # numpy 2's __array__ copy-keyword notice, once per weight
                warnings.simplefilter("ignore", DeprecationWarning)
                return ov.convert_model(function, share_weights=False)
        except Exception as e:  # the converter raises its own OpConversionFailure and others
            error = e
    raise OpenVinoUnavailable(f"OpenVINO could not convert the model ({first_line(error)})") from None


def first_line(error: Exception) -> str:
    """An exception as one short line: its type and its message's first line, terminal colours removed."""
    import re
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return f"{type(error).__name__}: {message[0][:300] if message else ''}"


def quantize(model, calibration: list[np.ndarray], float_tail: int = 0):
    """`model` with NNCF's post-training int8 on its convolutions but the last `float_tail` of them
    (in the graph's order: the decoder's upsampling stages and RGB layer, for `float_tail_of`),
    calibrated on `calibration` ((1, S, S, 3) inputs); NNCF's progress bars silenced (one line is
    logged instead).

    Raises:
        OpenVinoUnavailable: the model has fewer convolutions than `float_tail`.
    """
    import nncf
    convolutions = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    if float_tail > len(convolutions):
        raise OpenVinoUnavailable(f"the converted model has {len(convolutions)} convolutions, fewer than the "
                                  f"{float_tail} to keep in floating point")
    kept = nncf.IgnoredScope(names=convolutions[len(convolutions) - float_tail:]) if float_tail else None
    log.info("quantizing the model to int8 with NNCF on %d inputs (once: the result is cached)", len(calibration))
    nncf_log = logging.getLogger("nncf")  # its INFO lines name every node it leaves out
    level = nncf_log.level
    nncf.set_log_level(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # the progress bars above, numpy 2's notices here
            return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                                 **({"ignored_scope": kept} if kept else {}))
    finally:
        nncf.set_log_level(level)


def float_tail_of(decoder) -> int:
    """How many convolutions end the decoder that int8 should not touch: its upsampling stages' and the
    RGB layer's. Quantized, they cost the bundled block3_conv3 0.0034 to 0.0047 held-out SSIM (the
    check's limit is 0.002); kept in bfloat16, 0.0013 (`benchmarks/cpu_engines.py`)."""
    return 1 + sum(1 for layer in decoder.layers if layer.name.startswith("up") and layer.name.endswith("_conv"))


def cache_key(weights: str, config: dict, side: int, int8: bool, float_tail: int = 0) -> str:
    """What an OpenVINO model made here depends on, hashed: the weights' fingerprint, the config,
    the input side, int8 or not, the recipe and the library versions."""
    record = {"weights": weights, "config": config, "side": side, "int8": int8, "float_tail": float_tail, "recipe": RECIPE,
              "calibration": CALIBRATION_CROPS, **versions()}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


class OpenVinoEngine:
    """A compiled OpenVINO model: (N, H, W, 3) float32 [0, 1] -> (reconstruction, feature map).

    Args:
        model: an `openvino.Model` (from `convert`, optionally `quantize`).
        precision: what OpenVINO runs the floating-point operations in: "bf16" or "f32".
        threads: inference threads (default: the cores this process may use).
        pinning: whether OpenVINO pins its threads to cores (its default). Off here: on a machine
            shared with other work (the demo's own browser, a training run) a pinned thread waits
            for its busy core while another core idles.

    Calls from several threads take turns (one infer request).
    """

    def __init__(self, model, precision: str = "bf16", threads: int | None = None, pinning: bool = False):
        import openvino as ov
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads),
                  "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": pinning}
        try:
            self.compiled = ov.Core().compile_model(model, "CPU", config)
        except Exception as e:
            raise OpenVinoUnavailable(f"OpenVINO could not compile the model ({first_line(e)})") from None
        self.request = self.compiled.create_infer_request()
        height = self.compiled.inputs[0].get_partial_shape()[1]
        self.side = None if height.is_dynamic else height.get_length()  # None: any size
        self.precision_name = {"bf16": "bfloat16", "f32": "float32"}.get(precision, precision)
        self._lock = threading.Lock()

    def accepts(self, batch: np.ndarray) -> bool:
        """Whether the model takes this batch's size (a model converted at a fixed side takes that only)."""
        return self.side is None or tuple(batch.shape[1:3]) == (self.side, self.side)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(outputs, features), float32, fresh arrays (the next call cannot overwrite them).

        Raises:
            RuntimeError: OpenVINO failed on this input (its own exception type, named).
        """
        batch = np.ascontiguousarray(batch, np.float32)
        with self._lock:
            try:
                result = self.request.infer({0: batch})
                outputs, features = (np.array(result[self.compiled.outputs[i]], np.float32) for i in range(2))
            except Exception as e:
                raise RuntimeError(f"OpenVINO failed to run the model: {first_line(e)}") from None
        return outputs, features


def build_engine(encoder, decoder, config: dict, weights: str, side: int, int8: bool = True,
                 precision: str = "bf16", cache: Path | None = None) -> OpenVinoEngine:
    """The OpenVINO engine for a loaded model, from the cache when it holds one made the same way,
    else converted (and quantized) here and cached.

    Args:
        encoder, decoder: the Keras models (decoder: the inference form), already checked and loaded.
        config: the model's config as a dict; weights: the fingerprint of its weights (both key the cache).
        side: the side of the calibration inputs (the trained size); the model takes any size, or
            this one where the graph needs it fixed (`convert`).
        int8: quantize with NNCF on `calibration_images(side)`, but the upsampling and RGB convolutions
            (`float_tail_of(decoder)`).
        precision: OpenVINO's floating-point precision ("bf16" where the CPU has it, else "f32").
        cache: the cache folder (default `cache_dir()`).

    Raises:
        OpenVinoUnavailable: missing libraries, or a model OpenVINO cannot convert, quantize or compile.
    """
    versions()  # OpenVinoUnavailable, saying what to install, before any import fails
    import openvino as ov

    from recon.atomic import write_atomically
    folder = Path(cache) if cache is not None else cache_dir()
    float_tail = float_tail_of(decoder)
    path = folder / f"{cache_key(weights, config, side, int8, float_tail)}.xml"
    model = None
    if path.is_file() and path.with_suffix(".bin").is_file():
        try:
            model = ov.Core().read_model(path)
        except Exception:  # a truncated or foreign file: made again below
            model = None
    if model is None:
        model = convert(encoder, decoder, side)
        if int8:
            try:
                model = quantize(model, calibration_images(side), float_tail)
            except OpenVinoUnavailable:
                raise
            except Exception as e:
                raise OpenVinoUnavailable(f"NNCF could not quantize the model ({first_line(e)})") from None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # the weights first, then the XML that names them: a cache entry is whole once its XML is there
            with tempfile.TemporaryDirectory(dir=folder, prefix=".part-") as tmp:
                ov.save_model(model, Path(tmp) / "model.xml", compress_to_fp16=False)
                os.replace(Path(tmp) / "model.bin", path.with_suffix(".bin"))
                write_atomically(path, lambda part: os.replace(Path(tmp) / "model.xml", part))
        except OSError as e:  # a read-only home: run without a cache
            warnings.warn(f"OpenVINO model not cached in {folder} ({e}); it is made again at each start", stacklevel=2)
    return OpenVinoEngine(model, precision)
