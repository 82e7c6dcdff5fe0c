"""The Chat tab: a conversation with a model made for chat. The reply streams in with Write's controls, numbers
and token view; the conversation lives in the page, one per browser tab, and Clear starts a new one.

    tab = ChatTab(playground)
    for conversation, stats, tokens in tab.chat(None, "What is the capital of France?", [], "smollm2",
                                                CHAT_SYSTEM_PROMPT, *slider_values, -1): ...
    build(playground)   # inside gr.Blocks: the components, wired to tab's handlers
"""

from __future__ import annotations

import gradio as gr

from textgen.core.settings import (
    CHAT_STYLE,
    CHAT_STYLE_NAME,
    CHAT_SYSTEM_PROMPT,
    CONTROLS,
    SLIDERS,
    STYLES,
    RequestError,
)
from textgen.core.words import ENGLISH, Phrase, say, words_of
from textgen.service.catalog import Catalog
from ui.language import language, tr
from ui.render import (
    LEGEND_KEYS,
    TokenView,
    listed,
    model_choices,
    model_note,
    model_words,
    stats_markdown,
    token_js,
)
from ui.widgets import (
    PACE,
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

# Each example with the style it is asked in. The poem in Balanced: at Answers' near-greedy settings SmolLM2
# repeated a line 6 to 15 times in each of 5 poems, in Balanced never (benchmarks/CHAT.md).
CHAT_EXAMPLES = [("What is the capital of France?", CHAT_STYLE_NAME), ("Write a short poem about the sea.", "Balanced"),
                 ("Explain in two sentences what a language model is.", CHAT_STYLE_NAME)]
# The reply's token view: the look Write's #tokens gets from TOKEN_CSS, scoped to this component.
CHAT_TOKENS_CSS = ("font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; "
                   "line-height: 1.9; font-size: 0.95em; overflow-wrap: anywhere;")


def chat_messages(history: object) -> list[dict]:
    """The conversation as plain role/content messages (the Chatbot hands content over as a list of parts), or
    RequestError. Roles are left to textgen.core.chat to check."""
    if history is None:
        return []
    if not isinstance(history, (list, tuple)):
        raise RequestError(Phrase("chat.history_type"))
    messages = []
    for i, message in enumerate(history):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, (list, tuple)):
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            content = "\n".join(t for t in parts if isinstance(t, str))
        if not isinstance(content, str):
            raise RequestError(Phrase("chat.history_item", index=i + 1))
        messages.append({"role": message.get("role"), "content": content})
    return messages


class ChatTab:
    """The Chat tab's handlers, over one playground. Offers the models known to chat first, then those whose
    template is known only once they load; never the others (`left_out`)."""

    def __init__(self, playground):
        self.playground = playground
        catalog = playground.catalog
        self.known = {e.name: e.chat_template_known() for e in catalog}
        self.offered = Catalog([e for e in catalog if self.known[e.name]] +
                               [e for e in catalog if self.known[e.name] is None])
        self.left_out = [e for e in catalog if self.known[e.name] is False]

    def choices(self, unavailable: dict[str, str] | None = None, lang: str = ENGLISH) -> list[tuple[str, str]]:
        """The model picker's (label, name) pairs; a model that may or may not chat says when that is known."""
        catalog = self.playground.catalog

        def maybe(name: str) -> str:
            if self.known[name] is not None:
                return ""
            return say("chat.maybe_engine" if not catalog.get(name).runs_here else "chat.maybe_loaded", lang)

        return [(label + maybe(name), name) for label, name in model_choices(self.offered, unavailable, lang=lang)]

    def describe(self, name: str, request: gr.Request = None) -> str:
        catalog, playground, lang = self.playground.catalog, self.playground, language(request)
        if name not in catalog:
            return ""
        title, description = model_words(catalog.get(name), lang)
        why = playground.unavailable().get(name)
        info = None if why else playground.model_info(name)
        note = model_note(title, description, info, why, lang, tokens=catalog.get(name).token_kind())
        if why or (info is None and self.known[name] is not False):
            return note
        # Loaded: its tokenizer says. Not loaded and known to have no template: say so before it loads.
        reason = playground.chat_unsupported_reason(name)
        return note + (f"  \n⚠️ {words_of(reason, lang)}" if reason else "")

    @gpu
    @named("message", "history", "model", "system", *SLIDERS, "seed")
    def chat(self, request: gr.Request, message, conversation, model, system, *values):
        """Stream (conversation, numbers, token view) as the reply is written; the API's /chat."""
        values, seed = values[:-1], values[-1]
        past, shown, lang = [], False, language(request)
        try:
            past = chat_messages(conversation)
            if not isinstance(message, str) or not message.strip():
                raise RequestError(Phrase("chat.empty_message"))
            settings = self.playground.parse("", seed=seed, **dict(zip(SLIDERS, values, strict=True)))
            asked = [*past, {"role": "user", "content": message}]
            yield asked, "", ""  # the question shows at once; the last reply's numbers and tokens go
            shown = True
            view = TokenView()
            for live in self.playground.chat(model, asked, system, settings, session(request), every=PACE):
                # Before the first word, what the reply waits for (a first use's preparation, its place in the
                # queue) is said in the conversation itself, where the person is looking.
                reply = ([{"role": "assistant", "content": live.text}] if live.text else
                         [{"role": "assistant", "content": f"⏳ *{words_of(live.status, lang)}*"}] if live.status
                         else [])
                yield [*asked, *reply], stats_markdown(live, lang), view.render(live.tokens)
        except RequestError as err:
            yield past if shown else gr.skip(), refused(err, lang), gr.skip()  # the question goes back to the box
            raise fail(err, lang) from None

    def take(self, message: str, conversation: list, request: gr.Request = None):
        """Before the reply queues: move the message out of the box into the conversation, and lock sending until
        the reply ends (a second message sent meanwhile would be answered without the first reply). The question
        shows here, unqueued, rather than with the reply's first step: while the server was still starting, or
        with every writer busy, that step came seconds later and the message seemed lost."""
        if not message.strip():
            raise gr.Error(say("chat.empty_message_box", language(request)), print_exception=False)
        self.playground.queued(session(request))  # so that Stop also ends it while it waits in the queue
        locked = gr.update(interactive=False)
        past = chat_messages(conversation)
        return (gr.update(value="", interactive=False), message, past, [*past, {"role": "user", "content": message}],
                locked, locked)

    @staticmethod
    def unlock():
        unlocked = gr.update(interactive=True)
        return unlocked, unlocked, unlocked

    @staticmethod
    def give_back(text: str, past: list):
        """After a failed reply (Gradio then runs no `then`): the message goes back to the box, unlocked, and the
        conversation to what it was before it."""
        return gr.update(value=text, interactive=True), past or [], *ChatTab.unlock()[1:]

    def mark_unavailable(self, request: gr.Request = None):
        """When the page opens, the models that cannot be used here say so in their labels (as the page does for
        its other pickers, app.py: this one lists only the models that can chat, so it is not among them)."""
        return gr.update(choices=self.choices(self.playground.unavailable(), language(request)))


def build(playground) -> list:
    """Lay out the Chat tab inside the open gr.Blocks and wire its events; returns no shared picker."""
    tab = ChatTab(playground)
    limits = playground.limits
    controls = {name: CONTROLS[name].bounded(limits) for name in SLIDERS}
    first = next(iter(tab.offered.names()), None)
    with gr.Row():
        with gr.Column(scale=3) as talk:
            # 380 px: at 420 the Send button fell under the fold of a 1366x768 laptop.
            chatbot = gr.Chatbot(label=tr("chat.conversation"), elem_id="chat-history", height=380, buttons=["copy"],
                                 placeholder=tr("chat.conversation_placeholder"))
            # One line to start with, so that Enter sends (Gradio sends a taller box with Shift+Enter instead)
            message = gr.Textbox(label=tr("chat.message"), lines=1, max_lines=8, elem_id="chat-message",
                                 placeholder=tr("chat.message_placeholder"))
            with gr.Row(elem_id="chat-buttons"):
                send = gr.Button(tr("chat.send"), variant="primary", elem_id="chat-send", min_width=0)
                halt = gr.Button(tr("common.stop"), variant="stop", elem_id="chat-stop", min_width=0)
                clear = gr.Button(tr("chat.clear"), elem_id="chat-clear", min_width=0)
            stats = gr.Markdown("", elem_id="chat-stats")
            with gr.Accordion(tr("chat.token_probabilities"), open=False, elem_id="chat-tokens-box"):
                gr.HTML(tr(LEGEND_KEYS[False]), padding=False, elem_classes="tg-legend-block")
                probs = gr.HTML("", elem_id="chat-tokens", js_on_load=token_js("chat"), css_template=CHAT_TOKENS_CSS,
                                padding=False)
        with gr.Column(scale=2):
            if not first:
                gr.Markdown(tr("chat.no_model"))
            model = gr.Dropdown(tab.choices(), value=first, label=tr("common.model"), elem_id="chat-model",
                                allow_custom_value=True)  # textgen's catalog refuses unknown names
            note = gr.Markdown("", elem_id="chat-model-note")  # written when the page opens, in its language
            if tab.left_out:
                def titles(lang: str) -> str:  # the models' names in each language the page speaks
                    return listed((model_words(e, lang)[0] for e in tab.left_out), lang)

                gr.Markdown(tr("chat.left_out", models=titles), elem_id="chat-left-out")
            system = gr.Textbox(CHAT_SYSTEM_PROMPT, label=tr("chat.system"), lines=2, elem_id="chat-system",
                                info=tr("chat.system_info"))
            # The same styles in the same order as Write's; Chat starts on its own (measured on plain questions).
            style = gr.Radio(style_choices(STYLES), value=CHAT_STYLE_NAME, label=tr("common.style"),
                             elem_id="chat-preset", info=tr("chat.style_info"))
            with gr.Accordion(tr("common.sampling_controls"), open=False, elem_id="chat-controls"):
                sliders = [slider(controls[name], f"chat-{name}") for name in SLIDERS]
                for name, s in zip(SLIDERS, sliders, strict=True):
                    s.value = CHAT_STYLE.get(name, s.value)
                seed = lenient(gr.Number(-1, precision=0, label=tr("common.seed"), elem_id="chat-seed",
                                         info=tr("chat.seed_info")))
    # Under the conversation's buttons (made once the style they set exists): below both columns, on a phone they
    # came after the model and the settings, 1,100 px down, and a newcomer saw no question to start with.
    with talk:
        gr.Examples([list(e) for e in CHAT_EXAMPLES], inputs=[message, style], label=tr("common.examples"),
                    example_labels=[text for text, _ in CHAT_EXAMPLES])  # the messages, not a table of two columns
        gr.Markdown(tr("chat.examples_note"), elem_id="chat-examples-note")
    # What the reply answers, handed over by the page (the box is cleared at once): the message, and the conversation
    # as plain JSON, which API callers may send as {"role", "content": "text"} messages.
    asked = gr.Textbox(visible=False, elem_id="chat-asked")
    history = lenient(gr.JSON(None, visible=False, elem_id="chat-history-in"))

    private = {"queue": False, "api_visibility": "private"}
    taking = {"fn": tab.take, "inputs": [message, chatbot],
              "outputs": [message, asked, history, chatbot, send, clear], **private}
    run = {"fn": tab.chat, "inputs": [asked, history, model, system, *sliders, seed],
           "outputs": [chatbot, stats, probs], "concurrency_id": "generation", "concurrency_limit": limits.writers,
           "show_progress": "hidden"}
    sent = send.click(**taking).success(**run, api_name="chat")
    submitted = message.submit(**taking).success(**run, api_visibility="private")
    for event in (sent, submitted):
        event.then(tab.unlock, None, [message, send, clear], **private)
        event.failure(tab.give_back, [asked, history], [message, chatbot, send, clear], **private)
        event.then(tab.describe, model, note, **private)  # size and context, now that the model is loaded
    stop_button(playground, halt, [sent, submitted], api_visibility="private")
    clear.click(lambda: ([], "", ""), None, [chatbot, stats, probs], **private)
    chatbot.clear(lambda: ("", ""), None, [stats, probs], **private)  # the Chatbot's own bin icon
    gr.on(None, tab.describe, model, note, **private)  # when the page opens, and when another model is picked
    link_style(style, sliders, **private)
    gr.on(None, tab.mark_unavailable, None, model, **private)  # no trigger: when the page loads
    return []
