"""Loading catalogued models: lazily, once, safely, onto the best device, within a memory budget.

    manager = ModelManager(Catalog.default())
    loaded = manager.get("lstm")        # loads on first use, cached afterwards
    loaded.model, loaded.tokenizer, loaded.context, loaded.n_params

Safety: only catalog entries are loaded; weights only from safetensors (`use_safetensors=True`, never a
pickle); `trust_remote_code` is never set, so no code from a model repository runs. Our own model
classes are registered by importing `textgen.models`.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

import textgen.models  # noqa: F401  (registers our architectures with the Auto classes)
from textgen import catalog, gguf
from textgen.batching import Scheduler
from textgen.catalog import ASSETS, Catalog, ModelEntry, UnknownModelError, entry_for_source
from textgen.devices import pick_device, pick_dtype
from textgen.models.contract import context_length
from textgen.remote.backend import RemoteModel
from textgen.settings import Limits

# from_pretrained swaps process-wide functions (weight tying, some torch initialisers) for no-ops while it
# builds a model and puts them back afterwards; two loads at once can put back the wrong ones and break
# every later load. Loads are quick next to generation, so they take turns.
_LOAD_LOCK = threading.Lock()
_SCHEDULERS_LOCK = threading.Lock()


class ModelLoadError(RuntimeError):
    """A catalogued model could not be loaded.

    `str(err)` is for the page's visitors: plain words and what they can do ("pick another model"), no
    server paths or settings. `err.reason` is the same in a few words, for the model pickers' labels.
    `err.detail` is for the operator (the log and the CLI): the cause and the fix.
    """

    def __init__(self, message: str, detail: str | None = None, reason: str = "could not be loaded"):
        super().__init__(message)
        self.detail = detail or message
        self.reason = reason


class ModelMemoryError(ModelLoadError):
    """There was not enough memory to load the model."""


@dataclass
class LoadedModel:
    entry: ModelEntry
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    load_seconds: float
    _token_text: dict[int, str] = field(default_factory=dict, repr=False)
    _scheduler: Scheduler | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def context(self) -> int | None:
        """Tokens the model can attend to; None for recurrent models, which have no limit."""
        return context_length(self.model)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers()))

    @cached_property
    def prompt_start(self) -> list[int]:
        """Special tokens the tokenizer puts before any text (Llama's BOS); [] for ours and GPT-2's."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return list(full[: full.index(bare[0])]) if bare and bare[0] in full else []

    @property
    def scheduler(self) -> Scheduler:
        """The one scheduler of this model (textgen.batching): every local generation with it goes through it."""
        with _SCHEDULERS_LOCK:  # two first requests at once must not make two (two threads stepping one model)
            if self._scheduler is None:
                self._scheduler = Scheduler(self.model, Limits.from_env())
            return self._scheduler

    def token_text(self, token_id: int) -> str:
        """One token as text, memoised (the probability view decodes the same few ids over and over)."""
        text = self._token_text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id])
            if len(self._token_text) < 200_000:
                self._token_text[token_id] = text
        return text

    @cached_property
    def _special_ids(self) -> dict[int, str]:
        """Special token id -> its plain-words label (what `token_label` shows instead of raw markup)."""
        tok = self.tokenizer
        ids = set(getattr(tok, "all_special_ids", []) or [])
        ids |= {i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
        ends = end_of_text_ids(self.model, tok)
        return {i: special_label(self.token_text(i), i in ends, i == tok.bos_token_id, i == tok.pad_token_id,
                                 i == tok.unk_token_id) for i in ids if i is not None}

    def token_label(self, token_id: int) -> str:
        """One token as a visitor reads it: its text, except that a special token (the end of a text, a chat
        template's markers) shows as plain words in angle quotes, "⟨end of text⟩", never as raw markup such as
        <|im_end|>. For the views only: what the model writes is always `token_text`."""
        label = self._special_ids.get(token_id)
        return label if label is not None else self.token_text(token_id)

    @cached_property
    def token_kind(self) -> str:
        """What one of its tokens is, in words a visitor reads: "letters" for a character tokenizer (our RNN, LSTM
        and GRU), else "word pieces" (BPE: our Transformer, GPT-2, SmolLM2)."""
        vocab = self.tokenizer.get_vocab()
        single = sum(len(t) == 1 for t in vocab)
        return "letters" if vocab and single >= 0.9 * len(vocab) else "word pieces"

    def info(self) -> dict:
        return {"name": self.name, "title": self.entry.title, "parameters": self.n_params,
                "context": self.context, "device": str(self.device), "dtype": str(self.model.dtype),
                "load_seconds": round(self.load_seconds, 2), "tokens": self.token_kind}


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


def load_model(
    entry: ModelEntry, device: torch.device | None = None, progress: Callable[[str], None] | None = None
) -> LoadedModel:
    """Load one catalog entry; raises ModelLoadError with a message a user can act on. `progress` hears the
    steps of a GGUF file's one-time conversion. A model served by an inference engine has nothing to load here:
    it comes back as a RemoteModel (textgen.remote.backend), which `generation.stream` sends to the engine."""
    if entry.origin == "engine":
        return RemoteModel(entry)
    device = device or pick_device()
    dtype = pick_dtype(device)
    if entry.origin == "hub" and not entry.available_offline():
        _check_hub_reachable(entry)
    start = time.perf_counter()
    kwargs = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
    if device.type == "cuda" and _bigger_than_gpu(entry):
        kwargs["device_map"] = "auto"  # accelerate spreads it over GPUs (and CPU) when one GPU is too small
    try:
        source = entry.source
        if entry.origin == "gguf":  # loads from its safetensors copy, made on first use in a child process
            # outside the turns below, so that other models load meanwhile (textgen/gguf.py)
            gguf.convert_in_child(entry.source, progress, label=entry.title)
        with _LOAD_LOCK:
            if entry.origin == "gguf":  # at once now; converted here only when the child could not
                source = str(gguf.converted_folder(entry.source, progress, label=entry.title))
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(device)
    except (torch.OutOfMemoryError, MemoryError):
        raise ModelMemoryError(f"there is not enough memory on the server to load {entry.title}; "
                               "pick a smaller model", reason="not enough memory") from None
    except gguf.GGUFError as err:  # already in words: unsupported architecture, unreadable file, no cache
        raise ModelLoadError(f"{entry.title} cannot be used: {err.visitor}. Pick another model.",
                             detail=str(err), reason=err.visitor) from err
    except Exception as err:  # many exception types reach here: OSError, SafetensorError, ValueError...
        message, detail = _explain(entry, err)
        raise ModelLoadError(message, detail, "its files are damaged" if entry.is_local else "could not be loaded") \
            from err
    model.eval()
    return LoadedModel(entry, model, tokenizer, model.device, time.perf_counter() - start)


def needs_preparing(entry: ModelEntry) -> bool:
    """Whether the model needs one-time work before its first load: a GGUF file whose fast-loading copy is not
    made yet (textgen/gguf.py)."""
    return entry.origin == "gguf" and gguf.needs_conversion(entry.source)


def prepare_model(entry: ModelEntry, progress: Callable[[str], None] | None = None) -> None:
    """Do that one-time work now (in a child process; errors come at the load, in words); nothing for the others."""
    if entry.origin == "gguf":
        gguf.convert_in_child(entry.source, progress, label=entry.title)


def preparation_seconds(entry: ModelEntry) -> float | None:
    """About how long `prepare_model` takes here for a model that needs it; None for the others."""
    return gguf.expected_seconds(entry.source) if needs_preparing(entry) else None


class ModelManager:
    """Loaded models shared by every request; least recently used ones dropped past a memory budget.

    A model is only read during generation (inference mode, no module state), so one copy serves
    concurrent requests. Loading the same model twice at once is avoided by a lock per name.
    """

    def __init__(self, catalog: Catalog, memory_budget_mb: float | None = None, device: str | None = None,
                 limits: Limits | None = None):
        """The budget is the operator's (`Limits.memory_budget_mb`, from $TEXTGEN_MEMORY_BUDGET_MB unless `limits`
        is given); `memory_budget_mb` overrides it (tests use tiny budgets)."""
        self.catalog = catalog
        if memory_budget_mb is None:
            memory_budget_mb = (limits or Limits.from_env()).memory_budget_mb
        self.budget_bytes = int(memory_budget_mb * 2**20)
        self.device = pick_device(device)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self.failed: dict[str, str] = {}  # name -> why its last load failed, in words for visitors

    def get(self, name: str, progress: Callable[[str], None] | None = None) -> LoadedModel:
        entry = self.catalog.get(name)  # raises UnknownModelError for anything not catalogued
        with self._lock:
            if entry.name in self._loaded:
                self._loaded.move_to_end(entry.name)
                return self._loaded[entry.name]
            name_lock = self._name_locks.setdefault(entry.name, threading.Lock())
        with name_lock:
            with self._lock:
                if entry.name in self._loaded:
                    return self._loaded[entry.name]
            try:
                try:
                    # progress hears the steps of a one-time preparation (a GGUF file's conversion), if any
                    loaded = load_model(entry, self.device, **({"progress": progress} if progress else {}))
                except ModelMemoryError:
                    self.clear()  # free every other model and try once more before giving up
                    loaded = load_model(entry, self.device)
            except ModelLoadError as err:
                self.failed[entry.name] = err.reason  # the pickers mark it until a load succeeds
                raise
            with self._lock:
                self.failed.pop(entry.name, None)
                self._loaded[entry.name] = loaded
                self._evict(keep=entry.name)
            return loaded

    def unavailable(self, name: str) -> str | None:
        """Why this model cannot be used here, in a few plain words, or None when it can (or may) be."""
        if name in self.catalog and self.catalog.get(name).origin == "engine":
            return self.catalog.get(name).unavailable_reason()  # the engine's state, whether or not used before
        if name in self._loaded:
            return None
        if name in self.failed:
            return self.failed[name]
        return self.catalog.get(name).unavailable_reason()

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def unload(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)
        _free_memory()

    def clear(self) -> None:
        """Drop every loaded model (after running out of memory, for instance)."""
        with self._lock:
            self._loaded.clear()
        _free_memory()

    def _evict(self, keep: str) -> None:
        while sum(m.nbytes for m in self._loaded.values()) > self.budget_bytes and len(self._loaded) > 1:
            oldest = next(n for n in self._loaded if n != keep)
            self._loaded.pop(oldest)
        _free_memory()


def load_for_cli(name_or_dir: str, catalog: Catalog | None = None, device: str | None = None) -> LoadedModel:
    """The CLI takes a catalog name or, since the operator is the one typing, an existing model directory.

    Anything else is refused with the catalog's names, never tried as a Hub id: a typo must not start a
    download (a Hub model goes in with --add-model, which says so on purpose).
    """
    catalog = catalog or Catalog.default()
    if name_or_dir in catalog:
        entry = catalog.get(name_or_dir)
    elif Path(name_or_dir).expanduser().is_dir():
        entry = entry_for_source(name_or_dir)
    else:
        raise UnknownModelError(f"unknown model {name_or_dir[:80]!r}: neither a catalog name "
                                f"({', '.join(catalog.names())}) nor a model directory. "
                                "A Hugging Face Hub model goes in with --add-model ID.")
    return load_model(entry, pick_device(device))


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _bigger_than_gpu(entry: ModelEntry) -> bool:
    try:
        from accelerate import init_empty_weights
        from transformers import AutoConfig

        with init_empty_weights():
            meta = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(entry.source))
        needed = sum(p.numel() for p in meta.parameters()) * 2  # bf16/fp16
        return needed > 0.9 * torch.cuda.get_device_properties(0).total_memory
    except Exception:
        return False


def _check_hub_reachable(entry: ModelEntry) -> None:
    # Without this, an offline machine spends ~25 s in retries before transformers gives up.
    if catalog.hub_offline() or not catalog.hub_reachable():
        raise ModelLoadError(
            f"{entry.title} has to be downloaded first, and this server has no internet connection. "
            "Pick another model.",
            detail=f"{entry.title} ({entry.source}) is not in the local Hugging Face cache and the Hub cannot be "
            "reached from this machine. Download it once with a network connection (it is then cached and "
            "works offline with HF_HUB_OFFLINE=1), or add a local copy with --model /path/to/model.",
            reason=catalog.NEEDS_DOWNLOAD,
        )


def _explain(entry: ModelEntry, err: Exception) -> tuple[str, str]:
    """(what a visitor reads, what the operator reads) for a model that failed to load."""
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    if entry.is_local:
        shown = _shown_path(entry.source)
        return (f"{entry.title} cannot be used: its files on the server are missing or damaged. Pick another model.",
                f"the checkpoint of {entry.title} at {shown} is missing, incomplete or corrupt "
                f"({text.replace(entry.source, shown)}); retrain it or restore its files.")
    return (f"{entry.title} could not be loaded on this server. Pick another model.",
            f"could not load {entry.title} ({entry.source}): {text}")


def _shown_path(source: str) -> str:
    """A checkpoint's path as page users may see it: relative to the project, never the server's full path."""
    path = Path(source)
    try:
        return str(path.resolve().relative_to(ASSETS.parent))
    except ValueError:
        return path.name
