"""The Compare tab: one prompt and seed, several models writing side by side at the same time.

    tab = CompareTab(playground)
    for *texts_and_numbers in tab.compare(None, "ROMEO:\\n", ["lstm", "gru"], 0.8, 100, 1): ...
    build(playground)   # inside gr.Blocks: the components, wired to tab's handlers
"""

from __future__ import annotations

import gradio as gr

from textgen.core.settings import CONTROLS, RequestError
from textgen.core.words import say
from ui.language import language, tr
from ui.render import model_choices, model_words, stats_markdown
from ui.widgets import PACE, announce, examples, fail, gpu, lenient, session, slider, stop_button


class CompareTab:
    """The Compare tab's handler, over one playground: one box and one line of numbers per model slot."""

    def __init__(self, playground):
        self.playground = playground
        self.slots = playground.limits.max_compare

    @gpu
    def compare(self, request: gr.Request, prompt, models, temperature, max_new_tokens, seed):
        """Stream every slot's text then every slot's numbers; a model that fails says so in its own box while
        the others write on. The API's /compare."""
        lang = language(request)
        try:
            settings = self.playground.parse(prompt, temperature=temperature, max_new_tokens=max_new_tokens,
                                             seed=seed, alternatives=0)
            first = True
            for lives in self.playground.compare(models, settings, session(request), every=PACE):
                texts = [gr.update(visible=False, value="") for _ in range(self.slots)]
                stats = [gr.update(value="") for _ in range(self.slots)]
                for i, live in enumerate(lives):
                    if first or live.error:  # set up the box; later updates send only the text
                        title = model_words(self.playground.catalog.get(live.name), lang)[0] \
                            if live.name in self.playground.catalog else live.title
                        label = say("compare.could_not_write", lang, title=title) if live.error else title
                        texts[i] = gr.update(visible=True, label=label, value=live.text)
                    else:
                        texts[i] = live.text
                    stats[i] = stats_markdown(live, lang)
                first = False
                yield *texts, *stats
        except RequestError as err:
            raise fail(err, lang) from None


def build(playground) -> list:
    """Lay out the Compare tab inside the open gr.Blocks and wire its events; returns its model picker."""
    tab = CompareTab(playground)
    catalog, limits = playground.catalog, playground.limits
    ours = [e.name for e in catalog if e.origin == "shipped"][: limits.max_compare]
    gr.Markdown(tr("compare.intro"))
    # The settings under the prompt, beside the long list of models: under the list, they left the space below the
    # prompt empty and pushed the Compare button under the fold of a 1366x768 laptop.
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label=tr("write.prompt"), lines=3, value="ROMEO:\n", elem_id="cmp-prompt")
            with gr.Row():
                temperature = slider(CONTROLS["temperature"], "cmp-temperature", info=False)
                length = slider(CONTROLS["max_new_tokens"].bounded(limits), "cmp-max", info=False)
                seed = lenient(gr.Number(1, precision=0, label=tr("common.seed"), elem_id="cmp-seed"))
        with gr.Column(scale=2):
            models = lenient(gr.CheckboxGroup(model_choices(catalog), value=ours, elem_id="cmp-models",
                                              label=tr("compare.models", high=limits.max_compare)))
    with gr.Row():
        go = gr.Button(tr("compare.run"), variant="primary", elem_id="cmp-run")
        halt = gr.Button(tr("common.stop"), variant="stop", elem_id="cmp-stop")
    boxes, numbers = [], []
    with gr.Row():
        for i in range(limits.max_compare):
            with gr.Column(min_width=200):
                # As tall as each other whatever each writes (max_lines): a model of word pieces writes a few
                # times more text in the same tokens, and its box grew past the others'. A long text scrolls.
                boxes.append(gr.Textbox(label=tr("compare.slot", index=i + 1), lines=12, max_lines=12,
                                        elem_id=f"cmp-out-{i}", visible=i < len(ours)))
                numbers.append(gr.Markdown("", elem_id=f"cmp-stats-{i}"))

    run = {"fn": tab.compare, "inputs": [prompt, models, temperature, length, seed], "outputs": [*boxes, *numbers],
           "concurrency_id": "generation", "concurrency_limit": limits.writers, "show_progress": "hidden"}
    compared = go.click(**announce(playground)).then(**run, api_name="compare")
    stop_button(playground, halt, [compared], api_visibility="private")
    shipped_examples = examples()
    if shipped_examples:  # after the button's event, which so keeps the API name /compare
        gr.Examples([[e["prompt"], e.get("models") or models.value, 0.8, length.value, 1] for e in shipped_examples],
                    inputs=run["inputs"], outputs=run["outputs"], fn=tab.compare, run_on_click=True,
                    cache_examples=False, label=tr("compare.examples"), api_visibility="private",
                    # each example by its prompt, not a table whose headers Gradio cannot translate
                    example_labels=[" ".join(e["prompt"].split())[:60] for e in shipped_examples])
    return [models]
