"""How surprised is a model by a text: nats and bits per character, and per-token perplexity.

Per-character numbers compare models with different tokenizers fairly (a BPE token covers several
characters, a char-model token one); perplexity per token is what each model itself optimises.

Every character of the text is scored. The first token needs something to be predicted from, so the
model is given a newline as context (a text file starts at the start of a line), encoded on its own so
that it never merges with the text's first token.

    python -m textgen eval --model assets/models/lstm --data FILE --json
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from textgen.core.events import Score
from textgen.local.tokenization import encode
from textgen.models.contract import context_length, start_memory, step

CONTEXT = "\n"


@torch.inference_mode()
def score_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    batch_size: int = 8,
    progress: Callable[[float], None] | None = None,
) -> Score:
    """Score every character of `text` under `model`."""
    if not text:
        raise ValueError("there is no text to score")
    context = encode(tokenizer, CONTEXT).ids
    body = encode(tokenizer, text)
    if not body.ids:
        raise ValueError("the text encodes to no tokens")
    ids = torch.tensor(context + body.ids, dtype=torch.long)
    nll = _total_nll(model, ids, first_scored=len(context), batch_size=batch_size, progress=progress)
    n_tokens = len(body.ids)
    return Score(
        nats_per_char=nll / len(text),
        bits_per_char=nll / len(text) / math.log(2),
        ppl=math.exp(min(nll / n_tokens, 700.0)),
        chars=len(text),
        tokens=n_tokens,
        unknown_chars=body.unknown,
    )


def _total_nll(
    model: PreTrainedModel,
    ids: torch.Tensor,
    first_scored: int,
    batch_size: int,
    progress: Callable[[float], None] | None,
) -> float:
    """Sum of -log p(ids[i] | ids[:i]) over i >= first_scored, in nats."""
    device = model.device
    ctx = context_length(model)
    if ctx is None:
        return _nll_carried(model, ids.to(device), first_scored, progress)
    return _nll_windows(model, ids.to(device), first_scored, ctx, batch_size, progress)


def _nll_carried(model, ids, first_scored, progress, chunk: int = 1024) -> float:
    # A model without a context limit (recurrent, or memoryless): exact, its memory carries everything before
    # each chunk, so no context is ever cut.
    total, memory = 0.0, start_memory(model, 1)
    for start in range(0, len(ids) - 1, chunk):
        piece = ids[start : start + chunk + 1]
        logits, memory = step(model, piece[None, :-1], memory, all_logits=True)
        nll = F.cross_entropy(logits[0], piece[1:], reduction="none")
        keep = torch.arange(start + 1, start + len(piece), device=ids.device) >= first_scored
        total += nll[keep].sum().item()
        if progress:
            progress(min(1.0, (start + chunk) / len(ids)))
    return total


LOGITS_BUDGET_BYTES = 256 * 2**20


def _nll_windows(model, ids, first_scored, ctx, batch_size, progress) -> float:
    # Windows of the full context, each half new: every token is predicted once, from at least half a
    # context of history (the first window's tokens from what precedes them). More overlap buys little: windows
    # an eighth new scored the shipped Transformer 0.0011-0.0033 nats/char better on the training file's last
    # 15,058 and 5,020 characters, at four times the work.
    stride = max(ctx // 2, 1)
    # A window's fp32 logits are ctx x vocab floats: 200 MB for GPT-2, so fewer windows go at once for big
    # vocabularies (8 GPT-2 windows would need 1.6 GB for the logits alone).
    # (The head's rows, not config.vocab_size: some configs nest that in a text_config.)
    row_bytes = ctx * model.get_output_embeddings().weight.shape[0] * 4
    batch_size = max(1, min(batch_size, LOGITS_BUDGET_BYTES // row_bytes))
    jobs = []  # (window start, first target index inside the window)
    start = 0
    while True:
        end = min(start + ctx, len(ids))
        first_target = first_scored if start == 0 else max(start + ctx - stride, first_scored)
        jobs.append((start, end, first_target))
        if end >= len(ids):
            break
        start += stride
    total = 0.0
    for i in range(0, len(jobs), batch_size):
        group = jobs[i : i + batch_size]
        length = max(e - s for s, e, _ in group)
        batch = torch.zeros(len(group), length, dtype=torch.long, device=ids.device)
        for row, (s, e, _) in enumerate(group):
            batch[row, : e - s] = ids[s:e]
        logits = model(input_ids=batch, use_cache=False).logits.float()  # no key/value cache to keep
        for row, (s, e, first_target) in enumerate(group):
            lo = max(first_target - s, 1)
            if lo >= e - s:
                continue
            total += F.cross_entropy(logits[row, lo - 1 : e - s - 1], batch[row, lo : e - s], reduction="sum").item()
        if progress:
            progress(min(1.0, (i + batch_size) / len(jobs)))
    return total
