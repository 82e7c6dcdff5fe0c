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
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cli_rate import timed_generate  # noqa: E402  (the CLI's run, read from its pipe, as cli_rate times it)

from tests.helpers import free_port  # noqa: E402  (shared with the tests)

CONTROLS = {"temperature": 0.8, "top_k": 0, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.05,
            "no_repeat_ngram_size": 0}


def cli_run(model: str, prompt: str, tokens: int, seed: int) -> tuple[float, str]:
    flags = tuple(f"--{k.replace('_', '-')}={v}" for k, v in CONTROLS.items())
    summary, seconds = timed_generate(model, tokens, prompt, seed, flags)
    return sum(summary["tokens"]) / seconds, summary["texts"][0]


def call(url: str, api_name: str, data: list) -> Iterator[tuple[float, list]]:
    """(seconds since the call, outputs) for every update of one call of the page's API, read with http.client
    through Gradio's REST routes (POST /gradio_api/call/NAME, then its event stream): what any HTTP client gets.
    (gradio_client was measured adding 130-170 ms before handing over the first update; this adds nothing.)"""
    parts = urlsplit(url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        conn.request("POST", f"/gradio_api/call/{api_name}", json.dumps({"data": data}),
                     {"Content-Type": "application/json"})
        event_id = json.loads(conn.getresponse().read())["event_id"]
        conn.request("GET", f"/gradio_api/call/{api_name}/{event_id}")
        response, event = conn.getresponse(), None
        while line := response.readline():
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                if event == "error":
                    raise SystemExit(f"/{api_name} failed: {line[5:].decode().strip()[:300]}")
                if event in ("generating", "complete"):
                    yield time.perf_counter() - start, json.loads(line[5:])
    finally:
        conn.close()


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


def start_app(*flags: str) -> tuple[str, subprocess.Popen]:
    """`python app.py FLAGS` on a free port, as people run it, once its page answers: (URL, process)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_PORT": str(port)}
    server = subprocess.Popen([sys.executable, "app.py", *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return url, server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                stop_app(server)
                raise SystemExit("the app did not start") from None
            time.sleep(0.5)


def stop_app(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, 15)
        server.wait(10)


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
