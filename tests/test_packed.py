"""Products on packed weights (textgen/models/packed.py): the same numbers as torch's, each row as alone."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from textgen.models import packed
from textgen.models.packed import MIN_ELEMENTS, PackedWeight, pack_linear_layers, packed_bytes

pytestmark = pytest.mark.skipif(not packed.enabled(), reason="this torch has no oneDNN linear kernel")

# The weight shapes (out, in) the models take their steps through: the LSTM's [x | h] layers, GPT-2's.
SHAPES = [(2048, 640), (2048, 1024), (2304, 768), (768, 3072)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_each_row_comes_out_exactly_as_it_does_alone_in_a_batch_of_any_size(shape, threads):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(shape, generator=generator) / shape[1] ** 0.5
    bias = torch.randn(shape[0], generator=generator)
    x = torch.randn(24, shape[1], generator=generator)
    product = PackedWeight.of(weight)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            alone = torch.cat([product(x[i : i + 1], bias) for i in range(len(x))])
            for rows in range(1, len(x) + 1):
                assert torch.equal(product(x[:rows], bias), alone[:rows]), rows
    finally:
        torch.set_num_threads(before)
    assert torch.allclose(alone, torch.addmm(bias, x, weight.t()), atol=1e-4)  # torch's product, to float rounding


def test_small_weights_other_precisions_and_gradients_keep_torchs_product():
    assert PackedWeight.of(torch.randn(192, 576)) is None  # too small to gain (see MIN_ELEMENTS)
    assert PackedWeight.of(torch.randn(2048, 1024, dtype=torch.float64)) is None
    product = PackedWeight.of(torch.randn(2048, 1024))
    x = torch.randn(4, 1024)
    assert not product.usable(x)  # a gradient may be wanted here
    with torch.no_grad():
        assert product.usable(x)


def test_a_weight_changed_in_place_is_packed_again():
    weight, x = torch.randn(2048, 1024), torch.randn(4, 1024)
    product = PackedWeight.of(weight)
    with torch.inference_mode():
        first = product(x, None)
    with torch.no_grad():
        weight.mul_(2)
    with torch.inference_mode():
        assert torch.allclose(product(x, None), 2 * first, rtol=1e-5, atol=1e-4)


def gpt2_with_a_large_layer() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_positions=64, n_embd=256, n_layer=2, n_head=4)  # its MLP: 256 x 1,024
    return GPT2LMHeadModel(config).eval()


def test_a_hugging_face_model_writes_the_same_logits_on_packed_weights():
    model = gpt2_with_a_large_layer()
    ids = torch.randint(0, 300, (6, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = model(ids).logits
    added = pack_linear_layers(model)
    large = [m for m in model.modules() if type(m).__name__ == "Conv1D" and m.weight.numel() >= MIN_ELEMENTS]
    assert large and added == packed_bytes(model) == sum(m.weight.numel() * 4 for m in large)
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, plain, atol=1e-4)
        assert torch.allclose(model(ids[:1, :1]).logits, plain[:1, :1], atol=1e-4)  # one row: the layer's own
    assert pack_linear_layers(model) == added  # packing twice packs nothing more


def test_training_a_packed_model_still_takes_gradients_through_its_own_layers():
    model = gpt2_with_a_large_layer()
    pack_linear_layers(model)
    model.train()
    loss = model(torch.randint(0, 300, (2, 8)), labels=torch.randint(0, 300, (2, 8))).loss
    loss.backward()
    assert all(m.weight.grad is not None for m in model.modules() if type(m).__name__ == "Conv1D")


def test_the_operator_can_turn_packing_off(monkeypatch):
    monkeypatch.setenv("TEXTGEN_PACK_WEIGHTS", "0")
    model = gpt2_with_a_large_layer()
    assert PackedWeight.of(torch.randn(2048, 1024)) is None
    assert pack_linear_layers(model) == 0 and packed_bytes(model) == 0


def test_nothing_is_packed_when_the_copies_would_not_fit_the_memory_that_can_be_spared(caplog):
    model = gpt2_with_a_large_layer()
    wanted = sum(m.weight.numel() * 4 for m in model.modules()
                 if type(m).__name__ == "Conv1D" and m.weight.numel() >= MIN_ELEMENTS)
    with caplog.at_level("INFO", logger="textgen"):
        assert pack_linear_layers(model, max_bytes=wanted - 1) == 0
    assert packed_bytes(model) == 0 and "not packed" in caplog.text
    assert pack_linear_layers(model, max_bytes=wanted) == wanted  # exactly enough room: packed


def test_the_room_for_copies_is_half_the_free_memory_and_within_the_operators_budget(monkeypatch):
    from textgen.service import loading

    model = gpt2_with_a_large_layer()
    own = sum(p.numel() * 4 for p in model.parameters())
    monkeypatch.setattr(loading, "available_memory_bytes", lambda: 10 << 30)
    assert loading.packing_room(model) == 5 << 30
    assert loading.packing_room(model, memory_budget_bytes=own + (1 << 20)) == 1 << 20
    monkeypatch.setattr(loading, "available_memory_bytes", lambda: None)  # unknown: only the budget bounds it
    assert loading.packing_room(model) is None


def test_the_memory_this_machine_can_spare_is_read():
    from textgen.local.devices import available_memory_bytes

    free = available_memory_bytes()
    assert free is None or 0 < free < 1 << 50
