"""The playground's request handling, with no Gradio in it: app.py only wires these to the page.

    playground = Playground(ModelManager(Catalog.default()))
    settings = playground.parse("ROMEO:", temperature=0.8, seed=1)
    for live in playground.generate("lstm", settings, session="abc", every=0.04):
        print(live.text)                 # the text so far; live.tokens, live.summary, live.tokens_per_second
    playground.stop("abc")               # from any thread: stops that session's runs within a token

Every failure a user can cause or meet (bad values, unknown model, broken checkpoint, no network, out of
memory, a bug) comes out as `RequestError` with a message for that user, and the operator's details go to
the log; nothing else escapes, and one request's failure leaves the shared models usable for the next. In
Compare and Perplexity one model's failure is that model's own: it lands in its `Live.error` or its row,
and the other models finish.

Updates are paced: `every=0.04` hands the reader the state at most every 40 ms (and always the first token
and the end), so the cost of showing a text does not grow with every token of it. The model itself does
not wait for the reader in between.
"""

from __future__ import annotations

__all__ = ["Live", "Playground", "RequestError", "ScoreRow"]

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from textgen.core.backend import Backend
from textgen.core.chat import chat_unsupported_reason
from textgen.core.events import Live, ScoreRow, Summary, TextEvent, Waiting
from textgen.core.settings import GenerationSettings, InvalidRequest, Limits, RequestError, clean_text
from textgen.core.words import Phrase, joined, message_of
from textgen.local import decoding
from textgen.remote.client import EngineError, engine_concurrency
from textgen.service import explain
from textgen.service.catalog import UnknownModelError
from textgen.service.loading import (
    ModelLoadError,
    ModelManager,
    needs_preparing,
    preparation_seconds,
    prepare_model,
)

log = logging.getLogger("textgen")
MAX_QUEUED_SESSIONS = 10_000
LOADING_UPDATE_EVERY = 1.0  # seconds between the updates a request waiting for its model's first load hands on


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
        # name -> (its preparation's latest step in words, when it began, seconds it usually takes): one-time work
        # before a model's first use (textgen.service.loading.prepare_model), by prepare() or by a first request.
        self._preparing: dict[str, tuple[str, float, float | None]] = {}
        self._lock = threading.Lock()
        # Engine requests hold a slot while they stream: a model on an engine costs this machine only the
        # reading of a stream, so it must neither wait for nor hold up the local models. Local models need no
        # slot: each one's scheduler (textgen.local.batching) writes every request together, up to TEXTGEN_MAX_BATCH
        # rows, and queues the rest. (The page's queue admits both: app.py gives it room for all of them.)
        self._engine_slots = threading.BoundedSemaphore(engine_concurrency())

    # -- requests ----------------------------------------------------------------------------------------

    def parse(self, prompt: object, **controls: object) -> GenerationSettings:
        with self._errors("the request"):
            return GenerationSettings.parse(prompt, self.limits, **controls)

    def generate(
        self, name: object, settings: GenerationSettings, session: str = "", every: float = 0.0,
        arrived: float | None = None,
    ) -> Iterator[Live]:
        """The state of one model's text, at most every `every` seconds, always at the first token and the end.
        `arrived`: when the request came (time.perf_counter()), if it waited before this call (for the server to
        start): its clock starts then."""
        stopped = self._stopped_while_queued(session)
        entry = self._entry(name, session)
        live = Live.arrived_at(entry.name, entry.title, arrived)
        # The stop signal exists before the model loads: Stop pressed during a first-use load (a download,
        # say) is kept, and the run then ends before its first forward step.
        with self._signal(session, stopped) as cancel:
            loaded = yield from self._loading(live)
            yield from self._write(live, loaded, lambda patience: loaded.stream(settings, cancel, patience=patience),
                                   cancel, every)

    def _write(self, live: Live, loaded, events: Callable[[Callable[[], float]], Iterator], cancel: threading.Event,
               every: float) -> Iterator[Live]:
        """Feed one model's events into `live`, handing it on at the page's pace (its place in the model's queue at
        once), inside an engine slot for an engine's model, and with its failures in words. `events(patience)` starts
        the run once the slot is held; `patience()` says how long this reader can let the events gather."""
        with self._slot(not loaded.capabilities.runs_here, cancel), self._errors(live.title):
            pace = _Pace(every, self.running)
            # A first update before the model starts: a web server that hands this iterator on (Gradio) can only
            # close it, when its client goes away, once it has had an update; without one, a client that left while
            # the prompt was read (a long prompt, a crowd's) would have had its whole text written for nobody.
            yield live
            for event in events(pace.patience):
                if isinstance(event, Waiting):  # its place in the model's queue, or that its turn has come
                    live.add(event)
                    yield live
                    continue
                if not isinstance(event, (TextEvent, Summary)):
                    continue  # (a chat's ChatPrompt: what the model reads; its note comes again with the Summary)
                before = len(live.tokens)
                live.add(event)
                if pace.due(first=before == 0 < len(live.tokens), last=live.done):
                    yield live

    def chat(
        self, name: object, messages: object, system: object, settings: GenerationSettings, session: str = "",
        every: float = 0.0, arrived: float | None = None,
    ) -> Iterator[Live]:
        """A model's reply to a conversation, streamed exactly as `generate` streams a text: the same Live,
        pacing, Stop and errors (see textgen.core.chat for the prompt).

        `messages` are `{"role", "content"}` dicts, oldest first, the user's newest message last; `system` is the
        optional system prompt; `settings` come from `parse("", ...)` (their prompt is not used). Whether a model
        has a chat template is known only once it is loaded: one without is refused then, in words. When old
        messages had to be left out to fit the model's context, the note saying so is in the Summary's warnings.
        `arrived` as in `generate`.
        """
        stopped = self._stopped_while_queued(session)
        entry = self._entry(name, session)
        live = Live.arrived_at(entry.name, entry.title, arrived)
        with self._signal(session, stopped) as cancel:  # before loading, as in generate
            loaded = yield from self._loading(live)
            yield from self._write(live, loaded, lambda patience: loaded.chat(messages, system, settings, cancel,
                                                                              self.limits, patience=patience),
                                   cancel, every)

    def compare(
        self, names: object, settings: GenerationSettings, session: str = "", every: float = 0.0,
        arrived: float | None = None,
    ) -> Iterator[list[Live]]:
        """Several models on one prompt and seed, advanced a token each in turn so that they write together
        (`arrived` as in `generate`).

        A model that cannot load or fails while writing ends with its own `error`; the others go on.
        """
        stopped = self._stopped_while_queued(session)
        entries = self._compare_entries(names, session=session)
        lives = [Live.arrived_at(e.name, e.title, arrived) for e in entries]
        for live in lives:
            if not self.manager.is_loaded(live.name):
                live.status = Phrase("status.loading", title=live.title)
        with self._signal(session, stopped) as cancel:  # before loading, as in generate
            yield lives
            runs: dict[int, Iterator[TextEvent | Summary]] = {}
            on_engines = True
            for i, live in enumerate(lives):
                try:
                    loaded = self._load(live)
                    on_engines = on_engines and not loaded.capabilities.runs_here
                    runs[i] = loaded.stream(settings, cancel)
                except RequestError as err:
                    live.error = message_of(err)
            if not runs:
                raise RequestError(joined(live.error for live in lives))
            yield lives
            pace = _Pace(every, self.running)
            with self._slot(on_engines, cancel):  # one slot for the whole comparison, as it is one page request
                while runs:
                    for i in list(runs):
                        try:
                            with self._errors(lives[i].title):
                                event = next(runs[i], None)
                        except RequestError as err:
                            lives[i].error, event = message_of(err), None
                        if event is None:
                            del runs[i]
                            continue
                        lives[i].add(event)
                    if pace.due(last=not runs):
                        yield lives

    def score(
        self, names: object, text: object, progress: Callable[[float, str], None] | None = None, session: str = ""
    ) -> list[ScoreRow]:
        """Per-character surprise of `text` under each model (the evaluation code of the training side).

        `progress(fraction, what)` hears how far along it is: long texts under big models take a while. A model
        that cannot score gets its row with `error` set, and the others are scored.
        """
        with self._errors("the text"):
            text = clean_text(text, self.limits.max_score_chars, "text", [])
        if not text.strip():
            raise RequestError(Phrase("error.no_text_to_score"))
        entries = self._compare_entries(names, minimum=1, session=session)
        rows = []
        for i, entry in enumerate(entries):
            row = ScoreRow(entry.name, entry.title)
            report = None
            if progress is not None:
                progress(i / len(entries), Phrase("status.loading", title=entry.title))

                def report(done: float, i=i, title=entry.title) -> None:
                    progress((i + done) / len(entries), f"Scoring with {title}")

            try:
                loaded = self._load(Live(entry.name, entry.title))
                with self._errors(entry.title):
                    score = loaded.score(text, progress=report)
                row.nats_per_char, row.bits_per_char = score.nats_per_char, score.bits_per_char
                row.ppl_per_token, row.tokens, row.unknown_chars = score.ppl, score.tokens, score.unknown_chars
            except RequestError as err:
                row.error = message_of(err)
            rows.append(row)
        if all(row.error for row in rows):
            raise RequestError(joined(row.error for row in rows))
        return rows

    # -- the step-by-step view (textgen.service.explain), reached only through here ------------------------------------

    def step_controls(self, controls: dict) -> GenerationSettings:
        """The step view's sampling controls, checked (RequestError naming a bad one)."""
        with self._errors("the request"):
            return explain.parse_controls(controls, self.limits)

    def open_step(self, name: object, prompt: object, session: str = "") -> explain.StepSession:
        """A text to write one token at a time on a catalogued model (the model reads the prompt once)."""
        with self._errors("the step view"):
            return explain.open_session(self.manager, self._entry(name, session).name, prompt, self.limits)

    def next_token(self, name: object, prompt: object, controls: dict, top_n: int = 10, session: str = "") -> dict:
        """The next-token candidates after `prompt`, stage by stage (see explain.next_token_json)."""
        with self._errors("the step view"):
            settings = explain.parse_controls(controls, self.limits)  # a bad control fails before any load
            entry = self._entry(name, session)
            return explain.next_token_json(self.manager.get(entry.name), prompt, settings, top_n, self.limits)

    def decode(self, name: object, prompt: object, method: object = "beam", width: object = 4,
               max_new_tokens: object = 16, session: str = "", **controls: object) -> dict:
        """Greedy search, beam search or samples as one tree of choices (textgen.local.decoding; its JSON, with
        the model's name and title). `controls`: temperature, top_k, top_p, min_p, seed (the samples'),
        repetition_penalty and no_repeat_ngram_size (all three methods'). Stop ends it within a step."""
        with self._errors("the decoding view"):
            settings = GenerationSettings.parse(prompt, self.limits, max_new_tokens=max_new_tokens, **controls)
            method, width = decoding.check(method, width, settings.max_new_tokens)  # before any load
            backend = self.manager.get(self._entry(name, session).name)
            if not backend.capabilities.runs_here:
                raise RequestError(Phrase("error.engine_no_decoding", title=backend.entry.title))
            with self._signal(session) as cancel:
                tree = decoding.decode(backend, settings, method, width, cancel)
            return {"model": backend.name, "title": backend.entry.title, **tree.as_json()}

    def look_inside(self, loaded, text: str) -> dict:
        """What fits the model to show of `text`: where a Transformer looks ("attention") and what a recurrent
        model remembers ("units", "values", "tokens"); for what does not apply, a plain note instead
        ("attention_note", "units_note")."""
        inside: dict = {"text": text, "loaded": loaded}
        with self._errors("the step view"):
            try:
                inside["attention"] = explain.attention(loaded, text, -1, self.limits)
            except InvalidRequest as err:
                inside["attention_note"] = message_of(err)
            except Exception as err:  # a Hugging Face model that cannot report attention in its own way
                log.warning("no attention from %s: %s", loaded.entry.name, err)
                inside["attention_note"] = Phrase("explain.no_attention_report", title=loaded.entry.title)
            try:
                found = explain.interesting_units(loaded, text, limits=self.limits)
                inside["units"] = found["units"]
                inside["values"] = explain.activations(loaded, text, limits=self.limits)["values"]
                inside["tokens"] = found["tokens"]
            except InvalidRequest as err:
                inside["units_note"] = message_of(err)
        return inside

    def attention_from(self, loaded, text: str, query: object) -> dict:
        """Attention from another token of `text` (one forward pass over the text up to it)."""
        with self._errors("the step view"):
            return explain.attention(loaded, text, query, self.limits)

    def chat_unsupported_reason(self, name: str, session: str = "") -> str | None:
        """Why this model cannot chat, in one line; None if it can. Loaded, its tokenizer says; not loaded, the
        answer is only right for a model known to have no template (the page asks only then)."""
        if self.manager.is_loaded(name):
            loaded = self.manager.get(name)
            return chat_unsupported_reason(loaded.capabilities.chat_template, loaded.entry.title)
        return chat_unsupported_reason(False, self._entry(name, session).title)

    def starting(self) -> str | None:
        """None: a Playground is built, so nothing is starting (startup.LazyPlayground says otherwise)."""
        return None

    def unavailable(self, session: str = "") -> dict[str, str]:
        """The models `session` can see that cannot be used here, with why, in a few words for the pickers."""
        self.catalog.refresh_engines()  # an engine down at start lists its models once it answers
        reasons = {e.name: self.manager.unavailable(e.name) for e in self.catalog.visible(session)}
        return {name: why for name, why in reasons.items() if why}

    def forget(self, name: str) -> None:
        """Drop a model from memory (its files are gone: a trained model past its time, say)."""
        self.manager.unload(name)

    def model_info(self, name: str) -> dict | None:
        """Size and context of a model once it is loaded (None before: loading just to describe it would be slow)."""
        return self.manager.get(name).info() if self.manager.is_loaded(name) else None

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

    def running(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._running.values())

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

    def _entry(self, name: object, session: str):
        """The catalog entry a request names; a model another session trained is refused (RequestError)."""
        if isinstance(name, str) and name not in self.catalog:
            self.catalog.refresh_engines()  # perhaps a model of an engine that answers now
        with self._errors("the request"):
            return self.catalog.get(name, session=session)

    @contextmanager
    def _slot(self, on_engine: bool, cancel: threading.Event):
        """Hold an engine slot while a run streams from an engine (a local run needs none: its model's scheduler
        admits it). A Stop while waiting for one ends the wait (the run then stops before its first step)."""
        if not on_engine:
            yield
            return
        slots = self._engine_slots
        while not slots.acquire(timeout=0.1):
            if cancel.is_set():
                yield
                return
        try:
            yield
        finally:
            slots.release()

    def _compare_entries(self, names: object, minimum: int = 2, session: str = ""):
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise RequestError(Phrase("error.models_type"))
        names = list(dict.fromkeys(names))
        if not minimum <= len(names) <= self.limits.max_compare:
            raise RequestError(Phrase("error.models_count", low=minimum, high=self.limits.max_compare))
        return [self._entry(n, session) for n in names]

    # -- first use -------------------------------------------------------------------------------------------

    def prepare(self) -> threading.Thread:
        """Do the one-time work some models need before their first use (a GGUF file's fast-loading copy, half a
        minute for SmolLM2) now, one model after another in a background thread, so that a first visitor does not
        wait for it; a request for such a model meanwhile shows how far it has got. The app calls this when the
        server starts (unless TEXTGEN_PREPARE=0)."""

        def work() -> None:
            for entry in self.catalog:
                if needs_preparing(entry):
                    log.info("preparing %s for its first use", entry.name)
                    try:
                        prepare_model(entry, self._preparing_progress(entry.name))
                    except Exception as err:  # its first use will say why, in words; the operator hears it here
                        log.warning("preparing %s failed: %s: %s", entry.name, type(err).__name__, err)
                    finally:
                        self._preparing.pop(entry.name, None)

        thread = threading.Thread(target=work, name="textgen-prepare", daemon=True)
        thread.start()
        return thread

    def _preparing_progress(self, name: str) -> Callable[[str], None]:
        """A progress callback that keeps the latest step of `name`'s preparation, and since when it runs."""
        entry = self.catalog.get(name)
        expected = preparation_seconds(entry)

        def hear(message: str) -> None:
            started = self._preparing.get(name, (None, time.monotonic(), None))[1]
            self._preparing[name] = (message, started, expected)

        return hear

    def _loading(self, live: Live) -> Iterator[Live]:
        """`yield from` it for `live`'s model: loaded here, and while a first use takes, `live` handed on about every
        second with what it waits for and how long it has left (a GGUF file's preparation takes half a minute)."""
        if self.manager.is_loaded(live.name):
            return self._load(live)
        done: dict[str, object] = {}

        def work() -> None:
            try:
                done["model"] = self._load(live, self._preparing_progress(live.name))
            except BaseException as err:  # handed to the request below
                done["error"] = err

        worker = threading.Thread(target=work, name=f"textgen-load-{live.name}", daemon=True)
        started = time.monotonic()
        preparing = preparation_seconds(self.catalog.get(live.name))  # None: nothing to prepare, only a load
        worker.start()
        while True:
            live.status = self._loading_words(live, time.monotonic() - started, preparing)
            yield live
            worker.join(LOADING_UPDATE_EVERY)
            if not worker.is_alive():
                break
        self._preparing.pop(live.name, None)
        live.status = ""  # (the loop may have written its words once more after the worker cleared them)
        if "error" in done:
            raise done["error"]
        return done["model"]

    def _loading_words(self, live: Live, elapsed: float, preparing: float | None) -> str:
        """What a request waiting for its model's first load shows: the preparation's step and time left when
        there is one (its own, or the one the server started), else how long the load has taken."""
        step = self._preparing.get(live.name)
        if step is None and preparing is not None:  # before the preparation's first step is heard
            step = (Phrase("status.preparing", title=live.title), time.monotonic() - elapsed, preparing)
        if step is None:
            if elapsed < 5:
                return Phrase("status.loading_first", title=live.title)
            return Phrase("status.loading_so_far", title=live.title, seconds=f"{elapsed:.0f}")
        message, since, expected = step
        so_far = time.monotonic() - since
        left = (Phrase("status.left", seconds=max(1, round(expected - so_far))) if expected and so_far < expected
                else Phrase("status.nearly_done") if expected else "")
        return Phrase("status.step_so_far", message=message, seconds=f"{so_far:.0f}", left=left)

    def _load(self, live: Live, progress: Callable[[str], None] | None = None) -> Backend:
        """The model of `live`, loading it if needed (the time it took goes in `live.load_seconds`)."""
        start = time.perf_counter()
        was_loaded = self.manager.is_loaded(live.name)
        with self._errors(live.title):
            loaded = self.manager.get(live.name, progress)
        if not was_loaded:
            live.load_seconds = time.perf_counter() - start
        loaded.set_limits(self.limits)  # this playground's operator sets a local model's batch and its queue
        live.status = ""
        return loaded

    @contextmanager
    def _errors(self, what: str):
        """The one place where a failure becomes a RequestError for the person who asked (and a log line with
        the operator's details)."""
        try:
            yield
        except RequestError:
            raise
        except (InvalidRequest, UnknownModelError) as err:
            raise RequestError(message_of(err)) from None
        except (ModelLoadError, EngineError) as err:
            log.warning("model not available: %s", err.detail)
            raise RequestError(message_of(err)) from None
        except (torch.OutOfMemoryError, MemoryError):
            self.manager.clear()
            log.error("out of memory while %s was working; every model was unloaded", what)
            raise RequestError(Phrase("error.out_of_memory", what=what)) from None
        except Exception as err:
            log.exception("generation failed for %s", what)
            raise RequestError(Phrase("error.failed", what=what, detail=f"{type(err).__name__}: {str(err)[:200]}")) \
                from None

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


class _Pace:
    """When to hand the reader an update: the first token at once, then at most every `every` seconds, and
    always the last. Between updates the model keeps writing; only the showing is coalesced.

    With a crowd (`crowd()` texts streaming at once, more than CROWD) each text is shown less often, so that the
    updates of all of them together stay at about CROWD / `every` a second: an update costs the server a few ms
    of Python whatever the model, and with a class writing at once the updates, not the model, were what made
    everyone wait (16 streams of 100 LSTM tokens through the REST API: 4.4 s at 40 ms each, each text then
    trickling in over 4 s and so sending an update a token).
    """

    CROWD = 2

    def __init__(self, every: float, crowd: Callable[[], int] = lambda: 1):
        self.every, self.crowd = every, crowd
        self.next_at = 0.0

    def patience(self) -> float:
        """Seconds until the next update is due (0 before the first): the events can gather until then."""
        return max(0.0, self.next_at - time.monotonic()) if self.next_at else 0.0

    def due(self, first: bool = False, last: bool = False) -> bool:
        now = time.monotonic()
        if first or last or now >= self.next_at:
            self.next_at = now + self.every * max(1.0, self.crowd() / self.CROWD)
            return True
        return False
