"""What a model's tokens are, in words a visitor reads ("letters", "word pieces"), from a vocabulary or a folder.

    from textgen.core.vocabulary import token_kind, token_kind_in_folder
    token_kind(tokenizer.get_vocab())                  # a loaded tokenizer's
    token_kind_in_folder("assets/models/transformer")  # a model's folder, before it is loaded

No torch and no transformers here: the page's note under a model picked but not loaded yet calls this while the
server is still importing them in the background, and two threads importing transformers at once can leave one of
them with a half-built module ("cannot import name ..."): that broke start-ups before this lived apart.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path

from textgen.core.words import Phrase

MAX_TOKENIZER_BYTES = 20 << 20  # a tokenizer.json larger than this is not one: it is not read


def token_kind(vocab: Iterable[str]) -> Phrase:
    """What one token of a vocabulary is, in words a visitor reads: "letters" for a character tokenizer (our RNN,
    LSTM and GRU), else "word pieces" (BPE: our Transformer, GPT-2, SmolLM2)."""
    tokens = list(vocab)
    single = sum(len(t) == 1 for t in tokens)
    return Phrase("tokens.letters") if tokens and single >= 0.9 * len(tokens) else Phrase("tokens.word_pieces")


def token_kind_in_folder(folder: str) -> Phrase | None:
    """`token_kind` of a model folder's tokenizer.json, read without loading the model (the note under a model
    picked but not loaded yet); None where the folder has none or it cannot be read."""
    path = Path(folder) / "tokenizer.json"
    try:
        stat = path.stat()
    except OSError:
        return None
    # Keyed by the file's time and size too: a model trained again into the same folder may have other tokens.
    return _token_kind_of_file(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _token_kind_of_file(path: str, mtime_ns: int, size: int) -> Phrase | None:
    if size > MAX_TOKENIZER_BYTES:
        return None
    try:
        vocab = json.loads(Path(path).read_text(encoding="utf-8"))["model"]["vocab"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return token_kind(vocab if isinstance(vocab, dict) else (t[0] for t in vocab if t))  # Unigram: [token, score]
