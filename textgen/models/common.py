"""What every one of our models shares."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, Hugging Face's convention: `labels` are the inputs, shifted here.

    Positions labelled -100 are ignored, as in transformers.
    """
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )
