"""Stop inside a batch: four people write 600 LSTM tokens at once and one presses Stop.

    python benchmarks/stop_in_batch.py                  # the app in this process, on 127.0.0.1
    python benchmarks/stop_in_batch.py --runs 3 --tokens 600 --model lstm

Each client is its own gradio_client session. First every request runs alone, for the text it must write again;
then all four start together, and once each shows text, the first client presses Stop (the page's /stop). Prints
the seconds from Stop until its stream ended, and whether the other three texts equal the same requests alone.
The bar: its stream ends within 0.5 s and the three texts are equal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port, generate_args  # noqa: E402
from textgen.core.settings import preset_values  # noqa: E402

PROMPTS = ["ROMEO:\n", "JULIET:\n", "First Citizen:\n", "KING RICHARD III:\n"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--model", default="lstm")
    args = parser.parse_args(argv)

    from gradio_client import Client

    import app
    from textgen.local.devices import configure_cpu_threads
    from textgen.service.catalog import Catalog
    from textgen.service.loading import ModelManager
    from textgen.service.playground import Playground

    configure_cpu_threads(None)
    demo, url = app.serve(Playground(ModelManager(Catalog.default(include_gpt2=False))), free_port())
    sampling = preset_values("Balanced")
    requests = [generate_args(prompt=p, model=args.model, max_new_tokens=args.tokens, seed=i + 1, **sampling)
                for i, p in enumerate(PROMPTS)]
    ok = True
    try:
        alone = [Client(url, verbose=False).predict(*r, api_name="/generate")[0] for r in requests[1:]]
        for run in range(args.runs):
            clients = [Client(url, verbose=False) for _ in requests]
            jobs = [c.submit(*r, api_name="/generate") for c, r in zip(clients, requests)]
            deadline = time.monotonic() + 60
            while not all(j.outputs() and j.outputs()[-1][0] for j in jobs) and time.monotonic() < deadline:
                time.sleep(0.005)
            pressed = time.monotonic()
            clients[0].predict(api_name="/stop")
            while not jobs[0].done():
                time.sleep(0.002)
            ended = time.monotonic() - pressed
            stopped_stats = jobs[0].result()[1]
            others = [j.result(timeout=120)[0] for j in jobs[1:]]
            same = sum(a == b for a, b in zip(others, alone))
            good = ended <= 0.5 and same == 3 and "you pressed Stop" in stopped_stats
            ok = ok and good
            print(f"run {run + 1}: the stopped stream ended {ended:.3f} s after Stop; the other three equal to "
                  f"alone: {same}/3 {'ok' if good else 'FAILED'}")
    finally:
        demo.close()
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
