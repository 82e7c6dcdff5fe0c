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

Applied only to the SessionState this was measured on (gradio 6, whose constructor fills `config_values`);
anything else is left untouched and logged.
"""

from __future__ import annotations

__all__ = ["lazy_session_configs"]

import logging

from gradio import state_holder

log = logging.getLogger("textgen")


class _Configs(dict):
    """A session's component configurations, each written out on first use; whole on iteration."""

    def __init__(self, session: state_holder.SessionState, keys: list[int]):
        super().__init__()
        self._session, self._pending = session, list(keys)

    def _write(self, key: int) -> None:
        config = self._session.blocks_config
        super().__setitem__(key, config.config_for_block(key, [], config.blocks[key]))

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
        self.config_values = _Configs(self, [k for k in self.blocks_config.blocks if k in blocks.blocks])

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
