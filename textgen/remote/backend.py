"""A model on an inference engine as a backend: it streams, chats and scores through the engine.

    python app.py --engine http://127.0.0.1:8000/v1                  # every model it serves joins the catalog
    TEXTGEN_ENGINES=http://a:8000/v1,http://b:8000/v1 python app.py   # comma-separated
    python -m textgen generate --engine http://127.0.0.1:8000/v1 --model NAME --prompt "ROMEO:"

The page becomes a thin client of the engine, which holds the weights (on its own GPUs, with tensor
parallelism for big models); this module turns the engine's token stream into the same events, summary and
errors as a local model (textgen/core/events.py), so the rest of the app does not know the difference.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from textgen.core.backend import Capabilities, Entry
from textgen.core.chat import ChatPrompt, messages_prompt, reply_settings
from textgen.core.events import Clock, Score, Summary, TextEvent, TokenInfo
from textgen.core.settings import GenerationSettings, Limits
from textgen.remote.client import (
    Cancelled,
    Connection,
    EngineError,
    HTTPStatusError,
    Timeouts,
    request_json,
    sse_events,
)
from textgen.remote.discovery import Engine, describe_failure, engine

# Controls the engine applies if it can; one it rejects is dropped, the request retried, and a warning said.
# (vLLM takes all of these: top_k, min_p and repetition_penalty are its extensions of the OpenAI API.)
CONTROL_FIELDS = {"seed": "the seed", "top_p": "top-p", "top_k": "top-k", "min_p": "min-p",
                  "repetition_penalty": "the repetition penalty", "stop": "stop sequences"}


# Extras that only make the result nicer (token ids, the usage line): dropped without a word when refused.
QUIET_FIELDS = ("return_token_ids", "stream_options")


@dataclass
class RemoteModel:
    """What `ModelManager.get` gives for an engine's model: a backend (textgen/core/backend.py) with no weights, just
    where it runs. Asking it for weights (the step-by-step view's) is refused in words."""

    entry: Entry  # the catalog entry it opened (name, title, source, model_id)
    load_seconds: float = 0.0
    nbytes = 0  # it takes no memory here: the memory budget never evicts for it
    n_params = 0

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def engine(self) -> Engine:
        return engine(self.entry.source)

    @property
    def device(self) -> str:
        return f"engine at {self.engine.label}"

    @property
    def context(self) -> int | None:
        info = (self.engine.answer.models or {}).get(self.entry.model_id) or {}
        return info.get("max_model_len") if isinstance(info.get("max_model_len"), int) else None

    @property
    def model(self):
        raise EngineError(f"{self.entry.title} runs on an inference engine, and this needs the model's weights here. "
                          "Pick a local model.")

    tokenizer = model  # the same: no tokenizer here either

    def info(self) -> dict | None:
        # The page's model note describes local weights (parameters, device); an engine's model has none here and
        # its title already names the engine.
        return None

    # -- the backend protocol (textgen/core/backend.py) ------------------------------------------------------------

    # The engine holds the weights; the probabilities it reports are the model's own, before the controls; only
    # the engine knows whether the model has a chat template (it refuses a chat in words when it has none).
    capabilities = Capabilities(runs_here=False, chat_template=None, probabilities="model")

    def set_limits(self, limits: Limits) -> None:
        pass  # the engine schedules its own requests; this machine only bounds how many stream at once

    def stream(self, settings: GenerationSettings, cancel: threading.Event | None = None,
               prompt_ids: list[int] | None = None, patience: Callable[[], float] | None = None,
               ) -> Iterator[TextEvent | Summary]:
        """TextEvents as the engine's tokens arrive, then one Summary, from its `/completions` (read as the engine
        sends them, whatever the reader's `patience`: the engine paces its stream itself)."""
        yield from _RemoteRun(self, settings, cancel or threading.Event(), prompt_ids).events()

    def chat(self, messages: object, system: object, settings: GenerationSettings,
             cancel: threading.Event | None = None, limits: Limits | None = None,
             patience: Callable[[], float] | None = None,
             ) -> Iterator[ChatPrompt | TextEvent | Summary]:
        """The reply from the engine's `/chat/completions`: the engine applies the model's own chat template and
        fits the conversation to its context, so it is sent the cleaned messages as they are."""
        warnings: list[str] = []
        prompt = messages_prompt(messages, system, settings.max_new_tokens, limits, warnings)
        yield prompt
        yield from _RemoteRun(self, reply_settings(settings, prompt, warnings), cancel or threading.Event(), None,
                              list(prompt.messages)).events()

    def score(self, text: str, progress: Callable[[float], None] | None = None) -> Score:
        """As a local model scores (textgen.local.evaluate), computed by the engine: see `score` below."""
        return score(self, text)


class _RemoteRun:
    def __init__(self, model: RemoteModel, settings: GenerationSettings, cancel: threading.Event,
                 prompt_ids: list[int] | None, messages: list[dict[str, str]] | None = None):
        self.model, self.settings, self.cancel = model, settings, cancel
        self.messages = messages
        self.eng = model.engine
        self.timeouts = Timeouts.from_env()
        self.warnings = list(settings.warnings)
        self.seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        self.prompt: str | list[int] = list(prompt_ids) if prompt_ids else settings.prompt
        if not self.prompt and messages is None:
            # Engines refuse an empty prompt (vLLM: "must be provided and non-empty"); a new line starts a text.
            self.prompt = "\n"
            self.warnings.append("the prompt was empty, so the model starts a new text from scratch")

    @property
    def path(self) -> str:
        return "/chat/completions" if self.messages is not None else "/completions"

    def body(self) -> dict:
        s = self.settings
        body: dict[str, Any] = {
            "model": self.model.entry.model_id, "max_tokens": s.max_new_tokens,
            "temperature": s.temperature, "stream": True, "n": s.num_samples, "seed": self.seed,
            "return_token_ids": True, "stream_options": {"include_usage": True},
        }
        # The chosen token's probability is wanted even when no alternatives are shown. Chat asks for log-
        # probabilities as OpenAI's chat API does (a flag and a count, at most 20).
        if self.messages is not None:
            body.update(messages=self.messages, logprobs=True, top_logprobs=min(s.alternatives, 20))
        else:
            body.update(prompt=self.prompt, logprobs=max(1, s.alternatives))
        # Controls at their "off" value are not sent: an engine without them then has nothing to refuse.
        if s.top_p < 1.0:
            body["top_p"] = s.top_p
        if s.top_k:
            body["top_k"] = s.top_k
        if s.min_p > 0:
            body["min_p"] = s.min_p
        if s.repetition_penalty != 1.0:
            body["repetition_penalty"] = s.repetition_penalty
        if s.stop:
            body["stop"] = list(s.stop)
        if s.no_repeat_ngram_size:
            self.warnings.append("the no-repeat n-gram size is not supported by this engine and was not applied")
        return body

    def open(self, body: dict) -> Connection:
        """The stream's connection, once the engine has accepted the request; a control it refuses (HTTP 400
        naming that field) is dropped with a warning and the request sent again."""
        while True:
            try:
                conn = Connection(self.eng.url + self.path, "POST", body, self.timeouts, self.cancel)
            except ConnectionError as err:
                self.eng.mark_down(err)
                raise self.failure(err, "starting") from None
            try:
                status, headers = conn.response(self.timeouts.first_token)
                if status == 200:
                    return conn
                err = conn.error(self.timeouts.token)
            except BaseException:
                conn.close()
                raise
            conn.close()
            refused = _refused_field(err, body)
            if refused is None:
                raise self.failure(err, "starting")
            body = {k: v for k, v in body.items() if k != refused}
            if refused in CONTROL_FIELDS:
                self.warnings.append(f"the engine refused {CONTROL_FIELDS[refused]}, so it was not applied "
                                     f"({err.message[:120]})")

    def failure(self, err: Exception, when: str) -> EngineError:
        title = self.model.entry.title
        if self.messages is not None and isinstance(err, HTTPStatusError) and (
                (err.status in (400, 422) and re.search(r"chat.?template", err.message, re.I))
                or (err.status == 404 and "model" not in err.message.lower())):
            why = ("has no chat template on its engine" if err.status != 404
                   else "runs on an engine that does not offer chat")  # no /chat/completions route at all
            return EngineError(f"{title} {why}, so it cannot chat. Use the Write tab for it, or pick a chat model.",
                               detail=f"the engine at {self.eng.label} refused a chat request: {err.message}")
        if isinstance(err, HTTPStatusError) and err.status == 400 and re.search(r"context|max_model_len|too long",
                                                                             err.message, re.I):
            return EngineError(f"{title}: the prompt and the length asked for are more than the model can take "
                               f"({err.message[:200]}). Shorten the prompt or ask for fewer tokens.",
                               detail=f"the engine at {self.eng.label} refused the request: {err.message}")
        problem, detail = describe_failure(self.eng, err, f"{when} a text with {self.model.entry.model_id}")
        middle = " in the middle of the text" if when == "streaming" else ""
        if when == "streaming" and isinstance(err, ConnectionError):
            problem = f"the engine at {self.eng.label} stopped answering"  # it was reached: it went away
        return EngineError(f"{title} could not write{middle}: {problem}. Try again later or pick another model.",
                           detail=detail)

    def events(self) -> Iterator[TextEvent | Summary]:

        s = self.settings
        clock = Clock()
        texts = [_Text() for _ in range(s.num_samples)]
        counts = [0] * s.num_samples
        reasons: list[str | None] = [None] * s.num_samples
        usage: dict = {}
        ttft = None
        conn = None
        try:
            conn = self.open(self.body())
            for data in sse_events(conn.body()):
                if data.strip() == "[DONE]":
                    break
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError("a stream event that is not a JSON object")
                if "error" in chunk:  # vLLM reports a failure inside a started stream as an event
                    e = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
                    raise HTTPStatusError(int(e.get("code") or 500), str(e.get("message"))[:300], None)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    if self.messages is not None:
                        choice = _as_completion(choice)
                    row = int(choice.get("index", 0))
                    if not 0 <= row < s.num_samples:
                        raise ValueError(f"a choice index {row} that was not asked for")
                    for event in self._choice_events(row, choice, texts[row], TextEvent):
                        if event.token is not None:
                            counts[row] += 1
                            ttft = clock.active() if ttft is None else ttft
                        with clock:  # time spent waiting for our reader is not the engine's
                            yield event
                    if choice.get("finish_reason"):
                        reasons[row] = _stop_reason(choice)
                conn.wait = self.timeouts.token  # after the first event, the shorter wait between tokens
                if self.cancel.is_set():
                    break
            else:
                raise ConnectionError("the stream ended before its end mark")
        except Cancelled:
            pass
        except (OSError, ValueError, HTTPStatusError) as err:  # ConnectionError and TimeoutError are OSErrors
            raise self.failure(err, "streaming" if any(counts) else "starting") from None
        finally:
            if conn is not None:
                conn.close()  # Stop, a dropped reader or an error: the engine aborts the request
        self.eng.mark_up()
        cancelled = self.cancel.is_set()
        for row, text in enumerate(texts):
            tail = text.flush()
            if tail:
                with clock:
                    yield TextEvent(row, tail, None)
            reasons[row] = reasons[row] or ("cancelled" if cancelled else "length")
        seconds = clock.active()
        if s.temperature != 1.0 or s.top_k or s.top_p < 1.0 or s.min_p > 0 or s.repetition_penalty != 1.0:
            self.warnings.append("the probabilities shown are the model's own, before the sampling controls "
                                 "(as the engine reports them)")
        yield Summary(
            texts=[t.text for t in texts], tokens=counts, stop_reasons=reasons,
            prompt_tokens=int(usage.get("prompt_tokens") or 0), prompt_tokens_cut=0,
            time_to_first_token=ttft or 0.0, tokens_per_second=sum(counts) / seconds if seconds > 0 else 0.0,
            seconds=seconds, seed=self.seed, forward_steps=0, warnings=self.warnings, probabilities="model",
        )

    def _choice_events(self, row: int, choice: dict, text: _Text, event_cls) -> Iterator[TextEvent]:
        """One TextEvent per token of this piece of the stream, each with its TokenInfo."""

        lp = choice.get("logprobs") or {}
        tokens = lp.get("tokens") or []
        logprobs = lp.get("token_logprobs") or []
        tops = lp.get("top_logprobs") or []
        ids = choice.get("token_ids") or []
        raw_bytes = lp.get("bytes") or []  # per-token UTF-8 bytes, from engines that give them
        piece = text.push(str(choice.get("text") or ""), raw_bytes if len(raw_bytes) == len(tokens) else None)
        if not tokens:
            if piece:
                yield event_cls(row, piece, None)
            return
        # Each token's own text: the text this piece released, shared as the engine's token strings say when they
        # add up to it; otherwise all of it goes to the last token (a split character: "" and then the whole).
        k = self.settings.alternatives
        parts = [_token_text(t) for t in tokens]
        if "".join(parts) != piece:
            parts = [""] * (len(tokens) - 1) + [piece]
        for i in range(len(tokens)):
            lp_i = logprobs[i] if i < len(logprobs) and isinstance(logprobs[i], (int, float)) else None
            prob = math.exp(lp_i) if lp_i is not None else 0.0
            alternatives = []
            top = tops[i] if k and i < len(tops) and isinstance(tops[i], dict) else {}
            ranked = sorted(((v, t) for t, v in top.items() if isinstance(v, (int, float))), reverse=True)
            # "" is vLLM's text for a piece of a character; a local model's view shows those as U+FFFD
            alternatives = [(_token_text(t) or "\ufffd", round(math.exp(v), 5)) for v, t in ranked[:k]]
            token_id = ids[i] if i < len(ids) and isinstance(ids[i], int) else -1
            yield event_cls(row, parts[i], TokenInfo(token_id, parts[i], round(prob, 5), alternatives))


def _as_completion(choice: dict) -> dict:
    """A chat stream's choice in the shape of a completion stream's, so that one reader serves both: the delta's
    content as text, and the per-token log-probabilities (chat: a list of {token, logprob, bytes, top_logprobs})
    as the completion's parallel lists."""
    content = (choice.get("logprobs") or {}).get("content") or []
    rows = [c for c in content if isinstance(c, dict)]
    out = {k: v for k, v in choice.items() if k not in ("delta", "logprobs")}
    out["text"] = (choice.get("delta") or {}).get("content") or ""
    out["logprobs"] = {
        "tokens": [r.get("token") for r in rows],
        "token_logprobs": [r.get("logprob") for r in rows],
        "top_logprobs": [{t.get("token"): t.get("logprob") for t in r.get("top_logprobs") or []
                          if isinstance(t, dict) and isinstance(t.get("token"), str)} for r in rows],
        **({"bytes": [r.get("bytes") for r in rows]} if rows and all("bytes" in r for r in rows) else {}),
    }
    return out


def _token_text(token: object) -> str:
    # vLLM writes a token that is only part of a UTF-8 character as "" (its bytes do not decode on their own).
    return token if isinstance(token, str) else ""


class _Text:
    """A sample's text as the engine releases it. A character split across tokens must show whole: from the
    tokens' bytes when the engine gives them (decoded incrementally), else from the engine's text, holding back a
    trailing U+FFFD (an engine's mark for "the rest of this character is still to come") until the next piece."""

    def __init__(self):
        self.text = ""
        self.held = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, piece: str, token_bytes: list | None = None) -> str:
        if token_bytes is not None and all(isinstance(b, list) for b in token_bytes):
            out = "".join(self.decoder.decode(bytes(b)) for b in token_bytes)
        else:
            piece = self.held + piece
            self.held = ""
            stripped = piece.rstrip("\ufffd")
            if stripped != piece and len(piece) - len(stripped) <= 3:  # at most 3 bytes of a 4-byte character
                piece, self.held = stripped, piece[len(stripped):]
            out = piece
        self.text += out
        return out

    def flush(self) -> str:
        out, self.held = self.held + self.decoder.decode(b"", final=True), ""
        self.text += out
        return out


def _refused_field(err: HTTPStatusError, body: dict) -> str | None:
    """The optional field an engine's HTTP 400/422 refused, when it names one we may drop."""
    if err.status not in (400, 422):
        return None
    droppable = [f for f in (*CONTROL_FIELDS, *QUIET_FIELDS) if f in body]
    named = (err.param or "").rsplit(".", 1)[-1]
    if named in droppable:
        return named
    # Engines that say it in words only: "Unrecognized request argument supplied: top_k" (OpenAI), "extra fields".
    for f in droppable:
        if re.search(rf"\b{f}\b", err.message):
            return f
    return None


def _stop_reason(choice: dict) -> str:
    reason = choice.get("finish_reason")
    if reason == "length":
        return "length"
    if reason == "stop":
        # vLLM: stop_reason is the stop string that matched; None (or a token id) when the model ended the text.
        return "stop_sequence" if isinstance(choice.get("stop_reason"), str) else "end_of_text"
    if reason == "abort":
        return "cancelled"
    return "end_of_text"


def score(model: RemoteModel, text: str, context: str = "\n") -> Score:
    """Per-character surprise of `text` as the engine computes it: the prompt's own log-probabilities
    (`echo` with `max_tokens` 0), the text given a new line as context as in textgen.local.evaluate.

    A text longer than the model's context is scored in windows, as textgen.local.evaluate does for local models:
    each window's new half is scored with the half before it as context. The engine's tokenizer is not here,
    so a window is counted in characters (a token covers at least one character of ASCII text), and halved
    again if the engine still finds it too long."""
    window = model.context or 0
    while True:
        try:
            if window <= 0 or len(context) + len(text) <= window:
                nll, tokens = _score_piece(model, context, text)
            else:
                nll, tokens = _score_windows(model, text, context, window)
            break
        except _TooLong as err:
            window = (window or len(context) + len(text)) // 2
            if window < MIN_SCORE_WINDOW:
                raise EngineError(f"{model.entry.title}: the text is longer than the model can take at once, even "
                                  "in pieces. Score a shorter text.",
                                  detail=f"the engine at {model.engine.label}: {err}") from None
    if tokens == 0:
        raise EngineError(f"{model.entry.title}: the engine scored none of the text.")
    return Score(nats_per_char=nll / len(text), bits_per_char=nll / len(text) / math.log(2),
                 ppl=math.exp(min(nll / tokens, 700.0)), chars=len(text), tokens=tokens)


MIN_SCORE_WINDOW = 16  # characters: below this a window says too little to be worth scoring


class _TooLong(Exception):
    """The engine found a prompt longer than its model's context."""


def _score_windows(model: RemoteModel, text: str, context: str, window: int) -> tuple[float, int]:
    """(nats, tokens) over `text`, in windows of `window` characters whose first half is context only."""
    history = window // 2
    nll, tokens, pos = 0.0, 0, 0
    while pos < len(text):
        end = min(len(text), pos + window - history)
        before = text[max(0, pos - history):pos] if pos else context
        piece_nll, piece_tokens = _score_piece(model, before, text[pos:end])
        nll, tokens, pos = nll + piece_nll, tokens + piece_tokens, end
    return nll, tokens


def _score_piece(model: RemoteModel, context: str, text: str) -> tuple[float, int]:
    """(nats, tokens) of `text` after `context`, from one echo request; only tokens that cover some of `text`
    count (the first token has no log-probability: nothing comes before it, which is why context is there)."""
    eng = model.engine
    title = model.entry.title
    timeouts = Timeouts.from_env()
    body = {"model": model.entry.model_id, "prompt": context + text, "max_tokens": 0, "echo": True, "logprobs": 0,
            "temperature": 0}
    try:
        doc = request_json(eng.url + "/completions", "POST", body, timeout=max(timeouts.first_token, 30.0))
        lp = doc["choices"][0]["logprobs"]
        offsets, logprobs = lp["text_offset"], lp["token_logprobs"]
    except HTTPStatusError as err:
        if err.status == 400 and re.search(r"context|max_model_len|too long", err.message, re.I):
            raise _TooLong(err.message) from None
        if err.status in (400, 404, 422) and re.search(r"echo|logprobs|max_tokens", err.message + (err.param or "")):
            raise EngineError(f"{title}: scoring a text is not supported by this engine.",
                              detail=f"the engine at {eng.label} cannot return prompt log-probabilities: "
                                     f"{err.message}") from None
        problem, detail = describe_failure(eng, err, "scoring a text")
        raise EngineError(f"{title} could not score the text: {problem}.", detail=detail) from None
    except (OSError, ValueError) as err:
        problem, detail = describe_failure(eng, err, "scoring a text")
        raise EngineError(f"{title} could not score the text: {problem}.", detail=detail) from None
    except (KeyError, IndexError, TypeError):
        raise EngineError(f"{title}: scoring a text is not supported by this engine.",
                          detail=f"the engine at {eng.label} gave no prompt log-probabilities for echo") from None
    nll, tokens = 0.0, 0
    for i, value in enumerate(logprobs[: len(offsets)]):
        end = offsets[i + 1] if i + 1 < len(offsets) else len(context) + len(text)
        if end > len(context) and value is not None:
            nll -= float(value)
            tokens += 1
    return nll, tokens

