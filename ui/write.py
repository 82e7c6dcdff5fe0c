"""The Write tab: prompt, model, style and sliders; the text streams in with its numbers and its token view,
and any token can start a branch ("what if it had picked another word?").

    tab = WriteTab(playground)
    for output, stats, tokens in tab.generate(None, "ROMEO:\\n", "lstm", *slider_values, -1, False): ...
    build(playground)   # inside gr.Blocks: the components, wired to tab's handlers

The handlers are plain methods of `WriteTab`, callable without a browser (the tests do); `build` only lays out
the components and wires their events.
"""

from __future__ import annotations

import gradio as gr

from textgen.core.events import shown
from textgen.core.settings import (
    CHAT_STYLE_NAME,
    CHAT_SYSTEM_PROMPT,
    CONTROLS,
    SLIDERS,
    STYLES,
    WRITE_STYLE,
    RequestError,
    style_values,
)
from textgen.core.words import say
from textgen.service.catalog import Catalog
from ui.language import language, tr
from ui.render import LEGEND_KEYS, TOKEN_JS, TokenView, model_choices, model_note, model_words, stats_markdown
from ui.widgets import (
    PACE,
    SHOW_OUTPUT_JS,
    announce,
    default_model,
    examples,
    fail,
    gpu,
    lenient,
    link_style,
    named,
    refused,
    session,
    slider,
    stop_button,
    style_choices,
)


def assistants_of(catalog: Catalog) -> set[str]:
    """The models known to have a chat template, by name (read from their files once, when the page is built)."""
    return {e.name for e in catalog if e.chat_template_known() is True}


def asks_an_assistant(assistants: set[str], model: object, prompt: object, text: str) -> bool:
    """Whether a Write text looks like a question put to a chat model without its template: the model is one of
    `assistants`, and the prompt ends with a question mark or the model wrote nothing."""
    if not isinstance(model, str) or model not in assistants:
        return False
    return not text.strip() or (isinstance(prompt, str) and prompt.rstrip().endswith("?"))


class WriteTab:
    """The Write tab's handlers, over one playground."""

    def __init__(self, playground):
        self.playground = playground
        self.assistants = assistants_of(playground.catalog)  # a question to one without its template gets a hint

    @gpu
    @named("prompt", "model", *SLIDERS, "seed", "chat_template")
    def generate(self, request: gr.Request, prompt, model, *values):
        """Stream (text, numbers, token view) as the model writes; the API's /generate."""
        values, seed, chat = values[:-2], values[-2], values[-1] is True
        playground, lang = self.playground, language(request)
        try:
            settings = playground.parse(prompt, seed=seed, **dict(zip(SLIDERS, values, strict=True)))
            view = TokenView()
            if chat:  # the prompt as one user message inside the model's chat template, with Chat's system prompt
                # (measured to make a small assistant's answers right more often: benchmarks/CHAT.md)
                runs = playground.chat(model, [{"role": "user", "content": prompt}], CHAT_SYSTEM_PROMPT, settings,
                                       session(request), every=PACE)
            else:
                runs = playground.generate(model, settings, session(request), every=PACE)
            live = None
            for live in runs:
                yield live.text, stats_markdown(live, lang), view.render(live.tokens)
            if live is not None and not chat and asks_an_assistant(self.assistants, model, prompt, live.text):
                # a question went to an assistant as plain text: it continues the text, or ends at once. (ℹ️ as the
                # page's other notes: 💡 drew as an empty box on a machine without an emoji font.)
                hint = say("write.ask_with_template", lang, title=model_words(playground.catalog.get(model), lang)[0])
                yield gr.skip(), f"{stats_markdown(live, lang)}  \nℹ️ {hint}", gr.skip()
        except RequestError as err:
            yield gr.skip(), refused(err, lang), gr.skip()
            raise fail(err, lang) from None

    @gpu
    def branch(self, evt: gr.EventData, request: gr.Request, prompt, model, *values):
        """Write on from a token of the text with another token in its place (the original stays as it is). The
        branch before it, if any, moves to the list of earlier branches as this one starts."""
        values, seed, log, last = values[:-4], values[-4], values[-2], values[-1]  # (values[-3], the chat-template
        data = getattr(evt, "_data", None) or {}  # box, is not used: a branch writes on from the plain text)
        prefix, alt, original = (str(data.get(k, "")) for k in ("prefix", "alt", "original"))
        start = f"{prefix[-60:]}[{alt}]"
        lang = language(request)
        label = say("write.branch_at", lang, index=int(data.get("index", 0)) + 1, alt=shown(alt),
                    original=shown(original))  # a space as ␣, as the pop-up shows it, never empty quotes
        log = (f"{log}\n{last}" if log else f"{say('write.earlier_branches', lang)}\n{last}") if last else log
        playground = self.playground
        try:
            settings = playground.parse(f"{prompt}{prefix}{alt}", seed=seed, **dict(zip(SLIDERS, values, strict=True)))
            for live in playground.generate(model, settings, session(request), every=PACE):
                yield gr.Accordion(open=True), gr.update(label=label, value=f"…{start}{live.text}"), \
                    stats_markdown(live, lang), log, ""
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"- {label}: …{start}{live.text[:80]}…".replace("\n", "↵")
        except RequestError as err:
            yield gr.Accordion(open=True), gr.skip(), refused(err, lang), log, ""
            raise fail(err, lang) from None

    @staticmethod
    def forget_branches():
        """A new text: the branches of the old one go (they branched from tokens that are no longer there), and
        their section folds away until a token of the new text is branched from."""
        return gr.Accordion(open=False), gr.update(value="", label=tr("write.branch")), "", "", ""

    def describe(self, name: str, request: gr.Request = None) -> str:
        """The words under the model picker: what it is, its size once loaded, or why it cannot be used."""
        catalog, lang = self.playground.catalog, language(request)
        if name not in catalog:
            return ""
        title, description = model_words(catalog.get(name), lang)
        why = self.playground.unavailable().get(name)
        return model_note(title, description, None if why else self.playground.model_info(name), why, lang,
                          tokens=catalog.get(name).token_kind())

    def template_for(self, name: str) -> bool:
        """The chat-template box when a model is picked: ticked for an assistant (a question sent to SmolLM2 as plain
        text is continued as text, or ends at once with nothing written), unticked for the others. A visitor may
        still untick it to see how the assistant continues plain text."""
        return name in self.assistants

    def style_for(self, name: str, style: str | None):
        """The style when a model is picked: Chat's "Answers" for an assistant, as the chat-template box is ticked
        (SmolLM2 answered 58 of 70 plain questions right in it, 29 in Balanced: benchmarks/CHAT.md), and Balanced
        again for a model that writes text. Only the page's own choice changes: a style the visitor picked, or
        sliders moved by hand, stay as they are."""
        if name in self.assistants and style == WRITE_STYLE:
            return CHAT_STYLE_NAME
        if name not in self.assistants and style == CHAT_STYLE_NAME:
            return WRITE_STYLE
        return gr.skip()

    def first_style(self, name: str) -> str:
        """The style a page starting on `name` starts with."""
        return CHAT_STYLE_NAME if self.template_for(name) else WRITE_STYLE


def build(playground) -> list:
    """Lay out the Write tab inside the open gr.Blocks and wire its events; returns its model picker."""
    tab = WriteTab(playground)
    catalog, limits = playground.catalog, playground.limits
    controls = {name: CONTROLS[name].bounded(limits) for name in SLIDERS}
    first = default_model(catalog)
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label=tr("write.prompt"), lines=4, value="ROMEO:\n", elem_id="prompt",
                                placeholder=tr("write.prompt_placeholder"))
            model = gr.Dropdown(model_choices(catalog), value=first, label=tr("common.model"), elem_id="model",
                                allow_custom_value=True)  # textgen's catalog refuses unknown names
            note = gr.Markdown("", elem_id="model-note")  # written when the page opens, in the visitor's language
            # Right under what a first visit needs (a prompt and a model), above the finer settings: below them
            # the buttons were under the fold of a 1366x768 laptop, and a newcomer looked for Generate.
            with gr.Row():
                go = gr.Button(tr("common.generate"), variant="primary", elem_id="generate")
                halt = gr.Button(tr("common.stop"), variant="stop", elem_id="stop")
            # A page that starts on an assistant starts in its style, as picking one does (and so does /generate).
            style = gr.Radio(style_choices(STYLES), value=tab.first_style(first), label=tr("common.style"),
                             elem_id="preset", info=tr("write.style_info"))
            with gr.Accordion(tr("common.sampling_controls"), open=False, elem_id="controls"):
                sliders = [slider(controls[name]) for name in SLIDERS]
                for name, s in zip(SLIDERS, sliders, strict=True):
                    s.value = style_values(tab.first_style(first)).get(name, s.value)
                seed = lenient(gr.Number(-1, precision=0, label=tr("common.seed"), elem_id="seed",
                                         info=tr("write.seed_info")))
            # Ticked from the start where the page starts on an assistant, as picking one ticks it; so also the
            # /generate API's default, which answers as the page's defaults would.
            templated = lenient(gr.Checkbox(tab.template_for(first), label=tr("write.chat_template"),
                                            elem_id="chat-template", info=tr("write.chat_template_info")))
        with gr.Column(scale=3):
            output = gr.Textbox(label=tr("write.output"), lines=14, elem_id="output", buttons=["copy"],
                                autoscroll=True)
            stats = gr.Markdown("", elem_id="stats")
            with gr.Accordion(tr("common.token_probabilities"), open=True):
                gr.HTML(tr(LEGEND_KEYS[True]), padding=False, elem_classes="tg-legend-block")
                probs = gr.HTML("", elem_id="tokens", js_on_load=TOKEN_JS, padding=False)
            with gr.Accordion(tr("write.branches"), open=False, elem_id="branches") as branches:
                gr.Markdown(tr("write.branches_help"))
                branch_text = gr.Textbox(label=tr("write.branch"), lines=8, elem_id="branch-output",
                                         buttons=["copy"])
                branch_stats = gr.Markdown("", elem_id="branch-stats")
                branch_log = gr.Markdown("", elem_id="branch-log")
                last_branch = gr.State("")  # the branch shown above, in one line: it joins the log when the next starts
    shipped_examples = examples()
    if shipped_examples:
        shown = gr.Examples([[e["prompt"]] for e in shipped_examples], inputs=[prompt], label=tr("common.examples"))
        gr.Markdown(tr("examples.note"), elem_id="examples-note")

        def for_visitor(request: gr.Request = None):
            """The examples for the visitor's language, when the page opens."""
            return gr.Dataset(samples=[[e["prompt"]] for e in examples(language(request))])

        gr.on(None, for_visitor, None, shown.dataset, queue=False, api_visibility="private")

    inputs = [prompt, model, *sliders, seed, templated]
    outputs = [output, stats, probs]
    # Each page request is announced the moment it is clicked (queue=False), so that Stop also ends a
    # request still waiting in the queue: it ends as soon as it starts, before computing anything.
    # postprocess=False: the handler hands Gradio the very strings the page shows (a Textbox's text, Markdown without
    # indentation, HTML), which Gradio's postprocessing would return unchanged; skipping it spares the server three
    # of the four hand-offs to a worker thread at every update of every text (hand-offs took 19% of its event
    # loop's time during 16 Write requests at once).
    run = {"fn": tab.generate, "inputs": inputs, "outputs": outputs, "concurrency_id": "generation",
           "concurrency_limit": limits.writers, "show_progress": "hidden", "postprocess": False}
    private = {"queue": False, "api_visibility": "private"}
    gen = go.click(**announce(playground), js=SHOW_OUTPUT_JS).then(**run, api_name="generate")
    gen.then(tab.describe, model, note, **private)
    submitted = prompt.submit(**announce(playground)).then(**run, api_visibility="private")
    branched = probs.branch(tab.branch, [*inputs, branch_log, last_branch],
                            [branches, branch_text, branch_stats, branch_log, last_branch],
                            api_visibility="private", concurrency_id="generation",
                            concurrency_limit=limits.writers, show_progress="hidden")
    for started in (go.click, prompt.submit):
        started(tab.forget_branches, None, [branches, branch_text, branch_stats, branch_log, last_branch], **private)
    stop_button(playground, halt, [gen, submitted, branched], api_name="stop")
    # When the page opens (in the visitor's language) and whenever another model is picked.
    gr.on(None, tab.describe, model, note, **private)
    model.input(tab.template_for, model, templated, **private)
    model.input(tab.style_for, [model, style], style, **private)  # then style.change moves the sliders
    link_style(style, sliders, **private)
    return [model]
