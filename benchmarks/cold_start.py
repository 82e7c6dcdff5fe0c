"""Six starts of the app, each hit by six visitors at once the moment its page answers.

    python benchmarks/cold_start.py                 # 6 starts, start-up imports slowed as in the test
    python benchmarks/cold_start.py --starts 6 --import-delay 0 --fail-first

Each start runs `python tests/slow_start.py` (the app; every torch/transformers import slowed by
`--import-delay` seconds, so the crowd meets the start-up thread mid-import) and fires the visitors of
`tests/helpers.py:crowd` (Write, Step by step on two models, Compare, Perplexity, Write again) at once, then one
more Write five seconds later. Prints, per start, the seconds until the page answered, until the slowest visitor
was served, and every failure; the bar is no failure in any start.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import crowd, generate_args, rest_result, start_app, stop_app  # noqa: E402


def one_start(delay: float, fail_first: bool) -> tuple[float, float, dict[str, str]]:
    flags = ["--import-delay", str(delay)] + (["--fail-first"] if fail_first else [])
    began = time.monotonic()
    url, server = start_app(*flags, script="tests/slow_start.py")
    served = time.monotonic() - began
    try:
        hit = time.monotonic()
        failures = {name: why for name, why in crowd(url).items() if why}
        crowd_seconds = time.monotonic() - hit
        time.sleep(5)
        try:
            text, stats, _ = rest_result(url, "generate", list(generate_args(model="lstm", max_new_tokens=20)))
            if "**20** tokens" not in stats:
                failures["five seconds later"] = stats
        except Exception as err:
            failures["five seconds later"] = f"{type(err).__name__}: {err}"
    finally:
        stop_app(server)
    return served, crowd_seconds, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=6)
    parser.add_argument("--import-delay", type=float, default=0.003)
    parser.add_argument("--fail-first", action="store_true", help="the first start-up try of each start fails")
    args = parser.parse_args()
    clean = 0
    for i in range(args.starts):
        served, seconds, failures = one_start(args.import_delay, args.fail_first)
        clean += not failures
        print(f"start {i + 1}: page after {served:.1f} s; six visitors served within {seconds:.1f} s after that; "
              + ("all succeeded" if not failures else f"FAILED: {failures}"), flush=True)
    print(f"{clean} of {args.starts} starts clean")


if __name__ == "__main__":
    main()
