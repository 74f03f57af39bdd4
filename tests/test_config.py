import json

import pytest

from recon import ConfigError, ReconConfig
from recon.config import VGG16_LAYERS


def test_round_trip(tmp_path, tiny_config):
    tiny_config.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["keras_version"] and data["recon_version"]
    assert ReconConfig.load(tmp_path / "config.json") == tiny_config


def test_unknown_keys_warn(tmp_path, tiny_config):
    data = tiny_config.to_dict() | {"colour": "blue"}
    with pytest.warns(UserWarning, match="colour"):
        assert ReconConfig.from_dict(data) == tiny_config


@pytest.mark.parametrize("change, message", [
    ({"layer": "block9_conv1"}, "unknown vgg16 layer"),
    ({"backbone": "resnet50"}, "unknown backbone"),
    ({"upsample": "transposed"}, "upsample"),
    ({"upsample_widths": [8, 8]}, "upsample_widths"),
    ({"image_size": 33}, "stride"),
    ({"feature_scale": [1.0] * 3}, "feature_scale"),
])
def test_invalid_values_raise(tiny_config, change, message):
    with pytest.raises(ConfigError, match=message):
        ReconConfig.from_dict(tiny_config.to_dict() | change)


def test_missing_key_raises(tiny_config):
    data = tiny_config.to_dict()
    del data["decoder_width"]
    with pytest.raises(ConfigError, match="missing required config keys.*decoder_width"):
        ReconConfig.from_dict(data)


def test_broken_json_raises(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ReconConfig.load(tmp_path / "config.json")


def test_stages_follow_the_layer():
    stages = {layer: ReconConfig(layer=layer).num_upsamples for layer in VGG16_LAYERS}
    assert stages["block1_conv2"] == 0 and stages["block2_conv2"] == 1
    assert stages["block3_conv3"] == 2 and stages["block5_conv3"] == 4
