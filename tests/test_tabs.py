"""The page's tabs are plain classes: their handlers run without Gradio serving anything, which is how these
tests call them (one example per tab; the browser tests drive the same handlers through the page).

    python -m pytest -q tests/test_tabs.py
"""

from __future__ import annotations

import gradio as gr
import pytest
from helpers import generate_args

from textgen.service.playground import Playground
from ui.chat import ChatTab
from ui.compare import CompareTab
from ui.decode import DecodeTab
from ui.perplexity import PerplexityTab
from ui.step import StepTab
from ui.write import WriteTab


@pytest.fixture(scope="module")
def playground(manager) -> Playground:
    return Playground(manager)


def test_write_streams_the_text_its_numbers_and_its_tokens(playground):
    outputs = list(WriteTab(playground).generate(None, *generate_args(model="gru", max_new_tokens=12)))
    text, stats, tokens = outputs[-1]
    assert text and isinstance(text, str)
    assert "tokens" in stats.lower()
    assert "tok" in tokens  # the token view's HTML, one span per token


def test_write_refuses_an_unknown_model_with_a_message_for_the_visitor(playground):
    with pytest.raises(gr.Error) as refused:
        list(WriteTab(playground).generate(None, *generate_args(model="no-such-model")))
    assert "no-such-model" in str(refused.value)


def test_step_by_step_reports_each_sampling_stage_of_the_next_token(playground):
    result = StepTab(playground).next_token("ROMEO:", "lstm", temperature=0.8, top_k=5, top_n=8)
    names = [stage["name"] for stage in result["stages"]]
    assert names[0] == "model" and "top_k" in names
    assert all(len(stage["tokens"]) == 8 for stage in result["stages"])


def test_compare_shows_one_box_per_model_side_by_side(playground):
    tab = CompareTab(playground)
    last = list(tab.compare(None, "ROMEO:", ["rnn", "gru"], 0.8, 10, 1))[-1]
    texts, stats = last[:tab.slots], last[tab.slots:]
    written = [text for text in texts if isinstance(text, str)]  # a slot's text; an unused slot stays hidden
    assert len(written) == 2 and all(written)
    assert [isinstance(s, str) and "tokens" in s.lower() for s in stats[:2]] == [True, True]
    assert all(text["visible"] is False for text in texts[2:])


def test_perplexity_scores_a_text_under_each_model(playground):
    table, _chart = PerplexityTab(playground).score("Now is the winter of our discontent", ["gru", "lstm"],
                                                    progress=lambda *a, **k: None)
    assert len(table) == 2


def test_chat_keeps_the_question_in_the_box_when_the_message_is_empty(playground):
    with pytest.raises(gr.Error, match="Write a message"):
        ChatTab(playground).take("   ", [])


def test_chat_shows_the_question_at_once_before_the_reply_queues(playground):
    # take() runs unqueued: the question is in the conversation before the reply's first step, however long that
    # waits (a server still starting, every writer busy); the reply's step gets the conversation before it.
    before = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    box, asked, past, shown, *locks = ChatTab(playground).take("Who are you?", before)
    assert asked == "Who are you?" and [m["content"] for m in past] == ["Hi", "Hello"]
    assert [m["content"] for m in shown] == ["Hi", "Hello", "Who are you?"] and shown[-1]["role"] == "user"
    assert box["value"] == "" and all(lock["interactive"] is False for lock in [box, *locks])


def test_chat_answers_with_a_model_that_has_no_template_by_saying_why_not(playground):
    values = (0.8, 0, 0.95, 0.0, 1.0, 0, 20, 1)  # the sliders, then the seed
    with pytest.raises(gr.Error) as refused:
        list(ChatTab(playground).chat(None, "Hello?", [], "lstm", "", *values))
    assert "chat" in str(refused.value).lower()


def test_decoding_shows_greedy_beams_and_samples_side_by_side(playground):
    greedy, beams, samples = DecodeTab(playground).side_by_side(None, "ROMEO:\n", "gru", 3, 2, 8, 0.8, 0, 0.95, 5)
    assert "Greedy" in greedy and "3 beams" in beams and "2 samples" in samples and "seed 5" in samples
    assert all("the model gives this whole text a chance of about 1 in" in html for html in (greedy, beams, samples))
    assert beams.count("<li>") + beams.count("<li ") >= 3 and "dc-best" in beams  # a tree, its best path marked


def test_decoding_speaks_the_visitors_language(playground):
    from types import SimpleNamespace

    from textgen.core.words import say

    chinese = SimpleNamespace(session_hash="zh", headers={"accept-language": "zh-CN,zh;q=0.9"})
    greedy, beams, samples = DecodeTab(playground).side_by_side(chinese, "ROMEO:\n", "gru", 3, 1, 6, 0.8, 0, 0.95, 5)
    assert say("decode.greedy.title", "zh-CN") in greedy and "束搜索，3 束" in beams and "1 个样本" in samples
    assert all("模型认为这整段文字出现的概率约为" in html for html in (greedy, beams, samples))
    assert "the model" not in greedy + beams + samples and "1 samples" not in samples


def test_the_decode_api_answers_json_and_refuses_a_bad_width_in_words(playground):
    tree = DecodeTab(playground).decode("ROMEO:\n", "lstm", "beam", 2, max_new_tokens=6)
    assert tree["model"] == "lstm" and len(tree["sequences"]) in (2, 3) and tree["nodes"]
    with pytest.raises(gr.Error, match="from 1 to 8"):
        DecodeTab(playground).decode("ROMEO:\n", "lstm", "beam", 9)


def test_the_note_under_a_model_not_loaded_yet_already_says_what_its_tokens_are(catalog):
    from textgen.service.loading import ModelManager

    fresh = Playground(ModelManager(catalog, device="cpu"))  # nothing loaded
    assert "Its tokens are letters" in WriteTab(fresh).describe("lstm")
    assert "Its tokens are word pieces" in WriteTab(fresh).describe("tiny-gpt2")
    fresh.manager.get("lstm")
    loaded = WriteTab(fresh).describe("lstm")
    assert "its tokens are letters" in loaded and "parameters" in loaded  # once loaded: the full line


def test_a_branch_from_a_space_names_it_as_the_pop_up_shows_it(playground):
    class Picked:
        _data = {"prefix": "To be or", "alt": " ", "original": "\n", "index": 2}

    args = generate_args(model="gru", max_new_tokens=3)  # prompt, model, the sliders, seed, chat template
    updates = list(WriteTab(playground).branch(Picked(), None, *args, "", ""))
    label = updates[0][1]["label"]
    assert "“␣” instead of “↵”" in label


def test_a_look_inside_hides_the_controls_that_do_not_fit_the_model_and_says_why_in_a_sentence():
    from textgen.core.words import Phrase

    inside = {"attention_note": Phrase("explain.no_attention_report", title="LSTM"),
              "units_note": Phrase("explain.too_short", count=20, have=6)}
    layer, head, query, view = StepTab.attention_part(inside)
    assert not any(update["visible"] for update in (layer, head, query))
    units, unit, note = StepTab.units_part(inside)
    assert units["visible"] is False and unit["visible"] is False
    assert "The text so far has 6 characters" in note and "at least 20" in note  # explain's words, said for this tab
    assert "press Run to let the model write more, then Look inside again." in note
