"""A fifth architecture's "model file", for tests/test_architectures.py: a bigram model.

    python -m pytest -q tests/test_architectures.py

The whole model is one embedding table read as logits: the next token depends on the current one only.
With the one registry entry in the test, it trains, saves, loads and generates like the shipped four.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from textgen.models.common import causal_lm_loss


class BigramConfig(PretrainedConfig):
    model_type = "textgen_test_bigram"

    vocab_size: int = 66
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False


@dataclass
class BigramOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    state: None = None  # no memory: the engine's "stateful" path feeds one token a step and passes this back


class BigramForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = BigramConfig
    base_model_prefix = "bigram"
    main_input_name = "input_ids"
    _is_stateful = True  # nothing to carry but the last token, which the engine feeds anyway

    def __init__(self, config: BigramConfig):
        super().__init__(config)
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)  # row i: logits of what follows token i
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def get_input_embeddings(self) -> nn.Embedding:
        return self.table

    def forward(self, input_ids: torch.LongTensor, state=None, labels: torch.LongTensor | None = None,
                logits_to_keep: int = 0, **kwargs) -> BigramOutput:
        logits = self.table(input_ids)  # (B, T, V)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return BigramOutput(loss=loss, logits=logits, state=None)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs) -> dict:
        return {"input_ids": input_ids[:, -1:], "logits_to_keep": 1}
