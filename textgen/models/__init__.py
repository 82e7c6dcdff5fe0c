"""Our own language models, registered with transformers' Auto classes on import.

After `import textgen.models`, `AutoModelForCausalLM.from_pretrained(dir)` loads any of them (a model's
class must be registered before its directory can be loaded in a fresh process).
"""

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging as _hf_logging

from textgen.models.recurrent import (
    GRUConfig,
    GRUForCausalLM,
    LSTMConfig,
    LSTMForCausalLM,
    RecurrentConfig,
    RecurrentLM,
    RNNConfig,
    RNNForCausalLM,
)
from textgen.models.transformer import TransformerConfig, TransformerForCausalLM

# Loading and saving small models would print a progress bar per call; our own progress reporting is enough.
_hf_logging.disable_progress_bar()

ARCHITECTURES = {
    "rnn": (RNNConfig, RNNForCausalLM),
    "lstm": (LSTMConfig, LSTMForCausalLM),
    "gru": (GRUConfig, GRUForCausalLM),
    "transformer": (TransformerConfig, TransformerForCausalLM),
}

for _config_cls, _model_cls in ARCHITECTURES.values():
    AutoConfig.register(_config_cls.model_type, _config_cls, exist_ok=True)
    AutoModelForCausalLM.register(_config_cls, _model_cls, exist_ok=True)

__all__ = [
    "ARCHITECTURES",
    "GRUConfig",
    "GRUForCausalLM",
    "LSTMConfig",
    "LSTMForCausalLM",
    "RNNConfig",
    "RNNForCausalLM",
    "RecurrentConfig",
    "RecurrentLM",
    "TransformerConfig",
    "TransformerForCausalLM",
]
