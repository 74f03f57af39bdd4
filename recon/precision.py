"""Which precision runs fastest here, detected rather than assumed.

bfloat16 is fast only on CPUs with AMX or AVX512-BF16 (oneDNN uses them; elsewhere it is
emulated and slower than float32); float16 is fast on CUDA GPUs (tensor cores). "int8" runs the
encoder (and, where it passed its check, the decoder's residual blocks) as a calibrated int8 copy
(recon.int8, where the model folder has one) and the rest of the decoder in the fastest floating
point; it is fast on CPUs with int8 dot products (VNNI, AMX). "openvino" runs the encoder and decoder
in OpenVINO, int8 by NNCF but for the upsampling, the rest in bfloat16 where the CPU has it
(recon.openvino_engine; OpenVINO and NNCF installed separately): held-out scores closer to float32
than "int8"'s, at about 5% fewer images per CPU-second on a 2-core AVX512-VNNI CPU
(benchmarks/cpu_engines.py), so "auto" does not pick it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8", "openvino")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # as /proc/cpuinfo names them
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is absent (macOS, Windows)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def has_cuda_gpu() -> bool:
    import keras
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # a Metal or ROCm "GPU" is not CUDA: float16 is not a given there
        return tf.test.is_built_with_cuda() and bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax
        return any(d.platform == "gpu" for d in jax.devices())
    return False


def resolve_precision(precision: str = "auto", flags: set[str] | None = None, gpu: bool | None = None,
                      int8_ready: bool = False) -> str:
    """"auto" -> the fastest precision for this machine; anything else is checked and returned.

    Args:
        precision: one of PRECISIONS.
        flags: CPU flags (default: read from /proc/cpuinfo); tests pass their own.
        gpu: whether a CUDA GPU is present (default: asked of the Keras backend).
        int8_ready: whether the model has an int8 encoder (`recon.int8`) to run.

    Returns:
        "float16" with a CUDA GPU; "int8" on a CPU with VNNI or AMX when `int8_ready`; else
        "bfloat16" on a CPU with AMX or AVX512-BF16; else "float32". Never "openvino": asked for by
        name only.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision != "auto":
        return precision
    if has_cuda_gpu() if gpu is None else gpu:
        return "float16"
    flags = cpu_flags() if flags is None else flags
    if int8_ready and set(INT8_CPU_FLAGS) & flags:
        return "int8"
    return "bfloat16" if set(BF16_CPU_FLAGS) & flags else "float32"


def layer_precision(precision: str, flags: set[str] | None = None, gpu: bool | None = None) -> str:
    """What Keras layers compute in under a resolved `precision`: itself; for "int8" (whose int8 part
    is a TFLite file, not Keras layers) the fastest floating point here; for "openvino", float32 (the
    weights OpenVINO converts from, and what the few Keras paths left, decode and refine, run in)."""
    if precision == "openvino":
        return "float32"
    return resolve_precision("auto", flags, gpu) if precision == "int8" else precision


def training_policy(precision: str) -> str:
    """The Keras dtype policy that trains in `precision` with float32 weights."""
    return {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[precision]


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Build Keras layers inside this block with variables and compute in `precision`
    ("float32", "bfloat16" or "float16"); the global policy is restored afterwards."""
    import keras
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
