"""The layers of textgen, as the README's Layout draws them, checked on the code's own imports.

A module may import its own layer and the layers below it, never one above (so no circle can form between
layers), `local` and `remote` know nothing of each other, and no module takes another's private name: imports
inside functions and under TYPE_CHECKING count too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The layer of each package, bottom first; cli.py and __main__.py (the package's root) stand on top.
RANK = {"core": 0, "models": 1, "local": 2, "remote": 2, "training": 3, "service": 4, "": 5}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else ""  # textgen.core.events -> core; textgen.cli -> the root


def project_modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "textgen").rglob("*.py"):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[dotted] = path
    return out


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in the file, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return [(m, names) for m, names in found if m == "textgen" or m.startswith("textgen.")]


def test_every_module_stands_in_a_layer():
    assert {layer(m) for m in project_modules()} <= set(RANK)


def test_imports_point_down_the_layers_and_local_and_remote_stay_apart():
    modules = project_modules()
    wrong = []
    for module, path in modules.items():
        for target, names in imports_of(path):
            # `from textgen.local import gguf` names a module of that package: its layer is the package's.
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules] or [target]
            for t in targets:
                mine, theirs = layer(module), layer(t) if t != "textgen" else ""
                if RANK[theirs] > RANK[mine] or {mine, theirs} == {"local", "remote"}:
                    wrong.append(f"{module} -> {t}")
    assert wrong == []


def test_no_module_takes_another_modules_private_name():
    modules = project_modules()
    taken = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        aliases = set()  # local names bound to a textgen module ("from textgen.local import generation")
        for target, names in imports_of(path):
            taken += [f"{module}: {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
            aliases |= {n for n in names if f"{target}.{n}" in modules}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                taken.append(f"{module}: {node.value.id}.{node.attr}")
    assert taken == []


def test_the_bottom_layer_the_registry_and_the_cli_import_no_torch():
    code = ("import sys, textgen.core.events, textgen.core.settings, textgen.core.backend, textgen.core.chat, "
            "textgen.models.architectures, textgen.training.config, textgen.cli; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
