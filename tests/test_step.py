"""The Step by step tab: its /next_token API driven through gradio_client against a live server, on every shipped
model, and its page handlers called as Gradio calls them (one browser session, one kept StepSession)."""

from __future__ import annotations

import html
import inspect
import json
import re
from types import SimpleNamespace

import gradio as gr
import pytest
from conftest import free_port
from gradio_client import Client

import app
from textgen.core.settings import SLIDERS
from textgen.core.words import say
from textgen.service.catalog import SHIPPED_DIR, Catalog, entry_for_source, shipped_entries
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground
from textgen.service.step_sessions import Written
from ui import step_view as view
from ui.step import STEP_CONTROLS

SHIPPED = sorted(e.name for e in shipped_entries(SHIPPED_DIR))
STAGE_ORDER = ["model", "repetition_penalty", "no_repeat_ngram", "temperature", "top_k", "top_p", "min_p", "greedy"]
# Everything off but the model's own wish: temperature 1, no filter, no penalty.
OFF = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
       "no_repeat_ngram_size": 0}


@pytest.fixture(scope="module")
def served(model_dirs):
    # The shipped models (the API must hold for every one) and a tiny GPT-2 (a Hugging Face Transformer).
    catalog = Catalog([*shipped_entries(SHIPPED_DIR), entry_for_source(str(model_dirs["tiny-gpt2"]), name="tiny-gpt2")])
    playground = Playground(ModelManager(catalog, device="cpu"))
    demo, url = app.serve(playground, free_port())
    yield SimpleNamespace(url=url, demo=demo, playground=playground, client=Client(url, verbose=False))
    demo.close()


def next_token(served, prompt="ROMEO:\n", model="lstm", top_n=10, **controls):
    values = {**OFF, **controls}
    return served.client.predict(prompt, model, values["temperature"], values["top_k"], values["top_p"],
                                 values["min_p"], values["repetition_penalty"], values["no_repeat_ngram_size"], top_n,
                                 api_name="/next_token")


def nonzero(stage: dict) -> list[dict]:
    return [t for t in stage["tokens"] if t["prob"] > 0]


# -- the API ----------------------------------------------------------------------------------------------------


def test_every_shipped_model_is_tested():
    assert {"lstm", "gru", "rnn", "transformer"} <= set(SHIPPED)


@pytest.mark.parametrize("model", SHIPPED)
def test_stages_are_probabilities_in_the_order_applied(served, model):
    every = {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "min_p": 0.02, "repetition_penalty": 1.2,
             "no_repeat_ngram_size": 3}
    result = next_token(served, "First Citizen:\nBefore we proceed", model, top_n=10, **every)
    names = [s["name"] for s in result["stages"]]
    assert names == ["model", "repetition_penalty", "no_repeat_ngram", "temperature", "top_k", "top_p", "min_p"]
    for stage in result["stages"]:
        assert len(stage["tokens"]) >= 10
        assert all(0.0 <= t["prob"] <= 1.0 for t in stage["tokens"]), stage
        assert all((t["prob"] == 0) == t["removed"] or t["prob"] < 1e-6 for t in stage["tokens"])
        assert sum(t["prob"] for t in stage["tokens"]) <= 1 + 1e-4
    # Off controls have no stage; the order stays the engine's.
    fewer = next_token(served, "ROMEO:\n", model, top_k=5, temperature=0.5)
    assert [s["name"] for s in fewer["stages"]] == ["model", "temperature", "top_k"]
    # When every token the last stage allows is listed, they make up all of it.
    last = fewer["stages"][-1]
    assert last["kept"] == 5 and len(nonzero(last)) == 5
    assert sum(t["prob"] for t in last["tokens"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("model", SHIPPED)
def test_top_k_3_leaves_exactly_three(served, model):
    last = next_token(served, model=model, top_k=3)["stages"][-1]
    assert last["name"] == "top_k" and len(nonzero(last)) == 3 and last["kept"] == 3
    assert sum(t["prob"] for t in last["tokens"]) == pytest.approx(1.0, abs=1e-3)
    removed = [t for t in last["tokens"] if t["removed"]]
    assert len(removed) == len(last["tokens"]) - 3 and all(t["prob"] == 0 for t in removed)


@pytest.mark.parametrize("model", SHIPPED)
def test_temperature_sharpens_below_1_and_flattens_above(served, model):
    cold = next_token(served, model=model, temperature=0.5)["stages"]
    hot = next_token(served, model=model, temperature=1.5)["stages"]
    assert cold[0] == hot[0]  # the model stage does not depend on the controls
    top = cold[0]["tokens"][0]
    assert cold[-1]["name"] == hot[-1]["name"] == "temperature"
    assert cold[-1]["tokens"][0]["id"] == top["id"] == hot[-1]["tokens"][0]["id"]
    assert cold[-1]["tokens"][0]["prob"] > top["prob"] > hot[-1]["tokens"][0]["prob"]


@pytest.mark.parametrize("model", SHIPPED)
def test_top_p_keeps_the_smallest_set_that_reaches_p(served, model):
    stages = next_token(served, model=model, top_n=50, top_p=0.5)["stages"]
    assert [s["name"] for s in stages] == ["model", "top_p"]
    ranked = sorted(stages[0]["tokens"], key=lambda t: -t["prob"])
    total, smallest = 0.0, set()
    for t in ranked:
        smallest.add(t["id"])
        total += t["prob"]
        if total >= 0.5:
            break
    assert total >= 0.5, "the listed tokens should cover half of the model's wish"
    kept = {t["id"] for t in nonzero(stages[-1])}
    assert kept == smallest, (kept, smallest)
    assert stages[-1]["kept"] == len(smallest)


@pytest.mark.parametrize("model", SHIPPED)
def test_greedy_steps_reproduce_generate_token_for_token(served, model):
    controls = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.3,
                "no_repeat_ngram_size": 3}
    prompt, n = "First Citizen:\n", 24
    by_slider = {**controls, "max_new_tokens": n}
    generated = served.client.predict(prompt, model, *[by_slider[s] for s in SLIDERS], 1, api_name="/generate")[0]
    text = prompt
    for _ in range(n):
        last = next_token(served, text, model, top_n=5, **controls)["stages"][-1]
        assert last["name"] == "greedy"
        best = max(last["tokens"], key=lambda t: t["prob"])
        assert best["prob"] == pytest.approx(1.0) and len(nonzero(last)) == 1
        text += best["text"]
    assert text[len(prompt):] == generated  # (n characters for a character model, more for a BPE one)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"model": "nope"}, "unknown model"),
        ({"model": "../../etc/passwd"}, "unknown model"),
        ({"temperature": 99}, "temperature must be between"),
        ({"temperature": "warm"}, "temperature must be a number"),
        ({"top_k": -1}, "top_k must be between"),
        ({"top_k": 2.5}, "top_k must be a whole number"),
        ({"top_p": 0}, "top_p must be between"),
        ({"min_p": 1.5}, "min_p must be between"),
        ({"repetition_penalty": 0.5}, "repetition_penalty must be between"),
        ({"no_repeat_ngram_size": 11}, "no_repeat_ngram_size must be between"),
        ({"top_n": 0}, "top_n must be between"),
        ({"top_n": 10_000}, "top_n must be between"),
        ({"prompt": "x" * 20_000}, "the limit is"),
        ({"prompt": 7}, "the prompt must be text"),
    ],
)
def test_bad_requests_get_a_clear_message(served, args, message):
    with pytest.raises(Exception) as err:
        next_token(served, **args)
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)


def test_an_empty_prompt_starts_from_scratch_as_generation_does(served):
    # Generation takes an empty prompt as "start a new text" and says so; the API does the same, in words.
    result = next_token(served, "", "lstm")
    assert result["stages"][0]["tokens"] and any("empty" in w for w in result["warnings"])


# -- the page's handlers, called as Gradio calls them ---------------------------------------------------------


def handler(served, name: str):
    """The page's handler `name` as a plain function; one that streams (Start shows the start-up's progress
    first) gives its last update, which is what the page shows in the end."""
    fn = next(fn.fn for fn in served.demo.fns.values() if fn.name == name)

    def last_update(*args):
        out = fn(*args)
        return list(out)[-1] if inspect.isgenerator(out) else out

    return last_update


def request(session: str, accept_language: str | None = None):
    headers = {"accept-language": accept_language} if accept_language else {}
    return SimpleNamespace(session_hash=session, headers=headers)


def page_values(**controls) -> list:
    values = {**OFF, **controls}
    return [values[name] for name in STEP_CONTROLS]


def written(text_html: str) -> list[str]:
    return re.findall(r"<span class=tg-tok [^>]*>(.*?)</span>", text_html, flags=re.S)


class ForwardCount:
    """Counts every call of a model's forward (a hook on the whole model)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls += 1


def test_moving_a_slider_redraws_the_bars_without_running_the_model(served):
    model = served.playground.manager.get("lstm").model
    count = ForwardCount(model)
    try:
        start, redraw = handler(served, "start_step"), handler(served, "redraw")
        text, status, bars = start(request("slider"), "ROMEO:\n", "lstm", *page_values())
        assert count.calls >= 1 and "sg-bar" in bars and "sg-cut" not in bars
        after_start = count.calls
        _, _, narrow = redraw(request("slider"), "ROMEO:\n", "lstm", *page_values(top_k=3))
        _, _, cold = redraw(request("slider"), "ROMEO:\n", "lstm", *page_values(temperature=0.3, min_p=0.2))
        assert count.calls == after_start, "a slider change ran the model"
        listed = narrow.count("<li>") // narrow.count("<section")  # every stage lists the same tokens
        assert narrow != bars and narrow.count("sg-bar sg-cut") == listed - 3
        assert "Top-k 3" in narrow and "Temperature 0.3" in cold and "Min-p 0.2" in cold
    finally:
        count.handle.remove()


def test_a_slider_before_start_changes_nothing(served):
    redraw = handler(served, "redraw")
    assert all(out is not None and not isinstance(out, str) for out in
               redraw(request("never-started"), "ROMEO:\n", "lstm", *page_values(top_k=3)))


def test_pick_back_sample_run_and_sample_many(served):
    who = request("actions")
    start = handler(served, "start_step")
    text, _, bars = start(who, "ROMEO:\n", "gru", *page_values())
    assert written(text) == []
    # Pick: the bar's token id, as the page's click sends it.
    token_id = int(re.search(r"data-id='(\d+)'", bars).group(1))
    text, status, _ = handler(served, "pick_step")(who, gr.EventData(None, {"token": token_id}), "ROMEO:\n", "gru",
                                                  *page_values())
    assert len(written(text)) == 1 and "You picked" in status
    # Back takes it away; once more says there is nothing left to take back.
    back = handler(served, "back_step")
    text, status, _ = back(who, "ROMEO:\n", "gru", *page_values())
    assert written(text) == [] and "Took back" in status
    text, status, _ = back(who, "ROMEO:\n", "gru", *page_values())
    assert "Nothing to take back" in status
    # Sample: one token; the same seed from the same text draws the same token.
    sample = handler(served, "sample_step")
    first, status, _ = sample(who, "ROMEO:\n", "gru", *page_values(temperature=0.9), 5)
    assert len(written(first)) == 1 and "seed 5" in status
    back(who, "ROMEO:\n", "gru", *page_values())
    again, _, _ = sample(who, "ROMEO:\n", "gru", *page_values(temperature=0.9), 5)
    assert written(again) == written(first)
    # Run N: N more tokens.
    text, status, _ = handler(served, "run_step")(who, "ROMEO:\n", "gru", *page_values(temperature=0.8), 3, 12)
    assert len(written(text)) == 13 and "Wrote 12 tokens" in status
    # Each token Run wrote brings what else it could have been to its pop-up, as a sampled one does.
    pop_ups = [json.loads(html.unescape(a)) for a in re.findall(r"data-a='([^']*)'", text)]
    assert len(pop_ups) == 13 and all(len(rows) >= 2 for rows in pop_ups)
    assert all(sum(chosen for chosen, _, _ in rows) == 1 for rows in pop_ups)
    # Sample many: 200 draws, shown beside the last box; nothing written.
    text, status, bars = handler(served, "many_step")(who, "ROMEO:\n", "gru", *page_values(top_k=5), 1)
    assert len(written(text)) == 13
    counts = [int(c) for c in re.findall(r"<span class=sg-count>(\d+)×</span>", bars)]
    assert sum(counts) == 200 and len([c for c in counts if c]) <= 5
    assert "200 draws" in bars
    # A slider moved afterwards: the counts belong to other settings and go.
    _, _, redrawn = handler(served, "redraw")(who, "ROMEO:\n", "gru", *page_values(top_k=6))
    assert "sg-count" not in redrawn


def test_run_writes_what_generate_writes_with_the_same_seed(served):
    controls = {"temperature": 0.9, "top_k": 0, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.05,
                "no_repeat_ngram_size": 0}
    text, _, _ = handler(served, "run_step")(request("same-seed"), "ROMEO:\n", "lstm", *page_values(**controls), 42, 30)
    generated = served.client.predict("ROMEO:\n", "lstm", *[{**controls, "max_new_tokens": 30}[s] for s in SLIDERS],
                                      42, api_name="/generate")[0]
    import html

    assert html.unescape("".join(written(text))).replace("↵\n", "\n") == generated


def test_changing_the_prompt_starts_again_from_it(served):
    who = request("new-prompt")
    handler(served, "run_step")(who, "ROMEO:\n", "rnn", *page_values(), 1, 5)
    text, _, _ = handler(served, "sample_step")(who, "JULIET:\n", "rnn", *page_values(), 1)
    assert "JULIET" in text and len(written(text)) == 1


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("start_step", ("ROMEO:", "nope", *page_values()), "unknown model"),
        ("start_step", ("ROMEO:", "lstm", *page_values(temperature=5)), "temperature must be between"),
        ("start_step", ("x" * 20_000, "lstm", *page_values()), "the limit is"),
        ("sample_step", ("ROMEO:", "lstm", *page_values(top_k=-2), 1), "top_k must be between"),
        ("run_step", ("ROMEO:", "lstm", *page_values(), 1, 10**6), "n must be between"),
    ],
)
def test_bad_page_values_are_clear_messages(served, name, args, message):
    with pytest.raises(gr.Error) as err:
        handler(served, name)(request(f"bad-{name}"), *args)
    assert message in str(err.value) and "Traceback" not in str(err.value)


def test_a_click_before_start_says_what_to_do(served):
    with pytest.raises(gr.Error, match="press Start first"):
        handler(served, "pick_step")(request("no-start"), gr.EventData(None, {"token": 3}), "ROMEO:", "lstm",
                                     *page_values())
    handler(served, "start_step")(request("bad-token"), "ROMEO:", "lstm", *page_values())
    with pytest.raises(gr.Error, match="token_id must be"):
        handler(served, "pick_step")(request("bad-token"), gr.EventData(None, {"token": "<script>"}), "ROMEO:", "lstm",
                                     *page_values())


def english_words(page: str) -> list[str]:
    """Words of English left in a Chinese page part (its HTML tags, token texts and control names aside)."""
    text = re.sub(r"<[^>]*>|“[^”]*”|Top-[kp]|Min-p|LSTM|GRU|RNN|Transformer|GPT-2", " ", page)
    return re.findall(r"[A-Za-z]{3,}", text)


def test_a_chinese_visitor_reads_the_tab_in_chinese(served):
    who = request("zh", "zh-CN,zh;q=0.9,en;q=0.8")
    text, status, bars = handler(served, "start_step")(who, "ROMEO:\n", "lstm", *page_values(top_k=3))
    assert "已经读完你的提示" in status and "模型想写的" in bars and "被这一步排除" in bars
    assert english_words(status) == [] and english_words(bars) == []
    _, status, _ = handler(served, "sample_step")(who, "ROMEO:\n", "lstm", *page_values(), 5)
    assert "模型抽到了" in status and "随机种子 5" in status and english_words(status) == []
    _, status, _ = handler(served, "run_step")(who, "ROMEO:\n", "lstm", *page_values(), 1, 3)
    assert "写了 3 个词元" in status and "达到了你设定的长度" in status
    _, status, bars = handler(served, "many_step")(who, "ROMEO:\n", "lstm", *page_values(), 1)
    assert "抽了 200 次" in bars and english_words(status) == [] and english_words(bars) == []
    note, *_, units, unit, heat, _, _ = handler(served, "look_inside")(who, TEXT * 2, "lstm")
    assert "看了看" in note and "单元" in heat and "似乎" in units["choices"][0][0]
    assert english_words(heat) == [] and english_words(units["choices"][0][0]) == []
    # A refusal is said in Chinese too.
    with pytest.raises(gr.Error, match="请先按“看看内部”"):
        handler(served, "show_unit")(request("zh-no-look", "zh-CN"), 3)
    with pytest.raises(gr.Error, match="请先按“开始”"):
        handler(served, "pick_step")(request("zh-no-start", "zh-CN"), gr.EventData(None, {"token": 3}), "ROMEO:",
                                     "lstm", *page_values())


# -- inside the model -------------------------------------------------------------------------------------------

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


@pytest.mark.parametrize("model", ["transformer", "tiny-gpt2"])
def test_attention_for_transformers(served, model):
    who = request(f"att-{model}")
    handler(served, "start_step")(who, TEXT, model, *page_values())
    look = handler(served, "look_inside")(who, TEXT, model)
    note, layers, heads, query, shading, units, unit, heat, attention_intro, units_intro = look
    assert "Looked inside" in note
    assert attention_intro["visible"] and not units_intro["visible"]  # only the view that fits keeps its heading
    assert len(layers["choices"]) >= 3 and len(heads["choices"]) >= 3 and query["maximum"] > 10
    assert "Looking from token" in shading and "sg-query" in shading and shading.count("sg-key") > 10
    assert "no memory units" in heat and units["choices"] == []  # the one-line "not for this model"
    assert units["visible"] is False and unit["visible"] is False and layers["visible"]  # only what fits shows
    # Another head: drawn again from the weights already read.
    one_head = handler(served, "attention_again")(who, 0, 1)
    assert "layer 1, head 2" in one_head and one_head != shading
    # Another token, as a click sends it, even after the text started again with another model.
    handler(served, "start_step")(who, TEXT, "lstm", *page_values())
    new_query, from_three = handler(served, "look_from_click")(who, gr.EventData(None, {"index": 3}), -1, -1)
    assert new_query == 3 and "Looking from token 3" in from_three and from_three.count("sg-later") > 5


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_units_for_recurrent_models(served, model):
    who = request(f"units-{model}")
    look = handler(served, "look_inside")(who, TEXT * 2, model)
    note, layers, heads, query, shading, units, unit, heat, attention_intro, units_intro = look
    assert "has no attention" in shading  # the one-line "not for this model"
    assert units_intro["visible"] and not attention_intro["visible"]
    assert not any(picker["visible"] for picker in (layers, heads, query))  # only what fits shows
    assert len(units["choices"]) >= 3 and unit["value"] == units["value"] and units["visible"]
    unit = unit["value"]
    assert "seems to" in units["choices"][0][0] and f"Unit {unit}" in heat and "hsla(" in heat
    number, other = handler(served, "show_unit")(who, 7)
    assert number == 7 and "Unit 7" in other
    # The text starts again with another model (as a model change does, maybe while the look was under way):
    # the look on the page still answers, from the model it was taken with.
    handler(served, "start_step")(who, TEXT, "transformer", *page_values())
    number, again = handler(served, "show_unit")(who, 7)
    assert again == other
    with pytest.raises(gr.Error, match="whole number from 0 to"):
        handler(served, "show_unit")(who, 100_000)


def test_too_short_a_text_for_units_says_so(served):
    note, *_, heat, _, units_intro = handler(served, "look_inside")(request("short"), "ROMEO:", "lstm")
    # a sentence that says what there is, what is needed and which buttons to press
    assert "The text so far has 6 characters" in heat and "at least 20" in heat
    assert "press Run to let the model write more, then Look inside again." in heat
    assert units_intro["visible"]  # an LSTM's units view, waiting for more text


# -- the page side, without a server -------------------------------------------------------------------------------


def test_bars_grey_out_removed_tokens_and_show_tokens_visibly():
    stages = [
        {"name": "model", "label": "The model wants", "help": "h", "kept": 3, "other": 0.1, "blocked": False,
         "tokens": [{"id": 1, "text": " ", "shown": "␣", "prob": 0.5, "removed": False},
                    {"id": 2, "text": "\n", "shown": "↵", "prob": 0.3, "removed": False},
                    {"id": 3, "text": "<b>", "shown": "<b>", "prob": 0.1, "removed": False}]},
        {"name": "top_k", "label": "Top-k 2", "help": "h", "kept": 2, "other": 0.0, "blocked": False,
         "tokens": [{"id": 1, "text": " ", "shown": "␣", "prob": 0.625, "removed": False},
                    {"id": 2, "text": "\n", "shown": "↵", "prob": 0.375, "removed": False},
                    {"id": 3, "text": "<b>", "shown": "<b>", "prob": 0.0, "removed": True}]},
    ]
    out = view.bars_html(stages)
    assert out.count("sg-bar sg-cut") == 1 and "␣" in out and "↵" in out
    assert "<b>" not in out.replace("<b>200", "") and "&lt;b&gt;" in out  # token text is escaped
    assert "62.5%" in out and "ruled out by this step" in out
    counted = view.bars_html(stages, {"draws": 10, "seed": 1, "counts": [{"id": 1, "count": 6}, {"id": 2, "count": 4}]})
    assert "6×" in counted and "4×" in counted and "10 draws" in counted


def test_the_text_view_has_its_own_pop_up_without_branching():
    from ui.render import token_js

    script = token_js("step", heading="pop.one_of")
    assert "tg-pop-step" in script and "tg-pop-write" not in script  # its own pop-up, apart from the Write tab's
    assert "BRANCHING" not in script and "pinned && false" in script  # nothing to branch to here
    assert "It was one of" in script and "它是这些候选之一" in script  # its heading, in each language the page speaks
    out = view.text_html("<i>A", [Written("b", 0.5, [("b", 0.5), ("c", 0.2)])])
    assert "&lt;i&gt;A" in out and "class=tg-tok" in out


def test_before_start_press_start_is_said_once_and_the_bars_say_what_will_appear():
    from ui.step_view import bars_html

    note = bars_html([])
    assert "appear here" in note and "*" not in note and "Start" not in note
    assert "Start" in say("step.no_session") and "Start" not in say("step.intro")  # said beside the button, once
    # In Chinese too: the button's own name, once.
    assert say("step.start", "zh-CN") in say("step.no_session", "zh-CN")
    assert say("step.start", "zh-CN") not in say("step.intro", "zh-CN") and "显示在这里" in bars_html([], lang="zh-CN")


def test_a_units_map_is_coloured_on_the_units_own_range_not_around_zero():
    from ui.step_view import heat_html

    tokens = [{"text": t, "shown": t} for t in ("ROMEO", ":", " ", "hi")]
    page = heat_html(tokens, [-0.06, -7.6, -3.83, -7.6], unit=5)  # always below zero, highest at the name
    shades = re.findall(r"title='[^']*' style='background:hsla\((\d+),80%,50%,([\d.]+)\)'", page)  # the tokens
    assert shades[0] == ("0", "0.80") and shades[1] == ("215", "0.80")  # the name red, the lowest blue
    assert float(shades[2][1]) < 0.05  # half-way: white
    assert "-7.60 to -0.06" in page and "highest in this text" in page
