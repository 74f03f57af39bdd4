"""Model folders as untrusted input (issue 30): every value of config.json checked before anything is
built, weights read only from datasets stored in their own file, an int8 file that fails dropped
for floating point under "auto"."""

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from recon import ConfigError, ModelFolderError, ReconConfig, Reconstructor
from tests.conftest import smooth_image

CANARY = b"CANARY-SECRET-" * 64  # what a file outside the folder holds; never to be read


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny model folder with its own encoder file (read-only: tests copy it)."""
    cfg = ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random", decoder_width=8,
                      num_res_blocks=1, feature_scale=[1.0] * 128)
    return Reconstructor(cfg).save_pretrained(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def folder(tiny_folder, tmp_path):
    return Path(shutil.copytree(tiny_folder, tmp_path / "model"))


def with_config(folder: Path, **changes) -> Path:
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(data | changes))
    return folder


# -- config.json ------------------------------------------------------------------------------------
BAD_VALUES = [
    ("image_size", "224"), ("image_size", 32.0), ("image_size", True), ("image_size", [32]), ("image_size", {"a": 1}),
    ("image_size", 400_000), ("image_size", -32), ("image_size", None), ("image_size", 10**30),
    ("decoder_width", 10**9), ("decoder_width", "8"), ("decoder_width", 0), ("num_res_blocks", 10**6),
    ("num_res_blocks", 1.5), ("num_res_blocks", -1), ("upsample_widths", [10**7]), ("upsample_widths", ["8"]),
    ("upsample_widths", "8"), ("upsample_widths", [[8]]), ("upsample_widths", [True]), ("upsample_widths", {"0": 8}),
    ("upsample_widths", [8] * 40), ("feature_scale", [float("nan")] * 128), ("feature_scale", [float("inf")] * 128),
    ("feature_scale", [1.0] * 127 + [-1.0]), ("feature_scale", [0.0] * 128), ("feature_scale", [1.0] * 64),
    ("feature_scale", ["1.0"] * 128), ("feature_scale", [[1.0]] * 128), ("feature_scale", [1e300] * 128),
    ("feature_scale", "1.0"), ("feature_scale", {"0": 1.0}), ("feature_scale", 1.0),
    ("layer", ["block2_conv2"]), ("layer", {"x": 1}), ("layer", "../../etc/passwd"), ("backbone", 5),
    ("backbone", ["vgg16"]), ("encoder_weights", 5), ("encoder_weights", ""), ("encoder_weights", "a\0b"),
    ("encoder_weights", "x" * 10_000), ("encoder_weights", ["/etc/passwd"]), ("encoder_sha256", "/etc/passwd"),
    ("encoder_sha256", 5), ("int8_encoder_sha256", ["a"]), ("preprocessing", 3), ("preprocessing", "/etc/passwd"),
    ("upsample", None), ("upsample", {"resize": 1}), ("encoder_seed", -1), ("encoder_seed", 2**40),
    ("encoder_seed", "0"), ("feature_scale", [10**400] * 128), ("image_size", 10**400),
]


@pytest.mark.parametrize("field, value", BAD_VALUES, ids=lambda v: repr(v)[:30])
def test_a_wrong_config_value_names_the_file_and_the_field(folder, field, value):
    with_config(folder, **{field: value})
    with pytest.raises(ConfigError) as error:
        ReconConfig.load(folder / "config.json")
    message = str(error.value)
    assert str(folder / "config.json") in message and field in message and len(message) < 600
    with pytest.raises(ModelFolderError, match="config.json"):
        Reconstructor.from_pretrained(folder)


def test_config_bounds_are_documented_and_the_decoder_is_counted_before_it_is_built():
    from recon.config import MAX_DECODER_PARAMETERS, MAX_IMAGE_SIZE
    from recon.decoder import build_decoder
    for upsample in ("resize", "pixel_shuffle"):
        cfg = ReconConfig(layer="block3_conv3", decoder_width=5, num_res_blocks=2, upsample_widths=[7, 9],
                          upsample=upsample)
        assert cfg.decoder_parameters == build_decoder(cfg).count_params()
    with pytest.raises(ConfigError, match="decoder of .* parameters"):  # each value in range, together too big
        ReconConfig(layer="block5_conv3", decoder_width=1024, num_res_blocks=64)
    assert ReconConfig(image_size=MAX_IMAGE_SIZE).image_size == MAX_IMAGE_SIZE
    assert MAX_DECODER_PARAMETERS >= 100 * ReconConfig(layer="block3_conv3", decoder_width=48).decoder_parameters


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # RecursionError in the parser
    ('{"image_size": 1' + "0" * 5000 + "}", "not valid JSON"),  # over Python's int digits limit
    (b"\xff\xfe{}", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ("{}" + " " * 1_100_000, "over 1,000,000 bytes"),
])
def test_an_unreadable_config_file_is_a_config_error(folder, text, message):
    path = folder / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=message):
        ReconConfig.load(path)
    with pytest.raises(ModelFolderError, match="config.json"):
        Reconstructor.from_pretrained(folder)


def test_a_directory_where_config_json_should_be(folder):
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    with pytest.raises(ModelFolderError, match="config.json"):
        Reconstructor.from_pretrained(folder)


# -- weights: only datasets stored inside the file, of the expected names, shapes and dtypes -----------
def first_dataset(path: Path, prefix: str = "") -> str:
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return sorted(n for n in names if n.startswith(prefix))[0]


def replace_dataset(path: Path, name: str, make) -> None:
    """Delete dataset `name` and call make(file, name, old_array) to put something else there."""
    with h5py.File(path, "a") as f:
        old = f[name][()]
        del f[name]
        make(f, name, old)


def external_on(canary: Path):
    def make(f, name, old):
        canary.write_bytes(CANARY * (old.nbytes // len(CANARY) + 1))
        f.create_dataset(name, shape=old.shape, dtype=old.dtype, external=[(str(canary), 0, old.nbytes)])
    return make


def external_link_to(other: Path):
    def make(f, name, old):
        with h5py.File(other, "w") as g:
            g["w"] = np.frombuffer((CANARY * (old.nbytes // len(CANARY) + 1))[:old.nbytes], old.dtype).reshape(old.shape)
        f[name] = h5py.ExternalLink(str(other), "/w")
    return make


def soft_link(f, name, old):
    f[name + "_elsewhere"] = old
    f[name] = h5py.SoftLink("/" + name + "_elsewhere")


def virtual(other: Path):
    def make(f, name, old):
        with h5py.File(other, "w") as g:
            g["w"] = old
        layout = h5py.VirtualLayout(shape=old.shape, dtype=old.dtype)
        layout[...] = h5py.VirtualSource(str(other), "w", shape=old.shape)
        f.create_virtual_dataset(name, layout)
    return make


MUTATIONS = {
    "missing": (lambda f, name, old: None, "no dataset"),
    "group": (lambda f, name, old: f.create_group(name), "no dataset"),
    "string": (lambda f, name, old: f.create_dataset(name, data=np.array(["0.5"] * old.size, "S8").reshape(old.shape)),
               "not floating-point"),
    "integer": (lambda f, name, old: f.create_dataset(name, data=old.astype(np.int64)), "not floating-point"),
    "shape": (lambda f, name, old: f.create_dataset(name, data=np.zeros((7,) + old.shape, old.dtype)), "has shape"),
    "soft link": (soft_link, "soft link"),
    "nan": (lambda f, name, old: f.create_dataset(name, data=np.full(old.shape, np.nan, old.dtype)), "NaN or infinite"),
}


@pytest.mark.parametrize("weights", ["encoder.weights.h5", "decoder.weights.h5"])
@pytest.mark.parametrize("mutation", [*MUTATIONS, "external storage", "external link", "virtual"])
def test_weights_outside_the_file_or_of_another_kind_are_refused(folder, tmp_path, weights, mutation):
    path = folder / weights
    name = first_dataset(path, "block2_conv2/" if weights.startswith("encoder") else "")
    outside = tmp_path / "outside"
    outside.mkdir()
    make, message = MUTATIONS.get(mutation, (None, None))
    if mutation == "external storage":
        make, message = external_on(outside / "canary.txt"), "external storage is not allowed"
    elif mutation == "external link":
        make, message = external_link_to(outside / "other.h5"), "external link"
    elif mutation == "virtual":
        make, message = virtual(outside / "other.h5"), "virtual dataset"
    replace_dataset(path, name, make)
    with pytest.raises(ModelFolderError) as error:
        Reconstructor.from_pretrained(folder)
    assert weights in str(error.value) and message in str(error.value)
    if mutation not in ("soft link", "missing", "group"):  # the message names the dataset itself
        assert name in str(error.value)


def test_an_extra_dataset_in_the_decoder_file_is_refused(folder):
    with h5py.File(folder / "decoder.weights.h5", "a") as f:
        f["layers/extra/vars/0"] = np.zeros((10**6,), np.float32)
    with pytest.raises(ModelFolderError, match="decoder.weights.h5 does not fit .*layers/extra/vars/0"):
        Reconstructor.from_pretrained(folder)


def test_a_decoder_saved_while_it_trained_loads(folder):
    """A run folder's decoder.weights.h5 written from a compiled decoder also holds the optimizer's
    state (Keras' layout, optimizer/vars/N), which loading ignores."""
    from recon import build_decoder
    model = Reconstructor.from_pretrained(folder)
    decoder = build_decoder(model.config)
    decoder.compile(optimizer="adam", loss="mae")
    decoder.train_on_batch(np.ones((1, 16, 16, 128), np.float32), np.zeros((1, 32, 32, 3), np.float32))
    decoder.save_weights(folder / "decoder.weights.h5")
    with h5py.File(folder / "decoder.weights.h5") as f:
        assert "optimizer" in f
    loaded = Reconstructor.from_pretrained(folder).decoder
    for a, b in zip(loaded.get_weights(), decoder.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("weights", ["encoder.weights.h5", "decoder.weights.h5"])
@pytest.mark.parametrize("damage", ["empty", "half", "text", "directory"])
def test_truncated_or_foreign_weights_files(folder, weights, damage):
    path = folder / weights
    content = path.read_bytes()
    if damage == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes({"empty": b"", "half": content[:len(content) // 2], "text": b"not hdf5\n" * 100}[damage])
    with pytest.raises(ModelFolderError, match=weights):
        Reconstructor.from_pretrained(folder)


def test_the_encoder_reader_refuses_a_link_anywhere_in_the_file(tmp_path):
    """Even where no dataset it reads is affected: the file is refused whole."""
    from recon import EncoderWeightsError
    from recon.encoder import read_vgg_weights
    path = tmp_path / "enc.h5"
    with h5py.File(path, "w") as f:
        f["block1_conv1/kernel"] = np.zeros((3, 3, 3, 64), np.float32)
        f["block1_conv1/bias"] = np.zeros((64,), np.float32)
        f["notes"] = h5py.ExternalLink("/etc/passwd", "/x")
    with pytest.raises(EncoderWeightsError, match="notes is an external link"):
        read_vgg_weights(path)


# -- the int8 file -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def int8_folder(tiny_folder, tmp_path_factory):
    from recon.int8 import quantize_encoder
    model = Reconstructor.from_pretrained(tiny_folder)
    model.int8_file = quantize_encoder(model.encoder, [model.prepare(smooth_image(40, 40, s))[None] for s in range(4)])
    return model.save_pretrained(tmp_path_factory.mktemp("int8") / "model")


@pytest.fixture
def vnni(monkeypatch):
    """A CPU where "auto" picks int8, without bfloat16."""
    import recon.precision
    monkeypatch.setattr(recon.precision, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(recon.precision, "cpu_flags", lambda: {"avx512_vnni"})


def test_an_int8_file_that_fails_at_run_time_falls_back_once_under_auto(int8_folder, vnni, tmp_path):
    model = Reconstructor.from_pretrained(int8_folder, precision="auto")
    assert model.precision == "int8"

    def lacks_data(batch):
        raise RuntimeError("Input tensor 0 lacks data")
    model.int8_encoder.front = lacks_data
    with pytest.warns(UserWarning, match="encoder.int8.tflite failed to run .*lacks data.*float32") as caught:
        first = model.reconstruct(smooth_image(40, 40, 1))
    assert len([w for w in caught if "failed to run" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second reconstruction warns no more
        second = model.reconstruct(smooth_image(40, 40, 1), "native")
        model.encode(np.zeros((32, 32, 3), np.float32))
    exact = Reconstructor.from_pretrained(int8_folder).reconstruct(smooth_image(40, 40, 1))
    np.testing.assert_allclose(first.output, exact.output, atol=1e-5)
    assert model.precision == "float32" and second.output.shape == (40, 40, 3)
    assert not (model.save_pretrained(tmp_path / "saved") / "encoder.int8.tflite").exists()

    explicit = Reconstructor.from_pretrained(int8_folder, precision="int8")
    explicit.int8_encoder.front = lacks_data
    with pytest.raises(ModelFolderError, match="failed to run"):
        explicit.reconstruct(smooth_image(40, 40, 1))


def test_an_int8_file_that_loads_but_does_not_run_is_dropped_at_load(int8_folder, vnni, monkeypatch):
    from recon.int8 import Int8Encoder

    def lacks_data(self, batch):
        raise RuntimeError("Input tensor 0 lacks data")
    monkeypatch.setattr(Int8Encoder, "front", lacks_data)  # in this process; the child's run passes
    with pytest.warns(UserWarning, match="does not run .*lacks data.*running it in float32"):
        model = Reconstructor.from_pretrained(int8_folder, precision="auto")
    assert model.precision == "float32" and model.int8_file is None  # not saved on either
    with pytest.raises(ModelFolderError, match="does not run"):
        Reconstructor.from_pretrained(int8_folder, precision="int8")


def test_an_int8_file_that_crashes_the_interpreter_is_run_in_a_child_first(int8_folder, vnni, monkeypatch, tmp_path):
    """A flipped bit can make LiteRT abort (SIGABRT) while loading: no exception, the process ends."""
    import recon.int8
    monkeypatch.setattr(recon.int8, "CHILD_CODE", "import os\nos.abort()\n")
    monkeypatch.setattr(recon.int8, "_RAN", set())
    with pytest.warns(UserWarning, match="not a TFLite model: it crashed the TFLite interpreter .SIGABRT"):
        model = Reconstructor.from_pretrained(int8_folder, precision="auto")
    assert model.precision == "float32"
    monkeypatch.setattr(recon.int8, "CHILD_CODE", "print('loaded', flush=True)\nimport os\nos.abort()\n")
    with pytest.raises(ModelFolderError, match="does not run .it crashed the TFLite interpreter"):
        Reconstructor.from_pretrained(int8_folder, precision="int8")


def test_an_int8_file_with_a_flipped_bit_and_its_hash_updated(int8_folder, vnni, tmp_path):
    """Whatever a flipped bit does to the file, "auto" loads and reconstructs, in int8 or floating point."""
    content = (int8_folder / "encoder.int8.tflite").read_bytes()
    rng = np.random.default_rng(0)
    for i in range(3):
        copy = Path(shutil.copytree(int8_folder, tmp_path / str(i)))
        flipped = bytearray(content)
        flipped[int(rng.integers(len(content)))] ^= 1 << int(rng.integers(8))
        (copy / "encoder.int8.tflite").write_bytes(bytes(flipped))
        with_config(copy, int8_encoder_sha256=hashlib.sha256(flipped).hexdigest())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = Reconstructor.from_pretrained(copy, precision="auto")
            assert model.reconstruct(smooth_image(40, 40, 1)).output.shape == (32, 32, 3)
