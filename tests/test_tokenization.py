"""Char and byte-level BPE tokenizers: exact round trips, unknown text, saving and loading."""

import json

import pytest
from transformers import AutoTokenizer

from textgen.core.vocabulary import token_kind_in_folder
from textgen.local import tokenization
from textgen.local.tokenization import UNK, encode, train_bpe_tokenizer, train_char_tokenizer

UNICODE_SAMPLES = [
    "héllo wörld",
    "你好，世界",
    "emoji 😀👍🏽 and flags 🇫🇷",
    "math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∑∫",
    "tabs\tand\nnewlines\n\n  spaces  ",
    "family 👨‍👩‍👧",
]


@pytest.fixture(scope="module")
def bpe(tiny_text):
    return train_bpe_tokenizer([tiny_text], vocab_size=300)


def test_char_tokenizer_round_trips_its_training_text_exactly(char_tokenizer, tiny_text):
    ids = encode(char_tokenizer, tiny_text).ids
    assert len(ids) == len(tiny_text)  # one token per character
    assert char_tokenizer.decode(ids) == tiny_text


@pytest.mark.parametrize("text", ["\n", "\n\nAll:\n", "  Speak,  speak.  \n", "First Citizen:\n"])
def test_char_tokenizer_keeps_newlines_and_spaces(char_tokenizer, text):
    assert char_tokenizer.decode(encode(char_tokenizer, text).ids) == text


def test_char_vocabulary_is_sorted_characters_after_unk(char_tokenizer, tiny_text):
    vocab = char_tokenizer.get_vocab()
    assert vocab[UNK] == 0
    assert [ch for ch, _ in sorted(vocab.items(), key=lambda kv: kv[1])][1:] == sorted(set(tiny_text))


def test_same_text_gives_same_char_vocabulary(tiny_text):
    assert train_char_tokenizer(tiny_text).get_vocab() == train_char_tokenizer(tiny_text).get_vocab()


@pytest.mark.parametrize("text", ["你好", "😀", "Hi 你好😀 there", "日本語\n😀😀"])
def test_unknown_characters_become_unk_and_are_reported(char_tokenizer, text):
    enc = encode(char_tokenizer, text)  # never raises
    unk = char_tokenizer.unk_token_id
    assert len(enc.ids) == len(text)
    unknown_positions = [i for i, ch in enumerate(text) if ch not in char_tokenizer.get_vocab()]
    assert [i for i, t in enumerate(enc.ids) if t == unk] == unknown_positions
    expected_unknown = "".join(dict.fromkeys(text[i] for i in unknown_positions))
    assert enc.unknown == expected_unknown
    assert str(len(expected_unknown)) in enc.message


def test_known_text_has_no_unknowns_and_no_message(char_tokenizer):
    enc = encode(char_tokenizer, "First Citizen:\n")
    assert enc.unknown == ""
    assert enc.message is None


def test_unknown_message_shortens_long_lists(char_tokenizer):
    text = "".join(chr(0x4E00 + i) for i in range(30))
    enc = encode(char_tokenizer, text)
    assert enc.unknown == text
    assert enc.message.startswith("30 character(s)")
    assert "…" in enc.message


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_bpe_round_trips_any_unicode_without_unknowns(bpe, text):
    enc = encode(bpe, text)
    assert enc.unknown == ""
    assert bpe.decode(enc.ids) == text


def test_bpe_has_an_end_of_text_token_and_merges(bpe):
    assert bpe.eos_token == "<|endoftext|>"
    assert len(bpe) == 300
    assert len(encode(bpe, "First Citizen:").ids) < len("First Citizen:")


def test_bpe_adds_no_special_tokens_around_text(bpe):
    ids = bpe("First")["input_ids"]
    assert bpe.eos_token_id not in ids
    assert bpe.decode(ids) == "First"


@pytest.mark.parametrize("which", ["char", "bpe"])
def test_saved_tokenizer_loads_with_auto_tokenizer_and_gives_same_ids(tmp_path, char_tokenizer, bpe, which):
    tokenizer = char_tokenizer if which == "char" else bpe
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["First Citizen:\nBefore we proceed", *UNICODE_SAMPLES]:
        assert encode(loaded, text) == encode(tokenizer, text)
    assert loaded.unk_token_id == tokenizer.unk_token_id
    assert loaded.eos_token_id == tokenizer.eos_token_id


def test_a_given_character_vocabulary_keeps_its_ids_and_sends_the_rest_to_unk():
    # How another project's character model (nanoGPT's ids start at 0 with no <unk>) is read with our code.
    tok = tokenization.char_tokenizer({"\n": 0, "a": 1, "b": 2, UNK: 3})
    assert tok("ab\nz", add_special_tokens=False)["input_ids"] == [1, 2, 0, 3]
    assert tok.decode([2, 1, 0]) == "ba\n"


def test_a_folders_token_kind_follows_a_tokenizer_saved_again_into_it(tmp_path):
    """The note under a model not loaded yet reads its tokenizer file; a model trained again into the same
    folder with other tokens is described by its new file, not by what was read before."""
    train_char_tokenizer("To be, or not to be").save_pretrained(tmp_path)
    assert token_kind_in_folder(str(tmp_path)).key == "tokens.letters"
    words = {"model": {"type": "BPE", "vocab": {"To": 0, " be": 1, ", or": 2, " not": 3, " to": 4}}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(words), encoding="utf-8")
    assert token_kind_in_folder(str(tmp_path)).key == "tokens.word_pieces"
    assert token_kind_in_folder(str(tmp_path / "missing")) is None
