"""Tokens per second of `python -m textgen generate --json`, as its reader sees them.

    python benchmarks/cli_rate.py                          # shipped LSTM, 1000 tokens, 3 runs
    python benchmarks/cli_rate.py --model gru --tokens 500 --runs 5

The engine's summary reports the model's own rate: time spent waiting for the reader is left out. This
also times the lines as they arrive through the pipe (JSON encoding, printing and the pipe included), from
the first text event to the summary, so the two can be compared. Process start-up and model loading are
in neither.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_generate(
    model: str, tokens: int, prompt: str, seed: int = 1, flags: tuple[str, ...] = ()
) -> tuple[dict, float]:
    """One `generate --json` run: its summary, and the seconds from its first text line to its summary line."""
    command = [sys.executable, "-m", "textgen", "generate", "--model", model, "--prompt", prompt,
               "--max-new-tokens", str(tokens), "--seed", str(seed), "--json", *flags]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    first = None
    summary = None
    for line in proc.stdout:
        event = json.loads(line)
        if first is None and event["event"] == "text":
            first = time.perf_counter()
        if event["event"] == "summary":
            last, summary = time.perf_counter(), event
    if proc.wait() != 0 or summary is None:
        raise SystemExit(f"{' '.join(command)} failed")
    return summary, last - first


def one_run(model: str, tokens: int, prompt: str) -> tuple[float, float]:
    summary, seconds = timed_generate(model, tokens, prompt)
    produced = sum(summary["tokens"])
    return summary["tokens_per_second"], (produced - 1) / seconds  # intervals after the first token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt", default="ROMEO:")
    args = parser.parse_args()
    runs = [one_run(args.model, args.tokens, args.prompt) for _ in range(args.runs)]
    load = os.getloadavg()
    print(f"{args.model}, {args.tokens} tokens, {args.runs} runs, load average {load[0]:.2f}")
    print("summary tokens/s: " + ", ".join(f"{r[0]:.0f}" for r in runs)
          + f" (median {statistics.median(r[0] for r in runs):.0f})")
    print("as read from the pipe: " + ", ".join(f"{r[1]:.0f}" for r in runs)
          + f" (median {statistics.median(r[1] for r in runs):.0f})")


if __name__ == "__main__":
    main()
