"""The command-line tools answer --help before TensorFlow loads, and start it without its C++ log lines."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = [["app.py"], ["-m", "training.fit"], ["-m", "training.evaluate"], ["-m", "training.export"]]


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool[-1])
def test_help_answers_before_tensorflow_loads(tool):
    # -X importtime lists every module the process imports, on stderr
    result = subprocess.run([sys.executable, "-X", "importtime", *tool, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "usage:" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "argparse" in imported  # the listing works
    assert "tensorflow" not in imported and "keras" not in imported


def test_import_recon_loads_keras_on_first_use_of_a_name():
    code = ("import sys, recon; print('keras' in sys.modules); "
            "print(all(getattr(recon, name) for name in recon.__all__)); print('keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "True", "True"], result.stderr


def test_a_failing_tool_prints_its_error_and_no_tensorflow_start_up_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the default a user has
    (tmp_path / "photos").mkdir()
    (tmp_path / "not_a_model").mkdir()
    result = subprocess.run([sys.executable, "-m", "training.evaluate", "--data", str(tmp_path / "photos"),
                             "--model", str(tmp_path / "not_a_model")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"--model: {tmp_path / 'not_a_model'} is missing config.json, decoder.weights.h5"]


def test_the_first_name_that_needs_tensorflow_starts_it_without_its_c_plus_plus_lines():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the default a user has
    code = ("import recon; recon.Reconstructor; import keras; "
            "print(keras.ops.convert_to_numpy(keras.ops.ones(2)).sum())")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0 and result.stdout.split() == ["2.0"], result.stderr
    assert result.stderr == ""  # no oneDNN note, no "Could not find cuda drivers", no failed cuInit
