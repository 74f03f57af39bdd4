"""Weights files (HDF5) as untrusted input: plain datasets stored inside the file, nothing else.

HDF5 can make reading one file read another: a dataset's external storage (its raw bytes kept in
another file, /etc/passwd as well as any), an external link (an object of another file), a
virtual dataset (a view of datasets in other files), a soft link (one more name to resolve), and
filters that load plugins. A weights file from a model folder (the Hub) needs none of them, and
re-pushing a pulled model would upload whatever they read (h5py#2891, keras#22900). `stored_datasets`
walks every link of a file first and refuses it if it has any; callers then read only datasets of
the names, shapes and dtypes they expect (`read_array`).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np

MAX_LINKS = 100_000  # a weights file holds a few hundred; a million empty groups would only slow the walk
# Filters HDF5 and h5py have built in (gzip, shuffle, checksums, ...; 32000: h5py's LZF): no plugin is loaded
BUILT_IN_FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32,
                    h5py.h5z.FILTER_SZIP, h5py.h5z.FILTER_NBIT, h5py.h5z.FILTER_SCALEOFFSET, 32000}
STORED_LAYOUTS = {h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED}  # not VIRTUAL


class WeightsFileError(ValueError):
    """A weights file that points outside itself, or lacks a dataset of the expected kind."""


def stored_datasets(f: h5py.File, source) -> dict[str, h5py.Dataset]:
    """Every dataset of an open HDF5 file, by path, once the whole file is known to hold only hard
    links to groups and datasets whose data is stored in the file, with built-in filters.

    Args:
        f: the open file.
        source: the file's name, for messages.

    Raises:
        WeightsFileError: naming the file and the first object that is a soft or external link, a
            committed datatype, a dataset with external storage, a virtual dataset, a dataset with
            a filter plugin; or over MAX_LINKS links.
    """
    datasets, count = {}, 0

    def visit(name: str, link) -> str | None:  # a returned string stops the walk (raising in it is a SystemError)
        nonlocal count
        count += 1
        if count > MAX_LINKS:
            return f"over {MAX_LINKS:,} objects"
        if isinstance(link, h5py.SoftLink):
            return f"{name} is a soft link (to {link.path}); a weights file must hold its own data under its own names"
        if isinstance(link, h5py.ExternalLink):
            return f"{name} is an external link (to {link.filename}:{link.path}); a weights file must hold its own data"
        if not isinstance(link, h5py.HardLink):
            return f"{name} is a {type(link).__name__}, not a group or dataset"
        try:
            item = f.get(name)
            why = _not_stored_inside(item) if isinstance(item, h5py.Dataset) else None
        except Exception as e:  # a corrupt object header: h5py raises OSError, KeyError, RuntimeError, ...
            return f"{name} cannot be read ({type(e).__name__}: {e})"
        if isinstance(item, h5py.Dataset):
            if why:
                return f"dataset {name} {why}"
            datasets[name] = item
        elif not isinstance(item, h5py.Group):
            return f"{name} is a {type(item).__name__}, not a group or dataset"
        return None

    try:
        problem = f.visititems_links(visit)
    except Exception as e:  # corrupt metadata; an error inside the walk comes out as a SystemError
        cause = e.__cause__ or e
        raise WeightsFileError(f"{source}: its structure cannot be read ({type(cause).__name__}: {cause})") from None
    if problem:
        raise WeightsFileError(f"{source}: {problem}")
    return datasets


def _not_stored_inside(dataset: h5py.Dataset) -> str | None:
    """Why a dataset's data is not (only) in its own file, or None."""
    plist = dataset.id.get_create_plist()
    if plist.get_external_count():
        where = sorted({name.decode(errors="replace") if isinstance(name, bytes) else str(name)
                        for name, *_ in (plist.get_external(i) for i in range(plist.get_external_count()))})
        return f"keeps its data in another file ({', '.join(where)}): external storage is not allowed"
    if plist.get_layout() not in STORED_LAYOUTS:
        return "is a virtual dataset (a view of other files): not allowed"
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in BUILT_IN_FILTERS:
            return f"needs HDF5 filter {code}, a plugin: only built-in filters are allowed"
    return None


def expected_dataset(datasets: dict[str, h5py.Dataset], name: str, shape: tuple, source) -> h5py.Dataset:
    """The float dataset `name` of `stored_datasets`'s result, checked to have exactly `shape`
    (its data not read yet).

    Raises:
        WeightsFileError: naming the file and the dataset: missing (or a group), not floating point
            (a string, an integer, a compound), or of another shape.
    """
    dataset = datasets.get(name)
    if dataset is None:
        raise WeightsFileError(f"{source}: no dataset {name}")
    if dataset.dtype.kind != "f" or dataset.dtype.itemsize not in (2, 4, 8):
        raise WeightsFileError(f"{source}: dataset {name} holds {dataset.dtype}, not floating-point weights")
    if tuple(dataset.shape) != tuple(shape):
        raise WeightsFileError(f"{source}: dataset {name} has shape {tuple(dataset.shape)}, expected {tuple(shape)}")
    return dataset


def read_array(datasets: dict[str, h5py.Dataset], name: str, shape: tuple, source) -> np.ndarray:
    """`expected_dataset`'s data as float32, all finite.

    Raises:
        WeightsFileError: as `expected_dataset`, or the data cannot be read (a corrupt file) or holds
            NaN or infinite values.
    """
    dataset = expected_dataset(datasets, name, shape, source)
    try:
        array = dataset[()]
    except Exception as e:  # a corrupt chunk: h5py raises OSError, ValueError, RuntimeError, ...
        raise WeightsFileError(f"{source}: dataset {name} cannot be read ({type(e).__name__}: {e})") from None
    array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array).all():  # a weight of NaN or infinity makes every output NaN
        raise WeightsFileError(f"{source}: dataset {name} holds NaN or infinite values (or values beyond float32)")
    return array


def keras_weights_layout(model) -> dict[str, tuple]:
    """The datasets Keras' save_weights writes for `model` (a `.weights.h5` file): path -> shape.
    What a weights file for it must hold, names included, whatever the Keras version names them.

    Learnt by saving once per architecture (its layers' classes and weights' paths and shapes, all
    that the file's layout depends on): otherwise every load of a folder would write a file.
    """
    architecture = tuple((type(layer).__name__, tuple((w.path, tuple(w.shape)) for w in layer.weights))
                         for layer in model.layers)
    if architecture not in _LAYOUTS:
        if len(_LAYOUTS) >= 64:  # bounded: a process that loads many kinds of model starts over
            _LAYOUTS.clear()
        _LAYOUTS[architecture] = saved_layout(model)
    return dict(_LAYOUTS[architecture])


_LAYOUTS: dict[tuple, dict[str, tuple]] = {}  # architecture (see keras_weights_layout) -> its layout


def saved_layout(model) -> dict[str, tuple]:
    """`keras_weights_layout`, learnt by saving `model`'s weights to a temporary file and reading it back."""
    with tempfile.TemporaryDirectory(prefix="recon-layout-") as tmp:
        path = Path(tmp) / "layout.weights.h5"
        model.save_weights(path)
        with h5py.File(path, "r") as f:
            layout = {}
            f.visititems(lambda name, item: layout.__setitem__(name, tuple(item.shape))
                         if isinstance(item, h5py.Dataset) else None)
    return layout


def load_keras_weights(model, path: Path, what: str) -> None:
    """Load a Keras `.weights.h5` file into `model`; Keras reads the file only once it is known to
    hold exactly the model's weights (each name, shape, a float dtype, finite values), all stored
    inside it. The optimizer's state Keras saves beside a compiled model's weights is ignored.

    Args:
        what: what the model is, for messages ("the config's decoder").

    Raises:
        WeightsFileError: naming the file and the dataset that is missing, extra, of another shape
            or dtype, not finite, or stored outside the file; a file that is not HDF5; or (after the
            checks) one Keras still cannot load.
    """
    expected = keras_weights_layout(model)
    try:
        with h5py.File(path, "r") as f:
            datasets = stored_datasets(f, path)
            for name in sorted(n for n in set(datasets) - set(expected) if not n.startswith("optimizer/")):
                raise WeightsFileError(f"{path} does not fit {what}: it has no weight {name}")
            for name, shape in expected.items():
                try:
                    read_array(datasets, name, shape, path)  # read here too: every value finite
                except WeightsFileError as e:
                    raise WeightsFileError(f"{path} does not fit {what}: {str(e).removeprefix(f'{path}: ')}") from None
    except WeightsFileError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:  # not HDF5, truncated, corrupt
        raise WeightsFileError(f"{path} is not a readable weights file ({type(e).__name__}: {e})") from None
    try:
        with warnings.catch_warnings():  # Keras warns per layer before raising; the error says it all
            warnings.simplefilter("ignore", UserWarning)
            model.load_weights(path)
    except Exception as e:  # a corrupt chunk that the checks above could not see
        raise WeightsFileError(f"{path} does not fit {what}: {type(e).__name__}: {e}") from None
