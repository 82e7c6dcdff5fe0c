"""The Perplexity tab: how surprised each model is by a text, per character, as a chart and a table.

    tab = PerplexityTab(playground)
    table, chart = tab.score("Now is the winter of our discontent", ["lstm", "gru"])
    build(playground)   # inside gr.Blocks: the components, wired to tab's handler
"""

from __future__ import annotations

import math

import gradio as gr

from textgen.core.settings import RequestError
from textgen.core.words import say, words_of
from ui.language import language, tr
from ui.render import SCORE_COLUMNS, model_choices, score_records
from ui.widgets import fail, gpu, lenient, session

NATS = SCORE_COLUMNS["nats_per_char"]


class PerplexityTab:
    """The Perplexity tab's handler, over one playground."""

    def __init__(self, playground):
        self.playground = playground

    @gpu
    def score(self, text, names, progress=gr.Progress(), request: gr.Request = None):  # noqa: B008 (Gradio's progress bar)
        """(table, chart data) for `text` under each model; the API's /score."""
        lang = language(request)
        try:
            rows = self.playground.score(names, text, lambda done, what: progress(done, desc=words_of(what, lang)),
                                         session(request))
        except RequestError as err:
            raise fail(err, lang) from None
        import pandas as pd  # only when a text is scored: the page builds without pandas imported

        records = score_records(rows)  # the chart's columns are fixed (English); the table speaks the visitor's
        # The chart names each model briefly ("GRU", not "GRU (ours, Shakespeare)"): on a phone the full titles ran
        # into each other under the bars. The table beside it keeps the full titles.
        title = SCORE_COLUMNS["title"]
        scored = pd.DataFrame([{**r, title: r[title].split(" (")[0]} for r in records if r[NATS] is not None])
        top = chart_top([r[NATS] for r in records if r[NATS] is not None])
        # The axis titles as plain words in the visitor's language: Gradio translates a plot's title but showed
        # an axis title given as a translation key as its raw key ("__i18n__{...").
        chart = gr.BarPlot(scored, y_lim=[0, top], x_title=say("ppl.chart_x", lang), y_title=say("ppl.chart_y", lang))
        return pd.DataFrame(score_records(rows, lang)), chart


def chart_top(values: list[float]) -> float | None:
    """The chart's upper end: a round number a little above the highest bar. Left to the chart, the axis ended at
    the highest bar's value rounded down (1.2 for an RNN at 1.218), cutting that bar's top off."""
    return math.ceil(max(values) * 1.08 / 0.2) * 0.2 if values else None


def shown_all():
    """The chart, the table and the hint above it, shown once they hold scores."""
    return gr.update(visible=True), gr.update(visible=True), gr.update(visible=True)


def build(playground) -> list:
    """Lay out the Perplexity tab inside the open gr.Blocks and wire its event; returns its model picker."""
    tab = PerplexityTab(playground)
    catalog, limits = playground.catalog, playground.limits
    gr.Markdown(tr("ppl.intro"))
    text = gr.Textbox(label=tr("ppl.text"), lines=4, elem_id="ppl-text",
                      value="Now is the winter of our discontent\nMade glorious summer by this sun of York;")
    ours = [e.name for e in catalog if e.origin == "shipped"][: limits.max_compare]
    models = lenient(gr.CheckboxGroup(model_choices(catalog), value=ours, elem_id="ppl-models",
                                      label=tr("ppl.models", high=limits.max_compare)))
    go = gr.Button(tr("ppl.run"), variant="primary", elem_id="ppl-run")
    # Its axis titles come with the first scores (in the visitor's language); it is hidden until then.
    chart = gr.BarPlot(x=SCORE_COLUMNS["title"], y=NATS, title=tr("ppl.chart_title"), y_lim=[0, None], sort=None,
                       elem_id="ppl-plot", visible=False)
    # The table and the chart appear with the first scores: empty, they showed a blank chart and a table headed
    # "1 | 2 | 3". The hint above the table comes with them.
    # On a phone the table is wider than the screen and scrolls sideways inside its box, with nothing to say so:
    # "Unknown characters" was off screen. The hint shows on narrow screens only (the CSS in render.py).
    swipe = gr.Markdown(tr("ppl.swipe"), elem_id="ppl-swipe", visible=False)
    table = gr.Dataframe(elem_id="ppl-table", wrap=True, visible=False)
    scored = go.click(tab.score, [text, models], [table, chart], api_name="score", concurrency_id="scoring",
                      concurrency_limit=1)
    # Shown by a page-only step, so that the API's /score still answers plain values.
    scored.success(shown_all, None, [table, chart, swipe], queue=False, api_visibility="private")
    return [models]
