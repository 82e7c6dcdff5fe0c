"""A fifth architecture's "model file", for tests/test_architectures.py: a bigram model.

    python -m pytest -q tests/test_architectures.py

The whole model is one embedding table read as logits: the next token depends on the current one only.
With the one registry entry in the test, it trains, saves, loads and generates like the shipped four.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from textgen.models.common import causal_lm_loss
from textgen.models.contract import TextgenModel


class BigramConfig(PretrainedConfig):
    model_type = "textgen_test_bigram"

    vocab_size: int = 66
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False


@dataclass
class BigramOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    state: None = None  # no memory; transformers' generate hands this back at the next step


class BigramForCausalLM(TextgenModel):
    """The written contract (textgen/models/contract.py) of a model with no memory and no attention."""

    config_class = BigramConfig
    base_model_prefix = "bigram"
    main_input_name = "input_ids"
    memory = "none"  # the next token depends on the newest one only, which every step is handed

    def __init__(self, config: BigramConfig):
        super().__init__(config)
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)  # row i: logits of what follows token i
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.table

    def forward(self, input_ids: torch.LongTensor, state=None, labels: torch.LongTensor | None = None,
                logits_to_keep: int = 0, **kwargs) -> BigramOutput:
        logits = self.table(input_ids)  # (B, T, V)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return BigramOutput(loss=loss, logits=logits, state=None)

    def step(self, input_ids: torch.LongTensor, memory: None, all_logits: bool = False) -> tuple[torch.Tensor, None]:
        logits = self.table(input_ids).float()  # (B, T, V)
        return (logits if all_logits else logits[:, -1]), None

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs) -> dict:
        return {"input_ids": input_ids[:, -1:], "logits_to_keep": 1}
