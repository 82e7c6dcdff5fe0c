"""Recurrent language models: vanilla RNN (tanh), LSTM and GRU, side by side.

The three differ only in their torch recurrence, so one class does the work and each architecture is a
config + model pair that names its cell (as in pytorch/examples' word_language_model). They are real
Hugging Face models: `save_pretrained` writes config.json + model.safetensors, `from_pretrained` reads
them back, and `generate` carries the hidden state from step to step (returned as `state`, one of the
cache names generate knows) instead of re-reading the prefix for every token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers import initialization as init
from transformers.utils import ModelOutput

from textgen.models.common import causal_lm_loss
from textgen.models.contract import TextgenModel
from textgen.models.packed import PackedWeight

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class RecurrentConfig(PretrainedConfig):
    """Shared settings (transformers 5 configs are dataclasses); `cell` is fixed by each subclass."""

    cell = "lstm"

    vocab_size: int = 66
    embedding_size: int = 128
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.2
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False


class RNNConfig(RecurrentConfig):
    model_type = "textgen_rnn"
    cell = "rnn"


class LSTMConfig(RecurrentConfig):
    model_type = "textgen_lstm"
    cell = "lstm"


class GRUConfig(RecurrentConfig):
    model_type = "textgen_gru"
    cell = "gru"


@dataclass
class RecurrentOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    state: State | None = None


_TORCH_RNN = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentLM(TextgenModel):
    """Embedding -> stacked RNN/LSTM/GRU -> linear head over the vocabulary. Its memory is the hidden state
    (and an LSTM's cell state) of every layer, carried from token to token."""

    config_class = RecurrentConfig
    base_model_prefix = "recurrent"
    main_input_name = "input_ids"
    memory = "state"
    memory_batch_dim = 1  # torch's RNN state: (layers, B, hidden), an LSTM's a pair of those

    def __init__(self, config: RecurrentConfig):
        super().__init__(config)
        self.cell = config.cell
        self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
        rnn_cls = _TORCH_RNN[config.cell]
        extra = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
        self.rnn = rnn_cls(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
            **extra,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.RNNBase):
            # PyTorch's own default (uniform in +-1/sqrt(hidden)), which trains well for all three cells;
            # the LSTM forget gate starts open (bias 1) so gradients flow through long spans from step one.
            bound = module.hidden_size**-0.5
            for name, param in module.named_parameters():
                init.uniform_(param, -bound, bound)
                if self.cell == "lstm" and name.startswith("bias_ih"):
                    with torch.no_grad():
                        param[module.hidden_size : 2 * module.hidden_size].fill_(1.0)
        elif isinstance(module, nn.Embedding):
            # Unit-scale embeddings (PyTorch's own default), not transformers' N(0, 0.02): the cells' input
            # weights are only +-1/sqrt(hidden), so 0.02-scale inputs barely move the gates, and an LSTM so
            # started sat at the unigram loss for its first ~100 steps (measured: 3.07 at step 100, GRU 2.74).
            init.normal_(module.weight, mean=0.0, std=1.0)
        else:
            super()._init_weights(module)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def get_output_embeddings(self) -> nn.Linear:
        return self.head

    def forward(
        self,
        input_ids: torch.LongTensor,
        state: State | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> RecurrentOutput:
        x = self.drop(self.embed(input_ids))
        if input_ids.shape[1] == 1 and not self.training:
            out, state = self._step(x, state)
        else:
            out, state = self.rnn(x, state)
        out = self.drop(out)
        if logits_to_keep:
            out = out[:, -logits_to_keep:]
        logits = self.head(out)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return RecurrentOutput(loss=loss, logits=logits, state=state)

    # -- the contract (textgen/models/contract.py) --

    def step(self, input_ids: torch.LongTensor, memory: State | None, all_logits: bool = False
             ) -> tuple[torch.Tensor, State]:
        out = self(input_ids=input_ids, state=memory, logits_to_keep=0 if all_logits else 1)
        return (out.logits if all_logits else out.logits[:, -1]).float(), out.state

    @property
    def unit_layers(self) -> int:
        return self.rnn.num_layers

    @property
    def unit_states(self) -> tuple[str, ...]:
        return ("cell", "hidden") if self.cell == "lstm" else ("hidden",)

    def unit_values(self, input_ids: torch.LongTensor, layer: int, state: str) -> torch.Tensor:
        """Every unit of one layer after each token of `input_ids` (1, T): (T, hidden_size). One token at a time
        through the generation step, keeping the state after each: nn.LSTM over the whole text gives only the last
        layer's h per token, never c or a lower layer."""
        rows, carried = [], None
        for t in range(input_ids.shape[1]):
            carried = self(input_ids=input_ids[:, t : t + 1], state=carried).state
            h = carried[1 if state == "cell" else 0] if self.cell == "lstm" else carried
            rows.append(h[layer, 0])
        return torch.stack(rows)

    def _step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One token through every layer, for generation.

        Why not `self.rnn`: at batch 1 and one time step, nn.LSTM's oneDNN path costs ~12 ms per call on our
        CPUs. At one token the step is bound by reading the weights from memory, so the LSTM and RNN do one
        matrix-vector product per layer over [W_ih | W_hh] (measured ~25% faster than torch.lstm_cell's two);
        the GRU needs its recurrent half apart (the reset gate scales it) and uses torch.gru_cell. Same weights
        and formulas as nn.RNN/LSTM/GRU, so the results match to float rounding.
        """
        batch = x.shape[0]
        layers, hidden = self.rnn.num_layers, self.rnn.hidden_size  # plain ints; config reads cost ~10 us each
        if state is None:
            zeros = x.new_zeros(layers, batch, hidden)
            state = (zeros, zeros.clone()) if self.cell == "lstm" else zeros
        h_all = state[0] if self.cell == "lstm" else state
        inp, new_h, new_c = x[:, 0], [], []
        for i in range(layers):
            if self.cell == "gru":
                inp = torch.gru_cell(inp, h_all[i], *self.rnn._flat_weights[4 * i : 4 * i + 4])
            else:
                weight, bias, product = self._fused(i)
                joined = torch.cat([inp, h_all[i]], dim=1)  # (B, input + hidden)
                if product is not None and product.usable(joined):
                    gates = product(joined, bias)  # (B, 4 or 1 x hidden)
                else:
                    gates = torch.addmm(bias, joined, weight.t())
                if self.cell == "lstm":
                    in_gate, forget, cell, out_gate = gates.chunk(4, dim=1)
                    c = torch.sigmoid(forget) * state[1][i] + torch.sigmoid(in_gate) * torch.tanh(cell)
                    inp = torch.sigmoid(out_gate) * torch.tanh(c)
                    new_c.append(c)
                else:
                    inp = torch.tanh(gates)
            new_h.append(inp)  # no inter-layer dropout here: this path runs only in eval mode
        h_out = torch.stack(new_h)
        state = (h_out, torch.stack(new_c)) if self.cell == "lstm" else h_out
        return inp.unsqueeze(1), state

    def _fused(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, PackedWeight | None]:
        """[W_ih | W_hh] and b_ih + b_hh of one layer, rebuilt whenever any of those tensors changes, and the
        product on its packed copy where that applies (textgen/models/packed.py: faster from 4 rows, which a
        decode batch always has, and each row exactly as alone)."""
        # _flat_weights (per layer: w_ih, w_hh, b_ih, b_hh) is kept current by nn.RNNBase itself.
        tensors = self.rnn._flat_weights[4 * layer : 4 * layer + 4]
        key = tuple((id(t), t._version) for t in tensors)
        cache = self.__dict__.setdefault("_fused_cache", {})
        if cache.get(layer, (None,))[0] != key:
            w_ih, w_hh, b_ih, b_hh = tensors
            fused = torch.cat([w_ih, w_hh], dim=1).contiguous()  # (gates, input + hidden)
            cache[layer] = (key, fused, (b_ih + b_hh).contiguous(), PackedWeight.of(fused, lambda: 0))
        return cache[layer][1:]

    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, state: State | None = None, **kwargs
    ) -> dict:
        # With a state, the prefix is already folded into it: feed only the newest token.
        if state is not None:
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, "state": state, "logits_to_keep": 1}


class RNNForCausalLM(RecurrentLM):
    config_class = RNNConfig


class LSTMForCausalLM(RecurrentLM):
    config_class = LSTMConfig


class GRUForCausalLM(RecurrentLM):
    config_class = GRUConfig
