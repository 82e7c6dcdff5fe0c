"""The page's API, driven the way an API user drives it: gradio_client against a live server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from conftest import free_port
from gradio_client import Client

import app
from textgen.loading import ModelManager
from textgen.playground import Playground

STEP_SECONDS = 0.1  # the LSTM below is slowed to this per forward step, longer than a request's round trip, so
# "how many more steps after the signal" measures the server and not the network



class StepLog:
    """Start times of every forward step of one model."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, module, args):
        self.times.append(time.monotonic())
        time.sleep(STEP_SECONDS)

    def after(self, moment: float) -> int:
        return sum(t > moment for t in self.times)


@pytest.fixture(scope="module")
def served(catalog):
    manager = ModelManager(catalog, device="cpu")
    steps = StepLog()
    manager.get("lstm").model.register_forward_pre_hook(steps)
    playground = Playground(manager)
    demo, url = app.serve(playground, free_port())
    yield url, playground, steps
    demo.close()


def wait_until(predicate, timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll until `predicate()` holds; fail (never hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


def generate_args(model="gru", prompt="First Citizen:", max_new_tokens=40, seed=1, temperature=0.8):
    # prompt, model, temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size, max_new_tokens, seed
    return (prompt, model, temperature, 0, 0.95, 0.0, 1.0, 0, max_new_tokens, seed)


def test_generate_streams_partial_updates(served):
    url, _, steps = served
    # The LSTM here takes 0.1 s a token, longer than the page's pace: every token is its own update.
    job = Client(url, verbose=False).submit(*generate_args(model="lstm", max_new_tokens=15), api_name="/generate")
    updates = [out[0] for out in job]
    assert len(updates) >= 15, "a slow model's text should arrive token by token"
    assert all(later.startswith(earlier) for earlier, later in zip(updates, updates[1:]))
    text, stats, html = job.result()
    assert text == updates[-1] and len(text) > 0
    assert "tokens/s" in stats and "**15** tokens" in stats
    assert html.count("class=tg-tok") == 15


def test_a_fast_models_updates_are_paced_not_one_per_token(served):
    url, _, _ = served
    start = time.monotonic()
    job = Client(url, verbose=False).submit(*generate_args(model="gru", max_new_tokens=1000), api_name="/generate")
    updates = [out[0] for out in job]
    seconds = time.monotonic() - start
    assert "**1000** tokens" in job.result()[1]
    # One update at the first token, then at most one per app.PACE, and the last: never one per token.
    assert 2 <= len(updates) <= seconds / app.PACE + 4 and len(updates) < 1000 / 4, (len(updates), seconds)


def test_same_seed_gives_same_text_through_the_api(served):
    url, _, _ = served
    client = Client(url, verbose=False)
    first = client.predict(*generate_args(seed=7), api_name="/generate")[0]
    again = client.predict(*generate_args(seed=7), api_name="/generate")[0]
    assert first == again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (generate_args(model="nope"), "unknown model"),
        (generate_args(model="../../etc/passwd"), "unknown model"),
        (generate_args(temperature=99), "temperature must be between"),
        (generate_args(max_new_tokens=10**9), "max_new_tokens must be between"),
        (generate_args(prompt="x" * 20_000), "the limit is"),
        (generate_args(temperature="warm"), "temperature must be a number"),
    ],
)
def test_bad_requests_get_a_clear_message(served, args, message):
    url, _, _ = served
    with pytest.raises(Exception) as err:
        Client(url, verbose=False).predict(*args, api_name="/generate")
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)


def test_stop_ends_the_models_compute_before_its_next_step(served):
    url, playground, steps = served
    client = Client(url, verbose=False)
    job = client.submit(*generate_args(model="lstm", max_new_tokens=1000), api_name="/generate")
    before = len(steps.times)
    wait_until(lambda: len(steps.times) >= before + 10 and job.status().code.name == "ITERATING", what="streaming")
    signalled = {}
    real_stop = playground.stop

    def stop_and_note(session):
        stopped = real_stop(session)
        signalled["at"] = time.monotonic()  # the moment the signal is set: no step may start after it
        return stopped

    playground.stop = stop_and_note
    try:
        client.predict(api_name="/stop")
    finally:
        playground.stop = real_stop
    text, stats, _ = job.result(timeout=10)
    time.sleep(10 * STEP_SECONDS)
    assert steps.after(signalled["at"]) == 0  # the step in flight finishes; no new one starts
    assert 0 < len(text) and len(steps.times) - before < 500
    assert "stopped: you pressed Stop" in stats


def test_dropped_client_ends_the_models_compute(served):
    url, playground, steps = served
    client = Client(url, verbose=False)
    before = len(steps.times)
    job = client.submit(*generate_args(model="lstm", max_new_tokens=1000), api_name="/generate")
    wait_until(lambda: len(steps.times) >= before + 10, what="streaming")
    dropped = time.monotonic()
    job.cancel()
    wait_until(lambda: playground.running() == 0, timeout=5, what="the run to end")
    time.sleep(10 * STEP_SECONDS)
    assert steps.after(dropped) <= 1  # at most the step that was already under way when the client left
    assert len(steps.times) - before < 200


def test_a_client_killed_mid_stream_ends_the_models_compute(served):
    # What closing the tab does: the connection just goes away, with no cancel message.
    url, playground, steps = served
    before = len(steps.times)
    script = (f"from gradio_client import Client\n"
              f"for _ in Client({url!r}, verbose=False).submit(*{generate_args(model='lstm', max_new_tokens=1000)!r}, "
              f"api_name='/generate'):\n    pass\n")
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(steps.times) >= before + 10, timeout=60, what="the client to start streaming")
    finally:
        client.kill()
    killed = time.monotonic()
    client.wait()
    wait_until(lambda: playground.running() == 0, timeout=5, what="the run to end")
    time.sleep(10 * STEP_SECONDS)
    assert steps.after(killed) <= 1


def test_compare_streams_every_model_side_by_side(served):
    url, _, _ = served
    job = Client(url, verbose=False).submit("First", ["gru", "transformer", "tiny-gpt2"], 0.8, 30, 3,
                                            api_name="/compare")
    outputs = list(job)
    final = job.result()
    assert len(outputs) > 5
    texts = [final[i] for i in range(3)]
    stats = [final[4 + i] for i in range(3)]
    assert all(texts) and all("tokens/s" in s for s in stats)


def test_perplexity_scores_each_model(served):
    url, _, _ = served
    table, _plot = Client(url, verbose=False).predict("First Citizen:\nSpeak, speak.\n", ["lstm", "gru"],
                                                      api_name="/score")
    rows = table["data"]
    assert len(rows) == 2 and all(float(r[1]) > 0 for r in rows)


def test_many_concurrent_clients_all_finish_with_their_seeded_text(served):
    url, _, _ = served
    alone = Client(url, verbose=False).predict(*generate_args(seed=11), api_name="/generate")[0]
    results = [None] * 6

    def run(i):
        results[i] = Client(url, verbose=False).predict(*generate_args(seed=11 if i % 2 else 100 + i),
                                                        api_name="/generate")[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r for r in results)
    assert all(results[i] == alone for i in range(1, 6, 2))


def _by_id(demo, prefix: str) -> list:
    return [b for b in demo.blocks.values() if (getattr(b, "elem_id", None) or "").startswith(prefix)]


@pytest.mark.parametrize("limit", ["1", "50", "5000"])
def test_length_sliders_start_within_the_operators_cap(catalog, monkeypatch, limit):
    monkeypatch.setenv("TEXTGEN_MAX_NEW_TOKENS", limit)
    demo = app.build_demo(Playground(ModelManager(catalog, device="cpu")))
    for slider in _by_id(demo, "max_new_tokens") + _by_id(demo, "cmp-max"):
        assert slider.minimum <= slider.value <= min(int(limit), 200) and slider.maximum >= max(int(limit), 2)


def test_compare_has_one_output_box_per_model_the_operator_allows(catalog, monkeypatch):
    monkeypatch.setenv("TEXTGEN_MAX_COMPARE", "5")
    playground = Playground(ModelManager(catalog, device="cpu"))
    demo = app.build_demo(playground)
    assert len(_by_id(demo, "cmp-out-")) == 5 and len(catalog.names()) == 5
    compare = next(fn.fn for fn in demo.fns.values() if fn.api_name == "compare")
    request = ("First Citizen:", catalog.names(), 0.8, 3, 1)
    updates = list(compare(None, *request))  # (request, *inputs), as Gradio calls it
    assert len(updates[-1]) == 2 * 5 and all(text for text in updates[-1][:5])


@pytest.mark.parametrize("env", [{"TEXTGEN_CONCURRENCY": "two"}, {"TEXTGEN_MAX_PROMPT_CHARS": "1e3x"}])
def test_a_bad_operator_setting_is_one_clear_line(monkeypatch, capsys, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--port", str(free_port())])
    assert exit_info.value.code == 2
    assert f"{next(iter(env))} must be a whole number" in capsys.readouterr().err
