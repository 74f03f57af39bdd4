"""Quiet start-up for the command-line tools and the library: TensorFlow's C++ log lines kept off the console.

Imports nothing heavy itself, so a tool can parse its arguments (and answer --help) first and load
TensorFlow after. `import recon` is just as light: its names load on first use, and the first one
that needs Keras calls `start_tensorflow_quietly` before importing it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path


def start_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with file descriptor 2 pointed at /dev/null.

    Its C++ start-up lines (oneDNN notes, "Could not find cuda drivers", the failed cuInit on a
    machine without a GPU) are written there by absl before any setting applies (TF 2.21 ignores
    TF_CPP_MIN_LOG_LEVEL for them). Python exceptions still reach the console. Set
    TF_CPP_MIN_LOG_LEVEL=0 to see everything; with KERAS_BACKEND other than tensorflow, TensorFlow
    is not imported at all.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's Python-side log lines too
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    with native_stderr_hidden():
        try:
            import tensorflow as tf
            tf.config.list_physical_devices("GPU")
        except ImportError:
            pass  # Keras on another backend


@contextlib.contextmanager
def native_stderr_hidden():
    """Point file descriptor 2 at /dev/null inside the block (C++ log lines; Python exceptions still
    propagate), unless TF_CPP_MIN_LOG_LEVEL=0 asks to see everything."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved), os.close(devnull)


def require_folders(parser: argparse.ArgumentParser, folders: dict[str, str | None]) -> None:
    """parser.error (exit 2, with usage) for the first argument naming a folder that does not exist;
    None (an optional argument not given) passes. Keys are the names the user typed ("--data")."""
    for name, folder in folders.items():
        if folder is not None and not Path(folder).is_dir():
            parser.error(f"{name} {folder}: no such folder")
