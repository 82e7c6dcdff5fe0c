"""What each browser session has open on the step-by-step view: its StepSession, the tokens written and how.

    book = StepBook(lambda model, prompt, key: playground.open_step(model, prompt, key))
    state = book.get(session_key, "lstm", "ROMEO:\n")        # a forward pass over the prompt, kept
    with state.lock:
        state.written.append(Written(piece, prob, alternatives))

Session state belongs to the service, not the page: the page's handlers look a session up here by the
browser's key, so they stay plain functions of their inputs. No torch and no Gradio.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Written:
    """One token written on the step view, as the token view of ui/render.py takes it (duck-typing TokenInfo)."""

    text: str  # the text it added
    prob: float  # its probability in the distribution it came from
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # what else was possible (text, prob)


@dataclass
class StepState:
    """One browser session's text on the Step tab: the StepSession (opaque here), what it wrote and how, and the
    last sample-many counts. `lock` keeps two events of one session apart."""

    session: Any
    model: str
    prompt: str
    written: list[Written] = field(default_factory=list)
    counts: dict | None = None
    counts_key: tuple | None = None  # (position, controls) the counts were drawn for
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def text(self) -> str:
        """The whole text so far (the prompt as the model read it, then what was written)."""
        return self.session.prompt + self.session.written


class StepBook:
    """The open step sessions, one per browser session, the least recently used dropped beyond `size` (each holds
    a model's recent logits and cache: a few MB for GPT-2), and each session's last look inside the model. A look
    is kept apart from the text: it stays usable (another head, another unit) while the text starts again, as
    the page keeps showing it until the next look."""

    def __init__(self, opener: Callable[[str, str, str], Any], size: int = 16):
        # (model, prompt, key) -> StepSession, raising RequestError for a bad request (or a model of another session)
        self._open = opener
        self._size = size
        self._states: OrderedDict[str, StepState] = OrderedDict()
        self._looks: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def find(self, key: str) -> StepState | None:
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
            return state

    def get(self, key: str, model: str, prompt: str, fresh: bool = False) -> StepState:
        """This session's state for (model, prompt); a new one (a forward pass over the prompt) when there is none,
        when the model or prompt changed since, or when `fresh`."""
        state = self.find(key)
        if state is not None and not fresh and state.model == model and state.prompt == prompt:
            return state
        state = StepState(self._open(model, prompt, key), model, prompt)
        with self._lock:
            self._states[key] = state
            self._states.move_to_end(key)
            while len(self._states) > self._size:
                self._states.popitem(last=False)
        return state

    def look(self, key: str) -> dict | None:
        """This session's last look inside the model, or None."""
        with self._lock:
            return self._looks.get(key)

    def keep_look(self, key: str, look: dict) -> None:
        with self._lock:
            self._looks[key] = look
            self._looks.move_to_end(key)
            while len(self._looks) > self._size:
                self._looks.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._states.pop(key, None)
            self._looks.pop(key, None)

    def __len__(self) -> int:
        return len(self._states)
