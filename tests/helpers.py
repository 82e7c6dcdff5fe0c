"""What the tests and the benchmarks share, written once: a free port, the app served live, /generate's
arguments, reading a streaming job with a deadline, a broken checkpoint, and a clean environment.

Tests import it as `helpers` (pytest puts tests/ on the path; conftest.py re-exports `free_port`), benchmarks
as `tests.helpers`. It imports neither torch nor pytest at the top, so a benchmark can use it anywhere.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from textgen.core.settings import SLIDERS

ROOT = Path(__file__).resolve().parents[1]
REQUEST_TIMEOUT = 60.0  # seconds: a request still unanswered after this counts as hung (the suite must never hang)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_app(playground, **launch) -> Iterator[str]:
    """The real page over `playground`, served by `app.serve` on a free loopback port; yields its URL and
    closes the server afterwards. The one way the tests start the app in-process."""
    import app

    demo, url = app.serve(playground, free_port(), **launch)
    try:
        yield url
    finally:
        demo.close()


# -- /generate ----------------------------------------------------------------------------------------------

GENERATE_INPUTS = ("prompt", "model", *SLIDERS, "seed", "chat_template")  # /generate's inputs, in order
GENERATE_DEFAULTS = {"prompt": "First Citizen:", "model": "gru", "temperature": 0.8, "top_k": 0, "top_p": 0.95,
                     "min_p": 0.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "max_new_tokens": 40,
                     "seed": 1, "chat_template": False}


def generate_args(**values) -> tuple:
    """/generate's positional inputs: GENERATE_DEFAULTS with `values` in their place (any value at all, for
    the hostile tests); a name that is not an input is a mistake in the test."""
    unknown = set(values) - set(GENERATE_INPUTS)
    if unknown:
        raise TypeError(f"/generate has no input(s) {sorted(unknown)}; it has {GENERATE_INPUTS}")
    merged = {**GENERATE_DEFAULTS, **values}
    return tuple(merged[name] for name in GENERATE_INPUTS)


def updates(job, timeout: float = REQUEST_TIMEOUT, poll: float = 0.005) -> Iterator[tuple]:
    """A gradio_client job's partial outputs as they arrive (like iterating the Job), giving up with
    TimeoutError after `timeout` seconds instead of waiting for ever."""
    seen, deadline = 0, time.monotonic() + timeout
    while True:
        outputs = job.outputs()
        while seen < len(outputs):
            seen += 1
            yield outputs[seen - 1]
        if job.done():
            outputs = job.outputs()
            if seen >= len(outputs):
                return
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer within {timeout:g} s")
        time.sleep(poll)


def call(client, *args, api_name: str, timeout: float = REQUEST_TIMEOUT):
    """`client.predict(*args, api_name=...)`, but failing after `timeout` seconds rather than hanging."""
    return client.submit(*args, api_name=api_name).result(timeout=timeout)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll until `predicate()` holds; fail the test (never hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


# -- the app as its own process, and its REST API ---------------------------------------------------------------


class RestError(RuntimeError):
    """The page's API answered a call with an error (its message is the error the visitor would see)."""


def rest_call(url: str, api_name: str, data: list, timeout: float = 600) -> Iterator[tuple[float, list]]:
    """(seconds since the call, outputs) for every update of one call of the page's API, read with http.client
    through Gradio's REST routes (POST /gradio_api/call/NAME, then its event stream): what any HTTP client gets.
    (gradio_client was measured adding 130-170 ms before handing over the first update; this adds nothing.)
    An error event raises RestError."""
    parts = urlsplit(url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
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
                    raise RestError(f"/{api_name} failed: {line[5:].decode().strip()[:300]}")
                if event in ("generating", "complete"):
                    yield time.perf_counter() - start, json.loads(line[5:])
    finally:
        conn.close()


def rest_result(url: str, api_name: str, data: list, timeout: float = 600) -> list:
    """The last outputs of one call of the page's API (RestError if it failed or gave none)."""
    updates = list(rest_call(url, api_name, data, timeout))
    if not updates:
        raise RestError(f"/{api_name} gave no result")
    return updates[-1][1]


def start_app(*flags: str, script: str = "app.py", env: dict | None = None, output=subprocess.DEVNULL,
              timeout: float = 120) -> tuple[str, subprocess.Popen]:
    """`python SCRIPT FLAGS` on a free port, as people run it, once its page answers: (URL, process)."""
    port = free_port()
    # TEXTGEN_PREPARE=0: no test server converts SmolLM2 in the background unless the test asks (its own cache).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TEXTGEN_PREPARE": "0",
           **(env or {}),
           "GRADIO_SERVER_PORT": str(port)}
    server = subprocess.Popen([sys.executable, script, *flags], cwd=ROOT, env=env, stdout=output,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return url, server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                stop_app(server)
                raise RuntimeError(f"{script} did not serve its page within {timeout:g} s") from None
            time.sleep(0.05)


def stop_app(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


# What six visitors do at once the moment a page answers (tests/test_cold_start.py, benchmarks/cold_start.py):
# Write, Step by step with two models, Compare, Perplexity, and Write with a third model. Shipped models only.
STEP_VALUES = [0.8, 0, 0.95, 0.0, 1.0, 0, 5]  # /next_token's controls after prompt and model, then top_n


def crowd_requests() -> dict[str, tuple[str, list]]:
    """name -> (API name, inputs) of the six visitors' requests."""
    return {
        "write": ("generate", list(generate_args(model="gru", max_new_tokens=20))),
        "step-transformer": ("next_token", ["ROMEO:", "transformer", *STEP_VALUES]),
        "step-lstm": ("next_token", ["ROMEO:", "lstm", *STEP_VALUES]),
        "compare": ("compare", ["ROMEO:", ["rnn", "gru"], 0.8, 20, 1]),
        "perplexity": ("score", ["Now is the winter of our discontent", ["gru", "lstm"]]),
        "write-transformer": ("generate", list(generate_args(model="transformer", max_new_tokens=20))),
    }


def crowd(url: str, timeout: float = 180) -> dict[str, str | None]:
    """The six visitors at once; name -> None when the request succeeded, else what went wrong."""
    def visit(item: tuple[str, tuple[str, list]]) -> tuple[str, str | None]:
        name, (api, data) = item
        try:
            outputs = rest_result(url, api, data, timeout)
        except Exception as err:  # every failure is a finding: RestError, a dropped connection, a time-out
            return name, f"{type(err).__name__}: {err}"
        return name, check_outputs(api, outputs)

    with ThreadPoolExecutor(len(crowd_requests())) as pool:
        return dict(pool.map(visit, crowd_requests().items()))


def check_outputs(api: str, outputs: list) -> str | None:
    """None when a crowd request's result is what a visitor expects, else what is wrong with it."""
    if api == "generate":
        text, stats = outputs[0], outputs[1]
        return None if text and "**20** tokens" in stats else f"no full text: {stats!r}"
    if api == "next_token":
        stages = outputs[0].get("stages") if isinstance(outputs[0], dict) else None
        return None if stages else f"no stages: {str(outputs)[:200]}"
    if api == "compare":
        texts = outputs[:2]
        return None if all(texts) else f"a model wrote nothing: {str(outputs)[:200]}"
    if api == "score":
        rows = (outputs[0] or {}).get("data") or []
        return None if len(rows) == 2 else f"not two rows: {str(outputs)[:200]}"
    return None


# -- broken checkpoints -------------------------------------------------------------------------------------

BREAKAGES = {  # how -> what is wrong with the copy, as a crashed training or a bad copy leaves it
    "weights": "model.safetensors is junk",
    "truncated": "model.safetensors is cut in half",
    "weights-missing": "model.safetensors is missing",
    "config": "config.json is missing",
    "tokenizer": "tokenizer.json is missing",
}


def broken_checkpoint(good: Path, dest: Path, how: str) -> Path:
    """A copy of the checkpoint folder `good` at `dest`, broken in one of the BREAKAGES ways."""
    shutil.copytree(good, dest)
    weights = dest / "model.safetensors"
    if how == "weights":
        weights.write_bytes(b"\x00 not a safetensors file \xff" * 100)
    elif how == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif how == "weights-missing":
        weights.unlink()
    elif how == "config":
        (dest / "config.json").unlink()
    elif how == "tokenizer":
        (dest / "tokenizer.json").unlink()
    else:
        raise ValueError(f"unknown breakage {how!r}; one of {sorted(BREAKAGES)}")
    return dest


# -- the environment ----------------------------------------------------------------------------------------


def clean_environment(monkeypatch):
    """Remove every TEXTGEN_* variable (extra models, catalog file, limits, device, threads) through
    `monkeypatch`, so that what this machine's environment says reaches no test; returns `monkeypatch`."""
    for name in [n for n in os.environ if n.startswith("TEXTGEN_")]:
        monkeypatch.delenv(name)
    return monkeypatch


# -- the page in headless Chromium ----------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's; never a browser that playwright downloads
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll until `predicate()` is true; False after `timeout` seconds (the caller's assert says what failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def set_slider(page, elem_id: str, value) -> None:
    """Type a value into a slider's number box, as a person does (sliders have no label to find them by)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    track = page.locator(f"#{elem_id} input[type=range]")
    # Typed before the page has wired the slider up (a busy machine), the box shows the number but the slider
    # keeps its old value, which the next redraw puts back: type again until the slider itself has it.
    for _ in range(5):
        box.fill(str(value))
        box.press("Tab")
        if wait_for(lambda: float(track.input_value()) == float(value), 2):
            return
    raise AssertionError(f"the slider {elem_id} did not take {value}: it shows {track.input_value()}")


def page_errors(page) -> int:
    """Error toasts and red Error badges on the page."""
    return page.locator(".toast-body.error, .error-badge, [data-testid='toast-body']").count()

