"""An int8 copy of the frozen encoder, for CPUs with int8 dot-product instructions (VNNI, AMX).

The encoder is 83% of a reconstruction's arithmetic at block3_conv3 (18.7 of 22.6 GFLOP per 224
image, `benchmarks/speed.py`). Post-training quantization (TFLite's converter: int8 weights per
output channel, int8 activations per tensor, calibrated on a few photos) runs it with XNNPACK's
int8 kernels; on a 2-core AVX512-VNNI CPU that took it from 112 ms (float32) to 24 ms. The
decoder stays in floating point: quantized, it cost 0.25 dB and 0.028 SSIM on the holdout, where the
int8 encoder moved them by +0.012 dB and +0.0007 (`benchmarks/int8_scope.py`; `python -m
training.quantize` checks a folder's file the same way).

The decoder's residual trunk (its blocks at feature-map resolution, before any upsampling) is the
exception: it can ride in the same file, after the encoder (`quantize_encoder(..., decoder=)`), for
-0.025 dB and -0.0007 SSIM, and it then costs 2 ms instead of 11 in bfloat16. Such a file has two
outputs, the feature map and the trunk's output, and the upsampling stages run in floating point
from the second (`recon.decoder.inference_decoder(..., from_trunk=True)`).

The quantized encoder is a file in the model folder (`encoder.int8.tflite`; the name, like
`Int8Encoder`'s, predates the trunk), made once by `python -m training.quantize`, because
calibration needs photos and half a minute. It runs on
LiteRT (`ai-edge-litert`), or TensorFlow's own `tf.lite` where that is missing.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from recon.startup import native_stderr_hidden

INT8_ENCODER_FILE = "encoder.int8.tflite"


def quantize_encoder(encoder, calibration: Iterable[np.ndarray], input_shape: tuple | None = None,
                     decoder=None) -> bytes:
    """Convert a Keras encoder (TensorFlow backend) to an int8 TFLite flatbuffer.

    Args:
        encoder: float32 Keras model, (N, H, W, 3) [0,1] float32 -> feature map (any fully
            convolutional model works: `benchmarks/int8_scope.py` quantizes the decoder with it).
        calibration: (1, H, W, C) float32 inputs whose activation ranges set the int8 scales; for an
            encoder, a few dozen photos like those the model will see (never the held-out ones).
        input_shape: (H, W, C) to fix; default any height and width (the decoder's bilinear
            resize needs them fixed).
        decoder: a `recon.decoder.build_decoder` model whose residual trunk joins the file, as a
            second output (see the module's docstring); default the encoder alone.

    Returns:
        The .tflite file's bytes: float32 inputs and outputs, int8 inside; any batch, and any height
        and width unless `input_shape` fixes them. Outputs: the feature map, then (with `decoder`)
        the trunk's (N, H/s, W/s, decoder_width) output.

    Raises:
        RuntimeError: not on the TensorFlow backend (the converter needs a TensorFlow graph), or,
            with `decoder`, a file whose first output is not the feature map (checked on a
            calibration input: the converter's output order is not documented).
        tf.lite's ConverterError: an operation TFLite cannot quantize.
    """
    import keras
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("int8 conversion needs KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    calibration = [np.asarray(x, np.float32) for x in calibration]
    model = encoder
    if decoder is not None:
        from recon.decoder import decoder_trunk
        model = keras.Model(encoder.input, [encoder.output, decoder_trunk(decoder)(encoder.output)],
                            name="encoder_and_trunk")
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, *(input_shape or (None, None, encoder.input.shape[-1]))], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in calibration)
    # float32 input and output are what we want, not missing statistics; and the converter's C++
    # lines ("fully_quantize: 0, inference_type: 6, ...") say nothing to a user
    with warnings.catch_warnings(), native_stderr_hidden():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        content = converter.convert()
    if decoder is not None:  # Int8Encoder reads the outputs by position: make sure of it once, here
        reference = keras.ops.convert_to_numpy(encoder(calibration[0], training=False))
        outputs = Int8Encoder(content).front(calibration[0])
        if not _closer(reference, outputs[0], outputs[1]):
            raise RuntimeError("the TFLite converter put the trunk's output first; this file cannot be used")
    return content


def _closer(reference: np.ndarray, candidate: np.ndarray, other: np.ndarray) -> bool:
    """Whether `candidate`, not `other`, is the int8 copy of `reference`."""
    def error(x):
        return np.inf if x.shape != reference.shape else float(np.linalg.norm(x - reference))
    return error(candidate) < error(other)


def holds_trunk(model_content: bytes) -> bool:
    """Whether an int8 file holds the decoder's residual trunk too (two outputs)."""
    return len(tflite_interpreter(model_content, num_threads=1).get_output_details()) == 2


# What the child process of `check_runs` runs: the file from stdin, loaded ("loaded" on stdout), then run
# once on a zero image of the side in argv; exit status 4: no TFLite runtime.
CHILD_CODE = """\
import sys
import numpy as np
from recon.int8 import Int8Encoder
try:
    encoder = Int8Encoder(sys.stdin.buffer.read())
except ImportError as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(4)
print("loaded", flush=True)
side = int(sys.argv[1])
encoder.front(np.zeros((1, side, side, 3), np.float32))
"""
_RAN: set[str] = set()  # SHA-256 of the files that ran in a child process here: checked once per process


def check_runs(model_content: bytes, side: int, timeout: float = 120) -> None:
    """Load and run an int8 file once in a child process, before this process does: a malformed
    flatbuffer can abort the TFLite interpreter (SIGABRT, seen with one flipped bit), which no
    Python code can catch, so a model folder from a stranger could otherwise end the app.

    Args:
        model_content: the .tflite file's bytes.
        side: height and width of the zero image it runs on (a multiple of the layer's stride).
        timeout: seconds before the child counts as hung.

    Raises:
        ImportError: no TFLite runtime (LiteRT or TensorFlow).
        ValueError: the file does not load: the child's last line, or the signal that ended it.
        RuntimeError: the file loads but fails, crashes or hangs on its first input.
    """
    digest = hashlib.sha256(model_content).hexdigest()
    if digest in _RAN:
        return
    root = str(Path(__file__).resolve().parents[1])  # where `recon` imports from
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
                        "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run([sys.executable, "-c", CHILD_CODE, str(int(side))], input=model_content,
                              capture_output=True, timeout=timeout, env=env)
        stdout, stderr, returncode = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        stdout, stderr, returncode = e.stdout or b"", b"", None
    lines = stderr.decode(errors="replace").strip().splitlines()
    if returncode is None:
        why = f"it ran over {timeout:g} s"
    elif returncode < 0:
        why = f"it crashed the TFLite interpreter ({signal.Signals(-returncode).name})"
    else:
        why = lines[-1] if lines else f"exit status {returncode}"
    if returncode == 0:
        _RAN.add(digest)
    elif returncode == 4:
        raise ImportError(why)
    elif b"loaded" not in stdout:
        raise ValueError(why)
    else:
        raise RuntimeError(why)


def tflite_interpreter(model_content: bytes, num_threads: int | None = None):
    """A LiteRT interpreter for the bytes (tf.lite's, which TF 2.20 deprecated, if LiteRT is missing)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Interpreter(model_content=model_content, num_threads=num_threads)


class Int8Encoder:
    """Runs an `encoder.int8.tflite`: (N, H, W, 3) float32 [0,1] -> (N, H/s, W/s, C) float32 feature
    map, s the layer's stride (H and W multiples of it), C its channels; `front` also returns the
    decoder trunk's output where the file has it (`has_trunk`). Any batch and size: the
    interpreter is resized when the shape changes (a few ms).

    Raises (construction): ValueError or RuntimeError for bytes that are not a TFLite model;
    ImportError where neither LiteRT nor TensorFlow is installed.

    One interpreter, resized in place when the input shape changes: calls from several threads (the
    demo's events) take turns on a lock.
    """

    def __init__(self, model_content: bytes):
        self.model_content = model_content
        self.interpreter = tflite_interpreter(model_content)
        with native_stderr_hidden():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        # in the converted function's order: the feature map, then the trunk's output if any
        self._outputs = [d["index"] for d in self.interpreter.get_output_details()]
        channels = [int(d["shape_signature"][-1]) for d in self.interpreter.get_output_details()]
        self._channels, self._trunk_channels = channels[0], channels[-1]
        self._shape = tuple(self._input["shape"])
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> "Int8Encoder":
        return cls(Path(path).read_bytes())

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def trunk_channels(self) -> int | None:
        """The trunk output's channels (the decoder's width); None for an encoder-only file."""
        return self._trunk_channels if self.has_trunk else None

    @property
    def has_trunk(self) -> bool:
        """Whether the file runs the decoder's residual trunk too (`quantize_encoder(..., decoder=)`)."""
        return len(self._outputs) == 2

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The feature map."""
        return self.front(batch)[0]

    def front(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Everything the file computes: (feature map, handover), the handover being what the
        floating-point part of the decoder starts from: the trunk's (N, H/s, W/s, decoder_width)
        output where the file has it (`has_trunk`), else the feature map again."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            if batch.shape != self._shape:
                self.interpreter.resize_tensor_input(self._input["index"], batch.shape)
                self.interpreter.allocate_tensors()
                self._shape = batch.shape
            self.interpreter.set_tensor(self._input["index"], batch)
            self.interpreter.invoke()
            # get_tensor returns a copy already (LiteRT and tf.lite), which the next call cannot overwrite
            outputs = [self.interpreter.get_tensor(index) for index in self._outputs]
        return outputs[0], outputs[-1]
