"""A new visitor's session without the work Gradio does for it up front.

    from ui.sessions import lazy_session_configs
    lazy_session_configs()      # once, before the page serves

Why: Gradio makes a `SessionState` for every new session (each page opened, each API call without a session), and
its constructor writes out the configuration of every component of the page at once, "for deep links". Our page
has about 250 components: 45 ms of Python on the server's event loop per new session, measured here. A class of 16
pressing Generate at once through the API (new sessions) held the loop for 0.7 s before the first text could go
out, and the model's scheduler waited for Python's lock meanwhile. Here each component's configuration is written
when something first asks for it (an update to it, or a deep link asking for them all), from the session's
components as they are then, which is what Gradio keeps them current to anyway.

The configuration of a component the session has not replaced is also worked out once for the whole page and
copied for each session: Gradio derives it from the component's constructor signature every time (about 0.8 ms
of Python a component, 14 components a Write request), and its streaming updates then write the value into the
session's copy. Measured with a profiler on the server's event loop during 64 Write requests through the REST API
(16 at once, four times): these configurations took 19% of the loop's time.

Applied only to the SessionState this was measured on (gradio 6, whose constructor fills `config_values`);
anything else is left untouched and logged.
"""

from __future__ import annotations

__all__ = ["lazy_session_configs"]

import logging

from gradio import state_holder

log = logging.getLogger("textgen")


# The page's own components' configurations, by id: (the component they were made from, the configuration).
_PAGE_CONFIGS: dict[int, tuple[object, dict]] = {}


def _page_config(blocks_config, key: int, block) -> dict:
    """A fresh copy of `block`'s configuration (as Gradio's `config_for_block(key, [], block)` writes it), made once
    per component of the page. A session's own replacement of a component (an update that changed its properties)
    is a new object, and gets its configuration made anew, never kept."""
    kept = _PAGE_CONFIGS.get(key)
    if kept is None or kept[0] is not block:
        kept = (block, blocks_config.config_for_block(key, [], block))
        _PAGE_CONFIGS[key] = kept
    config = dict(kept[1])
    if isinstance(config.get("props"), dict):  # the one part a session changes: its value, written in place
        config["props"] = dict(config["props"])
    return config


class _Configs(dict):
    """A session's component configurations, each written out on first use; whole on iteration."""

    def __init__(self, session: state_holder.SessionState, keys: list[int], page: dict):
        super().__init__()
        self._session, self._pending, self._page = session, list(keys), page

    def _write(self, key: int) -> None:
        config = self._session.blocks_config
        block = config.blocks[key]
        if self._page.get(key) is block:  # the page's own component, as every new session starts with it
            super().__setitem__(key, _page_config(config, key, block))
        else:
            super().__setitem__(key, config.config_for_block(key, [], block))

    def _fill(self) -> None:
        for key in self._pending:
            if not super().__contains__(key) and key in self._session.blocks_config.blocks:
                self._write(key)
        self._pending = []

    def __missing__(self, key: int):
        if key in self._pending and key in self._session.blocks_config.blocks:
            self._write(key)
            return super().__getitem__(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) or (key in self._pending and key in self._session.blocks_config.blocks)

    def items(self):
        self._fill()
        return super().items()

    def values(self):
        self._fill()
        return super().values()

    def keys(self):
        self._fill()
        return super().keys()

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()


def lazy_session_configs() -> bool:
    """Make Gradio's new sessions write their component configurations on demand; whether it applied."""
    cls = state_holder.SessionState
    if getattr(cls, "_textgen_lazy", False):
        return True
    own = cls.__init__
    if not {"config_values", "config_for_block"} <= _names(getattr(own, "__code__", None)):
        log.info("Gradio's SessionState is not the one measured; its sessions are left as they are")
        return False

    def __init__(self, blocks) -> None:
        own(self, _NoConfigs(blocks))  # everything but the configurations, by Gradio's own code
        self.config_values = _Configs(self, [k for k in self.blocks_config.blocks if k in blocks.blocks], blocks.blocks)

    cls.__init__ = __init__
    cls._textgen_lazy = True
    return True


def _names(code) -> set[str]:
    """The names a function's code uses, its comprehensions' included."""
    if code is None:
        return set()
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


class _NoConfigs:
    """`blocks` as Gradio's constructor sees it, but with no components to write out (they are written later)."""

    def __init__(self, blocks):
        self._blocks = blocks
        self.blocks = {}

    def __getattr__(self, name: str):
        return getattr(self._blocks, name)
