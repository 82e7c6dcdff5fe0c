"""`pip install .` works: the wheel holds the package, the shipped models and the `textgen` command.

    python -m pytest -q tests/test_packaging.py

The wheel is built from a copy of the sources (pyproject.toml, textgen/, assets/) so that the build's own
folders (build/, *.egg-info) never land in the working tree, then installed with `pip --target` and run from
another folder, as a user who installed it would. No network: --no-deps and --no-build-isolation.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_ONLY = {"spaces", "pandas"}  # in requirements.txt for app.py only; spaces would pull gradio in


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            found[name.strip().lower().replace("_", "-")] = version.strip()
    return found


def test_dependencies_are_the_pins_of_requirements_txt():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pins(project["dependencies"])
    required = pins((ROOT / "requirements.txt").read_text().splitlines())
    assert declared == {name: v for name, v in required.items() if name not in APP_ONLY}
    assert declared["torch"] == "2.13.0" and "gradio" not in declared


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if subprocess.run([sys.executable, "-c", "import setuptools"], capture_output=True).returncode:
        pytest.skip("setuptools is not installed, and --no-build-isolation needs it")
    src = tmp_path_factory.mktemp("src")
    shutil.copy(ROOT / "pyproject.toml", src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "training_state")
    shutil.copytree(ROOT / "textgen", src / "textgen", ignore=ignore)
    shutil.copytree(ROOT / "assets", src / "assets", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("textgen-*.whl")
    return path


def test_wheel_holds_the_package_the_models_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = whl.read(info).decode()
        metadata = whl.read(info.replace("entry_points.txt", "METADATA")).decode()
    assert {"textgen/__init__.py", "textgen/cli.py", "textgen/models/architectures.py", "textgen/models/__init__.py",
            "textgen/models/recurrent.py", "textgen/assets/models/lstm/config.json",
            "textgen/assets/models/lstm/model.safetensors"} <= names
    assert {n.split("/")[0] for n in names} == {"textgen", wheel.name.split("-py3")[0] + ".dist-info"}
    assert re.search(r"^\[console_scripts\]\ntextgen = textgen\.cli:main$", entry_points, flags=re.M)
    assert "Requires-Dist: torch==2.13.0" in metadata and "gradio" not in metadata


def test_the_installed_command_lists_the_shipped_models_from_any_folder(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    env.pop("TEXTGEN_MODELS", None)
    env.pop("TEXTGEN_CATALOG", None)
    script = [sys.executable, str(target / "bin" / "textgen")]  # its own shebang names the build's Python
    listed = subprocess.run([*script, "models", "--json"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows["lstm"]["origin"] == "shipped" and rows["lstm"]["offline"]
    assert Path(rows["lstm"]["source"]).is_relative_to(target)  # the installed copy, not this checkout's
    # main()'s return value is the exit status: an unknown model is 2.
    refused = subprocess.run([*script, "generate", "--model", "nope", "--prompt", "x"], capture_output=True,
                             text=True, cwd=tmp_path, env=env, timeout=120)
    assert refused.returncode == 2 and "unknown model" in refused.stderr
