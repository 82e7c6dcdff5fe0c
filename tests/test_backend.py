"""The backend seam (textgen/core/backend.py): every model source meets one protocol, and the service layer
asks it what it can do, never what kind it is. A new kind of backend is one class and one line in `load_model`."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

import textgen.service.loading
from textgen.core.backend import Backend, Capabilities
from textgen.core.chat import messages_prompt
from textgen.core.events import Score, Summary, TextEvent, TokenInfo
from textgen.core.settings import GenerationSettings, RequestError
from textgen.service.catalog import Catalog, ModelEntry
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground

ROOT = Path(__file__).resolve().parent.parent


class Echo:
    """A backend of a kind the project does not have: it writes the prompt back, one letter a token."""

    load_seconds = 0.0
    context = None
    nbytes = 0
    capabilities = Capabilities(runs_here=False, chat_template=True, probabilities="model")

    def __init__(self, entry: ModelEntry):
        self.entry = entry
        self.limits_set = None

    @property
    def name(self) -> str:
        return self.entry.name

    def info(self) -> dict | None:
        return None

    def set_limits(self, limits) -> None:
        self.limits_set = limits

    def stream(self, settings, cancel=None, prompt_ids=None, patience=None):
        text = (settings.prompt or "?")[: settings.max_new_tokens]
        for ch in text:
            yield TextEvent(0, ch, TokenInfo(ord(ch), ch, 1.0, []))
        yield Summary(texts=[text], tokens=[len(text)], stop_reasons=["length"], prompt_tokens=len(text),
                      prompt_tokens_cut=0, time_to_first_token=0.0, tokens_per_second=0.0, seconds=0.0,
                      seed=settings.seed or 0, forward_steps=0, probabilities="model")

    def chat(self, messages, system, settings, cancel=None, limits=None, patience=None):
        prompt = messages_prompt(messages, system, settings.max_new_tokens, limits)
        yield prompt
        yield from self.stream(GenerationSettings.parse(prompt.messages[-1]["content"]), cancel)

    def score(self, text, progress=None) -> Score:
        return Score(nats_per_char=1.0, bits_per_char=1.4427, ppl=2.0, chars=len(text), tokens=len(text))


@pytest.fixture
def echo_playground(catalog, monkeypatch):
    """The test catalog plus one "echo" entry, which `load_model` (the one place that picks a backend) opens as Echo."""
    entry = ModelEntry("echo", "Echo", "writes the prompt back", "echo://", "engine", model_id="echo")
    real = textgen.service.loading.load_model
    monkeypatch.setattr(textgen.service.loading, "load_model",
                        lambda e, *a, **k: Echo(e) if e.name == "echo" else real(e, *a, **k))
    return Playground(ModelManager(Catalog([*catalog, entry])))


def test_every_kind_meets_the_protocol(manager, catalog):
    lstm = manager.get("lstm")
    assert isinstance(lstm, Backend) and isinstance(Echo(catalog.get("lstm")), Backend)
    assert lstm.capabilities == Capabilities(runs_here=True, chat_template=False, probabilities="sampled",
                                             attention=False, units=True)
    events = list(lstm.stream(GenerationSettings.parse("ROMEO:", max_new_tokens=5, seed=1)))
    assert isinstance(events[-1], Summary) and events[-1].tokens == [5]
    assert lstm.score("To be, or not to be").bits_per_char > 0


def test_a_new_kind_of_backend_writes_chats_compares_and_scores_through_the_playground(echo_playground):
    pg = echo_playground
    live = list(pg.generate("echo", pg.parse("hello", max_new_tokens=10)))[-1]
    assert live.text == "hello" and live.summary.probabilities == "model"
    reply = list(pg.chat("echo", [{"role": "user", "content": "Hi there"}], "Be brief.", pg.parse("")))[-1]
    assert reply.text == "Hi there"
    lstm, echo = list(pg.compare(["lstm", "echo"], pg.parse("ROMEO:", max_new_tokens=4, seed=2)))[-1]
    assert echo.text == "ROMEO:"[:4] and lstm.summary.tokens == [4] and not lstm.error
    rows = pg.score(["echo", "lstm"], "To be, or not to be")
    assert rows[0].bits_per_char == pytest.approx(1.4427) and rows[1].bits_per_char > 0
    assert pg.manager.get("echo").limits_set is pg.limits  # the operator's limits reach every backend
    assert pg.chat_unsupported_reason("echo") is None


def test_capabilities_say_what_the_step_view_can_show_inside_each_model(manager):
    seen = {name: (manager.get(name).capabilities.attention, manager.get(name).capabilities.units)
            for name in ("lstm", "gru", "transformer", "tiny-gpt2")}
    assert seen == {"lstm": (False, True), "gru": (False, True), "transformer": (True, False),
                    "tiny-gpt2": (True, False)}
    assert Echo.capabilities.attention is False and Echo.capabilities.units is False  # nothing to look inside


def test_a_search_on_an_engine_model_says_engines_do_not_offer_it(echo_playground):
    with pytest.raises(RequestError, match="runs on an inference engine, which offers neither beam search"):
        echo_playground.decode("echo", "Once", "beam", 4)


def test_a_backend_that_cannot_chat_is_refused_in_words(manager):
    manager.get("lstm")
    reason = Playground(manager).chat_unsupported_reason("lstm")
    assert reason and "cannot chat" in reason and "Write" in reason


def test_the_service_layer_never_asks_which_kind_a_backend_is():
    """The playground, chat, start-up, the CLI and the page read capabilities; they import neither backend kind and
    compare no origin with "engine" (only the catalog, which owns the origins, and `load_model` know the kinds)."""
    kinds = {"textgen.remote.backend", "textgen.local.model"}
    for path in ("textgen/service/playground.py", "textgen/core/chat.py", "textgen/service/startup.py",
                 "textgen/cli.py", "app.py"):
        tree = ast.parse((ROOT / path).read_text())
        for block in [n for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]:
            block.body = []  # an annotation's import names a type; it asks nothing at run time
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & kinds, path
        compares = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare)]
        assert not [c for c in compares if "origin" in c and "'engine'" in c], path
        assert "is_remote" not in (ROOT / path).read_text(), path


def test_stop_reaches_a_backend_through_its_cancel_signal(manager):
    cancel = threading.Event()
    cancel.set()
    summary = list(manager.get("gru").stream(GenerationSettings.parse("x", max_new_tokens=50), cancel))[-1]
    assert summary.stop_reasons == ["cancelled"] and summary.tokens == [0]
