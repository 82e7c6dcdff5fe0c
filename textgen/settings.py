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
from typing import Any


class RequestError(Exception):
    """What went wrong with a request, in words for the person who sent it (raised by textgen.playground)."""


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
    concurrency: int = 2  # generations running at once; more wait in the queue
    queue_size: int = 64  # requests waiting before new ones are told the server is busy

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


# name: (lowest, highest, whole number?, what it does) -- the ranges the page's sliders show too.
CONTROLS: dict[str, tuple[float, float, bool, str]] = {
    "temperature": (0.0, 2.0, False, "0 always picks the likeliest token; higher is more adventurous"),
    "top_k": (0, 500, True, "sample only from the k likeliest tokens; 0 turns it off"),
    "top_p": (0.01, 1.0, False, "sample only from the likeliest tokens that together reach this probability"),
    "min_p": (0.0, 1.0, False, "drop tokens less likely than this fraction of the likeliest one"),
    "repetition_penalty": (1.0, 2.0, False, "above 1 makes repeating earlier tokens less likely"),
    "no_repeat_ngram_size": (0, 10, True, "never repeat a run of this many tokens; 0 turns it off"),
    "max_new_tokens": (1, None, True, "how many tokens to write at most"),
    "num_samples": (1, None, True, "how many different continuations to write"),
    "alternatives": (0, 10, True, "how many alternative tokens to report per step"),
}
MIN_TEMPERATURE = 0.01
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class GenerationSettings:
    prompt: str
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    num_samples: int = 1
    alternatives: int = 5
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
            raise InvalidRequest(f"unknown setting(s): {', '.join(sorted(unknown))}")
        warnings: list[str] = []
        values: dict[str, Any] = {"prompt": clean_text(prompt, limits.max_prompt_chars, "prompt", warnings)}
        defaults = cls(prompt="")
        bounds = {"max_new_tokens": limits.max_new_tokens, "num_samples": limits.max_samples}
        for name, (low, high, whole, _) in CONTROLS.items():
            raw = controls.get(name)
            if raw is None:
                continue
            values[name] = _number(name, raw, low, bounds.get(name, high), whole)
        values.setdefault("max_new_tokens", min(defaults.max_new_tokens, limits.max_new_tokens))
        if 0 < values.get("temperature", defaults.temperature) < MIN_TEMPERATURE:
            # Dividing logits by a tiny temperature overflows to inf; this close to 0 it is greedy anyway.
            values["temperature"] = 0.0
            warnings.append(f"a temperature below {MIN_TEMPERATURE} was treated as 0 (always the likeliest token)")
        values["seed"] = _seed(controls.get("seed"))
        values["stop"] = _stops(controls.get("stop"), limits)
        return replace(defaults, **values, warnings=tuple(warnings))


def clean_text(text: Any, max_chars: int, what: str, warnings: list[str]) -> str:
    """Text from a request, checked and tidied: a str within `max_chars`, with control characters and lone
    surrogates removed (noted in `warnings`) and newlines normalised."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InvalidRequest(f"the {what} must be text, got {type(text).__name__}")
    if len(text) > max_chars:
        raise InvalidRequest(f"the {what} has {len(text):,} characters; the limit is {max_chars:,}. Shorten it.")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cleaned = _BAD_CHARS.sub("", text)
    if cleaned != text:
        warnings.append(f"{len(text) - len(cleaned)} control or invalid character(s) were removed from the {what}")
    return cleaned


def _number(name: str, raw: Any, low: float, high: float | None, whole: bool) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                raise InvalidRequest(f"{name} must be a number, got {raw[:40]!r}") from None
        else:
            raise InvalidRequest(f"{name} must be a number, got {type(raw).__name__}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise InvalidRequest(f"{name} must be a finite number, got {raw}")
    if whole and raw != int(raw):
        raise InvalidRequest(f"{name} must be a whole number, got {raw}")
    # compared as given (ints stay ints: an int too large for a float is still just out of range)
    if raw < low or (high is not None and raw > high):
        upper = f"{high:g}" if high is not None else "no limit"
        shown = f"{raw:g}" if isinstance(raw, float) or abs(raw) < 10**15 else "a number that large"
        raise InvalidRequest(f"{name} must be between {low:g} and {upper}, got {shown}")
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
        raise InvalidRequest("stop must be a text or a list of texts")
    stops = tuple(s for s in raw if s)
    if len(stops) > limits.max_stop_sequences:
        raise InvalidRequest(f"at most {limits.max_stop_sequences} stop sequences, got {len(stops)}")
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise InvalidRequest(f"each stop sequence may have at most {limits.max_stop_chars} characters")
    return stops
