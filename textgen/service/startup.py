"""Serving the page before torch is imported, and the one way in to the models while they start.

`import gradio` takes ~7 s here and torch + transformers ~5-8 s more. The page needs neither to be built:
it needs the catalog and the limits. So `app.py` serves the page first and `LazyPlayground` builds the real
`Playground` (importing torch, transformers, our models and every module a request can need) in one background
thread. Every request reaches the models through it: it waits until the start-up has finished, so no request
thread ever imports torch or transformers itself (transformers' lazy module is not safe to import from two
threads at once: a request that did so while the start-up thread was importing got "cannot import name
'DynamicCache' from 'transformers'", and a start-up thread that lost that race failed for good).

    playground = LazyPlayground(catalog, Limits.from_env())
    demo = build_demo(playground)          # uses playground.catalog, .limits and .parse only
    demo.launch(prevent_thread_lock=True)
    playground.start()                     # now import the heavy parts, in one thread
    playground.prepare_when_ready()        # then make SmolLM2's fast-loading copy, if not made yet
    playground.starting()                  # "The models are still starting (about 6 s)…", or None once ready

A start-up that fails is tried again (`attempts` times, the reason in the log for the operator); requests wait
through the retries. Only when every try of a round has failed does a request get an error, in plain words, and
the next request starts a new round: a failure is never kept for ever.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from textgen.core.events import Live
from textgen.core.settings import GenerationSettings, InvalidRequest, Limits, RequestError
from textgen.core.words import Phrase, message_of
from textgen.remote.client import engine_concurrency
from textgen.service.catalog import Catalog

if TYPE_CHECKING:
    from textgen.core.events import ScoreRow
    from textgen.service.playground import Playground

log = logging.getLogger("textgen")

ATTEMPTS = 3  # start-up tries in a round before requests are told it failed
RETRY_PAUSE = 1.0  # seconds before the second try; twice that before the third
USUAL_SECONDS = 8.0  # what a start-up takes here before one has been measured (2 cores, nothing else running)
SHOW_WAIT_EVERY = 1.0  # seconds between the "still starting" updates a waiting request hands the page


def build_playground(catalog: Catalog, limits: Limits, device: str | None) -> Playground:
    """The real Playground: torch, transformers, our models and every module a request uses, imported here."""
    # here, not at the top: the page is served before these (and torch with them) are imported
    from textgen.local.devices import configure_cpu_threads
    from textgen.service.loading import ModelManager
    from textgen.service.playground import Playground  # imports generation, chat, explain, evaluate and engines

    configure_cpu_threads()
    return Playground(ModelManager(catalog, device=device), limits)


def timing_file() -> Path:
    """Where the last start-up's duration is kept, so the next start can say how long it usually takes."""
    base = os.environ.get("TEXTGEN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "textgen"
    return Path(base).expanduser() / "startup.json"


def usual_seconds() -> float:
    try:
        seconds = float(json.loads(timing_file().read_text())["seconds"])
        return seconds if 0 < seconds < 600 else USUAL_SECONDS
    except (OSError, ValueError, KeyError, TypeError):
        return USUAL_SECONDS


def _remember(seconds: float) -> None:
    try:
        path = timing_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seconds": round(seconds, 2)}))
    except OSError:  # a read-only cache only costs the estimate
        pass


class LazyPlayground:
    """A Playground built in the background. `catalog`, `limits`, `parse`, `unavailable` and `model_info` answer
    at once; `generate`, `chat`, `compare` and `score` show that the models are starting while they wait; every
    other attribute waits for the Playground."""

    def __init__(self, catalog: Catalog, limits: Limits, device: str | None = None, attempts: int = ATTEMPTS,
                 retry_pause: float = RETRY_PAUSE, build: Callable[..., Playground] | None = None):
        self.catalog = catalog
        self.limits = limits
        self._device = device
        self._attempts = max(1, attempts)
        self._retry_pause = retry_pause
        self._build = build or build_playground
        self._changed = threading.Condition()
        self._state = "idle"  # idle -> starting -> ready, or -> failed (and starting again on the next request)
        self._playground: Playground | None = None
        self._error: Exception | None = None
        self._failures = 0  # failed tries in this round
        self._pending: list[tuple[str, str]] = []  # queued/stop calls that came before the Playground, in order
        self._started_at = 0.0
        self._usual = usual_seconds()

    # -- start-up --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start building in the background (once; again after a round that failed)."""
        with self._changed:
            if self._state in ("starting", "ready"):
                return
            self._state, self._failures, self._started_at = "starting", 0, time.monotonic()
        threading.Thread(target=self._run, name="textgen-startup", daemon=True).start()

    def _run(self) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                playground = self._build(self.catalog, self.limits, self._device)
            except Exception as err:  # reported to the operator here, to visitors only if every try fails
                log.warning("starting the models failed (try %d of %d): %s: %s", attempt, self._attempts,
                            type(err).__name__, err, exc_info=attempt == self._attempts)
                with self._changed:
                    self._failures, self._error = attempt, err
                if attempt < self._attempts:
                    time.sleep(self._retry_pause * attempt)
                continue
            seconds = time.monotonic() - self._started_at
            with self._changed:
                for what, session in self._pending:
                    getattr(playground, what)(session)
                self._pending.clear()
                self._playground, self._state, self._error = playground, "ready", None
                self._changed.notify_all()
            log.info("the models are ready to load (start-up took %.1f s)", seconds)
            if attempt == 1 and seconds >= 0.5:  # a retried start, or one with everything imported, says nothing
                _remember(seconds)
            return
        with self._changed:
            self._state = "failed"
            self._changed.notify_all()

    def prepare_when_ready(self) -> None:
        """`Playground.prepare` (the one-time work of models such as SmolLM2), once the start-up has built it."""

        def work() -> None:
            try:
                self.wait().prepare()
            except RequestError:  # the start-up failed: the requests say so, and the log says why
                pass

        threading.Thread(target=work, name="textgen-prepare-when-ready", daemon=True).start()

    def wait(self, timeout: float | None = None) -> Playground:
        """The Playground, once built; RequestError in plain words if every try of this round failed."""
        self.start()  # harmless while starting; after a failed round, a new request tries again
        with self._changed:
            self._changed.wait_for(lambda: self._state in ("ready", "failed"), timeout)
            if self._state == "ready":
                return self._playground
            if self._state == "failed":
                raise RequestError(Phrase("error.start_failed", attempts=self._attempts))
        raise RequestError(Phrase("error.starting"))

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    def starting(self) -> str | None:
        """What a request waiting for the start-up shows; None once the models are ready (or the round failed)."""
        with self._changed:
            if self._state in ("ready", "failed"):  # failed: the request's wait() says so, in words
                return None
            elapsed = time.monotonic() - self._started_at if self._state == "starting" else 0.0
            retrying = self._failures > 0
        left = self._usual * (1 + (retrying and 1)) - elapsed
        when = (Phrase("status.server_about", seconds=max(1, round(left))) if left > 0
                else Phrase("status.server_longer", seconds=max(1, round(self._usual))))  # never "0 s"
        why = Phrase("status.server_retrying") if retrying else ""
        return Phrase("status.server_starting", why=why, when=when)

    # -- what answers at once ----------------------------------------------------------------------------------

    def parse(self, prompt: object, **controls: object) -> GenerationSettings:
        """As Playground.parse: the request's values checked, without waiting for the models."""
        try:
            return GenerationSettings.parse(prompt, self.limits, **controls)
        except InvalidRequest as err:
            raise RequestError(message_of(err)) from None

    def unavailable(self, session: str = "") -> dict[str, str]:
        """As Playground.unavailable; before the models can load, from the catalog's own checks."""
        if self.ready:
            return self._playground.unavailable(session)
        return {e.name: why for e in self.catalog.visible(session) if (why := e.unavailable_reason())}

    def forget(self, name: str) -> None:
        """As Playground.forget; nothing is loaded before the models can load."""
        if self.ready:
            self._playground.forget(name)

    def model_info(self, name: str) -> dict | None:
        return self._playground.model_info(name) if self.ready else None

    def queued(self, session: str) -> None:
        """As Playground.queued; before the models are ready it is kept, and told to the Playground once built."""
        self._tell("queued", session)

    def stop(self, session: str) -> int:
        """As Playground.stop; a Stop before the models are ready ends that session's waiting request when it
        starts (the Playground's own rule for a request stopped while queued)."""
        return self._tell("stop", session) or 0

    def _tell(self, what: str, session: str):
        with self._changed:
            if self._state != "ready":
                self._pending.append((what, session))
                return None
        return getattr(self._playground, what)(session)

    # -- what shows that it waits ------------------------------------------------------------------------------

    def generate(self, name: object, settings: GenerationSettings, session: str = "", every: float = 0.0
                 ) -> Iterator[Live]:
        arrived = yield from self._waiting(lambda: [self._placeholder(name)], single=True)
        yield from self.wait().generate(name, settings, session, every, arrived)

    def chat(self, name: object, messages: object, system: object, settings: GenerationSettings, session: str = "",
             every: float = 0.0) -> Iterator[Live]:
        arrived = yield from self._waiting(lambda: [self._placeholder(name)], single=True)
        yield from self.wait().chat(name, messages, system, settings, session, every, arrived)

    def compare(self, names: object, settings: GenerationSettings, session: str = "", every: float = 0.0
                ) -> Iterator[list[Live]]:
        arrived = yield from self._waiting(
            lambda: [self._placeholder(n) for n in (names if isinstance(names, list) else [])])
        yield from self.wait().compare(names, settings, session, every, arrived)

    def score(self, names: object, text: object, progress: Callable[[float, str], None] | None = None,
              session: str = "") -> list[ScoreRow]:
        self.start()
        while (message := self.starting()) is not None and progress is not None:
            progress(0.0, message)
            self._wait_a_little()
        return self.wait().score(names, text, progress, session)

    def __getattr__(self, name: str):
        return getattr(self.wait(), name)

    def _waiting(self, lives: Callable[[], list], single: bool = False) -> Generator[object, None, float | None]:
        """While the models start: every SHOW_WAIT_EVERY s, the placeholders with the start-up message. Returns
        when the request arrived if it had to wait (its first token's clock starts then), else None."""
        arrived = time.perf_counter()
        self.start()  # after a failed round, this request starts a new one
        if self.starting() is None:
            return None
        while (message := self.starting()) is not None:
            shown = lives()
            for live in shown:
                live.status = message
            if shown:
                yield shown[0] if single else shown
            self._wait_a_little()
        return arrived

    def _wait_a_little(self) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._state != "starting", SHOW_WAIT_EVERY)

    def _placeholder(self, name: object) -> Live:
        from textgen.core.events import Live  # torch-free to build, but only reached while waiting

        title = self.catalog.get(name).title if isinstance(name, str) and name in self.catalog else str(name)
        return Live(str(name), title)


# -- the page's view of the service -----------------------------------------------------------------------


class _PageView:
    """A playground as the page sees it: the same object, except that `limits.concurrency` (what the page's queue
    lets run at once) also counts the engine slots. The playground keeps its own limits and holds local runs to
    TEXTGEN_CONCURRENCY with its own semaphore, engine runs to TEXTGEN_ENGINE_CONCURRENCY with another."""

    def __init__(self, playground, limits):
        self._playground = playground
        self.limits = limits

    def __getattr__(self, name: str):
        return getattr(self._playground, name)


def for_page(playground, catalog):
    """What app.py serves: `playground` itself without engines; with engines, a view whose page queue has room for
    the engine requests beside the local ones (so that a slow engine never takes a local model's turn)."""
    if not (getattr(catalog, "engines", None) or any(not e.runs_here for e in catalog)):
        return playground
    limits = playground.limits
    return _PageView(playground, replace(limits, concurrency=limits.concurrency + engine_concurrency()))

