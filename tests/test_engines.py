"""Models on an inference engine (textgen/remote), against a fake OpenAI-compatible server (tests/fake_engine.py)
started on 127.0.0.1 by each test: the catalog, streaming with the page's controls, Stop, every way an engine can
fail, scoring, the API key, and the separate concurrency of engine and local models. Fast: no real engine here
(tests/test_vllm.py has the real vLLM).

    python -m pytest -q tests/test_engines.py
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from textgen import cli
from textgen.core.events import Summary, TextEvent
from textgen.core.settings import GenerationSettings, Limits, RequestError
from textgen.remote import backend, client, discovery
from textgen.service import catalog as catalog_module
from textgen.service import startup
from textgen.service.catalog import Catalog, entry_for_source
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground


@pytest.fixture(autouse=True)
def quick_engines(monkeypatch):
    """Short timeouts, so that a failing engine fails fast; no engine, key or limit from this machine's env."""
    for var in ("TEXTGEN_ENGINES", "TEXTGEN_ENGINE_API_KEY", "TEXTGEN_ENGINE_CONCURRENCY", "TEXTGEN_CONCURRENCY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TEXTGEN_ENGINE_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("TEXTGEN_ENGINE_FIRST_TOKEN_TIMEOUT", "1")
    monkeypatch.setenv("TEXTGEN_ENGINE_TOKEN_TIMEOUT", "1")
    monkeypatch.setenv("TEXTGEN_ENGINE_RETRY", "0.2")
    discovery._ENGINES.clear()  # what an engine said in another test is not this one's
    yield
    discovery._ENGINES.clear()


@pytest.fixture
def fake():
    with FakeEngine() as server:
        yield server


def dead_url() -> str:
    """The URL of an engine that is not running (a port nothing listens on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def playground_with(model_dirs, urls: list[str], limits: Limits | None = None) -> Playground:
    """A playground over a tiny local GRU and the models of these engines."""
    entries = [entry_for_source(str(model_dirs["gru"]), name="gru"), *catalog_module.discover(urls)]
    return Playground(ModelManager(Catalog(entries, engines=urls), device="cpu"), limits or Limits())


def run(playground: Playground, name: str, **controls) -> tuple[list, Summary]:
    settings = playground.parse(controls.pop("prompt", "Once"), **{"seed": 1, **controls})
    lives = list(playground.generate(name, settings, session="t"))
    return lives, lives[-1].summary


# -- the catalog ------------------------------------------------------------------------------------------------


def test_an_engines_models_join_the_catalog_marked_with_the_engine(fake):
    catalog = Catalog.default(shipped_dir=Path("/nonexistent"), include_gpt2=False, engines=[fake.url])
    entry = catalog.get("fake-model")  # the id's last part, in the catalog's characters
    assert entry.origin == "engine" and entry.model_id == "org/fake-model" and entry.source == fake.url
    assert entry.title == f"org/fake-model (on 127.0.0.1:{fake.port})"
    assert "256 tokens" in entry.description and entry.unavailable_reason() is None


def test_a_name_that_clashes_is_made_unique(fake, model_dirs):
    fake.model = "gru"
    playground = playground_with(model_dirs, [fake.url])
    assert playground.catalog.get("gru").origin == "local"
    assert playground.catalog.get("gru-2").model_id == "gru"
    assert playground.catalog.get("gru-2").title.startswith("gru (on 127.0.0.1:")


def test_engine_urls_from_flags_and_the_environment(monkeypatch):
    monkeypatch.setenv("TEXTGEN_ENGINES", "http://a:8000/v1/, http://b:9000")
    assert client.engine_urls(["http://c:1/v1"]) == ["http://c:1/v1", "http://a:8000/v1", "http://b:9000/v1"]
    with pytest.raises(ValueError, match="http://127.0.0.1:8000/v1"):
        client.engine_urls(["ftp://nope"])


def test_catalog_file_entries_name_one_model_of_an_engine(tmp_path, fake):
    path = tmp_path / "models.json"
    path.write_text(json.dumps([{"name": "big", "engine": fake.url, "model": "org/fake-model",
                                 "description": "The big one."}]))
    catalog = Catalog.default(catalog_file=path, shipped_dir=tmp_path / "none", include_gpt2=False)
    entry = catalog.get("big")
    assert (entry.model_id, entry.description, entry.unavailable_reason()) == ("org/fake-model", "The big one.", None)
    path.write_text(json.dumps([{"name": "big", "engine": fake.url, "model": "not-served"}]))
    catalog = Catalog.default(catalog_file=path, shipped_dir=tmp_path / "none", include_gpt2=False)
    assert "does not serve it" in catalog.get("big").unavailable_reason()


def test_an_engine_down_at_start_shows_why_and_its_models_arrive_when_it_answers(model_dirs):
    url = dead_url()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    started = time.perf_counter()
    playground = playground_with(model_dirs, [url])
    assert time.perf_counter() - started < 10  # the app starts anyway, after one short attempt (not ~25 s of retries)
    (placeholder,) = [e for e in playground.catalog if e.origin == "engine"]
    why = playground.unavailable()[placeholder.name]
    assert f"the engine at 127.0.0.1:{port} cannot be reached" in why and "asked again" in why
    assert "gru" not in playground.unavailable()  # the local model is not affected
    with FakeEngine(port=port):
        time.sleep(0.3)  # past TEXTGEN_ENGINE_RETRY
        assert playground.unavailable() == {}  # the picker's next refresh asks again
        assert placeholder.name not in playground.catalog
        assert playground.catalog.get("fake-model").origin == "engine"
        _, summary = run(playground, "fake-model", max_new_tokens=3)
        assert summary.texts == [" once upon a"]
    time.sleep(0.3)
    assert "cannot be reached" in playground.unavailable()["fake-model"]  # and down again


def test_models_command_lists_engine_models(fake, capsys):
    bad = dead_url()
    assert cli.main(["models", "--engine", fake.url, "--engine", bad, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ours = {r["name"]: r for r in rows if r["origin"] == "engine"}
    assert ours["fake-model"]["model"] == "org/fake-model" and ours["fake-model"]["unavailable"] is None
    (down,) = [r for r in ours.values() if r["name"] != "fake-model"]
    assert "cannot be reached" in down["unavailable"]


# -- generating -------------------------------------------------------------------------------------------------


def test_generate_streams_the_same_events_with_every_control_sent(fake, model_dirs):
    fake.delay = 0.01
    playground = playground_with(model_dirs, [fake.url])
    lives, summary = run(playground, "fake-model", temperature=0.7, top_k=20, top_p=0.9, min_p=0.05,
                         repetition_penalty=1.2, max_new_tokens=5, no_repeat_ngram_size=3)
    body = fake.requests[-1]
    assert body["stream"] is True and body["model"] == "org/fake-model" and body["prompt"] == "Once"
    assert (body["temperature"], body["top_k"], body["top_p"], body["min_p"], body["repetition_penalty"],
            body["seed"], body["max_tokens"], body["logprobs"]) == (0.7, 20, 0.9, 0.05, 1.2, 1, 5, 5)
    assert len(lives) >= 3  # partial updates while it streams (no pacing here: one per token)
    assert summary.texts == [" once upon a time,"] and summary.tokens == [5] and summary.seed == 1
    assert summary.stop_reasons == ["length"] and summary.prompt_tokens == 3
    assert summary.probabilities == "model"
    assert any("no-repeat n-gram size is not supported" in w for w in summary.warnings)
    assert any("before the sampling controls" in w for w in summary.warnings)
    token = lives[-1].tokens[1]
    assert (token.id, token.text, token.prob) == (101, " upon", 0.25)
    assert token.alternatives[0] == (" upon", 0.25) and len(token.alternatives) == 5
    assert [p for _, p in token.alternatives] == sorted((p for _, p in token.alternatives), reverse=True)


def test_stop_sequences_and_samples_go_to_the_engine(fake, model_dirs):
    playground = playground_with(model_dirs, [fake.url])
    loaded = playground.manager.get("fake-model")
    settings = GenerationSettings.parse("Once", stop=["fox"], num_samples=2, alternatives=0, max_new_tokens=20)
    events = list(loaded.stream(settings))
    body = fake.requests[-1]
    assert body["stop"] == ["fox"] and body["n"] == 2 and body["logprobs"] == 1
    summary = events[-1]
    assert len(summary.texts) == 2 and summary.texts[0] == summary.texts[1] and summary.tokens == [8, 8]
    assert all(e.token.alternatives == [] for e in events[:-1] if isinstance(e, TextEvent) and e.token)


def test_a_control_the_engine_refuses_is_dropped_and_said(fake, model_dirs):
    fake.refuse = {"top_k", "min_p"}
    playground = playground_with(model_dirs, [fake.url])
    _, summary = run(playground, "fake-model", top_k=20, min_p=0.1, max_new_tokens=3)
    assert summary.texts == [" once upon a"]
    assert "top_k" not in fake.requests[-1] and "min_p" not in fake.requests[-1] and len(fake.requests) == 3
    assert any("refused top-k" in w for w in summary.warnings)
    assert any("refused min-p" in w for w in summary.warnings)


def test_a_character_split_across_tokens_shows_whole(fake, model_dirs):
    playground = playground_with(model_dirs, [fake.url])
    # vLLM: the first token of "é" has token text "" and releases no text; the second releases the character.
    fake.tokens, fake.texts = [" caf", "", "", " ok"], [" caf", "", "é", " ok"]
    lives, summary = run(playground, "fake-model", max_new_tokens=4)
    assert summary.texts == [" café ok"] and [t.text for t in lives[-1].tokens] == [" caf", "", "é", " ok"]
    # An engine whose text ends in U+FFFD (perhaps a character still to come): not shown before the next piece.
    fake.tokens = fake.texts = [" caf", "\ufffd", "x"]
    pieces = [e.text for e in playground.manager.get("fake-model").stream(GenerationSettings.parse("x"))
              if isinstance(e, TextEvent)]
    assert pieces == [" caf", "", "\ufffdx"]
    # An engine that gives each token's bytes: the text is rebuilt from them, the character whole.
    fake.tokens, fake.texts = [" caf", "\ufffd", "\ufffd", " ok"], [" caf", "\ufffd", "\ufffd", " ok"]
    fake.token_bytes = [list(b" caf"), [0xC3], [0xA9], list(b" ok")]
    _, summary = run(playground, "fake-model", max_new_tokens=4)
    assert summary.texts == [" café ok"]


def test_text_holds_a_trailing_replacement_character_until_the_next_piece():
    text = backend._Text()
    assert text.push("ab\ufffd") == "ab"
    assert text.push("\ufffdc") == "\ufffd\ufffdc"  # no byte came to complete it: shown as it is
    assert text.push("d\ufffd") == "d" and text.flush() == "\ufffd" and text.text == "ab\ufffd\ufffdcd\ufffd"


def test_an_empty_prompt_starts_a_new_text(fake, model_dirs):
    playground = playground_with(model_dirs, [fake.url])
    _, summary = run(playground, "fake-model", prompt="", max_new_tokens=2)
    assert fake.requests[-1]["prompt"] == "\n" and any("prompt was empty" in w for w in summary.warnings)


# -- Stop and dropped readers -----------------------------------------------------------------------------------


def test_stop_closes_the_stream_and_the_engine_sees_it(fake, model_dirs):
    fake.tokens, fake.delay = ["x"] * 200, 0.02
    playground = playground_with(model_dirs, [fake.url])
    settings = playground.parse("Once", max_new_tokens=200)
    seen = 0
    for live in playground.generate("fake-model", settings, session="s"):
        seen = len(live.tokens)
        if seen >= 3:
            playground.stop("s")
    stopped_at = time.perf_counter()
    assert live.summary.stop_reasons == ["cancelled"] and seen < 10
    assert fake.aborted.wait(2), "the engine never saw the stream close"
    assert time.perf_counter() - stopped_at < 10 and fake.chunks_sent < 20


def test_stop_while_the_engine_is_silent_ends_the_wait_at_once(fake, model_dirs, monkeypatch):
    monkeypatch.setenv("TEXTGEN_ENGINE_FIRST_TOKEN_TIMEOUT", "30")
    fake.mode = "slow_first"
    playground = playground_with(model_dirs, [fake.url])
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    events = list(playground.manager.get("fake-model").stream(GenerationSettings.parse("x"), cancel))
    assert time.perf_counter() - started < 10  # not the 30 s the engine is given for its first token
    assert events[-1].stop_reasons == ["cancelled"] and events[-1].tokens == [0]


def test_a_reader_that_goes_away_closes_the_stream(fake, model_dirs):
    fake.tokens, fake.delay = ["x"] * 200, 0.02
    playground = playground_with(model_dirs, [fake.url])
    run_ = playground.generate("fake-model", playground.parse("Once", max_new_tokens=200), session="d")
    while not next(run_).tokens:
        pass
    run_.close()  # the page was closed: Gradio stops reading the generator
    assert fake.aborted.wait(2) and fake.chunks_sent < 30


# -- an engine that fails -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "words"), [
    ("unreachable", "cannot be reached"),
    ("slow_first", "is not answering in time"),
    ("stall", "is not answering in time"),
    ("http_error", "answered with an error (HTTP 500)"),
    ("garbage", "gave an answer this app cannot read"),
    ("die", "stopped answering"),
    ("no_done", "stopped answering"),
])
def test_a_failing_engine_gives_that_request_a_clear_error_and_nothing_else(fake, model_dirs, mode, words):
    playground = playground_with(model_dirs, [fake.url])
    if mode == "unreachable":
        fake.stop()
    fake.mode = mode
    started = time.perf_counter()
    with pytest.raises(RequestError) as err:
        run(playground, "fake-model", max_new_tokens=5)
    assert time.perf_counter() - started < 4  # never a hung request (timeouts here are 1 s)
    assert words in str(err.value) and str(err.value).startswith("org/fake-model (on 127.0.0.1:")
    if mode in ("die", "stall", "no_done", "garbage"):
        assert "in the middle of the text" in str(err.value)
    _, summary = run(playground, "gru", max_new_tokens=5)  # a local model is not affected
    assert summary.tokens == [5]


def test_compare_keeps_going_when_the_engine_fails(fake, model_dirs):
    fake.mode = "die"
    playground = playground_with(model_dirs, [fake.url])
    lives = list(playground.compare(["gru", "fake-model"], playground.parse("Once", max_new_tokens=6, seed=1)))[-1]
    assert lives[0].summary.tokens == [6] and "stopped answering" in lives[1].error


def test_the_api_key_is_sent_and_never_shown(fake, model_dirs, monkeypatch, caplog):
    secret = "sk-very-secret-123"
    fake.api_key = secret
    monkeypatch.setenv("TEXTGEN_ENGINE_API_KEY", secret)
    playground = playground_with(model_dirs, [fake.url])
    _, summary = run(playground, "fake-model", max_new_tokens=2)
    assert summary.tokens == [2] and fake.headers[-1]["Authorization"] == f"Bearer {secret}"
    monkeypatch.setenv("TEXTGEN_ENGINE_API_KEY", "sk-wrong-456")
    with pytest.raises(RequestError) as err:
        run(playground, "fake-model", max_new_tokens=2)
    assert "refused this server's credentials" in str(err.value)
    shown = str(err.value) + caplog.text + repr(playground.manager.get("fake-model")) + repr(discovery._ENGINES)
    assert "sk-" not in shown and "TEXTGEN_ENGINE_API_KEY" in caplog.text  # the operator is told which setting


# -- scoring ------------------------------------------------------------------------------------------------------


def test_perplexity_through_the_engine(fake, model_dirs):
    playground = playground_with(model_dirs, [fake.url])
    (row,) = playground.score(["fake-model"], "Hello")
    assert fake.requests[-1]["echo"] is True and fake.requests[-1]["max_tokens"] == 0
    assert fake.requests[-1]["prompt"] == "\nHello"
    assert row.tokens == 5 and row.nats_per_char == pytest.approx(math.log(2))
    assert row.ppl_per_token == pytest.approx(2.0)
    fake.echo_supported = False
    rows = playground.score(["fake-model", "gru"], "Hello")
    assert "not supported by this engine" in rows[0].error and rows[1].error is None


def test_a_text_longer_than_the_engines_context_is_scored_in_windows(fake, model_dirs):
    playground = playground_with(model_dirs, [fake.url])
    text = "All the world's a stage, and all the men and women merely players.\n" * 15  # 1005 characters
    (row,) = playground.score(["fake-model"], text)
    scored = [r for r in fake.requests if r.get("echo")]
    assert row.error is None and len(scored) > 4  # 256-character windows, each half new text
    assert all(len(r["prompt"]) <= fake.context for r in scored)
    assert row.tokens == len(text) and row.nats_per_char == pytest.approx(math.log(2))  # every character, once
    fake.context = 4  # it now refuses even small windows (though it said 256 when asked): said in words
    with pytest.raises(RequestError, match="longer than the model can take at once, even in pieces"):
        playground.score(["fake-model"], text.upper())


# -- chat -------------------------------------------------------------------------------------------------------


def test_chat_with_an_engine_model_streams_its_reply_with_probabilities(fake, model_dirs):
    playground = playground_with(model_dirs, [fake.url])
    settings = playground.parse("", seed=1, max_new_tokens=4, alternatives=3)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Who are you?"}]
    lives = list(playground.chat("fake-model", messages, "Be brief.", settings, session="c"))
    live = lives[-1]
    sent = fake.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, *messages]  # the engine's template
    assert sent["logprobs"] is True and sent["top_logprobs"] == 3 and "prompt" not in sent
    assert live.error is None and live.summary.texts == ["".join(fake.tokens[:4])]
    assert [t.text for t in live.tokens] == fake.tokens[:4] and len(live.tokens[0].alternatives) == 3
    assert live.tokens[0].prob == pytest.approx(math.exp(fake.logprob(0)), abs=1e-4)
    assert not any("prompt was empty" in w for w in live.summary.warnings)  # a chat's prompt is its messages


def test_chat_with_an_engine_model_without_a_template_says_so(fake, model_dirs):
    fake.chat_template = False
    playground = playground_with(model_dirs, [fake.url])
    with pytest.raises(RequestError, match="has no chat template on its engine, so it cannot chat"):
        list(playground.chat("fake-model", [{"role": "user", "content": "Hi"}], None, playground.parse(""),
                             session="c"))


def test_the_pages_chat_answers_with_an_engine_model(fake, model_dirs):
    from gradio_client import Client
    from helpers import live_app

    fake.delay = 0.0
    with live_app(playground_with(model_dirs, [fake.url])) as url:
        history, stats, tokens = Client(url, verbose=False).predict(
            "Hi", [], "fake-model", "", 0.8, 0, 0.95, 0.0, 1.0, 0, 5, 1, api_name="/chat")
    assert history[-1]["role"] == "assistant" and "**5** tokens" in stats and tokens.count("class=tg-tok") == 5
    assert fake.requests[-1]["messages"] == [{"role": "user", "content": "Hi"}]


# -- concurrency --------------------------------------------------------------------------------------------------


def test_engine_requests_never_wait_for_a_full_local_model(fake, model_dirs):
    playground = playground_with(model_dirs, [fake.url], Limits(max_batch=1))
    slow = playground.manager.get("gru").model.register_forward_pre_hook(lambda module, args: time.sleep(0.05))
    try:
        local = playground.generate("gru", playground.parse("Once", max_new_tokens=1000), session="a")
        while not next(local).tokens:  # the local model writes its one row
            pass
        done = []
        worker = threading.Thread(target=lambda: done.append(run(playground, "fake-model", max_new_tokens=3)))
        worker.start()
        worker.join(5)
        assert done and done[0][1].tokens == [3], "an engine request waited for the local model"
        second = playground.generate("gru", playground.parse("Twice", max_new_tokens=3), session="b")
        assert not next(second).status  # its first update, as it starts
        assert "waiting for a free place (you are next)" in next(second).status  # a second local one waits
        local.close()  # its reader leaves: the row is free
        assert list(second)[-1].summary.tokens == [3]
    finally:
        slow.remove()


def test_the_page_gets_room_for_engine_requests(fake, model_dirs, monkeypatch):
    monkeypatch.setenv("TEXTGEN_ENGINE_CONCURRENCY", "3")
    playground = playground_with(model_dirs, [fake.url], Limits(concurrency=2))
    page = startup.for_page(playground, playground.catalog)
    assert page.limits.concurrency == 5 and playground.limits.concurrency == 2
    assert page.catalog is playground.catalog and page.unavailable() == {}
    local_only = Playground(ModelManager(Catalog([entry_for_source(str(model_dirs["gru"]))]), device="cpu"))
    assert startup.for_page(local_only, local_only.catalog) is local_only


def test_a_remote_model_has_no_weights_here(fake, model_dirs):
    playground = playground_with(model_dirs, [fake.url])
    loaded = playground.manager.get("fake-model")
    assert not loaded.capabilities.runs_here and loaded.nbytes == 0 and loaded.context == 256
    assert playground.model_info("fake-model") is None
    with pytest.raises(client.EngineError, match="runs on an inference engine"):
        loaded.tokenizer  # noqa: B018
