"""The demo with models of several networks: the picker grouped by network, the Layers tab's network
choice and its "same stride, different network" comparison (tiny random-weight models)."""

from PIL import Image

from recon import ReconConfig, Reconstructor
from tests.conftest import smooth_image


def test_the_demo_groups_models_by_network_and_compares_networks_at_a_shared_stride(tmp_path):
    import app
    for backbone, layer in (("efficientnet_lite0", "block2"), ("vgg16", "block2_conv2"), ("alexnet", "conv1"),
                            ("vgg16", "block3_conv1"), ("efficientnet_lite0", "stem")):
        cfg = ReconConfig(backbone=backbone, layer=layer, image_size=32, encoder_weights="random", decoder_width=4,
                          num_res_blocks=0)
        Reconstructor(cfg).save_pretrained(tmp_path / f"{backbone}-{layer}")
    store = app.resolve_models(None, None, tmp_path)
    assert [label for label, _ in store.choices()] == [
        "VGG16 · vgg16-block2_conv2", "VGG16 · vgg16-block3_conv1", "AlexNet · alexnet-conv1",
        "EfficientNet-Lite0 · efficientnet_lite0-stem", "EfficientNet-Lite0 · efficientnet_lite0-block2"]
    assert store.networks() == ["vgg16", "alexnet", "efficientnet_lite0"]
    assert [m.config.layer for m in store.one_per_layer("alexnet")] == ["conv1"]
    photo = tmp_path / "photo.png"
    Image.fromarray(smooth_image(40, 48, 2)).save(photo)
    tiles, table = app.compare_networks(store.one_per_layer(), str(photo), "trained")
    assert [caption.split(" · ")[:2] for _, caption in tiles] == [
        ["stride 2", "VGG16 block2_conv2"], ["stride 2", "EfficientNet-Lite0 stem"],
        ["stride 4", "VGG16 block3_conv1"], ["stride 4", "AlexNet conv1"], ["stride 4", "EfficientNet-Lite0 block2"]]
    assert all(t.shape == (32, 32, 3) for t, _ in tiles) and table.count("\n| 4 |") == 3
    assert "stride 2: " in table and "stride 4: " in table and "keeps the most of this photo" in table
    layer_tiles, _, _ = app.compare_layers(store.one_per_layer(), str(photo), "trained")
    assert layer_tiles[1][1].startswith("VGG16 block2_conv2 ·")  # several networks: each layer names its own
    tiles, text = app.compare_networks(store.one_per_layer("alexnet"), str(photo))
    assert tiles == [] and "No stride is shared by models of two networks" in text
