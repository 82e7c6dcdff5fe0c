"""The Transformer's two ways of knowing where a token stands: learned positions (GPT-2's) and rotary ones.

    python -m pytest -q tests/test_transformer_positions.py
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from textgen.models.transformer import TransformerConfig, TransformerForCausalLM
from textgen.training.config import TrainConfig
from textgen.training.trainer import build_model

VOCAB = 40


def tiny(position_embedding: str, seed: int = 0) -> TransformerForCausalLM:
    torch.manual_seed(seed)
    config = TransformerConfig(vocab_size=VOCAB, n_layer=2, n_embd=32, n_head=4, n_positions=64, dropout=0.0,
                               position_embedding=position_embedding)
    return TransformerForCausalLM(config).eval()


def ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_a_rotary_model_has_no_position_table_and_fewer_weights():
    learned, rotary = tiny("learned"), tiny("rotary")
    assert rotary.wpe is None and learned.rotary is None
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(learned) - count(rotary) == 64 * 32  # one vector per place in the context


def test_an_unknown_kind_of_position_is_refused_by_name():
    with pytest.raises(ValueError, match="learned, rotary"):
        TransformerConfig(position_embedding="sinusoidal")
    with pytest.raises(ValueError, match="even head size"):
        TransformerConfig(n_embd=30, n_head=2, position_embedding="rotary")


def test_rotary_attention_reads_order_without_a_position_table():
    """Without any position weights, the same tokens in another order still give other predictions."""
    model = tiny("rotary")
    text = ids(1, 12)
    with torch.no_grad():
        forwards = model(input_ids=text).logits[0, -1]
        shuffled = model(input_ids=torch.cat([text[:, 6:11], text[:, :6], text[:, 11:]], dim=1)).logits[0, -1]
    assert not torch.allclose(forwards, shuffled, atol=1e-4)


@pytest.mark.parametrize("kind", ["learned", "rotary"])
def test_cached_steps_match_the_whole_text_at_once(kind):
    model = tiny(kind)
    text = ids(2, 30)
    with torch.no_grad():
        full = model(input_ids=text).logits
        out = model(input_ids=text[:, :20], use_cache=True)
        cache, pieces = out.past_key_values, [out.logits]
        out = model(input_ids=text[:, 20:25], past_key_values=cache, use_cache=True)  # several new tokens
        pieces.append(out.logits)
        for t in range(25, 30):  # then one at a time
            pieces.append(model(input_ids=text[:, t:t + 1], past_key_values=cache, use_cache=True).logits)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("kind", ["learned", "rotary"])
def test_batched_steps_put_each_text_at_its_own_place(kind):
    """`step_rows` (the batch scheduler's decode step) for texts of different lengths, one with two samples:
    each row's next-token logits are those of its whole text run alone."""
    model = tiny(kind, seed=2)
    texts = [ids(1, 9, seed=1), ids(2, 23, seed=2), ids(1, 4, seed=3)]
    with torch.no_grad():
        memories = []
        for text in texts:  # read all but each text's last token into its own cache
            memory = model.start_memory(text.shape[0])
            model(input_ids=text[:, :-1], past_key_values=memory, use_cache=True)
            memories.append(memory)
        last = torch.cat([text[:, -1:] for text in texts] + [torch.zeros(1, 1, dtype=torch.long)])  # one padding row
        logits, _ = model.step_rows(last, memories, [text.shape[0] for text in texts])
        alone = torch.cat([model(input_ids=text).logits[:, -1] for text in texts])
    assert torch.allclose(logits[:4], alone, atol=1e-5)


def test_a_rotary_checkpoint_reloads_as_rotary_with_the_same_predictions(tmp_path):
    model = tiny("rotary", seed=4)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.position_embedding == "rotary" and reloaded.wpe is None
    text = ids(1, 16)
    with torch.no_grad():
        assert torch.equal(model(input_ids=text).logits, reloaded(input_ids=text).logits)


def test_training_builds_rotary_positions_by_default_and_learned_ones_on_request():
    default = build_model(TrainConfig(arch="transformer").resolved(), VOCAB)
    learned = build_model(TrainConfig(arch="transformer", position_embedding="learned").resolved(), VOCAB)
    assert default.config.position_embedding == "rotary" and default.wpe is None
    assert learned.config.position_embedding == "learned" and learned.wpe is not None


def test_a_checkpoint_without_the_setting_reads_as_learned_positions(tmp_path):
    """Every Transformer saved before rotary positions existed has no position_embedding in its config.json."""
    tiny("learned").save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text().replace('"position_embedding": "learned",', "")
    (tmp_path / "config.json").write_text(config)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.position_embedding == "learned" and reloaded.wpe is not None


def test_the_rotary_setting_is_a_size_flag_only_transformers_take():
    from textgen.models import architectures

    assert "position_embedding" in architectures.get("transformer").size_fields
    assert "position_embedding" not in architectures.get("gru").size_fields
