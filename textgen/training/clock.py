"""A training run's clock that does not count the time its process was paused.

    clock = TrainingClock(already=0.0)    # a resumed run passes the seconds it had trained
    for step in ...:
        ...                                # one training step
        elapsed = clock.lap()              # seconds of training so far

Why: a run in the background of a shared machine is paused while something is timed beside it (`kill -STOP`,
then `kill -CONT`: a benchmark wants the cores to itself). A wall clock counted those minutes as training, so a
run with `--time-budget` lost them from its budget and its learning-rate schedule ran ahead of its steps (a
Transformer run paused for its session's benchmarks made 267 steps in 56 minutes, at 4 s a step). When the process
is continued it gets SIGCONT; the step that was paused then counts as the median of the recent steps.

Only in the main thread of a POSIX process (where a signal handler can be set); elsewhere it is a plain clock.
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections import deque

__all__ = ["TrainingClock"]


class TrainingClock:
    """Seconds of training so far (`lap()` after each step), less the time the process was stopped."""

    def __init__(self, already: float = 0.0, recent: int = 20):
        self.start = time.perf_counter() - already
        self.last = time.perf_counter()
        self.steps: deque[float] = deque(maxlen=recent)
        self.paused_seconds = 0.0
        self._continued = False
        self._installed, self._previous = False, None
        if hasattr(signal, "SIGCONT") and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGCONT, self._on_continue)
            self._installed = True

    def _on_continue(self, signum, frame) -> None:
        self._continued = True
        if callable(self._previous):
            self._previous(signum, frame)

    def lap(self) -> float:
        """The seconds trained up to now; a step during which the process was stopped counts as a typical one."""
        now = time.perf_counter()
        took, self.last = now - self.last, now
        if self._continued:
            self._continued = False
            typical = statistics.median(self.steps) if self.steps else None
            if typical is not None and took > typical:
                self.paused_seconds += took - typical
                self.start += took - typical
                took = typical
        self.steps.append(took)
        return now - self.start

    def close(self) -> None:
        """Put back the SIGCONT handler there was before."""
        if self._installed:
            signal.signal(signal.SIGCONT, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False
