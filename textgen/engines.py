"""Models served by another process: an OpenAI-compatible inference engine such as vLLM.

The page becomes a thin client of the engine, which holds the weights (on its own GPUs, with tensor
parallelism for big models); this module turns the engine's token stream into the same events, summary and
errors as a local model, so the rest of the app does not know the difference.

    python app.py --engine http://127.0.0.1:8000/v1                  # every model it serves joins the catalog
    TEXTGEN_ENGINES=http://a:8000/v1,http://b:8000/v1 python app.py   # comma-separated
    python -m textgen models --engine http://127.0.0.1:8000/v1
    python -m textgen generate --engine http://127.0.0.1:8000/v1 --model NAME --prompt "ROMEO:"
    python -m textgen.engines http://127.0.0.1:8000/v1                # what it serves, or why it cannot be reached

A catalog file (`--catalog FILE`) may also name one model of an engine:
`{"name": "big", "engine": "http://host:8000/v1", "model": "meta-llama/Llama-3.1-70B", "description": "..."}`.
`$TEXTGEN_ENGINE_API_KEY`, when set, is sent to every engine as a bearer token; it is never shown or logged.

The HTTP client is the standard library's `socket` (and `ssl`), not http.client or httpx (which gradio brings
along): a Stop must end the stream even while the engine is silent (queued, or reading a long prompt), so the
reader waits for data with `select` in short slices and checks the cancel event between them, and closing our
socket is what tells the engine to abort the request (vLLM frees it when the connection drops). http.client and
httpx offer one blocking read with one timeout, after which their state is undefined, and this module is also
imported by the catalog and `textgen models`, which must answer at once (no torch, no httpx import).

Settings (environment): TEXTGEN_ENGINE_CONNECT_TIMEOUT (3 s: connecting, and listing an engine's models),
TEXTGEN_ENGINE_FIRST_TOKEN_TIMEOUT (60 s: the engine's queue and the prompt's prefill),
TEXTGEN_ENGINE_TOKEN_TIMEOUT (20 s between two pieces of the stream), TEXTGEN_ENGINE_RETRY (30 s: how long
an engine's answer to "which models?" is trusted before it is asked again), TEXTGEN_ENGINE_CONCURRENCY (4:
engine requests running at once in one app process, besides the local ones).
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import secrets
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from textgen.catalog import ModelEntry
from textgen.events import Clock, Score, Summary, TextEvent, TokenInfo

if TYPE_CHECKING:
    from textgen.settings import GenerationSettings

API_KEY_ENV = "TEXTGEN_ENGINE_API_KEY"
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")
# Controls the engine applies if it can; one it rejects is dropped, the request retried, and a warning said.
# (vLLM takes all of these: top_k, min_p and repetition_penalty are its extensions of the OpenAI API.)
CONTROL_FIELDS = {"seed": "the seed", "top_p": "top-p", "top_k": "top-k", "min_p": "min-p",
                  "repetition_penalty": "the repetition penalty", "stop": "stop sequences"}
# Extras that only make the result nicer (token ids, the usage line): dropped without a word when refused.
QUIET_FIELDS = ("return_token_ids", "stream_options")


class EngineError(RuntimeError):
    """An engine could not serve a request. `str(err)` is for the page's visitors (plain words, what they can
    do); `err.detail` is for the operator (which engine, what it said). Neither ever holds the API key."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0
    first_token: float = 60.0
    token: float = 20.0
    retry: float = 30.0

    @classmethod
    def from_env(cls) -> Timeouts:
        values = {}
        for name, var in (("connect", "CONNECT_TIMEOUT"), ("first_token", "FIRST_TOKEN_TIMEOUT"),
                          ("token", "TOKEN_TIMEOUT"), ("retry", "RETRY")):
            raw = os.environ.get(f"TEXTGEN_ENGINE_{var}")
            if raw:
                try:
                    values[name] = max(0.05, float(raw))
                except ValueError:
                    raise ValueError(f"TEXTGEN_ENGINE_{var}: a number of seconds, got {raw!r}") from None
        return cls(**values)


def engine_concurrency() -> int:
    """Engine requests one app process runs at once (TEXTGEN_ENGINE_CONCURRENCY, default 4)."""
    raw = os.environ.get("TEXTGEN_ENGINE_CONCURRENCY", "4")
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"TEXTGEN_ENGINE_CONCURRENCY must be a whole number, got {raw!r}") from None


def engine_urls(flags: list[str] | None = None) -> list[str]:
    """The engines to ask for models: `--engine` flags, then $TEXTGEN_ENGINES (comma-separated), normalised."""
    raw = [*(flags or []), *os.environ.get("TEXTGEN_ENGINES", "").split(",")]
    return list(dict.fromkeys(normalise_url(u) for u in raw if u.strip()))


def normalise_url(url: str) -> str:
    """An engine's OpenAI-compatible base URL: http(s)://HOST[:PORT]/PATH without a trailing slash; a bare
    http://HOST:PORT gets the usual /v1."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"engine URL {url[:100]!r}: give one like http://127.0.0.1:8000/v1")
    path = parts.path.rstrip("/") or "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def label(url: str) -> str:
    """host:port of an engine, as visitors see it (never a user name or password in the URL)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{host}:{port}"


# -- HTTP -------------------------------------------------------------------------------------------------------


class _Cancelled(Exception):
    pass


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, param: str | None):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.param = status, message, param


POLL = 0.05  # seconds between checks of the cancel event while the engine is silent


class _Connection:
    """One HTTP/1.1 request to an engine and its response, read with deadlines and a cancel check.

    Every wait for data is a `select` of at most POLL seconds, so a Stop ends the wait within POLL, and a
    silent engine ends it at the deadline; `close()` drops the connection, which aborts the request there.
    """

    def __init__(self, url: str, method: str, body: dict | None, timeouts: Timeouts,
                 cancel: threading.Event | None = None):
        parts = urlsplit(url)
        self.cancel = cancel or threading.Event()
        self.buf = bytearray()
        self.wait = timeouts.first_token
        self.sock: socket.socket | None = None
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        try:
            sock = socket.create_connection((host, port), timeout=timeouts.connect)
            if parts.scheme == "https":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        except OSError as err:
            raise ConnectionError(_os_words(err)) from None
        # A token arrives as a small write: without TCP_NODELAY our small request could wait on Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        payload = json.dumps(body).encode() if body is not None else b""
        headers = [f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                   f"Host: {parts.netloc.rsplit('@', 1)[-1]}", "Accept: application/json, text/event-stream",
                   "User-Agent: textgen", "Connection: close"]
        if body is not None:
            headers += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        key = os.environ.get(API_KEY_ENV)
        if key:
            headers.append(f"Authorization: Bearer {key}")
        try:
            sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode() + payload)
        except OSError as err:
            self.close()
            raise ConnectionError(_os_words(err)) from None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # the engine sees the connection end at once
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------------------

    def _fill(self, wait: float) -> bool:
        """Read what has arrived into the buffer, waiting at most `wait` seconds; False at the end of the stream."""
        deadline = time.monotonic() + wait
        while True:
            if self.cancel.is_set():
                raise _Cancelled
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            left = deadline - time.monotonic()
            if not pending:
                if left <= 0:
                    raise TimeoutError
                ready, _, _ = select.select([self.sock], [], [], min(POLL, left))
                if not ready:
                    continue
            self.sock.settimeout(max(left, POLL))  # a TLS record may need a little more than select saw
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError from None
            except OSError as err:
                raise ConnectionError(_os_words(err)) from None
            if not data:
                return False
            self.buf += data
            return True

    def _line(self, wait: float) -> bytes:
        while (end := self.buf.find(b"\n")) < 0:
            if len(self.buf) > 1 << 20:
                raise ValueError("a line longer than 1 MB")
            if not self._fill(wait):
                raise ConnectionError("the connection closed")
        line, self.buf = bytes(self.buf[: end + 1]), self.buf[end + 1 :]
        return line

    def _exact(self, n: int, wait: float) -> bytes:
        while len(self.buf) < n:
            if not self._fill(wait):
                raise ConnectionError("the connection closed")
        data, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return data

    def response(self, wait: float) -> tuple[int, dict[str, str]]:
        """The status and headers; waits at most `wait` seconds for each line."""
        status_line = self._line(wait).decode("latin-1").split()
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
            raise ValueError("not an HTTP response")
        headers = {}
        while (line := self._line(wait).decode("latin-1").strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.status, self.headers = int(status_line[1]), headers
        return self.status, headers

    def body(self) -> Iterator[bytes]:
        """The body as it arrives (chunked, sized, or up to the close); `self.wait` bounds each silence (read
        at every wait, so that the caller can shorten it once the first token is in)."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line(self.wait).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                yield self._exact(size, self.wait)
                self._exact(2, self.wait)  # the CRLF after each chunk
        elif "content-length" in self.headers:
            left = int(self.headers["content-length"])
            while left > 0:
                if not self.buf and not self._fill(self.wait):
                    raise ConnectionError("the connection closed")
                piece = bytes(self.buf[:left])
                self.buf = self.buf[len(piece):]
                left -= len(piece)
                yield piece
        else:
            if self.buf:
                yield bytes(self.buf)
                self.buf.clear()
            while self._fill(self.wait):
                yield bytes(self.buf)
                self.buf.clear()

    def read_all(self, wait: float, limit: int = 64 << 20) -> bytes:
        self.wait = wait
        data = bytearray()
        for piece in self.body():
            data += piece
            if len(data) > limit:
                raise ValueError("an answer larger than 64 MB")
        return bytes(data)

    def error(self, wait: float) -> _HTTPError:
        """The engine's own words for a status other than 200 (OpenAI's and vLLM's error shapes)."""
        try:
            raw = self.read_all(min(wait, 5.0), limit=1 << 16)
        except (OSError, ValueError, _Cancelled):
            raw = b""
        message, param = raw.decode("utf-8", "replace").strip()[:300], None
        try:
            doc = json.loads(raw)
            inner = doc.get("error") if isinstance(doc.get("error"), dict) else doc
            message = str(inner.get("message") or inner.get("detail") or doc.get("error") or message)[:500]
            param = inner.get("param")
        except (ValueError, AttributeError):
            pass
        return _HTTPError(self.status, message, param if isinstance(param, str) else None)


def _sse_events(chunks: Iterator[bytes]) -> Iterator[str]:
    """Server-sent events: the `data:` of each event, as text (comments and other fields skipped)."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        if b"\r" in buf:  # CRLF line ends are allowed; vLLM sends LF
            buf = buf.replace(b"\r\n", b"\n")
        *events, buf = buf.split(b"\n\n")
        for event in events:
            data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
            if data:
                yield b"\n".join(data).decode("utf-8", "replace")
    if buf.strip():
        raise ValueError("the stream ended inside an event")


def _os_words(err: OSError) -> str:
    if isinstance(err, TimeoutError):
        return "no answer (timed out)"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return "unknown host name"
    return err.strerror or type(err).__name__


def request_json(url: str, method: str = "GET", body: dict | None = None, timeout: float | None = None,
                 cancel: threading.Event | None = None) -> Any:
    """One JSON request to an engine (the model list, a score); raises _HTTPError, ConnectionError, TimeoutError
    or ValueError (an answer that is not JSON)."""
    timeouts = Timeouts.from_env()
    if timeout is not None:
        timeouts = Timeouts(connect=timeout, first_token=timeout, token=timeout)
    with _Connection(url, method, body, timeouts, cancel) as conn:
        status, _ = conn.response(timeouts.first_token)
        if status != 200:
            raise conn.error(timeouts.token)
        return json.loads(conn.read_all(timeouts.token))


# -- engines and their models -----------------------------------------------------------------------------------


@dataclass
class _Answer:
    checked_at: float = -math.inf
    models: dict[str, dict] | None = None  # model id -> the engine's description of it; None: no answer
    problem: str = ""  # why it cannot be used, for visitors
    detail: str = ""  # the same for the operator


class Engine:
    """One engine (a base URL) and what it last said about its models; asked again after `retry` seconds."""

    def __init__(self, url: str):
        self.url = normalise_url(url)
        self.label = label(self.url)
        self.answer = _Answer()
        self._asking = threading.Lock()

    def __repr__(self) -> str:
        return f"Engine({self.label})"

    def models(self, max_age: float | None = None) -> dict[str, dict] | None:
        """Its models (id -> description), asked again when the last answer is older than `max_age` seconds
        (TEXTGEN_ENGINE_RETRY by default); None while it cannot be reached. While another thread asks,
        the last answer is used rather than a second wait."""
        max_age = Timeouts.from_env().retry if max_age is None else max_age
        if time.monotonic() - self.answer.checked_at >= max_age and self._asking.acquire(blocking=False):
            try:
                self.ask()
            finally:
                self._asking.release()
        return self.answer.models

    def ask(self) -> None:
        """GET /models, with the connect timeout for the whole exchange (it runs while a page waits)."""
        timeout = Timeouts.from_env().connect
        try:
            doc = request_json(self.url + "/models", timeout=timeout)
            items = doc.get("data") if isinstance(doc, dict) else None
            if not isinstance(items, list):
                raise ValueError("its answer to GET /models has no 'data' list")
            models = {str(m["id"]): m for m in items if isinstance(m, dict) and m.get("id")}
            self.answer = _Answer(time.monotonic(), models)
        except Exception as err:  # whatever it was, the engine is unusable until it answers properly
            self.mark_down(err)

    def mark_down(self, err: Exception) -> None:
        problem, detail = describe_failure(self, err, "listing its models")
        self.answer = _Answer(time.monotonic(), None, problem, detail)

    def mark_up(self) -> None:
        """It just served a request: a picker that still says "not answering" is out of date."""
        if self.answer.models is None:
            self.answer = _Answer()  # asked again at the next look


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine(url: str) -> Engine:
    """The one Engine object of this process for a URL (so its answers are shared by every request)."""
    key = normalise_url(url)
    with _ENGINES_LOCK:
        return _ENGINES.setdefault(key, Engine(key))


def describe_failure(eng: Engine, err: Exception, doing: str) -> tuple[str, str]:
    """(visitor words, operator words) for an engine that failed while `doing` something."""
    where = f"the engine at {eng.label}"
    if isinstance(err, _HTTPError):
        if err.status in (401, 403):
            return (f"{where} refused this server's credentials",
                    f"{where} answered HTTP {err.status} while {doing}: check ${API_KEY_ENV} ({err.message})")
        return (f"{where} answered with an error (HTTP {err.status})",
                f"{where} answered HTTP {err.status} while {doing}: {err.message}")
    if isinstance(err, TimeoutError):
        return (f"{where} is not answering in time", f"{where} did not answer in time while {doing}")
    if isinstance(err, ConnectionError):
        return (f"{where} cannot be reached", f"{where} cannot be reached while {doing}: {err}")
    return (f"{where} gave an answer this app cannot read",
            f"{where} gave an unreadable answer while {doing}: {type(err).__name__}: {str(err)[:200]}")


def catalog_name(model_id: str) -> str:
    """A catalog name for an engine's model id: its last path part, in the catalog's characters."""
    name = _NAME_BAD.sub("-", model_id.rstrip("/").rsplit("/", 1)[-1]).strip("-._")[:64]
    return name or "engine-model"


def model_entry(url: str, model_id: str, name: str | None = None, description: str | None = None,
                info: dict | None = None) -> ModelEntry:
    """The catalog entry of one model on an engine; `info` is the engine's own description of it, if known."""
    url = normalise_url(url)
    where = label(url)
    context = (info or {}).get("max_model_len")
    about = f"{model_id}, served by the inference engine at {where}"
    about += f" (context {context:,} tokens)." if isinstance(context, int) else "."
    return ModelEntry(catalog_name(name or model_id), f"{name or model_id} (on {where})", description or about,
                      url, "engine", model_id=model_id)


def placeholder_entry(url: str) -> ModelEntry:
    """Stands for the models of an engine that did not answer at start, until it does."""
    url = normalise_url(url)
    where = label(url)
    return ModelEntry(catalog_name(f"engine-{where}"), f"Models on {where}",
                      f"The models of the inference engine at {where}, listed here once it answers.", url, "engine")


def entries_for(url: str) -> list[ModelEntry]:
    """The catalog entries of an engine: one per model it serves, or a placeholder while it cannot be reached."""
    eng = engine(url)
    models = eng.models(max_age=0)
    if models is None:
        print(f"textgen: {eng.answer.detail}; its models are listed once it answers", file=sys.stderr)
        return [placeholder_entry(url)]
    return [model_entry(url, mid, info=info) for mid, info in models.items()]


def discover(urls: list[str]) -> list[ModelEntry]:
    """Entries for several engines, asked at the same time (so one unreachable engine costs one timeout)."""
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return [entry for entries in pool.map(entries_for, urls) for entry in entries]


def refresh(catalog) -> None:
    """Add the models of `catalog.engines` that answered since the catalog was made (asked at most every
    TEXTGEN_ENGINE_RETRY seconds); an engine's placeholder goes once its models are in."""
    for url in getattr(catalog, "engines", ()):
        models = engine(url).models()
        if models is None:
            continue
        known = {(e.source, e.model_id) for e in catalog if e.origin == "engine"}
        for mid, info in models.items():
            if (url, mid) not in known:
                catalog.add(model_entry(url, mid, info=info))
        for entry in list(catalog):
            if entry.origin == "engine" and entry.source == url and not entry.model_id:
                catalog.remove(entry.name)


def unavailable_reason(entry: ModelEntry) -> str | None:
    """Why an engine's model cannot be used now, in a few words for the pickers; None when it can."""
    eng = engine(entry.source)
    models = eng.models()
    if models is None:
        return f"{eng.answer.problem}; it is asked again every {Timeouts.from_env().retry:g} s"
    if not entry.model_id:
        return "the engine answers now: reload the page to see its models"
    if entry.model_id not in models:
        return f"the engine at {eng.label} does not serve it"
    return None


# -- a model on an engine ---------------------------------------------------------------------------------------


@dataclass
class RemoteModel:
    """What `ModelManager.get` gives for an engine's model: no weights, just where it runs.

    It stands in for `LoadedModel`; `textgen.generation.stream` hands it to `stream` below, and
    `Playground.score` to `score` below.
    """

    entry: ModelEntry
    load_seconds: float = 0.0
    remote = True  # what the dispatchers look for
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


def is_remote(loaded: object) -> bool:
    return getattr(loaded, "remote", False) is True


def stream(model: RemoteModel, settings: GenerationSettings, cancel: threading.Event | None = None,
           prompt_ids: list[int] | None = None) -> Iterator[TextEvent | Summary]:
    """As `textgen.generation.stream`, computed by the engine: TextEvents as tokens arrive, then one Summary."""
    yield from _RemoteRun(model, settings, cancel or threading.Event(), prompt_ids).events()


def chat(model: RemoteModel, messages: list[dict[str, str]], settings: GenerationSettings,
         cancel: threading.Event | None = None) -> Iterator[TextEvent | Summary]:
    """The model's reply to `messages` (system first if any, the user's newest last), from the engine's
    `/chat/completions`: the engine applies the model's own chat template. The same events as `stream`."""
    yield from _RemoteRun(model, settings, cancel or threading.Event(), None, messages).events()


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

    def open(self, body: dict) -> _Connection:
        """The stream's connection, once the engine has accepted the request; a control it refuses (HTTP 400
        naming that field) is dropped with a warning and the request sent again."""
        while True:
            try:
                conn = _Connection(self.eng.url + self.path, "POST", body, self.timeouts, self.cancel)
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
        if self.messages is not None and isinstance(err, _HTTPError) and (
                (err.status in (400, 422) and re.search(r"chat.?template", err.message, re.I))
                or (err.status == 404 and "model" not in err.message.lower())):
            why = ("has no chat template on its engine" if err.status != 404
                   else "runs on an engine that does not offer chat")  # no /chat/completions route at all
            return EngineError(f"{title} {why}, so it cannot chat. Use the Write tab for it, or pick a chat model.",
                               detail=f"the engine at {self.eng.label} refused a chat request: {err.message}")
        if isinstance(err, _HTTPError) and err.status == 400 and re.search(r"context|max_model_len|too long",
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
            for data in _sse_events(conn.body()):
                if data.strip() == "[DONE]":
                    break
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError("a stream event that is not a JSON object")
                if "error" in chunk:  # vLLM reports a failure inside a started stream as an event
                    e = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
                    raise _HTTPError(int(e.get("code") or 500), str(e.get("message"))[:300], None)
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
        except _Cancelled:
            pass
        except (OSError, ValueError, _HTTPError) as err:  # ConnectionError and TimeoutError are OSErrors
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


def _refused_field(err: _HTTPError, body: dict) -> str | None:
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


# -- scoring ----------------------------------------------------------------------------------------------------


def score(model: RemoteModel, text: str, context: str = "\n") -> Score:
    """Per-character surprise of `text` as the engine computes it: the prompt's own log-probabilities
    (`echo` with `max_tokens` 0), the text given a new line as context as in textgen.evaluate.

    A text longer than the model's context is scored in windows, as textgen.evaluate does for local models:
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
    except _HTTPError as err:
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
    if not (getattr(catalog, "engines", None) or any(e.origin == "engine" for e in catalog)):
        return playground
    limits = playground.limits
    return _PageView(playground, replace(limits, concurrency=limits.concurrency + engine_concurrency()))


def main(argv: list[str] | None = None) -> int:
    """python -m textgen.engines URL...: the models each engine serves, or why it cannot be reached."""
    urls = engine_urls(argv if argv is not None else sys.argv[1:])
    if not urls:
        print("usage: python -m textgen.engines http://HOST:PORT/v1 [...]  (or set TEXTGEN_ENGINES)", file=sys.stderr)
        return 2
    for url in urls:
        eng = engine(url)
        models = eng.models(max_age=0)
        if models is None:
            print(f"{eng.label}: {eng.answer.detail}")
        for mid, info in (models or {}).items():
            print(f"{eng.label}: {mid} (context {info.get('max_model_len', '?')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
