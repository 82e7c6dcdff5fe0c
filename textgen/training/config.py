"""What a training run is asked to do: `TrainConfig` and the architectures' default recipes, without torch.

    from textgen.training.config import TrainConfig
    TrainConfig(arch="lstm", data="shakespeare.txt", time_budget=600).resolved().lr   # 0.003, the recipe's

The CLI builds its `train` flags from these fields, and the model card writes them back as a command, so this
module stays importable without torch (`python -m textgen --help` must answer at once). The loop is in
`textgen.training.trainer`; the recipes themselves are entries of `textgen.models.architectures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from textgen.models import architectures
from textgen.models.architectures import SIZE_FIELDS

# name -> the default recipe of that architecture, read live from the registry (kept for older callers).
RECIPES = architectures.RegistryView(lambda arch: dict(arch.recipe))


@dataclass
class TrainConfig:
    arch: str = "transformer"
    data: str = ""
    out: str = "runs/model"
    tokenizer: str = "char"  # char | bpe
    bpe_vocab_size: int = 1024
    # None takes the architecture's recipe (textgen/models/architectures.py)
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    position_embedding: str | None = None  # learned | rotary: a Transformer's
    hidden_size: int | None = None
    embedding_size: int | None = None
    num_layers: int | None = None
    dropout: float | None = None
    block_size: int | None = None  # tokens per training window (and the Transformer's context)
    batch_size: int | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_steps: int | None = None
    time_budget: float | None = None  # seconds
    eval_interval: int = 250
    eval_batches: int = 8
    # Three blocks of consecutive scenes (10% of the file, about 33 KB each for tiny Shakespeare), the last at its end:
    # short chunks cut from between training scenes share their names and scenes, and read 0.16-0.22 nats/char too
    # good on plays never seen, ranking the models wrongly (benchmarks/TRAINING.md).
    val_fraction: float = 0.1
    val_chunks: int = 3  # held-out stretches spread over the file (1: only its tail)
    seed: int = 1337
    threads: int | None = None
    init_from: str | None = None  # start from this checkpoint's weights and tokenizer (fresh optimizer)
    resume: bool = False
    tensorboard: bool | None = None  # log to TensorBoard in OUT/tensorboard; None: when it is installed

    def resolved(self) -> TrainConfig:
        """This config with every None that the architecture's recipe covers filled in."""
        recipe = architectures.get(self.arch).recipe  # ValueError naming the choices for an unknown one
        fill = {k: v for k, v in recipe.items() if getattr(self, k) is None}
        return replace(self, **fill)


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over `warmup_steps`, then cosine from lr to lr * min_lr_ratio as progress goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


__all__ = ["RECIPES", "SIZE_FIELDS", "TrainConfig", "lr_at"]
