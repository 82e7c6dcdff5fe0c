"""Tokenizers for our own models: character-level and byte-level BPE.

Both are built with the `tokenizers` library and wrapped in transformers' `PreTrainedTokenizerFast`, so
they save next to the model (`tokenizer.json`), load with `AutoTokenizer.from_pretrained`, and work with
the same streaming and decoding code as GPT-2's tokenizer.

    char: one token per character seen in the training text, plus `<unk>` for everything else
          (a Chinese or emoji prompt to a Shakespeare model encodes, it just says so).
    bpe:  byte-level BPE; every string encodes, since any byte is a token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from textgen.core.words import Phrase

UNK = "<unk>"
EOS = "<|endoftext|>"


def train_char_tokenizer(text: str) -> PreTrainedTokenizerFast:
    """A character vocabulary over `text` (sorted, so the same text always gives the same ids)."""
    vocab = {UNK: 0}
    for ch in sorted(set(text)):
        vocab[ch] = len(vocab)
    return char_tokenizer(vocab)


def char_tokenizer(vocab: dict[str, int]) -> PreTrainedTokenizerFast:
    """One token per character, with these ids (`vocab` must hold `<unk>`, for every other character); also
    how another project's character model (nanoGPT's, say) is read with our code."""
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # [\s\S] and not '.': newlines are characters too.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _wrap(tok)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`; GPT-2's scheme, at a vocabulary size that suits a small corpus."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok, eos=EOS)


def _wrap(tok: Tokenizer, eos: str | None = None) -> PreTrainedTokenizerFast:
    kwargs = {"unk_token": UNK} if tok.token_to_id(UNK) is not None else {}
    if eos is not None:
        kwargs["eos_token"] = eos
    # No special tokens are added around text: a prompt is continued exactly where it ends.
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **kwargs)


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    unknown: str  # the distinct characters that had no token and became <unk>, in order of appearance

    @property
    def message(self) -> str | None:
        if not self.unknown:
            return None
        shown = "".join(self.unknown[:20]) + ("…" if len(self.unknown) > 20 else "")
        return Phrase("note.unknown_chars", count=len(self.unknown), shown=repr(shown))


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> Encoded:
    """Token ids for `text`, and which characters the vocabulary could not represent.

    Never raises for text a vocabulary lacks: char models map it to <unk>; byte-level models have no
    unknowns at all.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    unk_id = tokenizer.unk_token_id
    if unk_id is None or unk_id not in ids:
        return Encoded(ids, "")
    seen: dict[str, None] = {}
    for token_id, (start, end) in zip(ids, enc["offset_mapping"]):
        if token_id == unk_id:
            seen.setdefault(text[start:end], None)
    return Encoded(ids, "".join(seen))


def end_of_text_ids(model, tokenizer) -> frozenset[int]:
    """Every token that ends a text: the tokenizer's EOS and those of the model's generation config (chat
    models such as Llama 3 or Qwen list several, end-of-turn among them)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return frozenset(i for i in ids if isinstance(i, int))


def special_label(text: str, end: bool = False, start: bool = False, padding: bool = False,
                  unknown: bool = False) -> str:
    """The words a special token is shown as (see LoadedModel.token_label); SPECIAL_LABELS lists them all."""
    name = text.lower()
    if end or "end" in name or "eot" in name or name == "</s>":
        return SPECIAL_LABELS["end"]
    if unknown or "unk" in name:
        return SPECIAL_LABELS["unknown"]
    if padding or "pad" in name:
        return SPECIAL_LABELS["padding"]
    if start or "start" in name or "bos" in name or name == "<s>":
        return SPECIAL_LABELS["start"]
    return SPECIAL_LABELS["marker"]


SPECIAL_LABELS = {"end": "⟨end of text⟩", "start": "⟨start⟩", "padding": "⟨padding⟩", "unknown": "⟨unknown⟩",
                  "marker": "⟨marker⟩"}
