"""What a run reports, from the model's loop up to the page: tokens, text, the summary, and one model's live output.

    from textgen.core.events import Live, Summary, TextEvent
    live = Live("lstm", "LSTM")
    for event in playground_or_backend_events:   # TextEvent as tokens arrive, then one Summary
        live.add(event)
    print(live.text, live.summary.stop_description(), live.tokens_per_second)

The bottom layer: every backend (our decoding loop, an inference engine) yields these, and the service and the
page read them, so it imports neither torch nor any other module of textgen.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

from textgen.core.words import Phrase


@dataclass
class TokenInfo:
    id: int
    text: str
    prob: float  # under the distribution it was drawn from (after temperature, top-k, top-p, min-p)
    alternatives: list[tuple[str, float]]  # the likeliest tokens of that distribution, best first


@dataclass
class TextEvent:
    sample: int
    text: str  # new text for this sample; "" while a partial character or a possible stop sequence waits
    token: TokenInfo | None  # None only for the last piece of text held back for a stop sequence


@dataclass
class Summary:
    texts: list[str]
    tokens: list[int]  # generated per sample
    stop_reasons: list[str]  # per sample: a key of STOP_REASONS
    prompt_tokens: int
    prompt_tokens_cut: int
    time_to_first_token: float
    tokens_per_second: float
    seconds: float
    seed: int
    forward_steps: int
    warnings: list[str] = field(default_factory=list)  # what was changed in the request (a cut prompt, …)
    notes: list[str] = field(default_factory=list)  # how the model works that shaped the text (its context)
    # What TokenInfo.prob is: "sampled", the distribution the token was drawn from (after the controls), or
    # "model", the model's own before the controls (what an engine such as vLLM reports by default).
    probabilities: str = "sampled"

    def stop_description(self) -> str:
        """Why it stopped, in words; per sample when the samples stopped for different reasons."""
        reasons = list(dict.fromkeys(self.stop_reasons))
        if len(reasons) == 1:
            return STOP_REASONS.get(reasons[0], reasons[0])
        return "; ".join(f"sample {i + 1}: {STOP_REASONS.get(r, r)}" for i, r in enumerate(self.stop_reasons))


STOP_REASONS = {
    "length": "reached the maximum number of new tokens",
    "end_of_text": "the model ended the text",
    "stop_sequence": "a stop sequence appeared",
    "cancelled": "stopped by request",
    "no_allowed_token": "the settings left no token it may write (try a larger no-repeat n-gram size)",
}



class Clock:
    """Wall time of a run minus the time it spent suspended at a yield (waiting for its consumer).

    So a model's tokens/s is its own, whether the reader is a fast CLI, a browser, or a comparison that
    advances several models in turn. `with clock:` around a yield leaves that time out.
    """

    def __init__(self):
        self.start = time.perf_counter()
        self.suspended = 0.0
        self._since = 0.0

    def active(self) -> float:
        return time.perf_counter() - self.start - self.suspended

    def __enter__(self) -> None:
        self._since = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.suspended += time.perf_counter() - self._since


@dataclass(frozen=True)
class Waiting:
    """A request waits for a place at its model (textgen.local.batching): `ahead` requests are before it; `over` when
    its turn has come."""

    ahead: int
    over: bool = False

    def words(self) -> str:
        if self.over:
            return ""
        ahead = Phrase("status.queue_next") if self.ahead == 0 else Phrase("status.queue_ahead", count=self.ahead)
        return Phrase("status.queue", ahead=ahead)


@dataclass
class Live:
    """One model's output while it streams, and its numbers, all on one clock: seconds since `started`
    (the moment the request began, start-up wait included: see `arrived_at`), so the figures shown while it
    writes and at the end agree."""

    name: str
    title: str
    started: float = field(default_factory=time.perf_counter)
    text: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)
    summary: Summary | None = None
    status: str = ""  # what it is doing before the first token ("Loading LSTM…")
    error: str | None = None  # why this model could not write, for the person who asked
    load_seconds: float | None = None  # set when this request had to load the model first
    first_token_at: float | None = None
    last_token_at: float | None = None
    waited: float | None = None  # seconds it waited for a place at the model (part of the first token's wait)
    start_wait: float | None = None  # seconds it waited, before anything else, for the server to start the models
    waiting_since: float | None = None

    @classmethod
    def arrived_at(cls, name: str, title: str, arrived: float | None) -> Live:
        """A Live whose clock started when the request arrived (`arrived`, a perf_counter() reading taken before
        it waited for the server to start), so that the first token's wait counts that wait too, and says so."""
        now = time.perf_counter()
        if arrived is None or arrived >= now:
            return cls(name, title)
        return cls(name, title, started=arrived, start_wait=now - arrived)

    @property
    def done(self) -> bool:
        return self.summary is not None or self.error is not None

    def add(self, event: TextEvent | Summary | Waiting) -> None:
        if isinstance(event, Waiting):
            now = time.perf_counter() - self.started
            self.waiting_since = now if self.waiting_since is None else self.waiting_since
            if event.over:
                self.waited = now - self.waiting_since
            self.status = event.words()
            return
        if isinstance(event, Summary):
            self.summary = event
            self.text = event.texts[0]
            return
        if event.sample != 0:
            return
        if event.token is not None:
            now = time.perf_counter() - self.started
            self.first_token_at = now if self.first_token_at is None else self.first_token_at
            self.last_token_at = now
            self.tokens.append(event.token)
        self.text += event.text

    @property
    def tokens_per_second(self) -> float:
        """Tokens after the first over the time they took to arrive (the first token's wait is its own number)."""
        if len(self.tokens) < 2 or not self.last_token_at or self.last_token_at <= self.first_token_at:
            return 0.0
        return (len(self.tokens) - 1) / (self.last_token_at - self.first_token_at)


@dataclass
class ScoreRow:
    """One model's surprise at a text; `error` instead of numbers when that model could not score it."""

    name: str
    title: str
    nats_per_char: float | None = None
    bits_per_char: float | None = None
    ppl_per_token: float | None = None
    tokens: int | None = None
    unknown_chars: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Score:
    """How surprised a model is by a text: per character (fair across tokenizers) and per token."""

    nats_per_char: float
    bits_per_char: float
    ppl: float  # per token
    chars: int
    tokens: int
    unknown_chars: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def is_special_label(text: str) -> bool:
    """Whether a token's text is a special token's label in angle quotes ("⟨end of text⟩", from
    textgen.local.tokenization.SPECIAL_LABELS): words to read, not text the model wrote."""
    return len(text) > 2 and text.startswith("⟨") and text.endswith("⟩")


def shown(text: str) -> str:
    """A token's text as a person can see it: a space as ␣, a newline as ↵, a tab as ⇥, nothing as ∅, and any
    other control character as its code (\\x1b), never raw; a special token's label as it is (its spaces are
    between words, not written: "⟨end␣of␣text⟩" read as code). The one rule for the page, the step view and the
    CLI."""
    if text == "":
        return "∅"
    if is_special_label(text):
        return text
    out = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", out)
