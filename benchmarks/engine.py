"""Speed through the app's engine path against a bare HTTP client, on the same stream from the same server.

    python benchmarks/engine.py --start-vllm                        # vLLM (.venv-vllm) on a GPT-2 built here
    python benchmarks/engine.py --start-vllm --page                 # ... through `python app.py --engine URL`
    python benchmarks/engine.py --engine http://127.0.0.1:8000/v1 --model NAME --tokens 500 --runs 6 --json
    python benchmarks/engine.py --fake                              # tests/fake_engine.py: the client's own cost

Both paths send the very same request (textgen/remote/backend.py builds the body: prompt, seed, the page's controls,
logprobs = 5 alternatives, streaming), so the server writes the same tokens for each; what differs is the clients.
  app   Playground.generate (what the page runs, without Gradio): engine client, TokenInfo per token, Live;
        with --page, `python app.py --engine URL` in its own process and its /generate, through Gradio's REST
        routes read with http.client (Gradio's queue and every streamed update included)
  bare  http.client, reading the server-sent events line by line and counting tokens; nothing else
Runs go one after the other, and the order is swapped every run (--mode alternate), so that neither path always
meets a warmer or a busier server. `--mode side-by-side` starts both at the same moment instead; it is not the
default because vLLM's CPU build served two such requests one after the other (measured: the second one's first
byte came after the first one's last), so it measured which client got in first, not the clients.
Time to first token is from the call to the first token in hand (--page: the first update with text). Tokens/s
is the whole request's: tokens over the time from the call to the last token in hand. (The page shows the rate
after the first token; it is printed too, as "streaming", but on a busy machine vLLM's API process sometimes hands
over a whole text at once, for either client, which makes that rate meaningless for one run.) Medians over --runs;
the bar is app >= 0.9 x bare in tokens/s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from api_rate import CONTROLS, api_run, start_app, stop_app  # noqa: E402  (the page's API, timed alike)

from textgen.core.settings import Limits  # noqa: E402
from textgen.remote import backend, client  # noqa: E402
from textgen.service import catalog as catalog_module  # noqa: E402
from textgen.service.catalog import Catalog  # noqa: E402
from textgen.service.loading import ModelManager  # noqa: E402
from textgen.service.playground import Playground  # noqa: E402

PROMPT = "First Citizen:\n"


def bare(url: str, body: dict) -> tuple[float, float, int]:
    """(time to first token, time to last token, tokens) with nothing but http.client and json."""
    parts = urlsplit(url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.request("POST", parts.path + "/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()[:300]
    first = last = None
    tokens = 0
    while line := response.readline():
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        for choice in json.loads(line[6:]).get("choices") or ():
            n = len((choice.get("logprobs") or {}).get("tokens") or ())
            if n:
                tokens += n
                last = time.perf_counter()
                first = first or last
    conn.close()
    return first - start, last - start, tokens


def app(playground: Playground, name: str, settings) -> tuple[float, float, int]:
    start = time.perf_counter()
    *_, live = playground.generate(name, settings, session="bench")  # every update; the last has the numbers
    assert live.error is None and live.summary is not None
    # Live's clock starts when generate() makes it, a hair after `start`: count from the call, as bare() does.
    offset = live.started - start
    return live.first_token_at + offset, live.last_token_at + offset, len(live.tokens)


def start_vllm(python: Path, layers: int, width: int) -> tuple[str, subprocess.Popen, str]:
    """vLLM serving a random-weight GPT-2 (byte-level BPE of 300 tokens) built here; (URL, process, model id)."""
    import socket

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from textgen.local.tokenization import train_bpe_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="textgen-bench-"))
    text = (ROOT / "assets" / "examples.json").read_text() * 20
    bpe = train_bpe_tokenizer([text], vocab_size=300)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_positions=2048, n_embd=width, n_layer=layers, n_head=4,
                               bos_token_id=bpe.eos_token_id, eos_token_id=bpe.eos_token_id)).save_pretrained(folder)
    bpe.save_pretrained(folder)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(folder / "server.log", "wb")  # noqa: SIM115 (open for the server's whole life)
    server = subprocess.Popen(
        [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--served-model-name",
         "bench", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048", "--dtype", "float32"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
        start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    while True:
        if server.poll() is not None:
            raise SystemExit(f"vLLM exited while starting; see {folder / 'server.log'}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            time.sleep(1)
    print(f"vLLM ({layers} layers of {width}) ready after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return url, server, "bench"


def measure(paths: dict[str, Callable[[], tuple[float, float, int]]], runs: int, mode: str) -> dict[str, list]:
    """Each path's (first token, last token, tokens) per run: one after the other, the order swapped every run
    ("alternate"), or both at the same moment ("side-by-side", the bare client in a thread)."""
    results: dict[str, list] = {path: [] for path in paths}
    for run in range(runs):
        if mode == "alternate":
            for path in list(paths) if run % 2 == 0 else list(paths)[::-1]:
                results[path].append(paths[path]())
            continue
        go = threading.Barrier(2)
        side: list = []
        thread = threading.Thread(target=lambda go=go, side=side: (go.wait(), side.append(paths["bare"]())))
        thread.start()
        go.wait()
        results["app"].append(paths["app"]())
        thread.join()
        results["bare"].append(side[0])
    return results


def report(results: dict[str, list], as_json: bool, **facts: object) -> None:
    summary: dict[str, object] = {
        path: {"ttft_ms": round(1000 * statistics.median(r[0] for r in rows), 1),
               "tokens_per_s": round(statistics.median(r[2] / r[1] for r in rows), 1),
               "streaming_tokens_per_s": round(statistics.median(
                   (r[2] - 1) / (r[1] - r[0]) if r[1] > r[0] else math.inf for r in rows), 1),
               "runs_tokens_per_s": [round(r[2] / r[1], 1) for r in rows],
               "tokens": [r[2] for r in rows]} for path, rows in results.items()}
    ratios = [a[2] / a[1] / (b[2] / b[1]) for a, b in zip(results["app"], results["bare"], strict=True)]
    summary["ratio_tokens_per_s"] = round(summary["app"]["tokens_per_s"] / summary["bare"]["tokens_per_s"], 3)
    summary["median_run_ratio"] = round(statistics.median(ratios), 3)
    summary.update(facts, load_average=os.getloadavg()[0])
    if as_json:
        print(json.dumps(summary))
        return
    for path in ("app", "bare"):
        s = summary[path]
        print(f"{path:<5} first token {s['ttft_ms']:7.1f} ms   {s['tokens_per_s']:8.1f} tokens/s "
              f"(runs {s['runs_tokens_per_s']}; streaming {s['streaming_tokens_per_s']})   tokens {s['tokens']}")
    print(f"app / bare tokens/s: {summary['ratio_tokens_per_s']} (median of the runs' ratios "
          f"{summary['median_run_ratio']}; bar: >= 0.9); {facts}; load average {summary['load_average']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", help="a running engine's base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", help="the engine's model id (default: the first it serves)")
    parser.add_argument("--start-vllm", action="store_true", help="start vLLM from .venv-vllm on a model built here")
    parser.add_argument("--vllm-python", default=os.environ.get("TEXTGEN_VLLM_PYTHON", ROOT / ".venv-vllm/bin/python"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--fake", action="store_true", help="tests/fake_engine.py (no model: the client's cost)")
    parser.add_argument("--page", action="store_true",
                        help="the app path is `python app.py --engine URL` and its /generate (Gradio included)")
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--mode", choices=("alternate", "side-by-side"), default="alternate")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    server = fake = page = None
    if args.start_vllm:
        url, server, model_id = start_vllm(Path(args.vllm_python), args.layers, args.width)
    elif args.fake:
        from fake_engine import FakeEngine

        fake = FakeEngine(tokens=[f" t{i}" for i in range(args.tokens)], delay=0.002).start()
        url, model_id = fake.url, fake.model
    elif args.engine:
        url, model_id = client.normalise_url(args.engine), args.model
    else:
        parser.error("give --engine URL, --start-vllm or --fake")
    try:
        entries = catalog_module.discover([url])
        entry = next(e for e in entries if e.origin == "engine" and (model_id is None or e.model_id == model_id))
        playground = Playground(ModelManager(Catalog(entries), device="cpu"), Limits(max_new_tokens=10_000))
        app(playground, entry.name, playground.parse("warm up", max_new_tokens=20, seed=1))  # the engine's warm-up
        # A random-weight model ends its text (EOS) at random: take the first seed whose text runs the full length,
        # so that every run streams --tokens tokens (what is measured is the stream, not the words).
        for seed in range(1, 21):
            settings = playground.parse(PROMPT, **CONTROLS, seed=seed, max_new_tokens=args.tokens)
            body = backend._RemoteRun(playground.manager.get(entry.name), settings, threading.Event(), None).body()
            if bare(url, body)[2] == args.tokens:
                break
        if args.page:
            page_url, page = start_app("--engine", url)
            api_run(page_url, entry.name, PROMPT, 20, 1)  # the page's first request, outside the timing

            def app_path() -> tuple[float, float, int]:
                rate, _, _, first = api_run(page_url, entry.name, PROMPT, args.tokens, settings.seed)
                return first, args.tokens / rate, args.tokens
        else:
            def app_path() -> tuple[float, float, int]:
                return app(playground, entry.name, settings)
        results = measure({"app": app_path, "bare": lambda: bare(url, body)}, args.runs, args.mode)
        report(results, args.json, server="fake" if fake else "vllm" if server else url, seed=settings.seed,
               mode=args.mode, app_path="app.py /generate" if page else "Playground.generate")
    finally:
        if page is not None:
            stop_app(page)
        if fake is not None:
            fake.stop()
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
