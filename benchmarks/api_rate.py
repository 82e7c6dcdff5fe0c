"""The page's API against the CLI on the same request: tokens per second as each reader sees them.

    python benchmarks/api_rate.py                       # shipped LSTM, 1000 tokens, 3 rounds
    python benchmarks/api_rate.py --model gru --tokens 500 --rounds 5

Starts `python app.py` on a free port (a separate process, as people run it), then alternates, round by
round: one `python -m textgen generate --json` run and one `/generate` call through Gradio's REST routes with the
same prompt, controls and seed. Rates:
- CLI: tokens / the time from its first text line to its summary line, read from its pipe (what a reader of
  the CLI sees; process start and model loading left out);
- API: tokens / the time from the call of /generate (Gradio's REST routes, read with http.client) to its last
  update (the request's whole round trip, queueing and every streamed update included), and how many updates
  arrived.
The texts must be equal (same seed, same controls): otherwise the comparison is void and it says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cli_rate import timed_generate  # noqa: E402  (the CLI's run, read from its pipe, as cli_rate times it)

from tests.helpers import rest_call as call  # noqa: E402  (shared with the tests)
from tests.helpers import start_app, stop_app  # noqa: E402, F401  (benchmarks/engine.py takes them from here)

CONTROLS = {"temperature": 0.8, "top_k": 0, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.05,
            "no_repeat_ngram_size": 0}


def cli_run(model: str, prompt: str, tokens: int, seed: int) -> tuple[float, str]:
    flags = tuple(f"--{k.replace('_', '-')}={v}" for k, v in CONTROLS.items())
    summary, seconds = timed_generate(model, tokens, prompt, seed, flags)
    return sum(summary["tokens"]) / seconds, summary["texts"][0]


def api_run(url: str, model: str, prompt: str, tokens: int, seed: int) -> tuple[float, int, str, float]:
    """(tokens/s, updates, text, seconds to the first update with text), timed from the call of /generate."""
    updates, first, seconds, outputs = 0, None, 0.0, None
    for seconds, outputs in call(url, "generate", [prompt, model, *CONTROLS.values(), tokens, seed, False]):
        updates += 1
        if first is None and outputs and outputs[0]:
            first = seconds
    text, stats, _ = outputs
    if f"**{tokens}** tokens" not in stats:
        raise SystemExit(f"the API run did not write {tokens} tokens: {stats}")
    return tokens / seconds, updates, text, first if first is not None else seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", default="ROMEO:\n")
    args = parser.parse_args()

    url, server = start_app()
    try:
        api_run(url, args.model, args.prompt, 20, 1)  # load the model once, outside the timing
        cli, api, updates = [], [], []
        for seed in range(1, args.rounds + 1):
            cli_rate, cli_text = cli_run(args.model, args.prompt, args.tokens, seed)
            api_rate, n, api_text, _ = api_run(url, args.model, args.prompt, args.tokens, seed)
            if cli_text != api_text:
                raise SystemExit(f"round {seed}: the CLI and the API wrote different texts; nothing to compare")
            cli.append(cli_rate)
            api.append(api_rate)
            updates.append(n)
            print(f"round {seed}: CLI {cli_rate:6.0f} tok/s   API {api_rate:6.0f} tok/s in {n} updates   "
                  f"ratio {api_rate / cli_rate:.2f}", flush=True)
        ratio = statistics.median(a / c for a, c in zip(api, cli))
        print(json.dumps({"model": args.model, "tokens": args.tokens, "cli_tok_s": round(statistics.median(cli)),
                          "api_tok_s": round(statistics.median(api)), "updates": statistics.median(updates),
                          "median_ratio": round(ratio, 2)}))
    finally:
        stop_app(server)


if __name__ == "__main__":
    main()
