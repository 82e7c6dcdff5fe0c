"""Our own language models, registered with transformers' Auto classes on import.

    import textgen.models.auto
    model = AutoModelForCausalLM.from_pretrained("assets/models/lstm")

After `import textgen.models.auto`, `AutoModelForCausalLM.from_pretrained(dir)` loads any architecture of the
registry in `textgen.models.architectures` (a model's class must be registered before its directory can be loaded in a
fresh process). The registry is the one list of architectures; this module only registers what it names.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging as _hf_logging

from textgen.models import architectures as _registry
from textgen.models.contract import TextgenModel
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

# name -> (config class, model class), read live from the registry (kept for older callers and the tests).
ARCHITECTURES = _registry.RegistryView(lambda arch: arch.classes())


def register_with_auto(arch: _registry.Architecture) -> None:
    """Let AutoConfig/AutoModelForCausalLM load `arch`'s checkpoints (by their config.json model_type)."""
    config_cls, model_cls = arch.classes()
    if not issubclass(model_cls, TextgenModel):
        raise TypeError(f"{arch.name}: {model_cls.__name__} must derive from textgen.models.contract.TextgenModel "
                        "(the written contract of our architectures: memory, context, one step)")
    if config_cls.model_type != arch.model_type:
        raise ValueError(f"{arch.name}: {config_cls.__name__}.model_type is {config_cls.model_type!r}, "
                         f"the registry says {arch.model_type!r}")
    AutoConfig.register(arch.model_type, config_cls, exist_ok=True)
    AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)


for _arch in _registry.all_architectures():
    register_with_auto(_arch)

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
    "TextgenModel",
    "TransformerForCausalLM",
    "register_with_auto",
]
