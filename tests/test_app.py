"""The page's API, driven the way an API user drives it: gradio_client against a live server."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import threading
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from helpers import GENERATE_INPUTS, call, free_port, generate_args, live_app, updates, wait_until

import app
from textgen.core.settings import Limits
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground
from ui import widgets
from ui.render import SCORE_COLUMNS, score_records

STEP_SECONDS = 0.1  # the LSTM below is slowed to this per forward step, longer than a request's round trip, so
# "how many more steps after the signal" measures the server and not the network
# The stats line under a finished text: "**15** tokens · first token after **40 ms** · **9** tokens/s · stopped: …"
STATS = re.compile(r"^\*\*(\d+)\*\* tokens? · first token after \*\*\d+(\.\d)? m?s\*\*"
                   r"(?: \(\d+(?:\.\d)? m?s of it waiting for a free place\))? · \*\*\d+\*\* tokens/s · "
                   r"stopped: (.+) · seed (\d+) *$", re.MULTILINE)


def finished(stats: str) -> tuple[int, str, int]:
    """(tokens, why it stopped, seed) from a finished text's stats; fails when the line is not all there."""
    match = STATS.search(stats)
    assert match, f"not a finished text's stats line: {stats!r}"
    return int(match.group(1)), match.group(3), int(match.group(4))


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
    with live_app(playground) as url:
        yield url, playground, steps


def test_the_api_takes_generate_args_in_the_order_of_the_pages_inputs(catalog):
    demo = app.build_demo(Playground(ModelManager(catalog, device="cpu")))
    generate = next(fn.fn for fn in demo.fns.values() if fn.api_name == "generate")
    assert tuple(inspect.signature(generate).parameters)[1:] == GENERATE_INPUTS  # after the request


def test_the_pages_queue_looks_for_new_work_every_10_ms_not_every_1(catalog):
    """Gradio's queue polls; at its own 1 ms an idle app used 9% of a core here (ui/polling.py). A Gradio whose
    queue has changed fails this test instead of polling unnoticed."""
    demo = app.build_demo(Playground(ModelManager(catalog, device="cpu")))
    assert demo._queue.sleep_when_free >= 0.01 and demo._queue.progress_update_sleep_when_free >= 0.05


def test_generate_streams_partial_updates(served):
    url, _, steps = served
    # The LSTM here takes 0.1 s a token, longer than the page's pace: every token is its own update.
    job = Client(url, verbose=False).submit(*generate_args(model="lstm", max_new_tokens=15), api_name="/generate")
    texts = [out[0] for out in updates(job)]
    assert len(set(texts)) >= 15, "a slow model's text should arrive token by token"
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    text, stats, html = job.result(timeout=60)
    assert text == texts[-1] and len(text) == 15  # a character a token
    assert finished(stats) == (15, "it reached the length you set", 1)
    assert html.count("class=tg-tok") == 15


def test_a_fast_models_updates_are_paced_not_one_per_token(served):
    url, _, _ = served
    start = time.monotonic()
    job = Client(url, verbose=False).submit(*generate_args(model="gru", max_new_tokens=1000), api_name="/generate")
    texts = [out[0] for out in updates(job)]
    seconds = time.monotonic() - start
    assert finished(job.result(timeout=60)[1])[0] == 1000
    # One update at the first token, then at most one per widgets.PACE, and the last: never one per token.
    assert 2 <= len(texts) <= seconds / widgets.PACE + 4 and len(texts) < 1000 / 4, (len(texts), seconds)


def test_same_seed_gives_same_text_through_the_api(served):
    url, _, _ = served
    client = Client(url, verbose=False)
    first = call(client, *generate_args(seed=7), api_name="/generate")[0]
    again = call(client, *generate_args(seed=7), api_name="/generate")[0]
    assert first == again and len(first) == 40


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
    with pytest.raises(AppError) as err:
        call(Client(url, verbose=False), *args, api_name="/generate")
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
        call(client, api_name="/stop")
    finally:
        playground.stop = real_stop
    text, stats, _ = job.result(timeout=60)
    time.sleep(10 * STEP_SECONDS)
    assert steps.after(signalled["at"]) == 0  # the step in flight finishes; no new one starts
    assert 0 < len(text) and len(steps.times) - before < 500
    assert finished(stats)[1] == "you pressed Stop"


def test_dropped_client_ends_the_models_compute(served):
    url, playground, steps = served
    client = Client(url, verbose=False)
    before = len(steps.times)
    job = client.submit(*generate_args(model="lstm", max_new_tokens=1000), api_name="/generate")
    wait_until(lambda: len(steps.times) >= before + 10, what="streaming")
    job.cancel()
    wait_until(lambda: playground.running() == 0, what="the run to end")
    ended = time.monotonic()
    time.sleep(10 * STEP_SECONDS)
    # Once the server has heard the client leave, at most the step already under way finishes. (Counted from the
    # client's cancel, a busy machine let a step or two more start while the cancel travelled to the server.)
    assert steps.after(ended) <= 1
    assert len(steps.times) - before < 200


def test_a_client_that_leaves_while_its_long_prompt_is_read_ends_the_models_compute(served):
    # 3,000 characters: the LSTM reads them in 12 pieces (0.1 s each here) before its first token.
    url, playground, steps = served
    client = Client(url, verbose=False)
    before = len(steps.times)
    job = client.submit(*generate_args(prompt="a b c d " * 375, model="lstm", max_new_tokens=1000),
                        api_name="/generate")
    wait_until(lambda: len(steps.times) >= before + 3, what="the prompt's first pieces")
    job.cancel()
    wait_until(lambda: playground.running() == 0, what="the run to end")
    assert len(steps.times) - before < 100  # not the whole text for nobody


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
    client.wait(timeout=30)
    wait_until(lambda: playground.running() == 0, what="the run to end")
    time.sleep(10 * STEP_SECONDS)
    assert steps.after(killed) <= 1


def compare_boxes(output: tuple, models: int, boxes: int) -> tuple[list[str], list[str]]:
    """The texts and stats of /compare's first `models` boxes (of `boxes`), from one of its outputs; a box the
    update set up comes as its update dict."""
    def value(v):
        return v.get("value") if isinstance(v, dict) else v

    return ([value(output[i]) or "" for i in range(models)],
            [value(output[boxes + i]) or "" for i in range(models)])


def test_compare_streams_every_model_side_by_side(served):
    url, playground, _ = served
    job = Client(url, verbose=False).submit("First", ["gru", "transformer", "tiny-gpt2"], 0.8, 30, 3,
                                            api_name="/compare")
    outputs = list(updates(job))
    final = job.result(timeout=60)
    # Paced at most every 40 ms, tiny models finish 30 tokens in a few hundred ms: the loading boxes, some
    # partial texts, the end (how many in between depends on the machine's speed).
    assert len(outputs) >= 3
    texts, stats = compare_boxes(final, 3, playground.limits.max_compare)
    assert all(texts)
    for s in stats:
        tokens, why, seed = finished(s)
        assert seed == 3 and (tokens == 30 and why == "it reached the length you set" or
                              why == "the model ended the text")


def test_compare_writes_the_models_at_the_same_time_not_one_after_another(served):
    # Two slowed models: one after the other, the second would show nothing until the first had finished.
    url, playground, lstm_steps = served
    rnn_steps = StepLog()
    handle = playground.manager.get("rnn").model.register_forward_pre_hook(rnn_steps)
    try:
        job = Client(url, verbose=False).submit("First", ["lstm", "rnn"], 0.8, 12, 1, api_name="/compare")
        outputs = [compare_boxes(out, 2, playground.limits.max_compare) for out in updates(job)]
        job.result(timeout=60)
    finally:
        handle.remove()
    first_text = [next(i for i, (texts, _) in enumerate(outputs) if texts[m]) for m in range(2)]
    done = [next(i for i, (_, stats) in enumerate(outputs) if "stopped:" in stats[m]) for m in range(2)]
    assert first_text[0] < done[1] and first_text[1] < done[0], (first_text, done)
    assert [finished(stats)[0] for stats in outputs[-1][1]] == [12, 12]
    # On the server each model writes in its own scheduler, at the same time: their forward steps (12 each: the
    # prompt, then a step a token) interleave, in whatever order the two threads take them.
    assert len(rnn_steps.times) == 12
    order = [model for _, model in sorted([(t, "lstm") for t in lstm_steps.times[-12:]] +
                                          [(t, "rnn") for t in rnn_steps.times])]
    assert sum(a != b for a, b in zip(order, order[1:])) >= 6, order  # one after another would switch once


def test_perplexity_scores_each_model(served):
    url, playground, _ = served
    text = "First Citizen:\nSpeak, speak.\n"
    table, plot = call(Client(url, verbose=False), text, ["lstm", "gru"], api_name="/score")
    expected = score_records(playground.score(["lstm", "gru"], text))  # the same numbers, computed here
    assert [dict(zip(table["headers"], row)) for row in table["data"]] == expected
    titles = [playground.catalog.get(name).title for name in ("lstm", "gru")]
    assert [r["Model"] for r in expected] == titles
    assert all(r[SCORE_COLUMNS["nats_per_char"]] > 0 for r in expected)
    assert all(f'"{title}"' in str(plot).replace("'", '"') for title in titles)  # a bar for each model


def test_many_concurrent_clients_all_finish_with_their_seeded_text(served):
    url, _, _ = served
    alone = call(Client(url, verbose=False), *generate_args(seed=11), api_name="/generate")[0]
    results = [None] * 6

    def run(i):
        results[i] = call(Client(url, verbose=False), *generate_args(seed=11 if i % 2 else 100 + i),
                          api_name="/generate")[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert all(r and len(r) == 40 for r in results)
    assert all(results[i] == alone for i in range(1, 6, 2))


def test_stop_ends_only_the_callers_request(served):
    url, playground, _ = served
    mine, theirs = Client(url, verbose=False), Client(url, verbose=False)
    my_job = mine.submit(*generate_args(model="lstm", max_new_tokens=1000), api_name="/generate")
    their_job = theirs.submit(*generate_args(model="lstm", max_new_tokens=40, seed=2), api_name="/generate")
    wait_until(lambda: playground.running() == 2 and all(j.outputs() and j.outputs()[-1][0] for j in
                                                          (my_job, their_job)), what="both to be writing")
    assert not their_job.done()
    call(mine, api_name="/stop")
    my_text, my_stats, _ = my_job.result(timeout=60)
    assert finished(my_stats)[1] == "you pressed Stop" and len(my_text) < 1000
    assert not their_job.done(), "the other client's request was still writing when mine stopped"
    their_text, their_stats, _ = their_job.result(timeout=30)
    assert finished(their_stats) == (40, "it reached the length you set", 2) and len(their_text) == 40


def test_a_full_model_writes_its_batch_and_the_rest_wait_told_their_place_then_finish(served):
    _, slowed, _ = served
    playground = Playground(slowed.manager, Limits(max_batch=2, max_waiting=8))  # the slowed LSTM: 0.1 s a step
    with live_app(playground) as url:
        jobs = [Client(url, verbose=False).submit(*generate_args(model="lstm", max_new_tokens=8, seed=i),
                                                  api_name="/generate") for i in range(5)]
        scheduler = slowed.manager.get("lstm").scheduler
        most, told, deadline = 0, False, time.monotonic() + 60
        while not all(job.done() for job in jobs) and time.monotonic() < deadline:
            most = max(most, scheduler.load[0])
            told = told or any("waiting for a free place" in (out[1] or "") for job in jobs for out in job.outputs())
            time.sleep(0.005)
        results = [job.result(timeout=60) for job in jobs]
    assert most == 2
    assert {finished(stats)[:2] for _, stats, _ in results} == {(8, "it reached the length you set")}
    assert told, "a waiting request is told its place"
    assert any("of it waiting for a free place" in stats for _, stats, _ in results)


def test_a_full_model_tells_the_extra_request_at_once_to_try_again_in_a_moment(served):
    _, slowed, _ = served
    playground = Playground(slowed.manager, Limits(max_batch=1, max_waiting=1))
    with live_app(playground) as url:
        running = Client(url, verbose=False).submit(*generate_args(model="lstm", max_new_tokens=30),
                                                    api_name="/generate")
        scheduler = slowed.manager.get("lstm").scheduler
        wait_until(lambda: scheduler.load == (1, 0), what="the first request to start")
        waiting = Client(url, verbose=False).submit(*generate_args(model="lstm", max_new_tokens=5),
                                                    api_name="/generate")
        wait_until(lambda: scheduler.load == (1, 1), what="the second request to wait")
        with pytest.raises(Exception, match="try again in a moment"):
            call(Client(url, verbose=False), *generate_args(model="lstm", max_new_tokens=5), api_name="/generate",
                 timeout=30)
        assert not running.done()
        assert finished(running.result(timeout=30)[1])[0] == 30  # the accepted requests are served
        assert finished(waiting.result(timeout=30)[1])[0] == 5


def _by_id(demo, prefix: str) -> list:
    return [b for b in demo.blocks.values() if (getattr(b, "elem_id", None) or "").startswith(prefix)]


@pytest.mark.parametrize("limit", ["1", "50", "5000"])
def test_length_sliders_start_within_the_operators_cap(catalog, clean_env, limit):
    clean_env.setenv("TEXTGEN_MAX_NEW_TOKENS", limit)
    demo = app.build_demo(Playground(ModelManager(catalog, device="cpu")))
    for slider in _by_id(demo, "max_new_tokens") + _by_id(demo, "cmp-max"):
        assert slider.minimum <= slider.value <= min(int(limit), 200) and slider.maximum >= max(int(limit), 2)


def test_compare_has_one_output_box_per_model_the_operator_allows(catalog, clean_env):
    clean_env.setenv("TEXTGEN_MAX_COMPARE", "5")
    playground = Playground(ModelManager(catalog, device="cpu"))
    demo = app.build_demo(playground)
    assert len(_by_id(demo, "cmp-out-")) == 5 and len(catalog.names()) == 5
    compare = next(fn.fn for fn in demo.fns.values() if fn.api_name == "compare")
    request = ("First Citizen:", catalog.names(), 0.8, 3, 1)
    outputs = list(compare(None, *request))  # (request, *inputs), as Gradio calls it
    assert len(outputs[-1]) == 2 * 5 and all(text for text in outputs[-1][:5])


@pytest.mark.parametrize("env", [{"TEXTGEN_CONCURRENCY": "two"}, {"TEXTGEN_MAX_PROMPT_CHARS": "1e3x"}])
def test_a_bad_operator_setting_is_one_clear_line(clean_env, capsys, env):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--port", str(free_port())])
    assert exit_info.value.code == 2
    assert f"{next(iter(env))} must be a whole number" in capsys.readouterr().err
