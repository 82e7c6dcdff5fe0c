"""`python app.py` with its start-up at its most fragile, for tests/test_cold_start.py and benchmarks/cold_start.py.

    python tests/slow_start.py --port 7861 [--import-delay 0.003] [--fail-first]

Every import of a torch or transformers module first sleeps `--import-delay` seconds, in whichever thread
imports it, so that a crowd arriving the moment the page answers meets the start-up thread in the middle of
importing transformers (where a request thread importing it too used to fail: "cannot import name
'DynamicCache' from 'transformers'"). With `--fail-first` the first start-up try fails the way a lost import
race did: the server must try again, and the visitors must not see it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEAVY = ("torch", "transformers")


class SlowImports:
    """A meta-path finder that finds nothing: it only waits before the real finders look."""

    def __init__(self, delay: float):
        self.delay = delay

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY:
            time.sleep(self.delay)
        return None


def fail_first_start() -> None:
    import textgen.service.startup as startup

    real, tries = startup.build_playground, []

    def flaky(*args):
        tries.append(1)
        if len(tries) == 1:
            raise ImportError("cannot import name 'AutoModelForCausalLM' from 'transformers' (staged by the test)")
        return real(*args)

    startup.build_playground = flaky


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--import-delay", type=float, default=0.003, help="seconds before each heavy import")
    parser.add_argument("--fail-first", action="store_true", help="the first start-up try fails")
    args, app_args = parser.parse_known_args()
    sys.meta_path.insert(0, SlowImports(args.import_delay))
    if args.fail_first:
        fail_first_start()
    import app

    app.main(app_args)


if __name__ == "__main__":
    main()
