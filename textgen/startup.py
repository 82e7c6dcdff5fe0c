"""Serving the page before torch is imported.

`import gradio` takes ~7 s here and torch + transformers ~5-8 s more. The page needs neither to be built:
it needs the catalog and the limits. So `app.py` serves the page first and `LazyPlayground` builds the real
`Playground` (importing torch, transformers and our models) in a background thread; a request that arrives
before it is ready waits for it.

    playground = LazyPlayground(catalog, Limits.from_env())
    demo = build_demo(playground)          # uses playground.catalog and playground.limits only
    demo.launch(prevent_thread_lock=True)
    playground.start()                     # now import the heavy parts
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from textgen.catalog import Catalog
from textgen.settings import Limits, RequestError

if TYPE_CHECKING:
    from textgen.playground import Playground


class LazyPlayground:
    """A Playground built in the background; every attribute but `catalog` and `limits` waits for it."""

    def __init__(self, catalog: Catalog, limits: Limits, device: str | None = None):
        self.catalog = catalog
        self.limits = limits
        self._device = device
        self._ready = threading.Event()
        self._started = threading.Lock()
        self._thread: threading.Thread | None = None
        self._playground: Playground | None = None
        self._error: Exception | None = None

    def start(self) -> None:
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._build, name="textgen-startup", daemon=True)
                self._thread.start()

    def wait(self) -> Playground:
        self.start()  # harmless if already started; makes the playground usable without an explicit start()
        self._ready.wait()
        if self._error is not None:
            raise RequestError(f"the model server failed to start: {self._error}")
        return self._playground

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._error is None

    def unavailable(self) -> dict[str, str]:
        """As Playground.unavailable; before the models can load, from the catalog's own checks."""
        if self.ready:
            return self._playground.unavailable()
        return {e.name: why for e in self.catalog if (why := e.unavailable_reason())}

    def model_info(self, name: str) -> dict | None:
        return self._playground.model_info(name) if self.ready else None

    def __getattr__(self, name: str):
        return getattr(self.wait(), name)

    def _build(self) -> None:
        try:
            from textgen.devices import configure_cpu_threads
            from textgen.loading import ModelManager
            from textgen.playground import Playground

            configure_cpu_threads()
            self._playground = Playground(ModelManager(self.catalog, device=self._device), self.limits)
        except Exception as err:  # reported to every request, rather than killing a thread silently
            self._error = err
        finally:
            self._ready.set()
