"""What packed weights (textgen/models/packed.py) change: one decode step of a model at 1 to 16 rows, torch's
default product against the packed one, in one run.

    python benchmarks/packed.py                                   # the shipped LSTM and GRU
    python benchmarks/packed.py --model /tmp/gpt2-shaped --rows 1 8 16
    python benchmarks/packed.py --threads 2 --json

A step here is what the scheduler takes for a decode batch (textgen.local.batching.step_together: padded to 4
rows for our models), from a 20-token prompt's memory, in inference mode; the median of --repeats after two
warm-up steps. The model is loaded twice, with TEXTGEN_PACK_WEIGHTS=0 and without it, so both see the same
weights. Build the GPT-2-shaped folder with `python benchmarks/load.py --build-gpt2-shaped /tmp/gpt2-shaped`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from textgen.local.batching import Forward, step_together  # noqa: E402
from textgen.local.devices import configure_cpu_threads  # noqa: E402
from textgen.models import contract  # noqa: E402
from textgen.service.catalog import entry_for_source  # noqa: E402
from textgen.service.loading import load_model  # noqa: E402


def step_ms(source: str, rows: list[int], repeats: int, packed: bool) -> dict[int, float]:
    """Median milliseconds of one decode step of `rows` texts, each after its own 20-token prompt."""
    os.environ["TEXTGEN_PACK_WEIGHTS"] = "1" if packed else "0"
    model = load_model(entry_for_source(source)).model
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    out = {}
    with torch.inference_mode():
        for n in rows:
            prompts = torch.randint(0, vocab, (n, 20), generator=generator)
            memories = [contract.step(model, prompts[i : i + 1], contract.start_memory(model))[1] for i in range(n)]
            new = torch.randint(0, vocab, (n, 1), generator=generator)
            times = []
            for attempt in range(repeats + 2):
                asks = [Forward(new[i : i + 1], memory) for i, memory in enumerate(memories)]
                start = time.perf_counter()
                step_together(model, asks)
                if attempt >= 2:
                    times.append((time.perf_counter() - start) * 1000)
            out[n] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shipped = [str(ROOT / "assets/models" / name) for name in ("lstm", "gru")]
    parser.add_argument("--model", nargs="*", default=shipped,
                        help="model folders (default: the shipped LSTM and GRU)")
    parser.add_argument("--rows", type=int, nargs="*", default=[1, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    configure_cpu_threads(args.threads)
    results = {}
    for source in args.model:
        plain = step_ms(source, args.rows, args.repeats, packed=False)
        fast = step_ms(source, args.rows, args.repeats, packed=True)
        results[Path(source).name] = {"default": plain, "packed": fast}
        print(f"{Path(source).name} ({args.threads} thread(s)), ms a decode step (tokens/s in all):")
        for n in args.rows:
            print(f"  {n:3d} rows: default {plain[n]:8.2f} ({n * 1000 / plain[n]:7.0f})   "
                  f"packed {fast[n]:8.2f} ({n * 1000 / fast[n]:7.0f})")
        one = fast[args.rows[0]]
        for n in args.rows[1:]:
            print(f"  packed, {n} rows against {args.rows[0]}: {n * one / fast[n]:.2f}x the tokens a second")
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
