"""Bounded load test of the playground's public API: concurrent streaming clients, on loopback only.

    python benchmarks/load.py --clients 16 --requests 32 --time-limit 120
    python benchmarks/load.py --clients 4 --requests 8 --max-new-tokens 20 --models lstm transformer --json
    python benchmarks/load.py --url http://127.0.0.1:7860/ --models lstm gru   # an app started elsewhere
    python benchmarks/load.py --clients 16 --requests 16 --models lstm --seeds 16 --batching both --rest
    python benchmarks/load.py --build-gpt2-shaped /tmp/gpt2-shaped     # GPT-2 small's shape, random weights
    python benchmarks/load.py --model /tmp/gpt2-shaped --models gpt2-shaped --clients 8 --requests 8 \
        --max-new-tokens 50 --seeds 8 --batching both   # a Hugging Face model folder, added to the catalog

Without --url it starts the app in this process, on 127.0.0.1 and a free port, over the shipped models
(assets/models; no GPT-2, nothing downloaded). In-process, the clients share the server's CPU and Python;
for cleaner numbers start `python app.py` separately and pass --url.

What it does:
1. Baseline: each distinct request (model x seed) runs once alone, one after another. This loads every
   model before the clock starts, and gives the text each seeded request must write again under load. A
   model that cannot be loaded is reported with the server's message and left out of the run.
2. Load: --clients threads, each with its own gradio_client.Client, take the --requests requests in turn
   (round-robin over the models, a fixed seed each), submit each to /generate and read its stream of
   partial updates. No request starts after --time-limit seconds; one still running after
   --request-timeout seconds is cancelled and counted as hung. Everything ends by itself.

Reports completed / failed / hung requests, p50 and p95 of the time to the first update with text (the
first token, queueing included) and of the total latency, tokens per second over the whole run (tokens
read from each answer's stats, "**N** tokens"), the machine's load average and torch threads, and whether
every seeded output equals its baseline. With --json, one JSON object on the last line.

`--batching both` (in-process only) runs everything twice in one go, each on a freshly started app: first with
batching off (TEXTGEN_MAX_BATCH=1: one request's rows a step, the others wait their turn), then on (the
default), and ends with the two side by side.

Exit status: 0 when every request completed with its baseline text; 1 when any failed, hung or differed,
or a model could not be used; 2 when there was nothing to run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # loopback only: never reach for the Hub
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port, generate_args, rest_call, updates  # noqa: E402  (shared with the tests)
from textgen.core.settings import preset_values  # noqa: E402

PROMPTS = ["ROMEO:\n", "First Citizen:\n", "JULIET:\nO ", "KING RICHARD III:\nNow is the winter"]
SAMPLING = preset_values("Balanced")  # the page's first style; the controls it leaves alone stay off
TOKENS = re.compile(r"\*\*(\d+)\*\* tokens?\b")


@dataclass(frozen=True)
class Spec:
    """One distinct request."""

    model: str
    seed: int
    prompt: str
    max_new_tokens: int

    def args(self) -> tuple:  # /generate's inputs, in order
        return generate_args(prompt=self.prompt, model=self.model, max_new_tokens=self.max_new_tokens,
                             seed=self.seed, **SAMPLING)


@dataclass
class Result:
    spec: Spec
    outcome: str  # completed | failed | hung
    first_update: float | None = None  # seconds from submit to the first update with text
    latency: float | None = None  # seconds from submit to the final answer
    tokens: int = 0
    text: str = ""
    error: str = ""
    same_as_alone: bool | None = None


@dataclass
class Report:
    url: str
    in_process: bool
    models: list[str]
    skipped_models: dict[str, str]
    clients: int
    requests: int
    max_new_tokens: int
    time_limit: float
    completed: int = 0
    failed: int = 0
    hung: int = 0
    not_started: int = 0
    first_update_p50: float | None = None
    first_update_p95: float | None = None
    latency_p50: float | None = None
    latency_p95: float | None = None
    tokens: int = 0
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    seeded_same: int = 0
    seeded_different: int = 0
    load_average_before: list[float] = field(default_factory=list)
    load_average_after: list[float] = field(default_factory=list)
    cpus: int | None = None
    torch_threads: int | None = None
    server_concurrency: int | None = None
    batching: str = "on"  # "off": TEXTGEN_MAX_BATCH=1 for this run
    max_batch: int | None = None
    baseline_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    per_model: dict[str, dict] = field(default_factory=dict)
    alone_latencies: list[float] = field(default_factory=list)  # the baseline's, one per distinct request
    alone_latency_p50: float | None = None

    @property
    def ok(self) -> bool:
        return not (self.failed or self.hung or self.seeded_different or self.skipped_models)


# -- the client side -------------------------------------------------------------------------------------


def run_rest_request(url: str, spec: Spec, timeout: float) -> Result:
    """As `run_request`, through Gradio's REST routes with http.client (--rest): what any HTTP client gets,
    without gradio_client's own cost (130-170 ms before it hands over a first update, and its threads)."""
    start, first, outputs = time.perf_counter(), None, None
    try:
        for at, outputs in rest_call(url, "generate", list(spec.args()), timeout):
            if first is None and outputs and outputs[0]:
                first = at
    except Exception as err:  # the server's message (RestError), or the connection
        return Result(spec, "failed", first, time.perf_counter() - start, error=_one_line(err))
    latency = time.perf_counter() - start
    if not outputs:
        return Result(spec, "failed", first, latency, error="no answer")
    text, stats = outputs[0], outputs[1]
    match = TOKENS.search(stats or "")
    return Result(spec, "completed", first if first is not None else latency, latency,
                  int(match.group(1)) if match else 0, text)


def run_request(client, spec: Spec, timeout: float) -> Result:
    if isinstance(client, str):  # --rest: the client is the url
        return run_rest_request(client, spec, timeout)
    start = time.perf_counter()
    job = client.submit(*spec.args(), api_name="/generate")
    first = None
    try:
        for output in updates(job, timeout):
            if first is None and output and output[0]:
                first = time.perf_counter() - start
        text, stats, _ = job.result(timeout=5)
    except TimeoutError as err:
        job.cancel()
        return Result(spec, "hung", first, error=str(err))
    except Exception as err:  # the server's message, from gradio_client's AppError
        return Result(spec, "failed", first, time.perf_counter() - start, error=_one_line(err))
    latency = time.perf_counter() - start
    match = TOKENS.search(stats or "")
    return Result(spec, "completed", first if first is not None else latency, latency,
                  int(match.group(1)) if match else 0, text)


def _one_line(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- the server ------------------------------------------------------------------------------------------


def start_server(threads: int | None, models: list[str] | None = None):
    """The app in this process, on loopback, over the shipped models and the folders in `models`.

    Returns its url, the demo (to close), the catalog names, torch threads and the playground's limits.
    """
    import torch

    import app
    from textgen.local.devices import configure_cpu_threads
    from textgen.service.catalog import Catalog
    from textgen.service.loading import ModelManager
    from textgen.service.playground import Playground

    configure_cpu_threads(threads)
    catalog = Catalog.default(models or [], include_gpt2=False)
    playground = Playground(ModelManager(catalog))
    demo, url = app.serve(playground, free_port())
    return url, demo, catalog.names(), torch.get_num_threads(), playground.limits


def build_gpt2_shaped(folder: Path) -> None:
    """A Hugging Face GPT-2 of GPT-2 small's shape (12 layers of 768, 12 heads, 50,257 tokens, 124M parameters),
    random weights, saved with save_pretrained: what `--model DIR` serves. Its tokenizer knows the words "t0" to
    "t50255", so a prompt of ours reads as one unknown token and the text is numbered words."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    config = GPT2Config()
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    vocab = {f"t{i}": i for i in range(config.vocab_size - 1)}
    vocab["<|endoftext|>"] = config.vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)


def shipped_names() -> list[str]:
    from textgen.service.catalog import Catalog

    return Catalog.default(include_gpt2=False).names()


# -- the run ---------------------------------------------------------------------------------------------


def baseline(url: str, specs: list[Spec], timeout: float, log, latencies: list[float], rest: bool = False
             ) -> tuple[dict[Spec, str], dict[str, str]]:
    """Each distinct request alone, in turn: the text it writes, and the models that could not be used (each
    one's latency appended to `latencies`)."""
    from gradio_client import Client

    client = url if rest else Client(url, verbose=False)
    texts: dict[Spec, str] = {}
    broken: dict[str, str] = {}
    for spec in specs:
        if spec.model in broken:
            continue
        result = run_request(client, spec, timeout)
        if result.outcome != "completed":
            broken[spec.model] = result.error or result.outcome
            log(f"  cannot use model {spec.model!r}: {broken[spec.model]}")
            continue
        texts[spec] = result.text
        latencies.append(result.latency)
        log(f"  {spec.model:<14} seed {spec.seed:<4} alone: {result.tokens} tokens in {result.latency:.2f} s")
    return texts, broken


def load(url: str, work: list[Spec], clients: int, time_limit: float, timeout: float, rest: bool = False
         ) -> tuple[list[Result], float]:
    """`clients` threads taking the requests of `work` in turn; stops starting new ones after `time_limit` s."""
    from gradio_client import Client

    results: list[Result] = []
    lock = threading.Lock()
    next_index = 0
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    deadline = [0.0]

    def worker() -> None:
        nonlocal next_index
        try:
            client = url if rest else Client(url, verbose=False)
        finally:
            ready.wait()
        go.wait()
        while True:
            with lock:
                if next_index >= len(work) or time.monotonic() > deadline[0]:
                    return
                spec = work[next_index]
                next_index += 1
            try:
                result = run_request(client, spec, timeout)
            except Exception as err:  # the client itself failed (e.g. the connection)
                result = Result(spec, "failed", error=_one_line(err))
            with lock:
                results.append(result)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()  # every client connected before the clock starts
    start = time.monotonic()
    deadline[0] = start + time_limit
    go.set()
    for t in threads:
        t.join(time_limit + timeout + 30)
    return results, time.monotonic() - start


def summarise(report: Report, results: list[Result], alone: dict[Spec, str], seconds: float) -> None:
    for r in results:
        if r.outcome == "completed":
            r.same_as_alone = r.text == alone.get(r.spec)
    done = [r for r in results if r.outcome == "completed"]
    report.completed = len(done)
    report.failed = sum(r.outcome == "failed" for r in results)
    report.hung = sum(r.outcome == "hung" for r in results)
    report.not_started = report.requests - len(results)
    firsts = [r.first_update for r in done if r.first_update is not None]
    latencies = [r.latency for r in done if r.latency is not None]
    report.first_update_p50, report.first_update_p95 = percentile(firsts, 50), percentile(firsts, 95)
    report.latency_p50, report.latency_p95 = percentile(latencies, 50), percentile(latencies, 95)
    report.tokens = sum(r.tokens for r in done)
    report.seconds = seconds
    report.tokens_per_second = report.tokens / seconds if seconds > 0 else 0.0
    report.seeded_same = sum(r.same_as_alone is True for r in done)
    report.seeded_different = sum(r.same_as_alone is False for r in done)
    report.errors = sorted({f"{r.spec.model} seed {r.spec.seed}: {r.outcome}: {r.error}"
                            for r in results if r.outcome != "completed"})[:20]
    report.errors += [f"{r.spec.model} seed {r.spec.seed}: text differs from the same request alone"
                      for r in done if r.same_as_alone is False][:20]
    for model in report.models:
        mine = [r for r in done if r.spec.model == model]
        report.per_model[model] = {
            "completed": len(mine),
            "first_update_p50": percentile([r.first_update for r in mine if r.first_update is not None], 50),
            "latency_p50": percentile([r.latency for r in mine], 50),
            "tokens": sum(r.tokens for r in mine),
        }


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_table(report: Report) -> None:
    where = "in-process" if report.in_process else "external"
    print()
    print(f"textgen load test: {report.clients} clients, {report.requests} requests, at most "
          f"{report.max_new_tokens} new tokens each, time limit {report.time_limit:g} s, {report.url} ({where})")
    load_before = " ".join(f"{x:.2f}" for x in report.load_average_before)
    load_after = " ".join(f"{x:.2f}" for x in report.load_average_after)
    threads = report.torch_threads if report.torch_threads is not None else "unknown (external server)"
    print(f"machine: {report.cpus} CPUs; load average (1/5/15 min) {load_before} before, {load_after} after; "
          f"torch threads {threads}; server concurrency {report.server_concurrency or 'unknown'}; "
          f"batching {report.batching} (rows a step: {report.max_batch or 'unknown'})")
    print(f"models: {', '.join(report.models) or 'none'}; baseline (each distinct request alone) "
          f"{report.baseline_seconds:.1f} s")
    for model, why in report.skipped_models.items():
        print(f"  SKIPPED {model}: {why}")
    print()
    print(f"{'requests':<28}{'completed':>10}{'failed':>8}{'hung':>6}{'not started':>13}")
    print(f"{'':<28}{report.completed:>10}{report.failed:>8}{report.hung:>6}{report.not_started:>13}")
    print()
    print(f"{'seconds':<28}{'p50':>10}{'p95':>10}")
    print(f"{'first update with text':<28}{seconds(report.first_update_p50):>10}{seconds(report.first_update_p95):>10}")
    print(f"{'total latency':<28}{seconds(report.latency_p50):>10}{seconds(report.latency_p95):>10}")
    print()
    print(f"{'model':<28}{'completed':>10}{'first p50':>11}{'latency p50':>13}{'tokens':>8}")
    for model, row in report.per_model.items():
        print(f"{model:<28}{row['completed']:>10}{seconds(row['first_update_p50']):>11}"
              f"{seconds(row['latency_p50']):>13}{row['tokens']:>8}")
    print()
    print(f"throughput: {report.tokens} tokens in {report.seconds:.2f} s = {report.tokens_per_second:.1f} tokens/s")
    print(f"seeded outputs equal to the same request alone: {report.seeded_same} of "
          f"{report.seeded_same + report.seeded_different}")
    for line in report.errors:
        print(f"  ! {line}")
    problems = [f"{n} {what}" for n, what in [(report.failed, "failed"), (report.hung, "hung"),
                                               (report.seeded_different, "seeded outputs differed"),
                                               (len(report.skipped_models), "model(s) could not be used")] if n]
    print("RESULT:", "ok" if report.ok else f"FAILED ({', '.join(problems)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (threads)")
    parser.add_argument("--requests", type=int, default=32, help="requests in all, shared by the clients")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds after which no request starts")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds after which a running request counts as hung")
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--models", nargs="+", help="catalog names (default: every shipped model)")
    parser.add_argument("--model", action="append", default=[], metavar="DIR",
                        help="add a model folder to the in-process app's catalog (as app.py --model)")
    parser.add_argument("--seeds", type=int, default=2, help="distinct seeds per model")
    parser.add_argument("--url", help="an app already running, e.g. http://127.0.0.1:7860/ (default: start one here)")
    parser.add_argument("--threads", type=int, help="torch CPU threads of the in-process server ($TEXTGEN_THREADS, 1)")
    parser.add_argument("--batching", choices=["on", "off", "both"], default="on",
                        help="in-process: batching on (the default), off (TEXTGEN_MAX_BATCH=1), or both in turn")
    parser.add_argument("--build-gpt2-shaped", metavar="DIR", type=Path,
                        help="write a random-weight model of GPT-2 small's shape into DIR, then exit")
    parser.add_argument("--rest", action="store_true",
                        help="clients read the REST routes with http.client instead of gradio_client")
    parser.add_argument("--json", action="store_true", help="end with one JSON object on the last line")
    args = parser.parse_args(argv)
    if args.build_gpt2_shaped:
        build_gpt2_shaped(args.build_gpt2_shaped)
        print(f"wrote {args.build_gpt2_shaped}: serve it with --model {args.build_gpt2_shaped}")
        return 0
    if args.clients < 1 or args.requests < 1 or args.max_new_tokens < 1 or args.seeds < 1:
        parser.error("--clients, --requests, --max-new-tokens and --seeds must be at least 1")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        parser.error("--url must be a loopback address (http://127.0.0.1:PORT/)")
    if args.url and (args.batching != "on" or args.model):
        parser.error("--batching off/both and --model need the in-process app (leave out --url)")
    modes = ["off", "on"] if args.batching == "both" else [args.batching]
    reports = []
    for mode in modes:
        saved = os.environ.get("TEXTGEN_MAX_BATCH")
        if mode == "off":
            os.environ["TEXTGEN_MAX_BATCH"] = "1"
        try:
            reports.append(run_once(args, mode))
        finally:
            if saved is None:
                os.environ.pop("TEXTGEN_MAX_BATCH", None)
            else:
                os.environ["TEXTGEN_MAX_BATCH"] = saved
        if reports[-1] is None:
            return 2
    if len(reports) == 2:
        print_side_by_side(*reports)
    if args.json:
        print(json.dumps([asdict(r) for r in reports] if len(reports) > 1 else asdict(reports[0])))
    return 0 if all(r.ok for r in reports) else 1


def run_once(args, mode: str) -> Report | None:
    """One baseline and load run against one app (started here unless --url); its report, printed."""

    def log(line: str) -> None:
        print(line, flush=True)

    load_before = list(os.getloadavg())
    demo, threads, limits = None, None, None
    if args.url:
        url = args.url
        models = args.models or shipped_names()
    else:
        log(f"starting the app in this process (batching {mode})…")
        url, demo, names, threads, limits = start_server(args.threads, args.model)
        models = args.models or names
    if not models:
        log("no models: assets/models holds none, and --models named none")
        return None

    report = Report(url=url, in_process=demo is not None, models=list(models), skipped_models={},
                    clients=args.clients, requests=args.requests, max_new_tokens=args.max_new_tokens,
                    time_limit=args.time_limit, load_average_before=load_before, cpus=os.cpu_count(),
                    torch_threads=threads, server_concurrency=limits.writers if limits else None,
                    batching=mode, max_batch=limits.max_batch if limits else None)
    try:
        distinct = [Spec(models[j % len(models)], 1 + j, PROMPTS[j % len(PROMPTS)], args.max_new_tokens)
                    for j in range(len(models) * args.seeds)]
        log(f"baseline: {len(distinct)} distinct requests, each alone…")
        started = time.monotonic()
        alone, broken = baseline(url, distinct, args.request_timeout, log, report.alone_latencies, args.rest)
        report.baseline_seconds = time.monotonic() - started
        report.skipped_models = broken
        report.models = [m for m in models if m not in broken]
        usable = [s for s in distinct if s.model not in broken]
        if not usable:
            log("no model could be used; nothing to load-test")
            report.not_started = args.requests
            report.load_average_after = list(os.getloadavg())
            print_table(report)
            return report
        work = [usable[i % len(usable)] for i in range(args.requests)]  # round-robin over models and seeds
        log(f"load: {args.requests} requests from {args.clients} clients…")
        results, elapsed = load(url, work, args.clients, args.time_limit, args.request_timeout, args.rest)
        report.load_average_after = list(os.getloadavg())
        summarise(report, results, alone, elapsed)
        report.alone_latency_p50 = percentile(report.alone_latencies, 50)
    finally:
        if demo is not None:
            demo.close()
    print_table(report)
    return report


def print_side_by_side(off: Report, on: Report) -> None:
    print()
    print(f"batching off and on, {on.clients} clients, {on.requests} requests of {on.max_new_tokens} tokens:")
    print(f"{'':<34}{'off':>10}{'on':>10}")
    rows = [("total tokens/s", off.tokens_per_second, on.tokens_per_second, "{:.1f}"),
            ("first text p50 (s)", off.first_update_p50, on.first_update_p50, "{:.3f}"),
            ("first text p95 (s)", off.first_update_p95, on.first_update_p95, "{:.3f}"),
            ("whole burst (s)", off.seconds, on.seconds, "{:.2f}"),
            ("one request alone, p50 (s)", off.alone_latency_p50, on.alone_latency_p50, "{:.3f}")]
    for label, a, b, form in rows:
        print(f"{label:<34}{'-' if a is None else form.format(a):>10}{'-' if b is None else form.format(b):>10}")
    print(f"{'seeded texts equal to alone':<34}{off.seeded_same:>7}/{off.seeded_same + off.seeded_different:<2}"
          f"{on.seeded_same:>7}/{on.seeded_same + on.seeded_different:<2}")
    if off.tokens_per_second:
        print(f"batching on: {on.tokens_per_second / off.tokens_per_second:.2f}x the tokens/s of batching off")


if __name__ == "__main__":
    sys.exit(main())
