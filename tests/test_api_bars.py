"""The page's API held to what its users measure: a long text streams in paced updates, Stop ends it at once,
and /compare (that name) finishes a shipped model's text beside a model that cannot load here.

Runs on the shipped LSTM (skipped when the checkpoints are missing): these are the speeds people see.
"""

from __future__ import annotations

import time

import pytest
from conftest import free_port
from gradio_client import Client

import app
from textgen.service.catalog import SHIPPED_DIR, Catalog
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground
from ui import widgets

pytestmark = pytest.mark.skipif(not (SHIPPED_DIR / "lstm" / "model.safetensors").exists(),
                                reason="the shipped LSTM checkpoint is missing")


@pytest.fixture(scope="module")
def shipped_url():
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # GPT-2 is in the catalog, and cannot be downloaded here
    playground = Playground(ModelManager(Catalog.default(), device="cpu"))
    playground.manager.get("lstm")  # loaded once, outside the timings
    demo, url = app.serve(playground, free_port())
    yield url
    demo.close()


def request(tokens: int = 1000, seed: int = 1) -> tuple:
    # /generate's inputs: prompt, model, temperature, top_k, top_p, min_p, repetition_penalty,
    # no_repeat_ngram_size, max_new_tokens, seed
    return ("ROMEO:\n", "lstm", 0.8, 0, 0.95, 0.0, 1.05, 0, tokens, seed)


def test_a_1000_token_text_arrives_in_paced_updates_and_completes(shipped_url):
    client = Client(shipped_url, verbose=False)
    start = time.monotonic()
    job = client.submit(*request(), api_name="/generate")
    updates = [out[0] for out in job]
    seconds = time.monotonic() - start
    text, stats, tokens_html = job.result()
    assert "**1000** tokens" in stats and updates[-1] == text
    assert len(updates) >= 10, "at least 10 partial updates"
    assert len(updates) <= seconds / widgets.PACE + 4, "paced: not one update per token"
    assert tokens_html.count("class=tg-tok") == 1000


def test_stop_half_a_second_in_ends_the_stream_at_once(shipped_url):
    client = Client(shipped_url, verbose=False)
    job = client.submit(*request(seed=2), api_name="/generate")
    started = time.monotonic()
    while time.monotonic() - started < 0.5:
        time.sleep(0.01)
    called = time.monotonic()
    client.predict(api_name="/stop")
    text, stats, _ = job.result(timeout=60)
    ended = time.monotonic() - called
    assert "stopped: you pressed Stop" in stats, stats
    # Behaviour, with a deadline a busy machine keeps (measured here: ~0.03 s; python benchmarks/api_rate.py):
    assert ended < 3, f"the stream ended {ended:.2f} s after /stop"
    assert 0 < len(text) < 1000


def test_compare_by_its_name_completes_a_shipped_model_beside_one_that_cannot_load(shipped_url):
    result = Client(shipped_url, verbose=False).predict("ROMEO:\n", ["lstm", "gpt2"], 0.8, 200, 1,
                                                        api_name="/compare")
    texts, stats = result[:4], result[4:]
    assert "**200** tokens" in stats[0] and len(texts[0]) > 100
    assert "Pick another model" in stats[1]
