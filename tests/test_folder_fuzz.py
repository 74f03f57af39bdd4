"""Acceptance 1 of issue 30: hundreds of seeded random mutations of a tiny model folder, through
`Reconstructor.from_pretrained`, a Hub pull and the app's model loading. Config values of wrong
types, NaN, huge, nested and path-like; weight files truncated, bit-flipped and edited with h5py
(datasets deleted, turned into groups, strings, links and external storage on a canary file outside
the folder). Each case ends in a project error (ModelFolderError, ConfigError, HubError) or a model
whose reconstruction has the config's shape and finite values; never a raw exception, never a
byte of the canary in a loaded weight, and (on Linux, watched with inotify) never a file outside the
folder opened or read by any process.
"""

import ctypes
import json
import os
import shutil
import struct
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from recon import ConfigError, ModelFolderError, ReconConfig, Reconstructor

SEED = 30
CONFIG_CASES = 200  # refused before anything is built, mostly: milliseconds each
WEIGHT_CASES = 100  # two tiny Keras models built for each that gets past the encoder file
HUB_CASES = 10
APP_CASES = 10
CANARY = b"CANARY-of-issue-30!" * 4096  # outside every folder; as float32, finite values
LINK_KINDS = ("external storage", "external link", "virtual", "soft link", "root external link")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The tiny folder every case copies (block2_conv2: one x2 stage), and the canary outside it."""
    root = tmp_path_factory.mktemp("fuzz")
    cfg = ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random", decoder_width=8,
                      num_res_blocks=1, feature_scale=[1.0] * 128)
    folder = Reconstructor(cfg).save_pretrained(root / "base")
    outside = root / "outside"
    outside.mkdir()
    (outside / "canary.bin").write_bytes(CANARY)
    with h5py.File(outside / "canary.h5", "w") as f:
        f["w"] = np.frombuffer(CANARY[:4096], np.uint8)
        f["f"] = np.frombuffer(CANARY[:4096 * 4], np.float32)
    return folder, outside


class OpenWatch:
    """The files of one folder that any process opens or reads (Linux inotify): proof that a case read
    nothing there, whether or not what it would have read could reach a weight."""

    EVENTS = 0x1 | 0x20  # IN_ACCESS, IN_OPEN

    def __init__(self, folder: Path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, bytes(folder), self.EVENTS) < 0:
            raise OSError(ctypes.get_errno(), f"cannot watch {folder} with inotify")

    def touched(self) -> list[str]:
        """Names of the files opened or read since the last call ("." for the folder itself)."""
        names = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return names
            offset = 0
            while offset < len(data):  # struct inotify_event: wd, mask, cookie, len, then the name
                length = struct.unpack_from("iIII", data, offset)[3]
                names.append(data[offset + 16:offset + 16 + length].rstrip(b"\0").decode() or ".")
                offset += 16 + length


@pytest.fixture(scope="module")
def watch(base):
    """An OpenWatch on the canary's folder (None where there is no inotify: the canary bytes are still
    looked for in every loaded weight)."""
    if sys.platform != "linux":
        yield None
        return
    watcher = OpenWatch(base[1])
    yield watcher
    os.close(watcher.fd)


def touched_outside(watch: OpenWatch | None) -> list[str]:
    """What was opened or read outside the folder since the last call (also: forget it)."""
    return watch.touched() if watch is not None else []


def assert_read_nothing_outside(watch: OpenWatch | None, what: str) -> None:
    touched = touched_outside(watch)
    assert not touched, f"{what}: opened or read {sorted(set(touched))} outside the folder"


# -- mutations ---------------------------------------------------------------------------------------
def random_value(rng, outside: Path, depth: int = 0):
    """A JSON value of any kind: wrong types, non-finite, huge, nested, path-like, or plausible."""
    scalars = [None, True, False, 0, -1, 1, 8, 32, 33, 2048, 4096, 400_000, 2**31, 2**63, 10**400, -10**30,
               0.5, 32.0, 1e-300, 1e308, float("nan"), float("inf"), -float("inf"), "", "8", "32", "nan",
               "x" * 5000, str(outside / "canary.bin"), str(outside / "canary.h5"), "../" * 8 + "etc/passwd",
               "/etc/passwd", "~/.ssh/id_rsa", "a\0b", "block2_conv2", "block5_conv3", "pixel_shuffle", "resize",
               "imagenet", "hed-bsds500", "random", "caffe", "torchvision", "vgg16", "0" * 64, "f" * 64]
    kind = rng.integers(10 if depth < 3 else 6)
    if kind < 6:
        return scalars[rng.integers(len(scalars))]
    if kind == 6:
        return [random_value(rng, outside, depth + 1) for _ in range(rng.integers(0, 5))]
    if kind == 7:
        return {str(rng.integers(100)): random_value(rng, outside, depth + 1) for _ in range(rng.integers(0, 3))}
    if kind == 8:  # a list of the right length for feature_scale, one entry spoilt
        values = [1.0] * 128
        values[rng.integers(128)] = random_value(rng, outside, depth + 1)
        return values
    nested = 0  # deeply nested lists
    for _ in range(rng.integers(1, 200)):
        nested = [nested]
    return nested


def mutated_config(rng, text: str, outside: Path) -> tuple[str, bytes]:
    data = json.loads(text)
    kind = rng.integers(10)
    if kind < 6:
        key = list(data)[rng.integers(len(data))]
        value = random_value(rng, outside)
        data[key] = value
        what = f"{key} = {json.dumps(value)[:60]}"
    elif kind == 6:
        key = list(data)[rng.integers(len(data))]
        del data[key]
        what = f"without {key}"
    elif kind == 7:
        data = random_value(rng, outside)
        what = f"the whole file {json.dumps(data)[:60]}"
    elif kind == 8:
        data[f"extra_{rng.integers(100)}"] = random_value(rng, outside)
        what = "an unknown key"
    else:
        raw = bytearray(text.encode())
        cut = rng.integers(4)
        if cut == 0:
            raw = raw[:rng.integers(len(raw))]
        elif cut == 1:
            raw[rng.integers(len(raw))] ^= 1 << int(rng.integers(8))
        elif cut == 2:
            raw = b"[" * 50_000 + raw
        else:
            raw = bytes(rng.integers(0, 256, 200, dtype=np.uint8))
        return f"raw bytes ({cut})", bytes(raw)
    return what, json.dumps(data).encode()


def datasets_of(f: h5py.File) -> list[str]:
    names = []
    f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return sorted(names)


def edit_structure(path: Path, rng, outside: Path) -> str:
    """One structural edit of an HDF5 weights file; returns what it did."""
    kinds = ["delete", "group", "string", "integer", "shape", "nan", "huge", "scalar", "compound", "extra",
             "attribute", *LINK_KINDS]
    kind = kinds[rng.integers(len(kinds))]
    with h5py.File(path, "a") as f:
        names = datasets_of(f)
        name = names[rng.integers(len(names))]
        old = f[name][()]
        if kind in ("extra", "attribute", "root external link"):
            if kind == "extra":
                f[f"extra{rng.integers(100)}/vars/0"] = np.zeros(int(rng.integers(1, 1000)), np.float32)
            elif kind == "attribute":
                f[name].attrs["note"] = "x" * 100_000
            else:
                f["elsewhere"] = h5py.ExternalLink(str(outside / "canary.h5"), "/f")
            return f"{kind} ({name})"
        del f[name]
        if kind == "group":
            f.create_group(name)
        elif kind == "string":
            f[name] = np.array(["1.0"] * old.size, "S4").reshape(old.shape)
        elif kind == "integer":
            f[name] = old.astype(np.int32)
        elif kind == "shape":
            f[name] = np.zeros(old.shape + (2,), old.dtype)
        elif kind == "nan":
            f[name] = np.where(rng.random(old.shape) < 0.5, np.nan, old).astype(old.dtype)
        elif kind == "huge":  # declared, never written: a few bytes on disk, 4 GB when read
            f.create_dataset(name, shape=(10**9,), dtype="f4", chunks=(1024,))
        elif kind == "scalar":
            f[name] = np.float32(1.0)
        elif kind == "compound":
            f[name] = np.zeros(old.shape, [("a", "f4"), ("b", "f4")])
        elif kind == "external storage":
            f.create_dataset(name, shape=old.shape, dtype=old.dtype,
                             external=[(str(outside / "canary.bin"), 0, old.nbytes)])
        elif kind == "external link":
            f[name] = h5py.ExternalLink(str(outside / "canary.h5"), "/f")
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=(4096,), dtype="f4")
            layout[...] = h5py.VirtualSource(str(outside / "canary.h5"), "f", shape=(4096,))
            f.create_virtual_dataset(name, layout, fillvalue=0)
        elif kind == "soft link":
            other = [n for n in names if n != name]
            f[name] = h5py.SoftLink("/" + other[rng.integers(len(other))])
        # "delete": nothing in its place
    return f"{kind} ({name})"


def mutated_weights(rng, folder: Path, outside: Path) -> str:
    """Mutate one of the two weight files in place; returns what was done."""
    which = ("encoder.weights.h5", "decoder.weights.h5")[rng.integers(2)]
    path = folder / which
    kind = rng.integers(4)
    if kind == 3 or kind == 2:
        return f"{which}: " + edit_structure(path, rng, outside)
    raw = bytearray(path.read_bytes())
    if kind == 0:
        raw = raw[:rng.integers(len(raw))]
        what = f"truncated to {len(raw)} bytes"
    else:
        flips = int(rng.integers(1, 5))
        # flips in the first 4 kB (HDF5's superblock and object headers) as often as in the data
        for _ in range(flips):
            at = int(rng.integers(min(4096, len(raw)))) if rng.random() < 0.5 else int(rng.integers(len(raw)))
            raw[at] ^= 1 << int(rng.integers(8))
        what = f"{flips} bit(s) flipped"
    path.write_bytes(bytes(raw))
    return f"{which}: {what}"


# -- what every case must end in ----------------------------------------------------------------------
def check_model(model: Reconstructor, what: str) -> None:
    """A loaded model works, and no weight holds canary bytes."""
    image = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    # 48 px: a multiple of every layer's stride and never a trained size (which may be 1024 px), so the
    # layers are called directly: no graph traced per model
    output = model.reconstruct(image, (48, 48)).output
    assert output.shape == (48, 48, 3) and output.dtype == np.float32 and np.isfinite(output).all(), what
    weights = b"".join(np.asarray(w).tobytes() for w in model.encoder.get_weights() + model.decoder.get_weights())
    assert CANARY[:16] not in weights and CANARY[3:19] not in weights, f"{what}: canary bytes in a weight"


def load_or_refuse(load, what: str, errors=(ModelFolderError, ConfigError)):
    """(True, model) or (False, message); any other exception fails the test, naming the case."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown keys warn
            return True, load()
    except errors as e:
        message = str(e)
        assert message and "Traceback" not in message, what
        return False, message
    except Exception as e:  # noqa: BLE001  (the point of the test)
        pytest.fail(f"{what}: raw {type(e).__name__}: {e}")


def test_from_pretrained_on_hundreds_of_mutated_folders(base, watch, tmp_path):
    folder, outside = base
    (outside / "canary.bin").read_bytes()
    assert watch is None or "canary.bin" in touched_outside(watch)  # the watch sees a read
    rng = np.random.default_rng(SEED)
    text = (folder / "config.json").read_text()
    outcomes = {"config": [0, 0], "weights": [0, 0]}
    for i in range(CONFIG_CASES + WEIGHT_CASES):
        case = Path(shutil.copytree(folder, tmp_path / str(i)))
        if i < CONFIG_CASES:
            what, content = mutated_config(rng, text, outside)
            (case / "config.json").write_bytes(content)
            part = "config"
        else:
            what = mutated_weights(rng, case, outside)
            part = "weights"
        what = f"case {i}: {what}"
        touched_outside(watch)  # making the mutation may open the canary; loading it must not
        loaded, result = load_or_refuse(lambda: Reconstructor.from_pretrained(case), what)
        outcomes[part][loaded] += 1
        if loaded:
            check_model(result, what)
            assert not any(kind in what for kind in LINK_KINDS), f"{what}: loaded"
        else:  # the message names the file: the config, or weights that do not fit a changed config
            named = ("config.json", ".weights.h5") if part == "config" else (what.split(": ")[1],)
            assert str(case) in result and any(n in result for n in named), f"{what}: {result}"
        assert_read_nothing_outside(watch, what)
        shutil.rmtree(case)
    print(f"\nfuzz outcomes (refused, loaded): {outcomes}")
    assert all(refused > 20 for refused, _ in outcomes.values())  # the mutations reach both outcomes
    assert all(loaded > 3 for _, loaded in outcomes.values())


@pytest.mark.usefixtures("isolated_hf")
def test_hub_pull_of_mutated_repos(base, watch, fake_hub, tmp_path):
    import hub
    from hub import HubError
    folder, outside = base
    rng = np.random.default_rng(SEED + 1)
    text = (folder / "config.json").read_text()
    files = {name: (folder / name).read_bytes() for name in hub.MODEL_FILES}
    for i in range(HUB_CASES):
        case = Path(shutil.copytree(folder, tmp_path / str(i)))
        if i % 2:
            what, content = mutated_config(rng, text, outside)
            (case / "config.json").write_bytes(content)
        else:
            what = mutated_weights(rng, case, outside)
        repo = f"me/fuzz-{i}"
        fake_hub.create(repo)
        fake_hub.commit(repo, {name: (case / name).read_bytes() for name in files})
        what = f"hub case {i}: {what}"
        touched_outside(watch)
        loaded, result = load_or_refuse(lambda: hub.from_pretrained(repo, endpoint=fake_hub.url), what,
                                        (HubError,))
        if loaded:
            check_model(result, what)
        else:
            assert repo in result, what
        assert_read_nothing_outside(watch, what)


def test_the_app_falls_back_from_mutated_folders(base, watch, tmp_path):
    import app
    folder, outside = base
    rng = np.random.default_rng(SEED + 2)
    text = (folder / "config.json").read_text()
    models = tmp_path / "models"
    shutil.copytree(folder, models / "good")
    for i in range(APP_CASES):
        case = Path(shutil.copytree(folder, models / f"fuzz-{i}"))  # in models/ too: the Layers tab meets it
        if i % 2:
            what, content = mutated_config(rng, text, outside)
            (case / "config.json").write_bytes(content)
        else:
            what = mutated_weights(rng, case, outside)
        what = f"app case {i}: {what}"
        touched_outside(watch)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                store = app.resolve_models(case, None, models)
                layers = store.one_per_layer()
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{what}: raw {type(e).__name__}: {e}")
        assert store.default in ("good", case.name) and store.loaded[store.default], what
        assert layers and {id(m) for m in layers} <= {id(m) for m in store.loaded.values()}, what
        if store.default != case.name:
            assert store.notice.startswith(f"Could not load the model {case}"), what
        assert_read_nothing_outside(watch, what)
        shutil.rmtree(case)
