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
from ui import decode_view as view
from ui.render import model_choices
from ui.widgets import default_model, fail, gpu, lenient, session, slider

INTRO = ("A model gives every possible next token a probability; *how* one is chosen changes the text. "
         "**Greedy** takes the likeliest token every time. **Beam search** keeps several texts at once and, at every "
         "step, the likeliest continuations of all of them together, so it can find a likelier whole text than "
         "greedy. **Samples** draw each token at random by its probability (under the sliders), so each text "
         "differs. Under each text: how likely the model finds the whole of it.")


class DecodeTab:
    """The Decoding tab's handlers, over one playground."""

    def __init__(self, playground):
        self.playground = playground

    @gpu
    def side_by_side(self, request: gr.Request, prompt, model, beams, samples, max_new_tokens, temperature, top_k,
                     top_p, seed):
        """The three methods' columns (HTML) for the page."""
        try:
            run = lambda method, width: self.playground.decode(  # noqa: E731 (three calls, one set of values)
                model, prompt, method, width, max_new_tokens, session(request), temperature=temperature,
                top_k=top_k, top_p=top_p, seed=seed)
            greedy, beam, sample = run("greedy", 1), run("beam", beams), run("sample", samples)
        except RequestError as err:
            raise fail(err) from None
        return (view.method_html("Greedy", "The likeliest next token, every time.", greedy),
                view.method_html(f"Beam search, {beam['width']} beams",
                                 f"Keeps the {beam['width']} likeliest texts at every step.", beam),
                view.method_html(f"{sample['width']} samples", f"Each token drawn at random (seed "
                                 f"{sample['seed']}; the same seed draws the same texts).", sample))

    @gpu
    def decode(self, prompt: str, model: str, method: str = "beam", width: int = 4, max_new_tokens: int = 16,
               temperature: float = CONTROLS["temperature"].default, top_k: int = CONTROLS["top_k"].default,
               top_p: float = CONTROLS["top_p"].default, seed: int = -1, request: gr.Request = None) -> dict:
        """One method's tree of choices: {"sequences": [{"text", "token_ids", "logprob", "node"}], "nodes": [{"id",
        "parent", "step", "token_id", "text", "logprob", "kept"}], ...}, sequences best first (samples in drawing
        order). `method` is "greedy", "beam" or "sample"; `width` the beams or samples (1 to 8); a sequence's
        logprob is the sum of its tokens' under the model, along its path of nodes. The API's /decode."""
        try:
            return self.playground.decode(model, prompt, method, width, max_new_tokens, session(request),
                                          temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        except RequestError as err:
            raise fail(err) from None


def build(playground) -> list:
    """Lay out the Decoding tab inside the open gr.Blocks and wire its events; returns its model picker."""
    tab = DecodeTab(playground)
    limits = playground.limits
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            prompt = gr.Textbox(label="Prompt", lines=2, value="ROMEO:\n", elem_id="dec-prompt")
            model = gr.Dropdown(model_choices(playground.catalog), value=default_model(playground.catalog),
                                label="Model", elem_id="dec-model", allow_custom_value=True)
        with gr.Column(scale=3, min_width=280):
            with gr.Row():
                beams = lenient(gr.Slider(1, MAX_WIDTH, value=4, step=1, label="Beams", elem_id="dec-beams",
                                          info="Texts beam search keeps at every step."))
                samples = lenient(gr.Slider(1, MAX_WIDTH, value=3, step=1, label="Samples", elem_id="dec-samples",
                                            info="Texts drawn at random."))
                cap = min(MAX_NEW_TOKENS, limits.max_new_tokens)  # the operator's cap may be lower (even 1)
                tokens = lenient(gr.Slider(1, max(cap, 2), value=min(16, cap), step=1,
                                           label="Tokens", elem_id="dec-tokens",
                                           info="How many tokens each text writes."))
            with gr.Accordion("Sampling controls (for the samples)", open=False, elem_id="dec-controls"):
                with gr.Row():
                    temperature = slider(CONTROLS["temperature"].bounded(limits), "dec-temperature")
                    top_k = slider(CONTROLS["top_k"].bounded(limits), "dec-top_k")
                    top_p = slider(CONTROLS["top_p"].bounded(limits), "dec-top_p")
                seed = lenient(gr.Number(-1, precision=0, label="Seed", elem_id="dec-seed",
                                         info="The same seed draws the same samples again. -1 picks one at random."))
    go = gr.Button("Write all three", variant="primary", elem_id="dec-run")
    gr.Markdown(view.TREE_HELP, elem_classes="tg-legend")
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
