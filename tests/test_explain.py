"""Watch a model choose: the stages are the engine's own, the actions write what the engine writes, and the
views inside the models (attention, units) report what is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import textgen.service.explain as explain
from textgen.cli import main
from textgen.core.events import Summary
from textgen.core.settings import CONTROLS, GenerationSettings, InvalidRequest, Limits, RequestError
from textgen.core.words import CHINESE, LANGUAGES, say, words_of
from textgen.local.generation import stream
from textgen.service.catalog import entry_for_source
from textgen.service.explain import (
    StepSession,
    activations,
    attention,
    interesting_units,
    next_token_json,
    open_session,
    shown,
    text_features,
)
from textgen.service.loading import load_model
from textgen.service.playground import Playground

SPEECH = "First Citizen:\nYou are all resolved rather to die than to famish?"
ROOT = Path(__file__).resolve().parents[1]
ALL_MODELS = ["rnn", "lstm", "gru", "transformer", "tiny-gpt2"]
CHAR_MODELS = ["rnn", "lstm", "gru", "transformer"]

# A few lines in the shape of the training text (speaker lines, then verse), for the shipped models.
PLAY = """ROMEO:
But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.
Arise, fair sun, and kill the envious moon,
Who is already sick and pale with grief,
That thou her maid art far more fair than she.

JULIET:
Ay me!

ROMEO:
She speaks:
O, speak again, bright angel! for thou art
As glorious to this night, being o'er my head,
As is a winged messenger of heaven.

JULIET:
O Romeo, Romeo! wherefore art thou Romeo?
Deny thy father and refuse thy name;
Or, if thou wilt not, be but sworn my love,
And I'll no longer be a Capulet.

ROMEO:
Shall I hear more, or shall I speak at this?

JULIET:
'Tis but thy name that is my enemy;
Thou art thyself, though not a Montague.
What's Montague? it is nor hand, nor foot,
Nor arm, nor face, nor any other part
Belonging to a man. O, be some other name!
What's in a name? that which we call a rose
By any other name would smell as sweet.
"""


@pytest.fixture(scope="module")
def shipped():
    """The shipped checkpoints (they load offline), by name; a test that needs one skips where it is missing."""
    cache = {}

    def get(name: str):
        path = ROOT / "assets" / "models" / name
        if not (path / "model.safetensors").exists():
            pytest.skip(f"the shipped {name} checkpoint is not here")
        if name not in cache:
            cache[name] = load_model(entry_for_source(str(path), name=name), torch.device("cpu"))
        return cache[name]

    return get


@contextmanager
def count_forwards(model):
    calls: list[int] = []
    handle = model.register_forward_hook(lambda module, args, kwargs, out: calls.append(1), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def stream_ids(loaded, prompt: str, **controls) -> list[int]:
    events = list(stream(loaded, GenerationSettings.parse(prompt, **controls)))
    assert isinstance(events[-1], Summary)
    return [e.token.id for e in events[:-1] if e.token is not None]


def by_name(stages: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in stages}


def probs_of(stage: dict) -> dict[int, float]:
    return {t["id"]: t["prob"] for t in stage["tokens"]}


# -- the stages -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_stages_come_in_the_engine_order_and_controls_that_are_off_are_left_out(manager, name):
    session = StepSession(manager.get(name), "First")
    every = {"repetition_penalty": 1.2, "no_repeat_ngram_size": 2, "temperature": 0.7, "top_k": 20, "top_p": 0.9,
             "min_p": 0.05}
    assert [s["name"] for s in session.stages(every)] == [
        "model", "repetition_penalty", "no_repeat_ngram", "temperature", "top_k", "top_p", "min_p"]
    off = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0}
    assert [s["name"] for s in session.stages(off)] == ["model"]
    assert [s["name"] for s in session.stages({**off, "temperature": 0, "top_k": 5})] == ["model", "greedy"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_changing_the_controls_makes_no_forward_pass(manager, name):
    loaded = manager.get(name)
    with count_forwards(loaded.model) as calls:
        session = StepSession(loaded, "First Citizen")
        assert len(calls) == session.forward_passes == 1
        for controls in ({"temperature": 0.5}, {"top_k": 3}, {"top_p": 0.5, "temperature": 1.0}, {"temperature": 0},
                         {"repetition_penalty": 1.5, "no_repeat_ngram_size": 2}, {"min_p": 0.2}):
            session.stages(controls, top_n=10)
        session.sample_many({"temperature": 1.2}, n=500, seed=1)
        session.to_json({"top_k": 4})
        assert len(calls) == session.forward_passes == 1


@pytest.mark.parametrize("name", [*ALL_MODELS, "shipped-lstm"])
@pytest.mark.parametrize("controls", [{}, {"temperature": 1.7, "top_p": 0.8}, {"top_k": 3, "temperature": 0.3},
                                      {"temperature": 0, "repetition_penalty": 1.3}, {"min_p": 0.1}])
def test_every_stage_holds_probabilities_and_the_last_sums_to_one_when_all_is_listed(manager, shipped, name,
                                                                                      controls):
    loaded = shipped("lstm") if name == "shipped-lstm" else manager.get(name)
    for top_n in (5, 50):
        stages = StepSession(loaded, "First Citizen:\nYou").stages(controls, top_n=top_n)
        ids = [t["id"] for t in stages[0]["tokens"]]
        model = [t["prob"] for t in stages[0]["tokens"]]
        assert len(ids) >= min(top_n, stages[0]["kept"])
        for stage in stages:
            assert [t["id"] for t in stage["tokens"]] == ids  # the same tokens, tracked across the stages
            assert all(0.0 <= t["prob"] <= 1.0 for t in stage["tokens"])
            assert all(t["prob"] == 0.0 for t in stage["tokens"] if t["removed"])
            listed = sum(t["prob"] for t in stage["tokens"])
            assert listed <= 1 + 1e-5
            assert listed + stage["other"] == pytest.approx(1.0, abs=1e-3)
        last = stages[-1]
        if last["kept"] <= sum(t["prob"] > 0 for t in last["tokens"]):  # every possible token is listed
            assert sum(t["prob"] for t in last["tokens"]) == pytest.approx(1.0, abs=1e-3)
        assert model == sorted(model, reverse=True)


@pytest.mark.parametrize("name", [*CHAR_MODELS, "tiny-gpt2", "shipped-lstm"])
def test_top_k_3_leaves_exactly_three_possible_tokens(manager, shipped, name):
    loaded = shipped("lstm") if name == "shipped-lstm" else manager.get(name)
    last = StepSession(loaded, "First").stages({"top_k": 3, "temperature": 1.0}, top_n=10)[-1]
    assert last["name"] == "top_k" and last["kept"] == 3
    assert sum(t["prob"] > 0 for t in last["tokens"]) == 3
    assert sum(t["prob"] for t in last["tokens"]) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["shipped-lstm", "lstm", "transformer", "tiny-gpt2"])
def test_a_low_temperature_sharpens_the_favourite_and_a_high_one_flattens_it(manager, shipped, name):
    loaded = shipped("lstm") if name == "shipped-lstm" else manager.get(name)
    session = StepSession(loaded, "ROMEO:\nI will")
    top = session.stages({"temperature": 1.0})[0]["tokens"][0]
    assert top["prob"] < 0.99  # room to move either way
    cold = by_name(session.stages({"temperature": 0.5}))
    hot = by_name(session.stages({"temperature": 1.5}))
    assert cold["temperature"]["tokens"][0]["id"] == top["id"]
    assert cold["temperature"]["tokens"][0]["prob"] > cold["model"]["tokens"][0]["prob"] == top["prob"]
    assert hot["temperature"]["tokens"][0]["prob"] < top["prob"]


@pytest.mark.parametrize("name", ["shipped-lstm", "lstm", "transformer"])  # 50 listed reach p = 0.5
@pytest.mark.parametrize("prompt", ["ROMEO:\nI will ", "First Citizen:\nYou are all resolved rather to "])
def test_top_p_keeps_the_smallest_set_of_likeliest_tokens_that_reaches_p(manager, shipped, name, prompt):
    loaded = shipped("lstm") if name == "shipped-lstm" else manager.get(name)
    stages = StepSession(loaded, prompt).stages({"temperature": 1.0, "top_p": 0.5}, top_n=50)
    assert [s["name"] for s in stages] == ["model", "top_p"]
    expected, total = set(), 0.0
    for token in stages[0]["tokens"]:  # best first
        if total >= 0.5:
            break
        expected.add(token["id"])
        total += token["prob"]
    kept = {t["id"] for t in stages[1]["tokens"] if t["prob"] > 0}
    assert kept == expected and stages[1]["kept"] == len(expected)


def test_the_model_stage_never_offers_unk(manager):
    loaded = manager.get("lstm")
    unk = loaded.tokenizer.unk_token_id
    stages = StepSession(loaded, "你好 First").stages({"temperature": 1.0}, top_n=50)
    assert unk not in [t["id"] for t in stages[0]["tokens"]]
    assert stages[0]["kept"] == len(loaded.tokenizer) - 1
    assert any("not in this model's vocabulary" in w for w in StepSession(loaded, "你好 First").warnings)


def test_a_token_a_penalty_lifts_into_the_top_is_listed_too(manager):
    loaded = manager.get("lstm")
    vocab = loaded.tokenizer.get_vocab()
    wanted = torch.zeros(len(vocab))
    wanted[[vocab[c] for c in "First"]] = 5.0  # the model wants the prompt's letters back...
    wanted[vocab["y"]] = 4.0  # ...and "y" next: sixth, until a penalty of 2 halves the others

    def fixed(module, args, output):
        output.logits[..., :] = wanted
        return output

    handle = loaded.model.register_forward_hook(fixed)
    try:
        stages = StepSession(loaded, "First").stages({"repetition_penalty": 2.0, "temperature": 1.0}, top_n=3)
    finally:
        handle.remove()
    model, penalised = stages
    assert [t["id"] for t in model["tokens"]][-1] == vocab["y"] and len(model["tokens"]) == 4
    assert penalised["top"]["id"] == vocab["y"] == max(penalised["tokens"], key=lambda t: t["prob"])["id"]


# -- greedy, sampling, running: what the engine writes ----------------------------------------------------------


@pytest.mark.parametrize("name", [*ALL_MODELS, "shipped-lstm", "shipped-transformer"])
@pytest.mark.parametrize("controls", [{}, {"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 3},
                                      {"repetition_penalty": 1.2, "no_repeat_ngram_size": 4}])
def test_following_the_greedy_stage_writes_what_the_engine_writes(manager, shipped, name, controls):
    loaded = shipped(name.split("-")[1]) if name.startswith("shipped") else manager.get(name)
    controls = {**controls, "temperature": 0}
    n = 40
    expected = stream_ids(loaded, "First", max_new_tokens=n, **controls)
    session = StepSession(loaded, "First")
    written = []
    for _ in range(n):
        last = session.stages(controls, top_n=3)[-1]
        assert last["name"] == "greedy" and last["kept"] == 1 and last["top"]["prob"] == 1.0
        written.append(last["top"]["id"])
        if session.pick(last["top"]["id"])["stop_reason"]:
            break
    assert written == expected
    assert len(expected) >= 30 or name == "tiny-gpt2"  # only a model that ends its text may stop early


@pytest.mark.parametrize("name", [*ALL_MODELS, "shipped-lstm"])
@pytest.mark.parametrize("controls", [{"temperature": 1.0}, {"temperature": 0.8, "top_p": 0.9},
                                      {"temperature": 1.3, "top_k": 10, "repetition_penalty": 1.2, "min_p": 0.02}])
def test_run_writes_the_engines_tokens_for_the_same_seed(manager, shipped, name, controls):
    loaded = shipped("lstm") if name == "shipped-lstm" else manager.get(name)
    expected = stream_ids(loaded, "First", max_new_tokens=40, seed=11, **controls)
    result = StepSession(loaded, "First").run(40, controls, seed=11)
    assert [t["id"] for t in result["tokens"]] == expected
    assert result["seed"] == 11


@pytest.mark.parametrize("name", ["lstm", "transformer", "tiny-gpt2"])
def test_sample_draws_the_engines_first_token_for_the_seed(manager, name):
    loaded = manager.get(name)
    for seed in range(5):
        first = stream_ids(loaded, "First", max_new_tokens=1, seed=seed, temperature=1.5)[0]
        session = StepSession(loaded, "First")
        result = session.sample({"temperature": 1.5}, seed=seed)
        assert result["token"]["id"] == first and result["seed"] == seed
        assert session.forward_passes == 2 or result["stop_reason"] == "end_of_text"


def test_an_empty_prompt_starts_where_the_engine_starts(manager):
    for name in ["lstm", "transformer", "tiny-gpt2"]:
        loaded = manager.get(name)
        session = StepSession(loaded, "")
        summary = list(stream(loaded, GenerationSettings.parse("", max_new_tokens=1, seed=1)))[-1]
        assert len(session.prompt_ids) == summary.prompt_tokens == 1
        assert any("from scratch" in w for w in session.warnings)
        expected = stream_ids(loaded, "", max_new_tokens=30, temperature=0)
        assert [t["id"] for t in session.run(30, {"temperature": 0})["tokens"]] == expected


def test_a_prompt_longer_than_the_context_is_cut_as_the_engine_cuts_it(manager, tiny_text):
    loaded = manager.get("transformer")
    session = StepSession(loaded, tiny_text[:200])
    assert session.prompt_tokens_cut == 200 - 63 and len(session.prompt_ids) == 63
    # and writing past the context refills as the engine does: the same tokens
    expected = stream_ids(loaded, tiny_text[:200], max_new_tokens=80, seed=4, temperature=1.0)
    assert [t["id"] for t in session.run(80, {"temperature": 1.0}, seed=4)["tokens"]] == expected


@pytest.mark.parametrize("name", ["lstm", "transformer", "tiny-gpt2"])
def test_back_restores_the_previous_position_without_a_forward_pass(manager, name):
    loaded = manager.get(name)
    session = StepSession(loaded, "First")
    before = session.to_json({"top_k": 5})
    picked = session.stages({}, top_n=3)[0]["tokens"][2]["id"]
    session.pick(picked)
    sampled = session.sample({"temperature": 1.0}, seed=3)
    passes = session.forward_passes
    if sampled["stop_reason"] is None:  # (the tiny GPT-2 may end its text instead)
        assert session.back()["id"] == sampled["token"]["id"]
    assert session.back()["id"] == picked
    assert session.back() is None  # nothing written is left: the prompt stays
    assert session.forward_passes == passes
    after = session.to_json({"top_k": 5})
    assert {**after, "forward_passes": 0} == {**before, "forward_passes": 0}
    # and the model's memory went back too: writing on gives the engine's text
    expected = stream_ids(loaded, "First", max_new_tokens=15, seed=8, temperature=1.0)
    assert [t["id"] for t in session.run(15, {"temperature": 1.0}, seed=8)["tokens"]] == expected


def test_back_past_the_kept_snapshots_replays_the_same_steps_exactly(manager, monkeypatch, tiny_text):
    monkeypatch.setattr(explain, "MAX_UNDO", 3)
    loaded = manager.get("transformer")  # past its context of 64 too, so the replay must refill where it did
    session = StepSession(loaded, tiny_text[:60])
    seen = [session.stages({"temperature": 1.0}, top_n=50)]
    for _ in range(12):
        session.sample({"temperature": 1.0}, seed=len(seen))
        seen.append(session.stages({"temperature": 1.0}, top_n=50))
    for expected in reversed(seen[:-1]):
        session.back()
        assert session.stages({"temperature": 1.0}, top_n=50) == expected
    # and it goes on exactly as before
    assert [t["id"] for t in session.run(20, {"temperature": 1.0}, seed=5)["tokens"]] == stream_ids(
        loaded, tiny_text[:60], max_new_tokens=20, seed=5, temperature=1.0)


def test_picking_a_token_writes_it_and_reports_the_models_probability(manager):
    loaded = manager.get("gru")
    session = StepSession(loaded, "First")
    model = session.stages({"temperature": 1.0}, top_n=5)[0]["tokens"]
    result = session.pick(model[4]["id"])
    assert result["stop_reason"] is None and result["token"]["prob"] == model[4]["prob"]
    assert session.written == model[4]["text"] and session.forward_passes == 2
    with pytest.raises(InvalidRequest, match="token_id must be between 0 and"):
        session.pick(10_000)


def test_end_of_text_ends_the_text_and_appends_nothing(manager):
    loaded = manager.get("tiny-gpt2")
    session = StepSession(loaded, "First")
    result = session.pick(loaded.tokenizer.eos_token_id)
    assert result["stop_reason"] == "end_of_text" and session.written_ids == [] and session.forward_passes == 1


def test_no_allowed_token_is_reported_not_drawn(manager):
    loaded = manager.get("lstm")
    session = StepSession(loaded, "aaaa")
    # no-repeat of size 1 bans every character already in the text; after "a" only new ones stay possible,
    # so write until none is left
    reasons = {session.sample({"no_repeat_ngram_size": 1, "temperature": 1.0}, seed=i)["stop_reason"]
               for i in range(len(loaded.tokenizer) + 1)}
    assert "no_allowed_token" in reasons
    last = session.stages({"no_repeat_ngram_size": 1, "temperature": 1.0})[-1]
    assert last["blocked"] and last["kept"] == 0 and last["top"] is None
    assert all(t["prob"] == 0.0 for t in last["tokens"])


def test_sample_many_counts_draws_from_the_last_stage(manager):
    loaded = manager.get("transformer")
    session = StepSession(loaded, "First")
    result = session.sample_many({"top_k": 3, "temperature": 1.0}, n=300, seed=2)
    last = session.stages({"top_k": 3, "temperature": 1.0})[-1]
    allowed = {t["id"] for t in last["tokens"] if t["prob"] > 0}
    assert result["draws"] == 300 == sum(c["count"] for c in result["counts"])
    assert {c["id"] for c in result["counts"]} <= allowed
    assert result == session.sample_many({"top_k": 3, "temperature": 1.0}, n=300, seed=2)
    for c in result["counts"]:  # each count near its probability (a 6-sigma band)
        p = c["prob"]
        assert abs(c["count"] - 300 * p) <= 6 * (300 * p * (1 - p)) ** 0.5 + 1
    greedy = session.sample_many({"temperature": 0}, n=50, seed=2)
    assert greedy["counts"] == [{**greedy["counts"][0], "count": 50}]
    assert greedy["counts"][0]["id"] == session.stages({"temperature": 0})[-1]["top"]["id"]
    assert session.forward_passes == 1


# -- JSON and errors ------------------------------------------------------------------------------------------


def test_next_token_json_is_json_and_keeps_the_exact_text_apart_from_the_shown_one(manager):
    result = next_token_json(manager.get("lstm"), "First Citizen:", {"temperature": 0.5, "top_k": 4}, top_n=8)
    assert json.loads(json.dumps(result)) == result
    assert [s["name"] for s in result["stages"]] == ["model", "temperature", "top_k"]
    assert result["stages"][1]["label"] == "Temperature 0.5" and result["stages"][2]["value"] == 4
    for token in result["stages"][0]["tokens"]:
        assert set(token) == {"id", "text", "shown", "prob", "removed"}
        assert token["text"] == manager.get("lstm").tokenizer.decode([token["id"]])
    assert shown(" ") == "␣" and shown("\n") == "↵" and shown("a b\n") == "a␣b↵" and shown("") == "∅"


def test_the_stages_are_named_in_the_language_asked_for(manager):
    session = StepSession(manager.get("lstm"), "First Citizen:")
    english, chinese = (session.stages({"temperature": 0.5, "top_k": 4}, top_n=3, lang=lang) for lang in LANGUAGES)
    assert [s["label"] for s in english] == ["The model wants", "Temperature 0.5", "Top-k 4"]
    assert [s["label"] for s in chinese] == ["模型想写的", "温度 0.5", "Top-k 4"]
    assert english[2]["help"] == CONTROLS["top_k"].help and chinese[2]["help"] == say("control.top_k.help", CHINESE)
    assert [s["tokens"] for s in chinese] == [s["tokens"] for s in english]  # the numbers are the same
    greedy = session.stages({"temperature": 0}, top_n=3, lang=CHINESE)[-1]
    assert greedy["label"] == "温度 0 选中的" and "温度为 0" in greedy["help"]


@pytest.mark.parametrize("controls", [{"top_k": -1}, {"temperature": 9}, {"top_p": 0}, {"min_p": "lots"},
                                      {"no_repeat_ngram_size": 1.5}, {"wobble": 1}])
def test_bad_controls_get_the_messages_generation_gives(manager, controls):
    with pytest.raises(InvalidRequest) as expected:
        GenerationSettings.parse("First", **controls)
    with pytest.raises(InvalidRequest) as got:
        next_token_json(manager.get("lstm"), "First", controls)
    assert str(got.value) == str(expected.value)
    session = StepSession(manager.get("lstm"), "First")
    for action in (session.stages, session.sample, session.sample_many):
        with pytest.raises(InvalidRequest) as got:
            action(controls)
        assert str(got.value) == str(expected.value)


def test_the_page_helper_gives_the_playgrounds_messages(manager):
    playground = Playground(manager)
    with pytest.raises(RequestError) as expected:
        list(playground.generate("no-such-model", playground.parse("First")))
    with pytest.raises(RequestError) as got:
        open_session(manager, "no-such-model", "First")
    assert str(got.value) == str(expected.value)
    with pytest.raises(RequestError) as expected:
        playground.parse("x" * 20_000)
    with pytest.raises(RequestError) as got:
        open_session(manager, "lstm", "x" * 20_000, Limits())
    assert str(got.value) == str(expected.value)
    assert open_session(manager, "lstm", "First").stages({})[0]["name"] == "model"


def test_a_session_writes_no_more_than_one_request_may(manager):
    session = StepSession(manager.get("rnn"), "First", Limits(max_new_tokens=5))
    with pytest.raises(InvalidRequest, match="n must be between 1 and 5"):
        session.run(6, {"temperature": 1.0}, seed=1)
    assert len(session.run(5, {"temperature": 1.0}, seed=1)["tokens"]) == 5
    with pytest.raises(InvalidRequest, match="5 new tokens") as full:
        session.sample({"temperature": 1.0}, seed=1)
    assert "已经新写了 5 个词元" in words_of(full.value, CHINESE)
    session.back()
    assert session.sample({"temperature": 1.0}, seed=1)["stop_reason"] is None


# -- inside the models ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transformer", "tiny-gpt2", "shipped-transformer"])
def test_attention_weights_are_rows_over_the_query_and_earlier_tokens(manager, shipped, name):
    loaded = shipped("transformer") if name.startswith("shipped") else manager.get(name)
    implementation = getattr(loaded.model.config, "_attn_implementation", None)
    result = attention(loaded, SPEECH, query=5)
    assert json.loads(json.dumps(result)) == result
    assert result["query"] == 5 and result["layers"] == len(result["weights"])
    assert result["layers"] == loaded.model.config.num_hidden_layers
    assert result["heads"] == loaded.model.config.num_attention_heads
    for layer in result["weights"]:
        for head in layer:
            assert len(head) == 6 and sum(head) == pytest.approx(1.0, abs=1e-3) and min(head) >= 0
    assert sum(result["average"]) == pytest.approx(1.0, abs=1e-3)
    assert len(attention(loaded, SPEECH)["average"]) == len(result["tokens"])  # default: the last
    assert getattr(loaded.model.config, "_attn_implementation", None) == implementation  # put back as it was


def test_our_transformer_computes_weights_only_when_asked_and_gets_the_same_logits(manager, monkeypatch):
    from textgen.models.transformer import SelfAttention

    loaded = manager.get("transformer")
    ids = torch.tensor([loaded.tokenizer("First Citizen:")["input_ids"]])
    with torch.no_grad():
        plain = loaded.model(ids).logits
        asked = loaded.model(ids, output_attentions=True)
    assert torch.allclose(plain, asked.logits, atol=1e-5)
    assert len(asked.attentions) == loaded.model.config.n_layer
    # generation never takes the written-out path
    def refuse(*args):
        raise AssertionError("generation took the slow path that writes attention weights out")

    monkeypatch.setattr(SelfAttention, "_with_weights", refuse)
    assert len(stream_ids(loaded, "First", max_new_tokens=10, seed=1)) == 10


def test_a_recurrent_model_has_no_attention_and_a_transformer_no_units(manager):
    with pytest.raises(InvalidRequest, match="no attention") as no_attention:
        attention(manager.get("lstm"), "First Citizen")
    with pytest.raises(InvalidRequest, match="no memory units") as no_units:
        interesting_units(manager.get("transformer"), PLAY)
    with pytest.raises(InvalidRequest, match="at least") as too_short:
        activations(manager.get("lstm"), "short")
    # The page says each in the visitor's language (the model's title as its operator gave it).
    title = manager.get("lstm").entry.title
    assert words_of(no_attention.value, CHINESE).startswith(f"{title} 没有注意力可看")
    assert "没有记忆单元可看" in words_of(no_units.value, CHINESE)
    assert "至少需要 20 个字符" in words_of(too_short.value, CHINESE)


def test_text_features_mark_lines_speakers_capitals_quotes_and_brackets():
    text = 'ROMEO:\nHi "you" (KING) x\n'
    f = text_features(list(text))
    assert [f["line_position"][i] for i in range(8)] == [1, 2, 3, 4, 5, 6, 0, 1]
    assert f["line_start"][6] == 1 and sum(f["line_start"]) == 2
    assert [f["speaker_name"][i] for i in range(8)] == [1, 1, 1, 1, 1, 1, 0, 0]
    assert f["caps_word"][0] == 1 and f["caps_word"][7] == 0 and f["caps_word"][text.index("KING")] == 1
    assert f["in_quote"][text.index("you")] == 1 and f["in_quote"][text.index("(")] == 0
    assert f["in_parentheses"][text.index("KING")] == 1 and f["in_parentheses"][text.index("x")] == 0


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_activations_are_one_value_per_unit_and_token(manager, name):
    loaded = manager.get(name)
    result = activations(loaded, PLAY[:200], layer=0, units=[0, 5])
    assert result["units"] == [0, 5] and len(result["values"]) == 2
    assert all(len(row) == len(result["tokens"]) == 200 for row in result["values"])
    assert result["state"] == ("cell" if name == "lstm" else "hidden")
    # the hidden state of the last layer after the last token is the one generation carries
    ids = torch.tensor([[t["id"] for t in result["tokens"]]])
    with torch.no_grad():
        state = loaded.model(input_ids=ids).state
    h = state[0] if name == "lstm" else state
    last = activations(loaded, PLAY[:200], layer=-1, state="hidden")
    assert [row[-1] for row in last["values"]] == pytest.approx(h[-1, 0].tolist(), abs=1e-4)


def test_the_shipped_lstm_has_a_unit_that_follows_the_position_in_the_line(shipped):
    result = interesting_units(shipped("lstm"), PLAY)
    assert json.loads(json.dumps(result)) == result
    assert result["state"] == "cell" and result["layer"] == 1
    line = result["features"]["line_position"]
    assert abs(line["correlation"]) > 0.5  # measured: 0.895 (unit 303 of layer 1's cell state) on this text
    units = result["units"]
    assert len({u["unit"] for u in units}) == len(units) == 6
    assert units[0]["feature"] == "line_position" and "line" in units[0]["guess"]
    assert all(u["guess"].startswith("seems to ") for u in units)  # English as text (the JSON above), and…
    assert "这一行" in words_of(units[0]["guess"], CHINESE)  # …in Chinese on the page
    assert not any(c.isascii() and c.isalpha() for c in words_of(units[0]["guess"], CHINESE))
    assert all(-1 <= u["correlation"] <= 1 and len(u["values"]) == len(PLAY) for u in units)


# -- the command line ---------------------------------------------------------------------------------------


def test_cli_explain_prints_a_table_with_a_column_per_stage(model_dirs, capsys):
    code = main(["explain", "--model", str(model_dirs["lstm"]), "--prompt", "First", "--temperature", "0.5",
                 "--top-k", "3", "--top-n", "4"])
    out = capsys.readouterr().out
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("next token"))
    assert "The model wants" in header and "Temperature 0.5" in header and "Top-k 3" in header
    assert "cut" in out and "tokens possible" in out


def test_cli_explain_json_is_the_library_result(model_dirs, capsys):
    code = main(["explain", "--model", str(model_dirs["gru"]), "--prompt", "First", "--top-p", "0.5",
                 "--temperature", "1", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and [s["name"] for s in result["stages"]] == ["model", "top_p"]


def test_cli_explain_bad_control_exits_2_with_generations_message(model_dirs, capsys):
    with pytest.raises(InvalidRequest) as expected:
        GenerationSettings.parse("First", top_k=-1)
    assert main(["explain", "--model", str(model_dirs["lstm"]), "--prompt", "First", "--top-k", "-1"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {expected.value}"


def test_cli_explain_help_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "textgen", "explain", "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and "--top-n" in proc.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "textgen" in imported and not imported & {"torch", "transformers"}
