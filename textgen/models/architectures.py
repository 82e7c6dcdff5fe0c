"""The architectures textgen trains and loads, one entry each: the only list to extend for a new one.

    python -c "from textgen.models.architectures import names, get; print(names(), get('lstm').recipe)"

Each `Architecture` says everything the rest of the project needs: its name on the command line, the
`model_type` written into its checkpoints' config.json, a title and a plain-words description for the catalog,
the default training recipe, which size flags its config takes, tiny sizes for the tests, and where its
config and model classes live. Training (`build_model`, recipes, size flags), the CLI (`--arch`), the catalog
(titles, descriptions), the Auto-class registration in `textgen.models.auto` and the test fixtures all read it.

Adding an architecture is its model file (a transformers config + model class pair) and one entry in
`BUILTIN` below, or `register(Architecture(...))` at run time (tests/test_architectures.py adds a bigram
model that way).

This module imports neither torch nor transformers, so the catalog and `python -m textgen --help` stay fast:
classes are named as "module:Class" strings and imported on first use (`Architecture.classes()`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# The size flags of `python -m textgen train` (TrainConfig fields). An architecture's config takes some of them;
# a new kind of size would need a new TrainConfig field (and flag) too.
SIZE_FIELDS = ("n_layer", "n_embd", "n_head", "position_embedding", "hidden_size", "embedding_size", "num_layers",
               "dropout")
# What every recipe must give, beside the sizes: training cannot start without them.
RECIPE_FIELDS = ("block_size", "batch_size", "lr", "warmup_steps")
# How a Transformer knows where a token stands (textgen/models/transformer.py); here so the CLI can offer them
# without importing torch.
POSITION_EMBEDDINGS = ("learned", "rotary")


@dataclass(frozen=True)
class Architecture:
    """One architecture. `recipe` holds what `train --arch NAME` uses for every flag left out."""

    name: str  # the --arch value, e.g. "lstm"
    model_type: str  # config.json's model_type, e.g. "textgen_lstm": never change it once checkpoints exist
    title: str  # short display name, e.g. "LSTM"
    description: str  # one line for someone who has never heard of the architecture
    recipe: Mapping[str, Any]  # default sizes and optimisation: SIZE_FIELDS the config takes + RECIPE_FIELDS
    size_fields: tuple[str, ...]  # the SIZE_FIELDS its config takes
    tiny_sizes: Mapping[str, Any]  # config keyword arguments of a tiny model, for the tests
    config_class: str  # "module:Class" of its transformers config
    model_class: str  # "module:Class" of its transformers model
    context_field: str | None = None  # the config field that --block-size sets (a Transformer's n_positions)
    _resolved: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Read-only copies: an entry is shared by every caller, and a caller's change must not leak.
        object.__setattr__(self, "recipe", MappingProxyType(dict(self.recipe)))
        object.__setattr__(self, "tiny_sizes", MappingProxyType(dict(self.tiny_sizes)))
        unknown = set(self.size_fields) - set(SIZE_FIELDS)
        if unknown:
            raise ValueError(f"{self.name}: size fields {sorted(unknown)} are not train flags "
                             f"({', '.join(SIZE_FIELDS)})")
        missing = [k for k in RECIPE_FIELDS if k not in self.recipe]
        if missing:
            raise ValueError(f"{self.name}: the recipe must give {', '.join(missing)}")
        stray = set(self.recipe) - set(self.size_fields) - set(RECIPE_FIELDS)
        if stray:
            raise ValueError(f"{self.name}: recipe keys {sorted(stray)} are neither its size fields "
                             f"nor {', '.join(RECIPE_FIELDS)}")

    def classes(self) -> tuple[type, type]:
        """(config class, model class), imported on first use; this imports torch and transformers."""
        if not self._resolved:
            self._resolved["classes"] = (_import(self.config_class), _import(self.model_class))
        return self._resolved["classes"]


def _import(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _recurrent(name: str, title: str, description: str, lr: float) -> Architecture:
    """RNN, LSTM and GRU differ only in their cell (textgen/models/recurrent.py), title, words and learning rate."""
    cls = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[name]
    return Architecture(
        name=name, model_type=f"textgen_{name}", title=title, description=description,
        recipe={"hidden_size": 256, "embedding_size": 64, "num_layers": 2, "dropout": 0.0, "block_size": 128,
                "batch_size": 16, "lr": lr, "warmup_steps": 50},
        size_fields=("hidden_size", "embedding_size", "num_layers", "dropout"),
        tiny_sizes={"hidden_size": 32, "embedding_size": 16, "num_layers": 2},
        config_class=f"textgen.models.recurrent:{cls}Config", model_class=f"textgen.models.recurrent:{cls}ForCausalLM",
    )


# The default recipes are sized for a few minutes of one CPU thread (see benchmarks/TRAINING.md for how they
# were chosen); the shipped checkpoints set larger sizes explicitly, and each model card records every value used.
BUILTIN = (
    _recurrent("rnn", "RNN", "The simplest recurrent network: reads one character at a time and keeps a short memory.",
               lr=2e-3),
    _recurrent("lstm", "LSTM", "A recurrent network with gated memory (LSTM): remembers longer than a plain RNN.",
               lr=3e-3),
    _recurrent("gru", "GRU", "A lighter gated recurrent network (GRU): nearly an LSTM's memory with fewer parts.",
               lr=3e-3),
    Architecture(
        name="transformer", model_type="textgen_transformer", title="Transformer",
        description="A small Transformer, like GPT: looks back at all of the recent text at once.",
        # Small steps, many of them: in a few CPU minutes, 12 windows of 64 characters a step (the shape of
        # nanoGPT's README recipe for CPUs) beat 16 of 128 at 3e-3; and at that shape lr 2e-3 beat nanoGPT's 1e-3
        # (3,900 steps, about 240 s of an idle core: validation 1.53 against 1.59 nats/token; benchmarks/TRAINING.md).
        # Rotary positions rather than learned ones: at this recipe's 3,425 steps, 1.540 against 1.577 nats/char on
        # the held-out stretches, for 3% more time a step (benchmarks/TRAINING.md, "Rotary positions").
        recipe={"n_layer": 4, "n_embd": 128, "n_head": 4, "position_embedding": "rotary", "dropout": 0.0,
                "block_size": 64, "batch_size": 12, "lr": 2e-3, "warmup_steps": 100},
        size_fields=("n_layer", "n_embd", "n_head", "position_embedding", "dropout"),
        tiny_sizes={"n_layer": 2, "n_embd": 32, "n_head": 4, "n_positions": 64},
        config_class="textgen.models.transformer:TransformerConfig",
        model_class="textgen.models.transformer:TransformerForCausalLM",
        context_field="n_positions",
    ),
)

_REGISTRY: dict[str, Architecture] = {arch.name: arch for arch in BUILTIN}


def register(arch: Architecture) -> Architecture:
    """Add (or replace) an architecture at run time; registered with transformers' Auto classes at once if
    `textgen.models.auto` is already imported (otherwise that import does it)."""
    clash = next((a for a in _REGISTRY.values() if a.model_type == arch.model_type and a.name != arch.name), None)
    if clash:
        raise ValueError(f"model_type {arch.model_type!r} already belongs to {clash.name!r}")
    _REGISTRY[arch.name] = arch
    if "textgen.models.auto" in sys.modules:
        sys.modules["textgen.models.auto"].register_with_auto(arch)
    return arch


def unregister(name: str) -> None:
    """Forget an architecture (tests put the registry back this way). transformers keeps its Auto mapping,
    which is harmless: nothing can ask for that model_type without a checkpoint of it."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return list(_REGISTRY)


def all_architectures() -> list[Architecture]:
    return list(_REGISTRY.values())


def get(name: str) -> Architecture:
    """The architecture called `name`; ValueError naming the choices for anything else."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(_REGISTRY)}") from None


def by_model_type(model_type: str | None) -> Architecture | None:
    """The architecture whose checkpoints carry this config.json model_type, or None (GPT-2, Llama, ...)."""
    return next((a for a in _REGISTRY.values() if a.model_type == model_type), None)


class RegistryView(Mapping):
    """A live read-only mapping name -> something of each architecture (`RECIPES`, `ARCHITECTURES`), so that
    names kept for older code follow the registry, entries registered later included."""

    def __init__(self, pick):
        self._pick = pick

    def __getitem__(self, name: str):
        if name not in _REGISTRY:
            raise KeyError(name)
        return self._pick(_REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)
