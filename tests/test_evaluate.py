"""Scoring a text: known answers for uniform and bigram models, sliding windows, the eval command."""

import json
import math

import pytest
import torch
from conftest import make_tiny
from torch.nn import functional as F

import textgen.local.evaluate
from textgen.cli import main
from textgen.local.evaluate import CONTEXT, context_length, score_text
from textgen.local.tokenization import encode


def uniform(model):
    """Make `model` predict the uniform distribution: its output layer gives zero logits."""
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
    return model


def direct_nll(model, tokenizer, text) -> float:
    """-log p(text | newline) summed over the text's tokens, in one forward pass."""
    ids = torch.tensor([encode(tokenizer, CONTEXT).ids + encode(tokenizer, text).ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    return F.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum").item()


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru", "transformer"])
def test_uniform_model_scores_ln_vocab_nats_per_char(arch, char_tokenizer, tiny_text):
    model = uniform(make_tiny(arch, len(char_tokenizer)))
    text = tiny_text[:300] if arch != "transformer" else tiny_text  # the transformer's text spans many windows
    score = score_text(model, char_tokenizer, text)
    vocab = len(char_tokenizer)
    assert score.nats_per_char == pytest.approx(math.log(vocab), abs=1e-5)
    assert score.bits_per_char == pytest.approx(math.log(vocab) / math.log(2), abs=1e-5)
    assert score.ppl == pytest.approx(vocab, rel=1e-4)
    assert score.chars == len(text)
    assert score.tokens == len(encode(char_tokenizer, text).ids) == len(text)
    assert score.unknown_chars == ""


def test_score_reports_unknown_characters(char_tokenizer):
    model = uniform(make_tiny("gru", len(char_tokenizer)))
    score = score_text(model, char_tokenizer, "First 你好")
    assert score.unknown_chars == "你好"
    assert score.tokens == 8


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru"])
def test_recurrent_score_equals_one_direct_forward(arch, char_tokenizer, tiny_text):
    model = make_tiny(arch, len(char_tokenizer), seed=2)
    score = score_text(model, char_tokenizer, tiny_text)
    expected = direct_nll(model, char_tokenizer, tiny_text)
    assert score.nats_per_char * len(tiny_text) == pytest.approx(expected, rel=1e-5)


def test_recurrent_score_carries_state_across_chunks(char_tokenizer, tiny_text):
    from textgen.local import evaluate

    model = make_tiny("lstm", len(char_tokenizer), seed=2)
    ids = torch.tensor(encode(char_tokenizer, CONTEXT).ids + encode(char_tokenizer, tiny_text).ids)
    one_chunk = evaluate._nll_carried(model, ids, 1, None, chunk=len(ids))
    small_chunks = evaluate._nll_carried(model, ids, 1, None, chunk=50)
    assert small_chunks == pytest.approx(one_chunk, rel=1e-5)


def test_transformer_text_shorter_than_context_equals_a_direct_forward(char_tokenizer):
    model = make_tiny("transformer", len(char_tokenizer), seed=4)
    text = "First Citizen:\nSpeak, speak."
    assert len(text) + 1 < context_length(model) == 64
    score = score_text(model, char_tokenizer, text)
    assert score.nats_per_char * len(text) == pytest.approx(direct_nll(model, char_tokenizer, text), rel=1e-5)


def bigram_transformer(vocab_size: int):
    """A transformer whose prediction depends on the current token only (no attention, MLP or positions)."""
    model = make_tiny("transformer", vocab_size, seed=7)
    with torch.no_grad():
        model.wpe.weight.zero_()
        for block in model.blocks:
            block.attn.proj.weight.zero_()
            block.mlp.proj.weight.zero_()
    return model


def test_sliding_windows_score_every_token_exactly_once(char_tokenizer, tiny_text):
    model = bigram_transformer(len(char_tokenizer))
    text = tiny_text
    assert len(text) > 10 * context_length(model)
    ids = torch.tensor(encode(char_tokenizer, CONTEXT).ids + encode(char_tokenizer, text).ids)
    with torch.no_grad():  # each token scored from the one before it: no window is needed
        logits = model(input_ids=ids[:-1, None]).logits[:, 0]
    expected = F.cross_entropy(logits, ids[1:], reduction="sum").item()
    score = score_text(model, char_tokenizer, text)
    assert score.tokens == len(text)
    assert score.nats_per_char * len(text) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("length", [62, 63, 64, 65, 96, 97, 127, 128, 129, 300])
def test_sliding_windows_handle_every_text_length(char_tokenizer, tiny_text, length):
    model = bigram_transformer(len(char_tokenizer))
    text = tiny_text[:length]
    ids = torch.tensor(encode(char_tokenizer, CONTEXT).ids + encode(char_tokenizer, text).ids)
    with torch.no_grad():
        logits = model(input_ids=ids[:-1, None]).logits[:, 0]
    expected = F.cross_entropy(logits, ids[1:], reduction="sum").item()
    assert score_text(model, char_tokenizer, text).nats_per_char * length == pytest.approx(expected, rel=1e-5)


def test_window_batch_size_does_not_change_the_score(char_tokenizer, tiny_text):
    model = make_tiny("transformer", len(char_tokenizer), seed=4)
    text = tiny_text[:500]  # the last window is shorter, so batches are padded
    scores = {b: score_text(model, char_tokenizer, text, batch_size=b).nats_per_char for b in (1, 3, 8)}
    assert scores[1] == pytest.approx(scores[3], rel=1e-5)
    assert scores[1] == pytest.approx(scores[8], rel=1e-5)


def test_big_vocabularies_score_fewer_windows_at_once_and_keep_no_cache(manager, tiny_text, monkeypatch):
    loaded = manager.get("tiny-gpt2")
    text = tiny_text[:600]
    full = score_text(loaded.model, loaded.tokenizer, text).nats_per_char
    seen = []
    hook = loaded.model.register_forward_hook(lambda module, args, kwargs, out: seen.append(
        (args[0].shape[0] if args else kwargs["input_ids"].shape[0], out.past_key_values)), with_kwargs=True)
    row_bytes = loaded.context * loaded.model.config.vocab_size * 4
    monkeypatch.setattr(textgen.local.evaluate, "LOGITS_BUDGET_BYTES", 2 * row_bytes)
    try:
        assert score_text(loaded.model, loaded.tokenizer, text).nats_per_char == pytest.approx(full, rel=1e-5)
    finally:
        hook.remove()  # the model is shared by the whole session
    assert len(seen) > 1 and max(rows for rows, _ in seen) == 2
    assert all(cache is None for _, cache in seen)


def test_bpe_model_scores_per_character_not_per_token(manager, tiny_text):
    loaded = manager.get("tiny-gpt2")
    text = tiny_text[:400]
    score = score_text(loaded.model, loaded.tokenizer, text)
    assert score.tokens < score.chars == len(text)
    nll = score.nats_per_char * score.chars
    assert score.ppl == pytest.approx(math.exp(nll / score.tokens), rel=1e-4)


def test_progress_is_reported_up_to_one(char_tokenizer, tiny_text):
    model = make_tiny("transformer", len(char_tokenizer))
    seen = []
    score_text(model, char_tokenizer, tiny_text, batch_size=4, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_empty_text_is_refused(char_tokenizer):
    with pytest.raises(ValueError, match="no text"):
        score_text(make_tiny("gru", len(char_tokenizer)), char_tokenizer, "")


def test_context_length_is_none_for_recurrent_models():
    assert context_length(make_tiny("lstm", 10)) is None
    assert context_length(make_tiny("transformer", 10)) == 64


def test_cli_eval_prints_one_json_object_on_the_last_line(model_dirs, tmp_path, tiny_text, capsys):
    data = tmp_path / "val.txt"
    data.write_text(tiny_text[:200], encoding="utf-8")
    assert main(["eval", "--model", str(model_dirs["lstm"]), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"nats_per_char", "bits_per_char", "ppl", "chars", "tokens"} <= set(result)
    assert result["chars"] == result["tokens"] == 200
    assert result["bits_per_char"] == pytest.approx(result["nats_per_char"] / math.log(2), rel=1e-6)


def test_cli_eval_without_json_prints_a_table(model_dirs, tmp_path, capsys):
    data = tmp_path / "val.txt"
    data.write_text("First Citizen:\n", encoding="utf-8")
    assert main(["eval", "--model", str(model_dirs["gru"]), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "bits_per_char:" in out and "chars: 15" in out


def test_cli_eval_of_a_missing_file_is_an_error(model_dirs, tmp_path, capsys):
    assert main(["eval", "--model", str(model_dirs["gru"]), "--data", str(tmp_path / "none.txt")]) == 2
    assert "error: no such text file" in capsys.readouterr().err
