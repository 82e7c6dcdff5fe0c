"""What every tab of the page builds with: sliders from the control table, lenient inputs, API names, the
session key, the first model to show, and the announce and Stop events every writing tab wires the same way.

    sliders = [slider(CONTROLS[name].bounded(limits)) for name in SLIDERS]
    go.click(**announce(playground)).then(fn=tab.generate, ...)
    stop_button(playground, halt, [event], api_name="stop")
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import gradio as gr

from textgen.core.settings import SLIDERS, Control, RequestError, matching_style, style_values
from textgen.core.words import ENGLISH, words_of
from textgen.service.catalog import ASSETS, Catalog
from ui.language import tr
from ui.render import model_choices, unavailable_line

try:  # On a ZeroGPU Space the decorated functions run on a GPU; elsewhere spaces.GPU changes nothing.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - spaces is in requirements.txt, but the page works without it

    def gpu(fn):
        return fn


PACE = 0.04  # seconds between updates sent to the browser while a text streams (the model does not wait)
ZERO_GPU = bool(os.environ.get("SPACES_ZERO_GPU"))
# On a narrow screen the output sits below the controls: bring it into view when the writing starts.
def show_on_phone(elem_id: str) -> str:
    """The JS of a button that, on a phone, brings `elem_id` (where its answer appears) to the top of the screen:
    on a narrow screen the answer is laid out below the controls, out of sight. It hands the event's inputs on
    unchanged (Gradio sends what an event's JS returns in their place)."""
    return ("(...inputs) => { if (window.innerWidth < 768) "
            f"document.getElementById('{elem_id}')?.scrollIntoView({{behavior: 'smooth', block: 'start'}}); "
            "return inputs.length ? inputs : undefined; }")


SHOW_OUTPUT_JS = show_on_phone("output")  # Write's text

# On a phone, Chat's conversation is shorter and its Send, Stop and Clear share one row, so that the message box
# and Stop stay on the first screen with the conversation (a 390x844 phone had Stop and Clear below the fold).
# Step by step's five buttons keep their words on one line: at 1366 px "Sample 200×" broke in two, taller than
# the rest.
PHONE_CSS = """
/* The help under each control at the labels' grey: Gradio's own (#bbbbc2 on white, about 1.9:1) was unreadable on
   a projector. (In dark mode the theme sets its own value on body.dark, which wins below it.) */
:root:not(.dark) { --block-info-text-color: #71717a; }
#step-buttons > button { white-space: nowrap; padding-left: 6px; padding-right: 6px; }
@media (max-width: 700px) {
  #chat-history { height: 300px !important; max-height: 300px !important; }
  #chat-buttons { flex-wrap: nowrap !important; gap: 6px; }
  #chat-buttons > button { min-width: 0 !important; }
}
"""


def lenient(component):
    """Leave checking this input's value to textgen.core.settings rather than Gradio.

    The API lets anyone send anything; textgen checks every value with a message that names the control.
    Gradio's own checks answer too, but log a server traceback for each bad request. (Not a subclass:
    Gradio writes a .pyi stub file next to the source of any component subclass.)
    """
    component.preprocess = lambda payload: payload
    return component


# A slider's narrowest width in a row: below it, a row's sliders go one under another. At Gradio's 160 px, two
# fitted a phone's width side by side, their help wrapping one word a line and their tracks out of line.
SLIDER_WIDTH = 220


def slider(control: Control, elem_id: str | None = None, info: bool = True) -> gr.Slider:
    """A slider for one control of the table (its range already capped by the operator's limits)."""
    high = control.high if control.high > control.low else control.low + control.step  # a slider needs two ends
    return lenient(gr.Slider(control.low, high, value=control.start, step=control.step,
                             label=tr(f"control.{control.name}.label"),
                             info=tr(f"control.{control.name}.help") if info else None,
                             elem_id=elem_id or control.name, min_width=SLIDER_WIDTH))


def style_choices(styles) -> list:
    """A style picker's choices: each style's name in the visitor's language, its English name as its value (what
    the handlers and the API see)."""
    return [(tr(f"style.{name}"), name) for name in styles]


def _style_to_sliders(style: str) -> list:
    """A picked style's values for the sliders it sets; the others keep theirs."""
    values = style_values(style)
    return [values.get(name, gr.skip()) for name in SLIDERS]


def _sliders_to_style(*values) -> str | None:
    """The style the sliders now match, or none once one has been moved off every style."""
    return matching_style(dict(zip(SLIDERS, values, strict=True)))


def link_style(style: gr.Radio, sliders: list[gr.Slider], **events) -> None:
    """Wire a style picker to the SLIDERS it sets (Write and Chat): picking a style moves them, and moving one
    by hand shows which style they now match (or none)."""
    style.change(_style_to_sliders, style, sliders, **events)
    for s in sliders:
        s.input(_sliders_to_style, sliders, style, **events)


def named(*names: str):
    """Give a handler written as `(self, request, *values)` the parameter names of its inputs, so that the API
    page and its clients read `temperature`, `top_k`, … (the names come from the control table, written once)."""
    def wrap(fn):
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter("request", kind, annotation=gr.Request)]
        if next(iter(inspect.signature(fn).parameters), None) == "self":  # a tab's method: Python binds self
            params.insert(0, inspect.Parameter("self", kind))
        fn.__signature__ = inspect.Signature(params + [inspect.Parameter(n, kind) for n in names])
        return fn

    return wrap


def fail(err: Exception, lang: str = ENGLISH) -> gr.Error:
    """The message a visitor reads for a refused request, in their language, without a server traceback."""
    return gr.Error(words_of(err, lang), print_exception=False)


def session(request: gr.Request | None) -> str:
    """The browser tab's key: Stop, the queue and the step view's state are kept per key."""
    return getattr(request, "session_hash", None) or "anonymous"


def examples(lang: str = ENGLISH) -> list[dict]:
    """The example prompts (assets/examples.json) for a page in `lang`: those written for its audience first, then
    the English ones (our own models write only English); an English page gets only those."""
    path = ASSETS / "examples.json"
    every = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    english = [e for e in every if e.get("lang", ENGLISH) == ENGLISH]
    return english if lang == ENGLISH else [e for e in every if e.get("lang") == lang] + english


# What a shipped model's card reports, best predictor of text it never saw first: the held-back plays (the corpus's
# last 10%, measured by the maintainers), then whole held-out stretches of scenes (textgen/training/trainer.py),
# then the older short chunks, which read 0.16-0.22 nats/char too good on new plays and ranked the models wrongly.
NEW_TEXT_MEASURES = ("heldback_nats_per_char", "blocks_nats_per_char", "val_nats_per_char")


def default_model(catalog: Catalog) -> str | None:
    """The shipped model least surprised by new text, by the first measure of NEW_TEXT_MEASURES that any of their
    cards reports; else the first model."""
    summaries = {}
    for entry in catalog:
        if entry.origin == "shipped":
            try:
                summaries[entry.name] = json.loads((Path(entry.source) / "training_summary.json").read_text())
            except (OSError, ValueError):
                summaries[entry.name] = {}
    for measure in NEW_TEXT_MEASURES:
        scored = {name: s[measure] for name, s in summaries.items()
                  if isinstance(s, dict) and isinstance(s.get(measure), (int, float))}
        if scored:
            return min(scored, key=scored.get)
    return next(iter(summaries), None) or next(iter(catalog.names()), None)


def announce(playground) -> dict:
    """The first step of every page request: say, before it queues, that this session has one coming, so that
    Stop also ends a request still waiting in the queue (it ends as soon as it starts)."""
    def queued(request: gr.Request = None):
        playground.queued(session(request))

    return {"fn": queued, "inputs": None, "outputs": None, "queue": False, "api_visibility": "private"}


def stop_button(playground, button: gr.Button, events: list, **api) -> None:
    """Stop signals the session's running requests, which then end normally: the model stops within a token
    and the page says so (`cancels=` alone sometimes leaves a red Error badge). On ZeroGPU the request runs in a
    worker process the signal cannot reach, so there Stop also cancels the events themselves."""
    def stop(request: gr.Request = None):
        playground.stop(session(request))

    button.click(stop, None, None, queue=False, cancels=events if ZERO_GPU else None, **api)


def refused(err: RequestError, lang: str = ENGLISH) -> str:
    """The line under a text when a request was refused (no stale "Loading…" line stays under the error)."""
    return f"⚠️ {words_of(err, lang)}"


def picker_updates(playground, pickers: list, session_key: str | None, lang: str, opening: bool = False) -> list[dict]:
    """Every model picker's choices for one visitor: their own trained models, and what cannot be used here. A list
    says so in its labels; a group of boxes (Compare, Perplexity) leaves those out and names them under its title,
    and as the page opens also unticks them where they were ticked by default (out of sight, a ticked box would
    still be sent, and fail). Later (a training ended) the visitor's own ticks are left as they are."""
    catalog, unavailable = playground.catalog, playground.unavailable(session_key)
    updates = []
    for picker in pickers:
        if isinstance(picker, gr.CheckboxGroup):
            boxes = {"choices": model_choices(catalog, unavailable, session_key, lang, leave_out=True),
                     "info": unavailable_line(catalog, unavailable, session_key, lang)}
            if opening:
                boxes["value"] = [name for name in picker.value or [] if name not in unavailable]
            updates.append(gr.update(**boxes))
        else:
            updates.append(gr.update(choices=model_choices(catalog, unavailable, session_key, lang)))
    return updates
