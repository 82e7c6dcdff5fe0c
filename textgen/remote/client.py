"""Talking to an OpenAI-compatible inference engine (vLLM) over HTTP: the connection, its event stream, JSON calls.

    from textgen.remote.client import request_json
    request_json("http://127.0.0.1:8000/v1/models", timeout=3)      # the engine's model list, or an exception

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
`$TEXTGEN_ENGINE_API_KEY`, when set, is sent to every engine as a bearer token; it is never shown or logged.
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

API_KEY_ENV = "TEXTGEN_ENGINE_API_KEY"


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


class Cancelled(Exception):
    pass


class HTTPStatusError(Exception):
    def __init__(self, status: int, message: str, param: str | None):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.param = status, message, param


POLL = 0.05  # seconds between checks of the cancel event while the engine is silent


class Connection:
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
            raise ConnectionError(os_words(err)) from None
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
            raise ConnectionError(os_words(err)) from None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # the engine sees the connection end at once
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------------------

    def _fill(self, wait: float) -> bool:
        """Read what has arrived into the buffer, waiting at most `wait` seconds; False at the end of the stream."""
        deadline = time.monotonic() + wait
        while True:
            if self.cancel.is_set():
                raise Cancelled
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
                raise ConnectionError(os_words(err)) from None
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

    def error(self, wait: float) -> HTTPStatusError:
        """The engine's own words for a status other than 200 (OpenAI's and vLLM's error shapes)."""
        try:
            raw = self.read_all(min(wait, 5.0), limit=1 << 16)
        except (OSError, ValueError, Cancelled):
            raw = b""
        message, param = raw.decode("utf-8", "replace").strip()[:300], None
        try:
            doc = json.loads(raw)
            inner = doc.get("error") if isinstance(doc.get("error"), dict) else doc
            message = str(inner.get("message") or inner.get("detail") or doc.get("error") or message)[:500]
            param = inner.get("param")
        except (ValueError, AttributeError):
            pass
        return HTTPStatusError(self.status, message, param if isinstance(param, str) else None)


def sse_events(chunks: Iterator[bytes]) -> Iterator[str]:
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


def os_words(err: OSError) -> str:
    if isinstance(err, TimeoutError):
        return "no answer (timed out)"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.gaierror):
        return "unknown host name"
    return err.strerror or type(err).__name__


def request_json(url: str, method: str = "GET", body: dict | None = None, timeout: float | None = None,
                 cancel: threading.Event | None = None) -> Any:
    """One JSON request to an engine (the model list, a score); raises HTTPStatusError, ConnectionError, TimeoutError
    or ValueError (an answer that is not JSON)."""
    timeouts = Timeouts.from_env()
    if timeout is not None:
        timeouts = Timeouts(connect=timeout, first_token=timeout, token=timeout)
    with Connection(url, method, body, timeouts, cancel) as conn:
        status, _ = conn.response(timeouts.first_token)
        if status != 200:
            raise conn.error(timeouts.token)
        return json.loads(conn.read_all(timeouts.token))

