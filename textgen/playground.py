"""The playground's request handling, with no Gradio in it: app.py only wires these to the page.

    playground = Playground(ModelManager(Catalog.default()))
    settings = playground.parse("ROMEO:", temperature=0.8, seed=1)
    for live in playground.generate("lstm", settings, session="abc"):
        print(live.text)                 # the text so far; live.tokens, live.summary, live.stats()
    playground.stop("abc")               # from any thread: stops that session's runs within a token

Every failure a user can cause or meet (bad values, unknown model, broken checkpoint, no network, out of
memory, a bug) comes out as `RequestError` with a message for that user; nothing else escapes, and one
request's failure leaves the shared models usable for the next.
"""

from __future__ import annotations

__all__ = ["Live", "Playground", "RequestError"]

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from textgen.catalog import UnknownModelError
from textgen.evaluate import score_text
from textgen.generation import Summary, TextEvent, TokenInfo, stream
from textgen.loading import ModelLoadError, ModelManager
from textgen.render import live_stats, summary_stats
from textgen.settings import GenerationSettings, InvalidRequest, Limits, RequestError, clean_text

log = logging.getLogger("textgen")
MAX_QUEUED_SESSIONS = 10_000


@dataclass
class Live:
    """One model's output while it streams, and its numbers."""

    name: str
    title: str
    text: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)
    summary: Summary | None = None
    status: str = ""
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None

    def add(self, event: TextEvent | Summary) -> None:
        if isinstance(event, Summary):
            self.summary = event
            self.text = event.texts[0]
            return
        if event.sample != 0:
            return
        if self.first_token is None:
            self.first_token = time.perf_counter() - self.started
        self.text += event.text
        if event.token is not None:
            self.tokens.append(event.token)

    def stats(self) -> str:
        if self.summary is not None:
            return summary_stats(self.summary)
        return live_stats(len(self.tokens), time.perf_counter() - self.started, self.first_token, self.status)


class Playground:
    def __init__(self, manager: ModelManager, limits: Limits | None = None):
        self.manager = manager
        self.catalog = manager.catalog
        self.limits = limits or Limits.from_env()
        self._running: dict[str, set[threading.Event]] = {}
        # Per session with page requests waiting in the queue: the session's Stop count when each was queued,
        # oldest first, and its Stop count now. A Stop pressed while a request waits ends it when it starts.
        self._queued: dict[str, deque[int]] = {}
        self._stops: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- requests ----------------------------------------------------------------------------------------

    def parse(self, prompt: object, **controls: object) -> GenerationSettings:
        try:
            return GenerationSettings.parse(prompt, self.limits, **controls)
        except InvalidRequest as err:
            raise RequestError(str(err)) from None

    def generate(self, name: object, settings: GenerationSettings, session: str = "") -> Iterator[Live]:
        """The text so far after every token, for one model."""
        stopped = self._stopped_while_queued(session)
        entry = self._entry(name)
        live = Live(entry.name, entry.title)
        # The stop signal exists before the model loads: Stop pressed during a first-use load (a download,
        # say) is kept, and the run then ends before its first forward step.
        with self._signal(session, stopped) as cancel:
            if not self.manager.is_loaded(entry.name):
                live.status = f"Loading {entry.title} (first use, a few seconds)…"
                yield live
            loaded = self._load(entry.name)
            with self._guard(entry.title):
                for event in stream(loaded, settings, cancel):
                    live.add(event)
                    yield live

    def compare(self, names: object, settings: GenerationSettings, session: str = "") -> Iterator[list[Live]]:
        """Several models on one prompt and seed, advanced a token each in turn so they stream together."""
        stopped = self._stopped_while_queued(session)
        entries = self._compare_entries(names)
        lives = [Live(e.name, e.title) for e in entries]
        for live in lives:
            if not self.manager.is_loaded(live.name):
                live.status = f"Loading {live.title}…"
        with self._signal(session, stopped) as cancel:  # before loading, as in generate
            yield lives
            loaded = [self._load(e.name) for e in entries]
            with self._guard(", ".join(e.title for e in entries)):
                runs = [stream(m, settings, cancel) for m in loaded]
                active = list(range(len(runs)))
                while active:
                    for i in list(active):
                        event = next(runs[i], None)
                        if event is None:
                            active.remove(i)
                            continue
                        lives[i].add(event)
                    yield lives

    def score(
        self, names: object, text: object, progress: Callable[[float, str], None] | None = None
    ) -> list[dict]:
        """Per-character surprise of `text` under each model (the evaluation code of the training side).

        `progress(fraction, what)` hears how far along it is: long texts under big models take a while.
        """
        try:
            text = clean_text(text, self.limits.max_score_chars, "text", [])
        except InvalidRequest as err:
            raise RequestError(str(err)) from None
        if not text.strip():
            raise RequestError("paste some text to score")
        rows = []
        entries = self._compare_entries(names, minimum=1)
        for i, entry in enumerate(entries):
            report = None
            if progress is not None:
                progress(i / len(entries), f"Loading {entry.title}…")

                def report(done: float, i=i, title=entry.title) -> None:
                    progress((i + done) / len(entries), f"Scoring with {title}")

            loaded = self._load(entry.name)
            with self._guard(entry.title):
                score = score_text(loaded.model, loaded.tokenizer, text, progress=report)
            rows.append({"model": entry.title, "nats_per_char": round(score.nats_per_char, 4),
                         "bits_per_char": round(score.bits_per_char, 4), "ppl_per_token": round(score.ppl, 2),
                         "tokens": score.tokens, "unknown_chars": score.unknown_chars})
        return rows

    def queued(self, session: str) -> None:
        """The page has queued a request for this session (call it when the click happens, not when the
        request starts): a Stop pressed while it still waits then ends it as soon as it starts."""
        with self._lock:
            if session not in self._queued and len(self._queued) >= MAX_QUEUED_SESSIONS:
                # Requests that never start (a closed tab, a full queue) leave entries behind: forget the oldest.
                oldest = next(iter(self._queued))
                del self._queued[oldest], self._stops[oldest]
            self._queued.setdefault(session, deque(maxlen=64)).append(self._stops.setdefault(session, 0))

    def stop(self, session: str) -> int:
        """Signal every run of this session to stop, and its queued requests; returns how many were running."""
        with self._lock:
            events = list(self._running.get(session, ()))
            if session in self._queued:
                self._stops[session] += 1
        for event in events:
            event.set()
        return len(events)

    def _stopped_while_queued(self, session: str) -> bool:
        """Whether this session's oldest queued request was stopped before it started (False for requests
        that were never announced with `queued`, as from the API: those cancel their job instead)."""
        with self._lock:
            waiting = self._queued.get(session)
            if not waiting:
                return False
            stops_then = waiting.popleft()
            stopped = self._stops[session] > stops_then
            if not waiting:
                del self._queued[session], self._stops[session]
            return stopped

    # -- helpers -----------------------------------------------------------------------------------------

    def _entry(self, name: object):
        try:
            return self.catalog.get(name)
        except UnknownModelError as err:
            raise RequestError(str(err)) from None

    def _compare_entries(self, names: object, minimum: int = 2):
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise RequestError("models must be a list of model names")
        names = list(dict.fromkeys(names))
        if not minimum <= len(names) <= self.limits.max_compare:
            raise RequestError(f"pick between {minimum} and {self.limits.max_compare} models")
        return [self._entry(n) for n in names]

    def _load(self, name: str):
        try:
            return self.manager.get(name)
        except ModelLoadError as err:
            raise RequestError(str(err)) from None

    @contextmanager
    def _signal(self, session: str, stopped: bool = False):
        # Created here, inside the request (and so inside a ZeroGPU worker process when there is one).
        event = threading.Event()
        if stopped:
            event.set()
        with self._lock:
            self._running.setdefault(session, set()).add(event)
        try:
            yield event
        finally:
            event.set()  # a run abandoned by its reader must not keep computing
            with self._lock:
                runs = self._running.get(session)
                if runs is not None:
                    runs.discard(event)
                    if not runs:
                        del self._running[session]

    @contextmanager
    def _guard(self, what: str):
        try:
            yield
        except RequestError:
            raise
        except (torch.OutOfMemoryError, MemoryError):
            self.manager.clear()
            raise RequestError(f"the server ran out of memory while {what} was writing; the models were "
                               "unloaded to recover. Try a shorter request.") from None
        except Exception as err:
            log.exception("generation failed for %s", what)
            raise RequestError(f"{what} failed: {type(err).__name__}: {str(err)[:200]}") from None

    def running(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._running.values())
