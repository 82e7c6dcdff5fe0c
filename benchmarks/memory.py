"""Resident memory of the app with every shipped model loaded and used.

    python benchmarks/memory.py            # prints RSS after start-up, after loading, after generating

It builds the same page as `python app.py` (without serving it), loads each shipped model through the
app's model manager, generates 100 tokens from each, and reports the process's resident set size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

import app  # noqa: E402
from textgen.local.devices import configure_cpu_threads  # noqa: E402
from textgen.service.catalog import Catalog  # noqa: E402
from textgen.service.loading import ModelManager  # noqa: E402
from textgen.service.playground import Playground  # noqa: E402


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    configure_cpu_threads()
    playground = Playground(ModelManager(Catalog.default()))
    app.build_demo(playground)
    report = {"after_startup_mb": round(rss_mb(), 1)}
    shipped = [e.name for e in playground.catalog if e.origin == "shipped"]
    for name in shipped:
        settings = playground.parse("ROMEO:\n", max_new_tokens=100, seed=1)
        for _ in playground.generate(name, settings):
            pass
    report["models"] = shipped
    report["weights_mb"] = round(sum(m.nbytes for m in playground.manager.loaded()) / 2**20, 1)
    report["after_loading_and_generating_mb"] = round(rss_mb(), 1)
    for key, value in report.items():
        print(f"{key:>32}: {value}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
