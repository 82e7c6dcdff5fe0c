"""The Decoding tab: one prompt, one model, and three ways of choosing the next token side by side: greedy search,
beam search and samples, each with its texts, how likely the model finds them, and its tree of choices.

    tab = DecodeTab(playground)
    greedy, beams, samples = tab.side_by_side(None, "ROMEO:\\n", "lstm", 4, 3, 16, 0.8, 0, 0.95, 1)
    tab.decode("ROMEO:\\n", "lstm", "beam", 4)   # the API's /decode: one method's tree as JSON
    build(playground)   # inside gr.Blocks: the components, wired to tab's handlers
"""

from __future__ import annotations

import gradio as gr

from textgen.core.settings import CONTROLS, RequestError
from textgen.core.settings import DECODE_MAX_NEW_TOKENS as MAX_NEW_TOKENS
from textgen.core.settings import DECODE_MAX_WIDTH as MAX_WIDTH
from textgen.core.words import say, words_of
from ui import decode_view as view
from ui.language import language, tr
from ui.render import model_choices
from ui.widgets import SLIDER_WIDTH, default_model, fail, gpu, lenient, session, slider

INTRO = "decode.intro"  # the key of the tab's first lines (textgen/locales)


def titles(method: str, tree: dict, lang: str) -> tuple[str, str]:
    """A method's heading and its line of what it does, in `lang` (one beam or sample is said as one)."""
    width = tree["width"]
    if method == "greedy":
        return say("decode.greedy.title", lang), say("decode.greedy.how", lang)
    if method == "beam":
        if width == 1:
            return say("decode.beam.title_one", lang), say("decode.beam.how_one", lang)
        return say("decode.beam.title", lang, width=width), say("decode.beam.how", lang, width=width)
    title = say("decode.sample.title_one", lang) if width == 1 else say("decode.sample.title", lang, width=width)
    return title, say("decode.sample.how", lang, seed=tree["seed"])


class DecodeTab:
    """The Decoding tab's handlers, over one playground."""

    def __init__(self, playground):
        self.playground = playground

    @gpu
    def side_by_side(self, request: gr.Request, prompt, model, beams, samples, max_new_tokens, temperature, top_k,
                     top_p, seed):
        """The three methods' columns (HTML) for the page, in the visitor's language."""
        lang = language(request)
        try:
            run = lambda method, width: self.playground.decode(  # noqa: E731 (three calls, one set of values)
                model, prompt, method, width, max_new_tokens, session(request), temperature=temperature,
                top_k=top_k, top_p=top_p, seed=seed)
            greedy, beam, sample = run("greedy", 1), run("beam", beams), run("sample", samples)
        except RequestError as err:
            raise fail(err, lang) from None
        return tuple(view.method_html(*titles(method, tree, lang), tree, lang)
                     for method, tree in (("greedy", greedy), ("beam", beam), ("sample", sample)))

    @gpu
    def decode(self, prompt: str, model: str, method: str = "beam", width: int = 4, max_new_tokens: int = 16,
               temperature: float = CONTROLS["temperature"].default, top_k: int = CONTROLS["top_k"].default,
               top_p: float = CONTROLS["top_p"].default, seed: int = -1, request: gr.Request = None) -> dict:
        """One method's tree of choices: {"sequences": [{"text", "token_ids", "logprob", "node"}], "nodes": [{"id",
        "parent", "step", "token_id", "text", "logprob", "kept"}], ...}, sequences best first (samples in drawing
        order). `method` is "greedy", "beam" or "sample"; `width` the beams or samples (1 to 8); a sequence's
        logprob is the sum of its tokens' under the model, along its path of nodes. The API's /decode."""
        lang = language(request)
        try:
            tree = self.playground.decode(model, prompt, method, width, max_new_tokens, session(request),
                                          temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        except RequestError as err:
            raise fail(err, lang) from None
        # The notes as plain text in the caller's language (English for an API client that names none).
        return {**tree, "warnings": [words_of(w, lang) for w in tree.get("warnings", [])],
                "notes": [words_of(n, lang) for n in tree.get("notes", [])]}


def build(playground) -> list:
    """Lay out the Decoding tab inside the open gr.Blocks and wire its events; returns its model picker."""
    tab = DecodeTab(playground)
    limits = playground.limits
    gr.Markdown(tr(INTRO))
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            prompt = gr.Textbox(label=tr("decode.prompt"), lines=2, value="ROMEO:\n", elem_id="dec-prompt")
            model = gr.Dropdown(model_choices(playground.catalog), value=default_model(playground.catalog),
                                label=tr("common.model"), elem_id="dec-model", allow_custom_value=True)
        with gr.Column(scale=3, min_width=280):
            with gr.Row():
                beams = lenient(gr.Slider(1, MAX_WIDTH, value=4, step=1, label=tr("decode.beams"),
                                          elem_id="dec-beams", info=tr("decode.beams_info"), min_width=SLIDER_WIDTH))
                samples = lenient(gr.Slider(1, MAX_WIDTH, value=3, step=1, label=tr("decode.samples"),
                                            elem_id="dec-samples", info=tr("decode.samples_info"),
                                            min_width=SLIDER_WIDTH))
                cap = min(MAX_NEW_TOKENS, limits.max_new_tokens)  # the operator's cap may be lower (even 1)
                tokens = lenient(gr.Slider(1, max(cap, 2), value=min(16, cap), step=1,
                                           label=tr("decode.tokens"), elem_id="dec-tokens",
                                           info=tr("decode.tokens_info"), min_width=SLIDER_WIDTH))
            with gr.Accordion(tr("decode.sampling_controls"), open=False, elem_id="dec-controls"):
                with gr.Row():
                    temperature = slider(CONTROLS["temperature"].bounded(limits), "dec-temperature")
                    top_k = slider(CONTROLS["top_k"].bounded(limits), "dec-top_k")
                    top_p = slider(CONTROLS["top_p"].bounded(limits), "dec-top_p")
                seed = lenient(gr.Number(-1, precision=0, label=tr("common.seed"), elem_id="dec-seed",
                                         info=tr("decode.seed_info")))
    go = gr.Button(tr("decode.run"), variant="primary", elem_id="dec-run")
    gr.Markdown(tr(view.TREE_HELP), elem_classes="tg-legend")
    columns = []
    with gr.Row(equal_height=False):
        for name in ("greedy", "beam", "sample"):
            with gr.Column(min_width=300):  # side by side on a laptop, one under another on a phone
                columns.append(gr.HTML("", elem_id=f"dec-{name}", css_template=view.CSS, min_height=0))
    go.click(tab.side_by_side, [prompt, model, beams, samples, tokens, temperature, top_k, top_p, seed], columns,
             concurrency_id="step", concurrency_limit=limits.concurrency, api_visibility="private",
             show_progress="minimal")
    gr.api(tab.decode, api_name="decode", concurrency_id="step", concurrency_limit=limits.concurrency)
    return [model]
