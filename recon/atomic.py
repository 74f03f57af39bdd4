"""Files written aside and renamed into place: a process killed at any instant leaves either the old
file or the new one, never half of one (a half-written JSON or HDF5 file would block a resume)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

PART_PREFIX = ".part-"  # temporary names: hidden, and ending as the real name does (Keras wants .weights.h5)


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(part)` on a temporary path beside `path`, flush it to disk, then rename it onto
    `path` (os.replace: atomic within a folder). On any error, Ctrl-C included, the temporary file
    is removed and `path` is left as it was.

    Args:
        path: the file to (re)write.
        write: writes the file it is given, e.g. `model.save_weights` or `figure.savefig`.

    Example:
        >>> write_atomically("run/decoder.weights.h5", decoder.save_weights)
    """
    path = Path(path)
    part = path.with_name(PART_PREFIX + path.name)
    try:
        write(part)
        with open(part, "rb") as f:  # on disk before the rename, so a power cut cannot leave an empty file
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException:
        try:
            part.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """`Path.write_text`, written aside and renamed into place."""
    return write_atomically(path, lambda part: part.write_text(text))


def write_json_atomically(path: str | Path, data, indent: int = 1, sort_keys: bool = False) -> Path:
    """`data` as indented JSON with a final newline, written aside and renamed into place."""
    return write_text_atomically(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
