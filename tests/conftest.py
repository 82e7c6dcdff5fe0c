"""Shared fixtures: tiny models of every kind, saved the way real ones are, and a catalog over them.

Nothing here downloads anything: the "hub" model is a tiny GPT2Config saved with save_pretrained, loaded
through the same code path as the real GPT-2.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from helpers import clean_environment, free_port  # noqa: E402, F401  (free_port: `from conftest import free_port`)
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from textgen.local.tokenization import train_bpe_tokenizer, train_char_tokenizer  # noqa: E402
from textgen.models import architectures  # noqa: E402
from textgen.models.auto import ARCHITECTURES  # noqa: E402
from textgen.service.catalog import Catalog, entry_for_source  # noqa: E402
from textgen.service.loading import ModelManager  # noqa: E402

TINY_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n"
) * 4


def make_tiny(arch: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    entry = architectures.get(arch)
    config_cls, model_cls = entry.classes()
    no_dropout = {"dropout": 0.0} if "dropout" in entry.size_fields else {}
    return model_cls(config_cls(vocab_size=vocab_size, **no_dropout, **entry.tiny_sizes)).eval()


@pytest.fixture
def clean_env(monkeypatch):
    """No TEXTGEN_* variable of this machine's environment reaches the test (see helpers.clean_environment);
    gives the test's own monkeypatch, to set what the test needs."""
    return clean_environment(monkeypatch)


@pytest.fixture(scope="session")
def tiny_text() -> str:
    return TINY_TEXT


@pytest.fixture(scope="session")
def char_tokenizer():
    return train_char_tokenizer(TINY_TEXT)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, char_tokenizer) -> dict[str, Path]:
    """One saved directory per architecture (char tokenizer) plus a tiny GPT-2 with a byte-level BPE."""
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for arch in ARCHITECTURES:
        path = root / arch
        make_tiny(arch, len(char_tokenizer)).save_pretrained(path)
        char_tokenizer.save_pretrained(path)
        dirs[arch] = path
    bpe = train_bpe_tokenizer([TINY_TEXT], vocab_size=300)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                      bos_token_id=bpe.eos_token_id, eos_token_id=bpe.eos_token_id))
    gpt2.save_pretrained(root / "tiny-gpt2")
    bpe.save_pretrained(root / "tiny-gpt2")
    dirs["tiny-gpt2"] = root / "tiny-gpt2"
    return dirs


@pytest.fixture(scope="session")
def catalog(model_dirs) -> Catalog:
    return Catalog([entry_for_source(str(path), name=name) for name, path in model_dirs.items()])


@pytest.fixture(scope="session")
def manager(catalog) -> ModelManager:
    return ModelManager(catalog, device="cpu")


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by playwright (a fresh temporary profile); skipped where either is missing."""
    from helpers import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shipped_page(catalog):
    """(url, catalog) of the whole page served on the shipped models when they are there (real text for pictures
    and real speeds), plus GPT-2, which cannot be downloaded here: the page must say so and the others not mind."""
    import app  # here: the page (gradio) is imported only by the tests that serve it
    from textgen.service.catalog import SHIPPED_DIR
    from textgen.service.playground import Playground

    shipped = [d for d in SHIPPED_DIR.glob("*") if (d / "model.safetensors").exists()]
    cat = Catalog.default() if len(shipped) >= 2 else catalog
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    demo, url = app.serve(Playground(ModelManager(cat, device="cpu")), free_port())
    yield url, cat
    demo.close()
