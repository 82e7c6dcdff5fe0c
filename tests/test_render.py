"""ui/render.py: what the page shows, checked as plain strings (no browser, no model).

The token view carries text the model wrote, which may be anything: markup in it must show as text, and no
token or alternative can break out of its attribute. The view only grows at its end, so that Gradio sends the
browser just the new spans.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

import ui.render
from textgen.core.events import Live, ScoreRow, Summary, TokenInfo
from textgen.service.catalog import Catalog, ModelEntry
from ui.render import (
    SCORE_COLUMNS,
    STOPPED,
    TokenView,
    model_choices,
    model_note,
    score_records,
    shown,
    stats_markdown,
    token_span,
    unavailable_line,
)


class Spans(HTMLParser):
    """Every tag of a fragment with its attributes, and the text inside the token spans."""

    def __init__(self, fragment: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.texts.append("")

    def handle_data(self, data):
        if self.texts:
            self.texts[-1] += data


def parsed(tok: TokenInfo) -> tuple[dict, str, list]:
    """The one span of a token: its attributes, its text as the browser shows it, its alternatives (data-a)."""
    spans = Spans(token_span(tok))
    assert [tag for tag, _ in spans.tags] == ["span"], spans.tags  # no tag of the token's own
    attrs = spans.tags[0][1]
    assert set(attrs) == {"class", "tabindex", "style", "data-a"}, attrs  # none injected
    return attrs, spans.texts[0], json.loads(attrs["data-a"])


# -- one token ------------------------------------------------------------------------------------------------

MARKUP = ["<script>alert(1)</script>", "<b>", "</span><img src=x onerror=alert(1)>", "&amp;", "<!--"]


@pytest.mark.parametrize("text", MARKUP)
def test_markup_in_a_token_is_shown_as_text(text):
    html = token_span(TokenInfo(1, text, 0.5, [(text, 0.5), ("<i>", 0.2)]))
    assert "<script" not in html and "<b>" not in html and "<img" not in html and "<i>" not in html
    attrs, shown_text, alternatives = parsed(TokenInfo(1, text, 0.5, [(text, 0.5), ("<i>", 0.2)]))
    assert shown_text == text  # escaped in the page, so the browser shows the very characters
    assert alternatives == [[1, shown(text), "50.0%"], [0, "<i>", "20.0%"]]


@pytest.mark.parametrize("text", ["'", '"', "'><b onclick='x", '" onmouseover="alert(1)', "a'b\"c", "\\'", "&#39;"])
def test_quotes_in_a_token_or_an_alternative_cannot_break_the_attribute(text):
    attrs, shown_text, alternatives = parsed(TokenInfo(7, text, 0.25, [("x", 0.5), (text + "!", 0.25)]))
    assert shown_text == text
    # The chosen token is not among the alternatives: it is added, marked as chosen, with its probability.
    assert alternatives == [[0, "x", "50.0%"], [0, shown(text + "!"), "25.0%"], [1, shown(text), "25.0%"]]
    assert attrs["style"] == "--p:0.25" and attrs["class"] == "tg-tok" and attrs["tabindex"] == "0"


def test_spaces_newlines_and_tabs_are_visible_among_the_alternatives():
    tok = TokenInfo(3, " ", 0.6, [(" ", 0.6), ("\n", 0.2), ("\t", 0.1), ("", 0.05), ("a b", 0.05)])
    _, text, alternatives = parsed(tok)
    assert text == " "  # the text itself keeps its space
    assert [row[1] for row in alternatives] == ["␣", "↵", "⇥", "∅", "a␣b"]
    assert [row[0] for row in alternatives] == [1, 0, 0, 0, 0]
    assert [row[2] for row in alternatives] == ["60.0%", "20.0%", "10.0%", "5.0%", "5.0%"]


def test_the_end_of_a_text_reads_as_words_among_the_alternatives():
    # A special token's label is words between angle quotes: its spaces are not text the model would write.
    tok = TokenInfo(5, "⟨end of text⟩", 0.9, [("⟨end of text⟩", 0.9), (" The", 0.1)])
    _, _, alternatives = parsed(tok)
    assert [row[1] for row in alternatives] == ["⟨end of text⟩", "␣The"]


def test_a_newline_token_shows_its_mark_and_still_breaks_the_line():
    _, text, _ = parsed(TokenInfo(4, "\n", 0.9, []))
    assert text == "↵\n"
    _, text, _ = parsed(TokenInfo(4, "<a>\n", 0.9, []))
    assert text == "<a>↵\n"


def test_shading_is_the_tokens_probability():
    for prob, style in [(0.0, "--p:0.00"), (0.123, "--p:0.12"), (1.0, "--p:1.00")]:
        attrs, _, alternatives = parsed(TokenInfo(1, "a", prob, []))
        assert attrs["style"] == style and alternatives == [[1, "a", f"{prob:.1%}"]]


# -- the view of a streaming text -----------------------------------------------------------------------------


def test_the_token_view_only_grows_at_its_end_and_renders_each_token_once(monkeypatch):
    made = []

    def counting_span(tok):
        made.append(tok.id)
        return token_span(tok)

    monkeypatch.setattr(ui.render, "token_span", counting_span)
    tokens = [TokenInfo(i, t, 0.5, [(t, 0.5)]) for i, t in enumerate(["To", " be", "<b>", "\n", "'"])]
    view = TokenView()
    assert view.render([]) == ""
    shown_so_far = [view.render(tokens[:n]) for n in range(1, 6)]
    for earlier, later in zip(shown_so_far, shown_so_far[1:]):
        assert later.startswith(earlier) and len(later) > len(earlier)  # append-only: Gradio sends a diff
    assert made == [0, 1, 2, 3, 4]  # each span made once, however often the view is rendered
    assert view.render(tokens) == shown_so_far[-1] and made == [0, 1, 2, 3, 4]
    assert shown_so_far[-1] == "".join(token_span(tok) for tok in tokens)
    assert [t for t in Spans(shown_so_far[-1]).texts] == ["To", " be", "<b>", "↵\n", "'"]


# -- the numbers under a text ---------------------------------------------------------------------------------


def summary(reasons=("length",), seed=7, warnings=()) -> Summary:
    return Summary(texts=["x"] * len(reasons), tokens=[3] * len(reasons), stop_reasons=list(reasons),
                   prompt_tokens=2, prompt_tokens_cut=0, time_to_first_token=0.04, tokens_per_second=50.0,
                   seconds=0.1, seed=seed, forward_steps=3, warnings=list(warnings))


def writing(tokens: int, first: float = 0.04, last: float = 0.44) -> Live:
    live = Live("lstm", "LSTM")
    live.tokens = [TokenInfo(i, "a", 0.5, []) for i in range(tokens)]
    live.first_token_at, live.last_token_at = first, last
    return live


def test_stats_while_waiting_and_while_writing():
    assert stats_markdown(Live("lstm", "LSTM")) == "Waiting for the first token…"
    loading = Live("lstm", "LSTM", status="Loading LSTM (first use, a few seconds)…")
    assert stats_markdown(loading) == "Loading LSTM (first use, a few seconds)…"
    assert stats_markdown(writing(1)) == "**1** token · first token after **40 ms** · writing…"
    # 160 tokens after the first in 0.4 s: 400 tokens/s (the first token's wait is its own number)
    assert stats_markdown(writing(161)) == "**161** tokens · first token after **40 ms** · **400** tokens/s · writing…"
    assert stats_markdown(writing(3, first=1.5, last=2.5)) == ("**3** tokens · first token after **1.5 s** · "
                                                               "**2** tokens/s · writing…")


@pytest.mark.parametrize("reason", sorted(STOPPED))
def test_stats_of_a_finished_text_say_why_it_stopped(reason):
    live = writing(3, first=0.04, last=0.14)
    live.summary = summary([reason])
    assert stats_markdown(live) == (f"**3** tokens · first token after **40 ms** · **20** tokens/s · "
                                    f"stopped: {STOPPED[reason]} · seed 7")


def test_stats_wording_for_stop_and_for_the_length():
    live = writing(3)
    live.summary = summary(["cancelled"])
    assert "stopped: you pressed Stop · seed 7" in stats_markdown(live)
    live.summary = summary(["length"])
    assert "stopped: it reached the length you set · seed 7" in stats_markdown(live)
    live.summary = summary(["length", "end_of_text", "length"])  # several samples: each reason once
    assert "stopped: it reached the length you set; the model ended the text · seed 7" in stats_markdown(live)


def test_stats_add_the_load_time_and_every_warning_on_lines_of_their_own():
    live = writing(3)
    live.load_seconds = 2.25
    live.summary = summary(warnings=["the prompt was cut", "<b>odd</b>"])
    lines = stats_markdown(live).split("  \n")
    assert lines[1:] == ["(loading the model first took 2.2 s, included in the first token's wait)",
                         "⚠️ the prompt was cut", "⚠️ <b>odd</b>"]


def test_stats_of_a_model_that_failed_are_its_error():
    live = writing(3)
    live.error = "LSTM cannot be used: its files are damaged."
    assert stats_markdown(live) == "⚠️ LSTM cannot be used: its files are damaged."


# -- models -----------------------------------------------------------------------------------------------------


def test_model_note_escapes_and_describes():
    assert model_note("<b>Bold</b>", "a & b <i>") == "**&lt;b&gt;Bold&lt;/b&gt;**: a &amp; b &lt;i&gt;"
    info = {"parameters": 3_460_000, "context": None, "device": "cpu"}
    assert model_note("LSTM", "An LSTM.", info) == (
        "**LSTM**: An LSTM.  \n3.46M parameters · context no limit (recurrent) · on cpu")
    info = {"parameters": 124_439_808, "context": 1024, "device": "cuda:0"}
    assert model_note("GPT-2", "GPT-2.", info).endswith("124.44M parameters · context 1,024 tokens · on cuda:0")
    # What a token is, said for the model in use (a loaded model's info has it)
    info = {**info, "tokens": "word pieces"}
    assert "context 1,024 tokens · its tokens are word pieces · on cuda:0" in model_note("GPT-2", "GPT-2.", info)



def test_model_note_of_an_unavailable_model_says_so_instead_of_its_numbers():
    info = {"parameters": 1, "context": None, "device": "cpu"}
    assert model_note("GPT-2", "GPT-2.", info, unavailable="needs a <download>") == (
        "**GPT-2**: GPT-2.  \n⚠️ Not available on this server: needs a &lt;download&gt;. Pick another model.")


def test_model_choices_mark_the_unavailable_ones_in_catalog_order():
    catalog = Catalog([ModelEntry("lstm", "LSTM", "", "/x", "shipped"), ModelEntry("gpt2", "GPT-2", "", "gpt2", "hub"),
                       ModelEntry("gru", "GRU", "", "/y", "shipped")])
    assert model_choices(catalog) == [("LSTM", "lstm"), ("GPT-2", "gpt2"), ("GRU", "gru")]
    marked = model_choices(catalog, {"gpt2": "needs a download"})
    assert [name for _, name in marked] == ["lstm", "gpt2", "gru"] and marked[0] == ("LSTM", "lstm")
    label = marked[1][0]  # "GPT-2 · unavailable: needs a download"
    assert label.startswith("GPT-2 · ") and "available" in label and "needs a download" in label


def test_a_picker_of_boxes_leaves_the_unavailable_out_and_names_them_in_one_line():
    catalog = Catalog([ModelEntry("lstm", "LSTM", "", "/x", "shipped"), ModelEntry("gpt2", "GPT-2", "", "gpt2", "hub"),
                       ModelEntry("distil", "DistilGPT-2", "", "distil", "hub")])
    unavailable = {"gpt2": "needs internet", "distil": "needs internet"}
    assert model_choices(catalog, unavailable, leave_out=True) == [("LSTM", "lstm")]
    assert unavailable_line(catalog, unavailable) == "Not available here (needs internet): GPT-2, DistilGPT-2."
    assert unavailable_line(catalog, {}) == ""
    chinese = unavailable_line(catalog, unavailable, lang="zh-CN")  # a list as Chinese writes one
    assert chinese.startswith("这里用不了（needs internet）：GPT-2") and chinese.endswith("、DistilGPT-2。"), chinese


# -- scores -----------------------------------------------------------------------------------------------------


def test_score_records_round_for_reading_and_name_the_columns():
    rows = [ScoreRow("lstm", "LSTM", nats_per_char=1.23456, bits_per_char=1.78111, ppl_per_token=3.4567, tokens=12,
                     unknown_chars="你")]
    assert score_records(rows) == [{"Model": "LSTM", SCORE_COLUMNS["nats_per_char"]: 1.235,
                                    "Surprise per character, in bits": 1.781, SCORE_COLUMNS["ppl_per_token"]: 3.46,
                                    "Tokens": 12, "Unknown characters": "“你”"}]
    known = score_records([ScoreRow("gru", "GRU", 1.0, 1.44, 2.7, 5)])[0]
    assert known["Unknown characters"] == "none"  # a value in every cell, not a blank
    # Listed one by one: digits run together would read as a number.
    digits = score_records([ScoreRow("gru", "GRU", 4.7, 6.8, 110.0, 40, unknown_chars="é9—10%")])[0]
    assert digits["Unknown characters"] == "“é” “9” “—” “1” “0” “%”"
    many = score_records([ScoreRow("gru", "GRU", 4.7, 6.8, 110.0, 40, unknown_chars="0123456789%é ")])[0]
    assert many["Unknown characters"].endswith("“%” “é” …")


def test_score_records_add_a_problem_column_only_when_a_model_failed():
    rows = [ScoreRow("lstm", "LSTM", 1.0, 1.44, 2.7, 5), ScoreRow("gpt2", "GPT-2", error="needs a download")]
    records = score_records(rows)
    assert [r[SCORE_COLUMNS["error"]] for r in records] == ["", "needs a download"]
    assert records[1][SCORE_COLUMNS["nats_per_char"]] is None and records[1]["Tokens"] is None
    assert list(records[0]) == list(SCORE_COLUMNS.values())


def test_the_first_tokens_wait_says_how_much_of_it_was_waiting_for_a_place():
    live = writing(3, first=1.5, last=2.5)
    live.waited = 1.2
    assert "first token after **1.5 s** (1.2 s of it waiting for a free place)" in stats_markdown(live)
