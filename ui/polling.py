"""Gradio's queue without its thousand wake-ups a second.

    from ui.polling import calm_queue
    calm_queue(demo)      # once, after demo.queue()

Why: Gradio's queue looks for new work by polling: while nothing waits to start (an idle page, or every request
already running) its loop sleeps 1 ms and looks again, and its progress loop every 10 ms. Each look is a turn of
the server's event loop. Measured here: the idle app used 9% of a core, doing nothing; and under a crowd those
turns take the second core from a batched step that runs on both (an OpenMP step waits for its slower thread at
every product), which a profiler on the event loop showed as 8,000 sleeps in a 12 s run of 8 GPT-2-shaped texts.

Looking every 10 ms instead delays the start of a request by at most 10 ms (against the hundreds a text takes to
begin), and a progress bar is redrawn at most 20 times a second.

Applied only to the Queue this was measured on (gradio 6, whose loops read these two attributes at each turn);
anything else is left untouched and logged.
"""

from __future__ import annotations

__all__ = ["calm_queue"]

import logging

import gradio as gr

log = logging.getLogger("textgen")

LOOK_EVERY = 0.01  # seconds between the queue's looks for new work while none waits (Gradio's: 0.001)
PROGRESS_EVERY = 0.05  # seconds between its looks for progress to send while none is pending (Gradio's: 0.01)


def calm_queue(demo: gr.Blocks) -> bool:
    """Make `demo`'s queue look for work every LOOK_EVERY seconds; whether it could (False: an unknown Gradio)."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "sleep_when_free") or not hasattr(queue, "progress_update_sleep_when_free"):
        log.warning("Gradio's queue is not the one ui/polling.py knows: it keeps polling every millisecond")
        return False
    queue.sleep_when_free = max(queue.sleep_when_free, LOOK_EVERY)
    queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, PROGRESS_EVERY)
    return True
