"""Which engines there are and what each last said about its models (asked again every TEXTGEN_ENGINE_RETRY s).

    python -m textgen.remote.discovery http://127.0.0.1:8000/v1       # what it serves, or why it cannot be reached

The catalog (textgen/service/catalog.py) turns the answers into its entries; this module knows nothing of the catalog.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from dataclasses import dataclass

from textgen.remote.client import (
    API_KEY_ENV,
    HTTPStatusError,
    Timeouts,
    engine_urls,
    label,
    normalise_url,
    request_json,
)

_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")



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
    if isinstance(err, HTTPStatusError):
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



def unavailable_reason(url: str, model_id: str) -> str | None:
    """Why the model `model_id` of the engine at `url` cannot be used now, in a few words for the pickers; None
    when it can. An empty `model_id` stands for an engine's models not listed yet."""
    eng = engine(url)
    models = eng.models()
    if models is None:
        return f"{eng.answer.problem}; it is asked again every {Timeouts.from_env().retry:g} s"
    if not model_id:
        return "the engine answers now: reload the page to see its models"
    if model_id not in models:
        return f"the engine at {eng.label} does not serve it"
    return None



def main(argv: list[str] | None = None) -> int:
    """python -m textgen.remote.discovery URL...: the models each engine serves, or why it cannot be reached."""
    urls = engine_urls(argv if argv is not None else sys.argv[1:])
    if not urls:
        print("usage: python -m textgen.remote.discovery http://HOST:PORT/v1 [...]  (or set TEXTGEN_ENGINES)",
              file=sys.stderr)
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
