import keras
import numpy as np
import pytest

from recon import ModelFolderError, ReconConfig, Reconstructor, build_decoder, build_encoder
from recon.config import VGG16_LAYERS
from tests.conftest import randomize_weights


def test_default_decoder_is_small():
    params = build_decoder(ReconConfig(layer="block3_conv3")).count_params()
    print(f"block3_conv3 decoder: {params:,} parameters")
    assert params <= 400_000


def test_the_rgb_layer_is_float32_for_training_and_follows_a_whole_cast_for_inference():
    from recon.precision import dtype_policy
    cfg = ReconConfig(layer="block2_conv2", decoder_width=8, num_res_blocks=1)
    for policy, compute in [("float32", "float32"), ("mixed_bfloat16", "float32"), ("bfloat16", "bfloat16")]:
        with dtype_policy(policy):
            decoder = build_decoder(cfg)
        # mixed precision trains against float32 sigmoid outputs; a model cast whole for inference
        # (Reconstructor(precision="bfloat16")) runs the last conv in bfloat16 too
        assert decoder.get_layer("rgb").compute_dtype == compute
        assert decoder.get_layer("reduce").compute_dtype == ("float32" if policy == "float32" else "bfloat16")
        assert decoder.get_layer("rgb_sigmoid").compute_dtype == decoder.output.dtype == "float32"  # never rounded


@pytest.mark.parametrize("upsample", ["resize", "pixel_shuffle"])
def test_a_bfloat16_models_output_is_not_rounded_to_bfloat16(tiny_config, upsample):
    """The sigmoid runs in float32 after a bfloat16 RGB conv: in bfloat16 every output would lie on
    bfloat16's grid (8-bit significand), and TensorFlow's bfloat16 sigmoid is up to 5e-3 off (0.0004
    held-out SSIM on block3_conv3)."""
    model = Reconstructor(ReconConfig(**(tiny_config.to_dict() | {"upsample": upsample})), precision="bfloat16")
    image = np.random.default_rng(0).random((32, 32, 3)).astype("float32")
    output = model.reconstruct(image, "native").output
    off_grid = output.view(np.uint32) & 0xFFFF  # the bits bfloat16 drops
    assert model.decoder.get_layer("rgb").compute_dtype == "bfloat16"
    assert np.count_nonzero(off_grid) > output.size // 2


def test_conv_before_shuffle_is_the_conv_after_it_border_included():
    from recon.decoder import ConvBeforeShuffle
    rng = np.random.default_rng(4)
    conv = keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")
    x = rng.normal(size=(2, 5, 7, 4 * 6)).astype("float32")  # odd sizes: every border case
    conv.build((None, None, None, 6))
    conv.set_weights([rng.normal(size=w.shape) for w in conv.get_weights()])  # a bias too, not zeros
    expected = keras.ops.convert_to_numpy(conv(keras.ops.depth_to_space(x, 2)))
    before = ConvBeforeShuffle(conv)(x)
    assert before.shape == (2, 5, 7, 12)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.depth_to_space(before, 2)), expected, atol=2e-6)
    with pytest.raises(ValueError, match="3x3, stride-1"):
        ConvBeforeShuffle(keras.layers.Conv2D(3, 5, padding="same"))
    with pytest.raises(ValueError, match="3x3, stride-1"):
        ConvBeforeShuffle(keras.layers.Conv2D(3, 3, padding="valid"))


@pytest.mark.parametrize("layer", ["block1_conv2", "block3_conv3"])  # no x2 stage, two
@pytest.mark.parametrize("upsample", ["resize", "pixel_shuffle"])
def test_the_inference_decoder_computes_the_decoder(layer, upsample):
    from recon.decoder import inference_decoder
    cfg = ReconConfig(layer=layer, encoder_weights="random", decoder_width=8, num_res_blocks=1, upsample=upsample)
    decoder = build_decoder(cfg)
    randomize_weights(decoder)
    features = np.random.default_rng(5).random((2, 6, 10, cfg.channels)).astype("float32")
    fast = inference_decoder(decoder, cfg)
    np.testing.assert_allclose(fast(features), decoder(features), atol=1e-6)
    assert ("rgb_before_shuffle" in [l.name for l in fast.layers]) == (upsample == "pixel_shuffle" and cfg.stride > 1)
    decoder.get_layer("rgb").bias.assign([5.0, -5.0, 0.0])  # shared weights: a change shows at once
    np.testing.assert_allclose(fast(features), decoder(features), atol=1e-6)


def test_the_inference_decoder_in_bfloat16_is_the_bfloat16_decoder():
    from recon.decoder import inference_decoder
    from recon.precision import dtype_policy
    cfg = ReconConfig(layer="block3_conv3", encoder_weights="random", decoder_width=8, num_res_blocks=1,
                      upsample="pixel_shuffle")
    with dtype_policy("bfloat16"):
        decoder = build_decoder(cfg)
    randomize_weights(decoder)
    features = np.random.default_rng(6).random((1, 6, 10, cfg.channels)).astype("float32")
    fast = inference_decoder(decoder, cfg)
    assert fast.get_layer("rgb_before_shuffle").compute_dtype == "bfloat16"
    outputs = keras.ops.convert_to_numpy(fast(features))
    assert outputs.dtype == np.float32
    np.testing.assert_allclose(outputs, keras.ops.convert_to_numpy(decoder(features)), atol=5e-3)  # bfloat16 sums


def test_a_decoder_of_ones_own_runs_as_it_is(tiny_config):
    from recon.decoder import inference_decoder
    inputs = keras.Input((None, None, tiny_config.channels))
    own = keras.Model(inputs, keras.layers.UpSampling2D(2)(keras.layers.Conv2D(3, 1, activation="sigmoid")(inputs)))
    assert inference_decoder(own, tiny_config) is own
    with pytest.raises(ValueError, match="not made by build_decoder"):
        inference_decoder(own, tiny_config, from_trunk=True)
    model = Reconstructor(tiny_config, decoder=own)
    assert model.reconstruct(np.zeros((32, 32, 3), "float32")).output.shape == (32, 32, 3)


@pytest.mark.parametrize("layer", list(VGG16_LAYERS))
def test_every_layer_trains_one_step(layer):
    cfg = ReconConfig(layer=layer, image_size=32, encoder_weights="random", decoder_width=8, num_res_blocks=1)
    encoder, decoder = build_encoder(cfg), build_decoder(cfg)
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    features = keras.ops.convert_to_numpy(encoder(images))
    assert features.shape == (2, 32 // cfg.stride, 32 // cfg.stride, cfg.channels)
    decoder.compile(optimizer="adam", loss="mae")
    before = [w.copy() for w in decoder.get_weights()]
    loss = decoder.train_on_batch(features, images)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, decoder.get_weights()))
    assert decoder.predict(features, verbose=0).shape == images.shape


def test_encoder_is_frozen_and_preprocesses_itself():
    cfg = ReconConfig(layer="block1_conv1", encoder_weights="random")
    encoder = build_encoder(cfg)
    assert not encoder.trainable_weights
    # a mid-grey image is near the ImageNet mean, so preprocessing centres it near zero
    grey = np.full((1, 8, 8, 3), [123.68 / 255, 116.779 / 255, 103.939 / 255], "float32")
    assert np.abs(encoder.get_layer("vgg_preprocess")(grey)).max() < 1e-3


def test_native_size_and_several_sizes_in_one_process():
    model = Reconstructor(ReconConfig(encoder_weights="random", decoder_width=8, num_res_blocks=1))
    image = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert model.reconstruct(image, size="native").output.shape == (240, 320, 3)
    for size in [(64, 96), (100, 60), (224, 224)]:  # predict() retraced and failed here; direct calls must not
        rec = model.reconstruct(image, size=size)
        assert rec.output.shape[:2] == (model.round_to_stride(size[0]), model.round_to_stride(size[1]))
        assert rec.features.shape == (rec.output.shape[0] // 4, rec.output.shape[1] // 4, 256)
    assert model.reconstruct(image).output.shape == (224, 224, 3)


def test_batch_shapes_and_stride_errors():
    model = Reconstructor(ReconConfig(layer="block2_conv2", encoder_weights="random", decoder_width=8,
                                      num_res_blocks=1, image_size=32))
    outputs, features = model.reconstruct_batch(np.zeros((3, 16, 24, 3), "float32"))
    assert outputs.shape == (3, 16, 24, 3) and features.shape == (3, 8, 12, 128)
    with pytest.raises(ValueError, match="multiples of 2"):
        model.encode(np.zeros((15, 16, 3), "float32"))


def test_save_load_reproduces_outputs_exactly(tmp_path, tiny_config):
    model = Reconstructor(tiny_config)
    model.save_pretrained(tmp_path / "m")
    loaded = Reconstructor.from_pretrained(tmp_path / "m")
    image = np.random.default_rng(2).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    assert loaded.config == model.config
    np.testing.assert_array_equal(model.reconstruct(image, "native").output, loaded.reconstruct(image, "native").output)


def test_broken_model_folders_raise_clear_errors(tmp_path, tiny_config):
    folder = Reconstructor(tiny_config).save_pretrained(tmp_path / "m")
    (folder / "decoder.weights.h5").unlink()
    with pytest.raises(ModelFolderError, match="missing decoder.weights.h5"):
        Reconstructor.from_pretrained(folder)
    wider = ReconConfig(**(tiny_config.to_dict() | {"decoder_width": 16}))
    Reconstructor(wider).save_pretrained(tmp_path / "wide")
    import shutil
    shutil.copy(tmp_path / "wide" / "decoder.weights.h5", folder / "decoder.weights.h5")
    with pytest.raises(ModelFolderError, match="does not fit"):
        Reconstructor.from_pretrained(folder)


def test_feature_normalization_prevents_saturation():
    """Raw VGG features peak near 1000; unnormalized they drive the sigmoid to 0/1."""
    from training.data import feature_rms
    cfg = ReconConfig(layer="block2_conv2", image_size=32, encoder_weights="random", decoder_width=16,
                      num_res_blocks=2)
    rng = np.random.default_rng(3)
    features = (rng.random((4, 16, 16, 128)) < 0.13) * rng.exponential(20.0, (4, 16, 16, 128)) * 10
    features = features.astype("float32")

    def saturated_fraction(c):
        out = np.asarray(build_decoder(c)(features))
        return float(((out < 0.01) | (out > 0.99)).mean())

    normalized = ReconConfig(**(cfg.to_dict() | {"feature_scale": feature_rms(features)}))
    assert saturated_fraction(cfg) > 0.3  # what the normalization is there to stop
    assert saturated_fraction(normalized) < 0.05


def test_residual_blocks_start_as_the_identity(tiny_config):
    """Zero-initialized second convs: a new deep decoder trains like a shallow one at first."""
    decoder = build_decoder(tiny_config)
    first, last = decoder.get_layer("reduce").output, decoder.get_layer(f"res{tiny_config.num_res_blocks}_add").output
    probe = keras.Model(decoder.inputs, [first, last])
    x = np.random.default_rng(0).random((1, 4, 4, tiny_config.channels)).astype("float32")
    before, after = (keras.ops.convert_to_numpy(t) for t in probe(x))
    assert tiny_config.num_res_blocks >= 1 and np.abs(before).max() > 0
    np.testing.assert_array_equal(before, after)


def test_a_bfloat16_model_returns_float32_arrays_at_several_sizes(tmp_path, tiny_config):
    from recon.metrics import psnr
    from tests.conftest import smooth_image
    exact = Reconstructor(tiny_config)
    folder = exact.save_pretrained(tmp_path / "model")
    fast = Reconstructor.from_pretrained(folder, precision="bfloat16")
    assert fast.precision == "bfloat16" and {w.dtype for w in fast.encoder.weights} == {"bfloat16"}
    image = smooth_image(50, 70, seed=2)
    for size in [(32, 32), (48, 64), (16, 40), "trained"]:
        rec, reference = fast.reconstruct(image, size), exact.reconstruct(image, size)
        assert rec.output.dtype == rec.features.dtype == np.float32
        assert rec.output.shape == reference.output.shape and rec.features.shape == reference.features.shape
        assert psnr(reference.output, rec.output) > 30  # the same picture, rounded differently
    assert Reconstructor.from_pretrained(folder).precision == "float32"  # the default stays exact


@pytest.mark.parametrize("dtype, scale", [("uint8", 255), ("uint16", 65535), ("float32", 1), ("float64", 1)])
def test_reconstruct_reads_each_dtype_by_its_range(tiny_config, dtype, scale):
    from tests.conftest import smooth_image
    model = Reconstructor(tiny_config)
    image = smooth_image(40, 40, seed=1).astype(np.float64) / 255
    expected = model.reconstruct(image.astype(np.float32)).output
    out = model.reconstruct((image * scale).round().astype(dtype) if scale > 1 else image.astype(dtype)).output
    assert out.dtype == np.float32 and np.abs(out - expected).max() < 0.02


@pytest.mark.parametrize("bad, message", [(lambda a: a * 255.0, r"\[0, 1\]"), (lambda a: a.astype(np.int64), "int64")])
def test_reconstruct_refuses_what_it_cannot_read(tiny_config, bad, message):
    model = Reconstructor(tiny_config)
    image = np.random.default_rng(0).random((32, 32, 3))
    with pytest.raises(ValueError, match=message):
        model.reconstruct(bad(image))
    with pytest.raises(ValueError, match=message):
        model.encode(bad(image))


def test_many_models_in_one_process_do_not_warn_of_retracing(tiny_config):
    """Each model traces its own graph once; TensorFlow counts traces per code object, so six models
    whose graphs came from one lambda were taken for one function retracing (the app's Layers tab)."""
    import logging
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        for _ in range(6):
            Reconstructor(tiny_config).reconstruct_batch(np.zeros((1, 32, 32, 3), "float32"))  # the trained size
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert not [r for r in records if "retracing" in r.getMessage()]
