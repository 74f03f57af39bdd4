"""training.evaluate writes its summary where the app and the model card look for it: the model folder."""

import json

import app
from recon import Reconstructor
from training import evaluate


def test_evaluate_writes_into_the_model_folder_unless_told_otherwise(tmp_path, tiny_config, photo_dir):
    folder = Reconstructor(tiny_config).save_pretrained(tmp_path / "a")
    assert "No held-out metrics" in app.model_info(Reconstructor.from_pretrained(folder), "a", folder)
    summary = evaluate.main(["--model", str(folder), "--data", str(photo_dir), "--num-samples", "3"])
    saved = json.loads((folder / "metrics_summary.json").read_text())
    assert saved["count"] == summary["count"] == 3 and not (tmp_path / "runs").exists()
    assert not list(folder.glob("*.part")) and not (folder / "training_loss_curve.png").exists()
    info = app.model_info(Reconstructor.from_pretrained(folder), "a", folder)
    assert "Held-out metrics" in info and f"| PSNR | {saved['psnr']['mean']:.4g} |" in info
    evaluate.main(["--model", str(folder), "--data", str(photo_dir), "--num-samples", "2",
                   "--save-dir", str(tmp_path / "elsewhere")])
    assert json.loads((tmp_path / "elsewhere" / "metrics_summary.json").read_text())["count"] == 2
    assert json.loads((folder / "metrics_summary.json").read_text())["count"] == 3  # left alone


def test_a_split_json_of_the_wrong_shape_stops_evaluate_in_one_line(tmp_path, tiny_config, photo_dir):
    import pytest
    folder = Reconstructor(tiny_config).save_pretrained(tmp_path / "a")
    for split in ('{"train": 5}', '{"train": [{"file": "x"}]}', "[1]", '{"train": [{"sha1": [1]}]}'):
        (folder / "split.json").write_text(split)
        with pytest.raises(SystemExit, match="split.json is not a split of training photos"):
            evaluate.main(["--model", str(folder), "--data", str(photo_dir)])
