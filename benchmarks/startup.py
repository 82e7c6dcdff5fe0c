"""Seconds from `python app.py` to a served page, offline.

    python benchmarks/startup.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port  # noqa: E402  (shared with the tests)


def once() -> float:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                return time.monotonic() - start
            except OSError:
                if proc.poll() is not None or time.monotonic() - start > 120:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times = [once() for _ in range(args.runs)]
    print(f"load average {os.getloadavg()[0]:.2f}; start-up seconds: "
          f"{', '.join(f'{t:.1f}' for t in times)}; median {statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
