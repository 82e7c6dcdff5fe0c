"""Text files in, batches of token ids out."""

from __future__ import annotations

from pathlib import Path

import torch


def read_text(path: str | Path) -> str:
    """The whole file as text; a clear error for a missing, empty or non-UTF-8 file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such text file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text:
        raise ValueError(f"{path} is empty")
    return text


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Train on the head, validate on the tail.

    A contiguous tail, not random lines: the text a model is judged on later is unseen text that follows,
    and a random split would leak neighbouring lines into validation.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def random_windows(
    data: torch.Tensor, batch_size: int, length: int, generator: torch.Generator
) -> torch.Tensor:
    """`batch_size` windows of `length` consecutive tokens at random offsets, shape (batch, length)."""
    if len(data) <= length:
        raise ValueError(f"the text has {len(data)} tokens; a window needs more than {length}")
    starts = torch.randint(len(data) - length, (batch_size,), generator=generator)
    return torch.stack([data[s : s + length] for s in starts.tolist()])


def sequential_windows(data: torch.Tensor, length: int, batch_size: int) -> list[torch.Tensor]:
    """Every token of `data` once, in batches of windows that overlap by one token.

    Each window's first token is only context, so together the windows predict every token after the
    first exactly once.
    """
    step = length - 1
    starts = list(range(0, max(len(data) - 1, 1), step))
    windows = [data[s : s + length] for s in starts]
    return [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]
