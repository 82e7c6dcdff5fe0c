"""Generation controls and the limits that every request is checked against.

Every public entry point (the page, its API, the CLI) builds its settings with `GenerationSettings.parse`,
which accepts untrusted values (the Gradio API bypasses every slider bound) and either returns clean
settings or raises `InvalidRequest` with a message fit for the person who sent them.

The operator sets the limits with environment variables, e.g. TEXTGEN_MAX_NEW_TOKENS=2000.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from textgen.core.words import Phrase, say

# The Decoding view's bounds (textgen.local.decoding): beams or samples, and tokens a text writes. Here, without
# torch, so that the page is laid out before torch is imported.
DECODE_MAX_WIDTH = 8
DECODE_MAX_NEW_TOKENS = 64  # a longer tree stops being readable (and its nodes grow as width² x tokens)


def data_root() -> Path:
    """The app's own folder for what it writes (GGUF conversions, models visitors train): `$TEXTGEN_CACHE`, by default
    `~/.cache/textgen`."""
    base = os.environ.get("TEXTGEN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "textgen"
    return Path(base).expanduser()


class RequestError(Exception):
    """What went wrong with a request, in words for the person who sent it (raised by textgen.service.playground)."""


class InvalidRequest(ValueError):
    """A request that cannot be served as sent; the message says which value and why."""


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 10_000
    max_new_tokens: int = 1_000
    max_samples: int = 4
    max_stop_sequences: int = 4
    max_stop_chars: int = 40
    max_score_chars: int = 100_000
    max_compare: int = 4
    concurrency: int = 2  # requests of one kind computing outside a model's scheduler at once (the step view)
    # Rows one model writes together in a step (textgen.local.batching), and requests waiting for a place there beyond
    # them. 32: on this 2-core CPU a shipped LSTM's step of 32 rows costs 5 ms against 0.6 ms for one.
    max_batch: int = 32
    max_waiting: int = 32
    queue_size: int = 64  # requests waiting before new ones are told the server is busy
    memory_budget_mb: int = 6144  # loaded models beyond this are dropped, least recently used first

    @property
    def writers(self) -> int:
        """Page requests that may be in progress at once: a full batch, its queue, and the other slots."""
        return self.max_batch + self.max_waiting + self.concurrency

    @classmethod
    def from_env(cls) -> Limits:
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"TEXTGEN_{f.name.upper()}")
            if raw is not None:
                try:
                    values[f.name] = max(1, int(raw))
                except ValueError:
                    raise ValueError(f"TEXTGEN_{f.name.upper()} must be a whole number, got {raw!r}") from None
        return cls(**values)


@dataclass(frozen=True)
class Control:
    """One generation control: everything the page, the CLI and validation need to know about it.

    `default` is what a request that leaves the control out gets (filters off); the page starts at the
    "Balanced" style instead. `high=None` means "the operator's limit" (see `bounded`); `presets` gives the
    value each named style sets (a control a style does not mention keeps its value).
    """

    name: str
    low: float
    high: float | None
    step: float
    default: float
    whole: bool = False
    presets: tuple[tuple[str, float], ...] = ()
    limit: str | None = None  # the Limits field that caps it, when high is None

    def bounded(self, limits: Limits) -> Control:
        """This control with the operator's cap as its upper end (and a default inside the range)."""
        if self.limit is None:
            return self
        high = max(getattr(limits, self.limit), self.low)
        return replace(self, high=high, default=min(self.default, high))

    @property
    def label(self) -> str:
        """Its name as the page shows it (English; the page translates by the key `control.<name>.label`)."""
        return say(f"control.{self.name}.label")

    @property
    def help(self) -> str:
        """What it does, in plain words for someone who has never heard of a token (`control.<name>.help`)."""
        return say(f"control.{self.name}.help")

    def preset(self, style: str) -> float | None:
        return dict(self.presets).get(style)

    @property
    def start(self) -> float:
        """Where the page's slider starts: the Balanced style's value, else the default."""
        value = self.preset("Balanced")
        return self.default if value is None else value


PRESETS = ("Precise", "Balanced", "Creative")
WRITE_STYLE = "Balanced"  # Write's first style for a model that writes text: the control table's defaults

# In the order the decoding loop applies them (see textgen.local.generation), then the length and batch controls.
# name, low, high (None: the operator's limit), step, default; their words are in textgen/locales, by the keys
# control.<name>.label and control.<name>.help.
CONTROL_TABLE: tuple[Control, ...] = (
    Control("repetition_penalty", 1.0, 2.0, 0.01, 1.0,
            presets=(("Precise", 1.1), ("Balanced", 1.05), ("Creative", 1.0))),
    Control("no_repeat_ngram_size", 0, 10, 1, 0, whole=True),
    Control("temperature", 0.0, 2.0, 0.05, 0.8, presets=(("Precise", 0.3), ("Balanced", 0.8), ("Creative", 1.1))),
    Control("top_k", 0, 500, 1, 0, whole=True, presets=(("Precise", 20), ("Balanced", 0), ("Creative", 0))),
    Control("top_p", 0.01, 1.0, 0.01, 1.0, presets=(("Precise", 0.9), ("Balanced", 0.95), ("Creative", 1.0))),
    Control("min_p", 0.0, 1.0, 0.01, 0.0, presets=(("Precise", 0.0), ("Balanced", 0.0), ("Creative", 0.05))),
    Control("max_new_tokens", 1, None, 1, 200, whole=True, limit="max_new_tokens"),
    Control("num_samples", 1, None, 1, 1, whole=True, limit="max_samples"),
    Control("alternatives", 0, 10, 1, 5, whole=True),
)
CONTROLS: dict[str, Control] = {c.name: c for c in CONTROL_TABLE}
# The sliders of the Write tab, in the order the page shows them.
SLIDERS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram_size", "max_new_tokens")


def bounded_controls(limits: Limits | None = None) -> dict[str, Control]:
    """The control table with the operator's limits applied."""
    limits = limits or Limits()
    return {c.name: c.bounded(limits) for c in CONTROL_TABLE}


def preset_values(style: str, names: tuple[str, ...] = SLIDERS) -> dict[str, float]:
    """The values a style sets, for the named controls that it touches."""
    return {n: CONTROLS[n].preset(style) for n in names if CONTROLS[n].preset(style) is not None}


# Chat's own style, "Answers": a small assistant answers plain questions best close to its first choice and with no
# repetition penalty, which also penalises the question's own words ("the capital of France is" was steered off
# "France" into French). SmolLM2, 28 plain questions x 10 seeds, benchmarks/chat_accuracy.py: temperature 0.1 got
# 222 of 280 right and 21 questions right in at least 9 tries of 10, against 206 and 18 at 0.3; greedy answers 22
# of the 28 but writes the same reply every time, which hides how the model chooses. See benchmarks/CHAT.md.
CHAT_STYLE_NAME = "Answers"
# The Chat tab's system prompt, shown in its box. At temperature 0.3 and no seed fixed, SmolLM2 answered 110 of
# 140 plain questions right with it against 95 with the one before ("…Answer questions correctly and briefly."),
# and 49 of 70 against 44 on 14 questions written after it was chosen; its own prompt ("You are a helpful AI
# assistant named SmolLM…") did worst. benchmarks/CHAT.md.
CHAT_SYSTEM_PROMPT = "You are a helpful assistant. Give the correct answer first, in a few words."
CHAT_STYLE: dict[str, float] = {"temperature": 0.1, "top_k": 20, "top_p": 0.9, "min_p": 0.0, "repetition_penalty": 1.0}


# Every style a page offers: the control table's presets and Chat's own, for questions to an assistant.
STYLES = (*PRESETS, CHAT_STYLE_NAME)


def style_values(style: str) -> dict[str, float]:
    """The values a style sets, for the sliders it touches (the others keep theirs); {} for an unknown style."""
    return dict(CHAT_STYLE) if style == CHAT_STYLE_NAME else preset_values(style)


def matching_style(values: dict[str, float], styles: tuple[str, ...] = STYLES) -> str | None:
    """The first of `styles` whose values these are, or None once a slider has been moved off every one."""
    for style in styles:
        wanted = style_values(style)
        if wanted and all(abs(float(values.get(n, math.nan)) - v) < 1e-9 for n, v in wanted.items()):
            return style
    return None


MIN_TEMPERATURE = 0.01
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class GenerationSettings:
    prompt: str
    # The defaults are the control table's: one place for each (a request that leaves a control out).
    max_new_tokens: int = CONTROLS["max_new_tokens"].default
    temperature: float = CONTROLS["temperature"].default
    top_k: int = CONTROLS["top_k"].default
    top_p: float = CONTROLS["top_p"].default
    min_p: float = CONTROLS["min_p"].default
    repetition_penalty: float = CONTROLS["repetition_penalty"].default
    no_repeat_ngram_size: int = CONTROLS["no_repeat_ngram_size"].default
    stop: tuple[str, ...] = ()
    seed: int | None = None
    num_samples: int = CONTROLS["num_samples"].default
    alternatives: int = CONTROLS["alternatives"].default
    warnings: tuple[str, ...] = ()  # adjustments made while parsing, reported with the result

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def parse(cls, prompt: Any, limits: Limits | None = None, **controls: Any) -> GenerationSettings:
        """Clean settings from untrusted values, or InvalidRequest. None means 'use the default'."""
        limits = limits or Limits()
        unknown = set(controls) - {f.name for f in fields(cls)} - {"prompt"}
        if unknown:
            raise InvalidRequest(Phrase("error.unknown_settings", names=", ".join(sorted(unknown))))
        warnings: list[str] = []
        values: dict[str, Any] = {"prompt": clean_text(prompt, limits.max_prompt_chars, "prompt", warnings)}
        defaults = cls(prompt="")
        for control in bounded_controls(limits).values():
            raw = controls.get(control.name)
            if raw is None:
                continue
            values[control.name] = _number(control.name, raw, control.low, control.high, control.whole)
        values.setdefault("max_new_tokens", min(defaults.max_new_tokens, limits.max_new_tokens))
        if 0 < values.get("temperature", defaults.temperature) < MIN_TEMPERATURE:
            # Dividing logits by a tiny temperature overflows to inf; this close to 0 it is greedy anyway.
            values["temperature"] = 0.0
            warnings.append(Phrase("error.temperature_zero", low=MIN_TEMPERATURE))
        values["seed"] = _seed(controls.get("seed"))
        values["stop"] = _stops(controls.get("stop"), limits)
        return replace(defaults, **values, warnings=tuple(warnings))


def clean_text(text: Any, max_chars: int, what: str, warnings: list[str]) -> str:
    """Text from a request, checked and tidied: a str within `max_chars`, with control characters and lone
    surrogates removed (noted in `warnings`) and newlines normalised."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InvalidRequest(Phrase("error.text_type", what=_what(what), kind=type(text).__name__))
    if len(text) > max_chars:
        raise InvalidRequest(Phrase("error.text_too_long", what=_what(what), chars=len(text), limit=max_chars))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cleaned = _BAD_CHARS.sub("", text)
    if cleaned != text:
        warnings.append(Phrase("error.removed_chars", count=len(text) - len(cleaned), what=_what(what)))
    return cleaned


def _what(what: str) -> str:
    """The name of a text in a message ("prompt", "message", …), in the visitor's language where the catalog has it."""
    key = {"prompt": "what.prompt", "message": "what.message", "text": "what.text", "system prompt": "what.system"}
    return Phrase(key[what]) if what in key else what


def _number(name: str, raw: Any, low: float, high: float | None, whole: bool) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                raise InvalidRequest(Phrase("error.not_number", name=name, got=repr(raw[:40]))) from None
        else:
            raise InvalidRequest(Phrase("error.not_number", name=name, got=type(raw).__name__))
    if isinstance(raw, float) and not math.isfinite(raw):
        raise InvalidRequest(Phrase("error.not_finite", name=name, got=raw))
    if whole and raw != int(raw):
        raise InvalidRequest(Phrase("error.not_whole", name=name, got=raw))
    # compared as given (ints stay ints: an int too large for a float is still just out of range)
    if raw < low or (high is not None and raw > high):
        upper = Phrase("error.no_limit") if high is None else f"{high:g}"
        shown = f"{raw:g}" if isinstance(raw, float) or abs(raw) < 10**15 else Phrase("error.too_large")
        raise InvalidRequest(Phrase("error.out_of_range", name=name, low=f"{low:g}", high=upper, got=shown))
    return int(raw) if whole else float(raw)


def _seed(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = int(raw.strip())  # as an int, not a float: large seeds keep every digit
        except ValueError:
            pass  # _number below explains what is wrong with it
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw < 0:
        return None  # a negative seed (the page's -1) means "pick one at random"
    return int(_number("seed", raw, 0, 2**63 - 1, True))


def _stops(raw: Any, limits: Limits) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(s, str) for s in raw):
        raise InvalidRequest(Phrase("error.stop_type"))
    stops = tuple(s for s in raw if s)
    if len(stops) > limits.max_stop_sequences:
        raise InvalidRequest(Phrase("error.stop_count", limit=limits.max_stop_sequences, count=len(stops)))
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise InvalidRequest(Phrase("error.stop_chars", limit=limits.max_stop_chars))
    return stops
