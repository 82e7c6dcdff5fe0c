"""Our four architectures as Hugging Face models: shapes, loss, saving, recurrent state, generate."""

import math

import pytest
import torch
from conftest import make_tiny
from torch import nn
from transformers import AutoModelForCausalLM

import textgen.models.auto  # noqa: F401  (registers the architectures with the Auto classes)
from textgen.models.auto import ARCHITECTURES

ARCHS = list(ARCHITECTURES)
RECURRENT = ["rnn", "lstm", "gru"]
VOCAB = 40


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_gives_logits_over_the_vocabulary(arch):
    model = make_tiny(arch, VOCAB)
    out = model(input_ids=random_ids(3, 17))
    assert out.logits.shape == (3, 17, VOCAB)
    assert out.loss is None


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_at_init_is_finite_and_near_uniform(arch):
    model = make_tiny(arch, VOCAB)
    ids = random_ids(4, 32)
    loss = model(input_ids=ids, labels=ids).loss
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(math.log(VOCAB), abs=0.15)


@pytest.mark.parametrize("arch", RECURRENT)
def test_recurrent_embeddings_start_at_unit_scale(arch):
    # At transformers' default N(0, 0.02) the cells' inputs were so small that a 512-wide LSTM sat at the
    # unigram loss for its first hundred steps; unit-scale embeddings (PyTorch's default) train at once.
    config_cls, model_cls = ARCHITECTURES[arch]
    model = model_cls(config_cls(vocab_size=VOCAB, embedding_size=64, hidden_size=64, num_layers=1))
    assert model.embed.weight.std().item() == pytest.approx(1.0, abs=0.1)
    assert model.head.weight.std().item() < 0.05  # logits still start near uniform


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_ignores_positions_labelled_minus_100(arch):
    model = make_tiny(arch, VOCAB)
    ids = random_ids(1, 12)
    labels = ids.clone()
    labels[:, 6:] = -100
    full = model(input_ids=ids[:, :6], labels=ids[:, :6]).loss
    assert model(input_ids=ids, labels=labels).loss.item() == pytest.approx(full.item(), abs=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_reload_gives_identical_logits_from_safetensors_only(arch, tmp_path):
    model = make_tiny(arch, VOCAB, seed=3)
    model.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".pth"))]

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    ids = random_ids(2, 20)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_transformer_head_stays_tied_to_the_embedding_after_reload(tmp_path):
    make_tiny("transformer", VOCAB).save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.wte.weight.data_ptr()


def test_transformer_rejects_input_longer_than_its_context():
    model = make_tiny("transformer", VOCAB)  # n_positions 64
    with pytest.raises(ValueError, match="context of 64"):
        model(input_ids=random_ids(1, 65))


@pytest.mark.parametrize("arch", RECURRENT)
def test_recurrent_state_carried_token_by_token_equals_full_forward(arch):
    model = make_tiny(arch, VOCAB)
    ids = random_ids(2, 25)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        state, steps = None, []
        for t in range(ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], state=state)
            state = out.state
            steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("arch", RECURRENT)
def test_recurrent_state_carried_chunk_by_chunk_equals_full_forward(arch):
    model = make_tiny(arch, VOCAB)
    ids = random_ids(1, 30)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        first = model(input_ids=ids[:, :12])
        second = model(input_ids=ids[:, 12:], state=first.state)
    assert torch.allclose(torch.cat([first.logits, second.logits], dim=1), full, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_to_keep_returns_only_the_last_positions(arch):
    model = make_tiny(arch, VOCAB)
    ids = random_ids(2, 10)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        last = model(input_ids=ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, VOCAB)
    assert torch.allclose(last, full[:, -1:], atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generate_equals_rerunning_the_whole_prefix(arch):
    model = make_tiny(arch, VOCAB, seed=5)
    prompt = random_ids(1, 7)
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=15, do_sample=False)
        expected = prompt
        for _ in range(15):
            next_id = model(input_ids=expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, next_id], dim=1)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("arch", RECURRENT)
@pytest.mark.parametrize("with_state", [False, True])
def test_single_step_fast_path_matches_torch_recurrence(arch, with_state):
    model = make_tiny(arch, VOCAB)
    cfg = model.config
    x = torch.randn(3, 1, cfg.embedding_size, generator=torch.Generator().manual_seed(1))
    state = None
    if with_state:
        h = torch.randn(cfg.num_layers, 3, cfg.hidden_size)
        state = (h, torch.randn_like(h)) if arch == "lstm" else h
    with torch.no_grad():
        fast_out, fast_state = model._step(x, state)
        ref_out, ref_state = model.rnn(x, state)
    assert isinstance(model.rnn, {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[arch])
    assert torch.allclose(fast_out, ref_out, atol=1e-6)
    if arch == "lstm":
        fast_state, ref_state = torch.stack(fast_state), torch.stack(ref_state)  # (h, c) pairs
    assert torch.allclose(fast_state, ref_state, atol=1e-6)


@pytest.mark.parametrize("arch", RECURRENT)
def test_one_token_forward_in_train_mode_uses_the_torch_recurrence(arch):
    model = make_tiny(arch, VOCAB).train()
    ids = random_ids(2, 1)
    calls = []
    handle = model.rnn.register_forward_hook(lambda *args: calls.append(1))
    try:
        model(input_ids=ids)
    finally:
        handle.remove()
    assert calls == [1]
    model.eval()
    model(input_ids=ids)
    assert calls == [1]  # eval mode, one token: the cell kernels, not nn.RNN


@pytest.mark.parametrize("arch", ["lstm", "rnn"])
def test_one_token_path_follows_weights_changed_in_place(arch):
    model = make_tiny(arch, 20)
    ids = torch.tensor([[3]])
    with torch.no_grad():
        model(input_ids=ids)  # builds the fused weights of the one-token path
        model.load_state_dict(make_tiny(arch, 20, seed=1).state_dict())  # copies into the same tensors
        fast = model(input_ids=ids).logits
        model.train()  # dropout is 0: the full nn.RNN/nn.LSTM path, as a reference
        full = model(input_ids=torch.tensor([[3, 3]])).logits[:, :1]
    assert torch.allclose(fast, full, atol=1e-5)
