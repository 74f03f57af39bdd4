"""`pip install .` makes `recon` usable from any folder: the README's library example runs from an empty
folder outside the checkout, against the installed copy, and writes its image."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what the build reads: pyproject.toml names the rest (README.md is the package's long description)
SOURCES = ["pyproject.toml", "README.md", "requirements.txt", "recon", "hub", "models", "examples"]


def readme_library_example() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Use the library\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert blocks, "the README's 'Use the library' section has no python example"
    return blocks[0]


def test_the_package_takes_its_dependencies_from_requirements_txt_and_ships_only_recon():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dependencies" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    packages = project["tool"]["setuptools"]["packages"]
    assert all(p == "recon" or p.startswith("recon.") for p in packages)  # no top-level hub, training, app


@pytest.mark.slow
def test_the_readme_example_runs_from_an_empty_folder_after_pip_install(tmp_path):
    pytest.importorskip("setuptools", reason="the build backend; python3 -m venv brings it on Python 3.11")
    source, site, work = tmp_path / "source", tmp_path / "site", tmp_path / "work"
    source.mkdir()
    for name in SOURCES:  # a copy, so the build's files (build/, *.egg-info) stay out of the checkout
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    # the README's `pip install .`, offline: no index, no build isolation, no dependencies (already here)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                              "--no-build-isolation", "--target", str(site), str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    assert {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")} == {"recon", "bin"}
    assert (site / "bin" / "recon-hub").is_file()

    work.mkdir()
    example = readme_library_example()
    output = re.search(r"save_image\([^,]+, \"([^\"]+)\"\)", example).group(1)
    (work / "example.py").write_text(example + "\nimport recon\nprint('recon from', recon.__file__)\n"
                                     "print('hub from', recon.hub.__file__)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = str(site)  # where `pip install` put it; the checkout is nowhere on sys.path
    run = subprocess.run([sys.executable, "example.py"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"recon from {site / 'recon' / '__init__.py'}" in run.stdout
    assert f"hub from {site / 'recon' / 'hub' / '__init__.py'}" in run.stdout
    assert "cuInit" not in run.stderr and "oneDNN" not in run.stderr  # TensorFlow started quietly
    from PIL import Image
    with Image.open(work / output) as image:
        assert image.mode == "RGB" and min(image.size) >= 224
    helped = subprocess.run([str(site / "bin" / "recon-hub"), "--help"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: recon-hub "), helped.stderr


def test_in_a_checkout_recon_hub_is_the_hub_package_imported_on_first_use():
    code = ("import sys, recon; print('hub' in sys.modules); from recon import hub; import hub as top; "
            "import recon.hub; print(hub is top is sys.modules['recon.hub'], recon.BUNDLED_MODELS.name)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "True", "models"], result.stderr
