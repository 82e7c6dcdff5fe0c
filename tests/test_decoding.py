"""Greedy, beam search and samples as one tree, on every model kind (textgen/local/decoding.py).

    python -m pytest -q tests/test_decoding.py
"""

from __future__ import annotations

import pytest
import torch

from textgen.core.settings import GenerationSettings, InvalidRequest
from textgen.core.words import Phrase, words_of
from textgen.local.decoding import decode
from textgen.local.generation import stream

KINDS = ["rnn", "lstm", "gru", "transformer", "tiny-gpt2"]  # every memory kind, ours and a Hugging Face model


def settings(prompt: str = "First Citizen:\n", **controls) -> GenerationSettings:
    return GenerationSettings.parse(prompt, **{"max_new_tokens": 16, **controls})


def path_sum(tree, sequence) -> float:
    by_id, node, total = {n.id: n for n in tree.nodes}, sequence.node, 0.0
    while node is not None:
        total += by_id[node].logprob
        node = by_id[node].parent
    return total


@pytest.mark.parametrize("name", KINDS)
def test_beam_search_finds_a_likelier_text_than_greedy_and_width_one_is_greedy(manager, name):
    loaded = manager.get(name)
    greedy = decode(loaded, settings(), "greedy", 1)
    beams = decode(loaded, settings(), "beam", 4)
    assert decode(loaded, settings(), "beam", 1).sequences == greedy.sequences
    assert all(len(s.token_ids) == 16 for s in beams.sequences)
    assert beams.sequences[0].logprob >= greedy.sequences[0].logprob - 1e-4
    # Four beams; a fifth text first only when the beams lost the greedy one on the way, which the notes say.
    assert len(beams.sequences) == 4 or (len(beams.sequences) == 5 and "greedy search" in beams.notes[0])
    assert [s.logprob for s in beams.sequences] == sorted((s.logprob for s in beams.sequences), reverse=True)
    for tree in (greedy, beams):  # a text's log-probability is the sum along its path in the tree
        for sequence in tree.sequences:
            assert path_sum(tree, sequence) == pytest.approx(sequence.logprob, abs=1e-3)


@pytest.mark.parametrize("name", KINDS)
def test_greedy_writes_what_write_writes_at_temperature_0(manager, name):
    loaded = manager.get(name)
    greedy = decode(loaded, settings(), "greedy", 1).sequences[0]
    written = [e for e in stream(loaded, settings(temperature=0, top_p=1.0)) if hasattr(e, "token") and e.token]
    assert greedy.token_ids == [e.token.id for e in written]


def test_samples_are_the_texts_write_draws_for_as_many_samples_with_the_same_seed(manager):
    loaded = manager.get("lstm")
    request = settings(temperature=1.0, top_p=0.9, seed=7, num_samples=3)
    tree = decode(loaded, request, "sample", 3)
    summary = list(stream(loaded, request))[-1]
    assert [s.text for s in tree.sequences] == summary.texts and tree.seed == 7
    again = decode(loaded, request, "sample", 3)
    assert again.sequences == tree.sequences and again.nodes == tree.nodes


def test_samples_that_agree_share_their_nodes(manager):
    tree = decode(manager.get("gru"), settings(top_k=1, seed=1), "sample", 4)  # top-k 1: all four draw alike
    assert len({s.text for s in tree.sequences}) == 1
    assert len(tree.nodes) == 16  # one path, not four


def test_our_transformer_finds_what_transformers_beam_search_finds():
    from textgen.service.catalog import Catalog
    from textgen.service.loading import ModelManager

    loaded = ModelManager(Catalog.default(include_gpt2=False), device="cpu").get("transformer")  # the shipped one
    for prompt in ("ROMEO:\n", "KING RICHARD III:\nNow is the winter", "Good morrow, "):
        tree = decode(loaded, settings(prompt), "beam", 4)
        ids = torch.tensor([loaded.tokenizer(prompt).input_ids])
        theirs = loaded.model.generate(ids, num_beams=4, do_sample=False, max_new_tokens=16, min_new_tokens=16,
                                       attention_mask=torch.ones_like(ids))
        # Where the greedy text beats every beam it comes first, with its note (for this Transformer, on "ROMEO:\n");
        # the best beam follows it, and that is what transformers' beam search finds.
        greedy_won = Phrase("decode.greedy_won", width=4) in tree.notes
        beam = tree.sequences[1] if greedy_won else tree.sequences[0]
        assert beam.token_ids == theirs[0, ids.shape[1]:].tolist(), prompt
        assert not greedy_won or tree.sequences[0].logprob > beam.logprob


def test_the_repetition_penalty_changes_what_beam_search_keeps(manager):
    loaded = manager.get("lstm")
    plain = decode(loaded, settings(), "beam", 3)
    penalised = decode(loaded, settings(repetition_penalty=1.8), "beam", 3)
    assert plain.sequences[0].token_ids != penalised.sequences[0].token_ids


def test_the_tree_is_json_with_the_documented_fields(manager):
    tree = decode(manager.get("transformer"), settings(max_new_tokens=5), "beam", 2).as_json()
    assert set(tree["sequences"][0]) == {"text", "token_ids", "logprob", "node"}
    assert set(tree["nodes"][0]) == {"id", "parent", "step", "token_id", "text", "logprob", "kept"}
    kept = [n for n in tree["nodes"] if n["kept"]]
    assert {n["step"] for n in kept} == set(range(5)) and any(not n["kept"] for n in tree["nodes"])


@pytest.mark.parametrize(("method", "width", "words"), [
    ("sideways", 2, "method must be one of greedy, beam, sample"),
    ("beam", 9, "from 1 to 8"), ("beam", 0, "from 1 to 8"), ("sample", "3", "whole number"),
    ("beam", True, "whole number"),
])
def test_a_bad_method_or_width_is_refused_in_words(manager, method, width, words):
    with pytest.raises(InvalidRequest, match=words):
        decode(manager.get("lstm"), settings(), method, width)


def test_a_refusal_and_a_note_are_said_in_chinese_too(manager):
    with pytest.raises(InvalidRequest) as refused:
        decode(manager.get("lstm"), settings(), "beam", 9)
    assert words_of(refused.value, "zh-CN") == "width（束的个数）必须是 1 到 8 之间的整数，收到的是 9"
    note = Phrase("decode.greedy_won", width=4)
    assert "greedy search found it" in note and "贪心解码找到了它" in words_of(note, "zh-CN")


def test_more_than_64_new_tokens_is_refused(manager):
    with pytest.raises(InvalidRequest, match="at most 64"):
        decode(manager.get("lstm"), settings(max_new_tokens=65), "greedy", 1)
