"""The README is the Space's configuration and the newcomer's set-up guide: keep both true."""

from __future__ import annotations

import re
from pathlib import Path

import gradio
from huggingface_hub import SpaceCard

from textgen.catalog import HUB_IDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_front_matter_is_valid_spaces_metadata():
    data = SpaceCard(README).data
    assert data.sdk == "gradio"
    assert data.sdk_version == gradio.__version__
    assert data.python_version == "3.11"  # a string: unquoted 3.10 would parse as 3.1
    assert (ROOT / data.app_file).is_file()
    assert set(data.models) == set(HUB_IDS.values())
    assert len(data.short_description) <= 60


def test_requirements_leave_gradio_to_the_space():
    names = [re.split(r"[=<>~ ]", line)[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert "gradio" not in names and "torch" in names


def test_readme_gives_the_two_setup_commands_ci_uses():
    assert "pip install torch==2.13.0 && pip install -r requirements-local.txt && python app.py" in README
    test_command = "pip install torch==2.13.0 && pip install -q -r requirements-dev.txt && python -m pytest -q"
    assert test_command.replace(" -q -r", " -r") in README
    assert test_command.replace("pip install", "pip install -q", 1) in (ROOT / ".ci" / "run").read_text()
