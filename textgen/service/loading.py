"""Opening catalogued models as backends: lazily, once, safely, onto the best device, within a memory budget.

    manager = ModelManager(Catalog.default())
    backend = manager.get("lstm")  # loads on first use, cached afterwards (what it can do: textgen/core/backend.py)
    backend.model, backend.tokenizer, backend.context, backend.n_params   # a local model's weights

`load_model` is the one place that decides which backend a catalog entry opens: a model on an inference engine
is a RemoteModel (textgen/remote/backend.py), nothing loaded here; every other kind is a LoadedModel
(textgen/local/model.py), its weights loaded here.

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
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import textgen.models.auto  # noqa: F401  (registers our architectures with the Auto classes)
from textgen.core.backend import Backend
from textgen.core.settings import Limits
from textgen.core.words import Phrase
from textgen.local import gguf
from textgen.local.devices import available_memory_bytes, pick_device, pick_dtype
from textgen.local.model import LoadedModel
from textgen.models import contract
from textgen.models.packed import pack_linear_layers
from textgen.remote.backend import RemoteModel
from textgen.service import catalog
from textgen.service.catalog import ASSETS, Catalog, ModelEntry, UnknownModelError, entry_for_source

# from_pretrained swaps process-wide functions (weight tying, some torch initialisers) for no-ops while it
# builds a model and puts them back afterwards; two loads at once can put back the wrong ones and break
# every later load. Loads are quick next to generation, so they take turns.
_LOAD_LOCK = threading.Lock()


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


def load_model(
    entry: ModelEntry, device: torch.device | None = None, progress: Callable[[str], None] | None = None,
    memory_budget_bytes: int | None = None,
) -> LoadedModel | RemoteModel:
    """Load one catalog entry; raises ModelLoadError with a message a user can act on. `progress` hears the
    steps of a GGUF file's one-time conversion. A model served by an inference engine has nothing to load here:
    it comes back as a RemoteModel (textgen.remote.backend), which sends each request to the engine.
    `memory_budget_bytes` (the operator's budget for loaded models) bounds the extra copies made for speed."""
    if not entry.runs_here:
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
            # outside the turns below, so that other models load meanwhile (textgen/local/gguf.py)
            gguf.convert_in_child(entry.source, progress, label=entry.title)
        with _LOAD_LOCK:
            if entry.origin == "gguf":  # at once now; converted here only when the child could not
                source = str(gguf.converted_folder(entry.source, progress, label=entry.title))
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(device)
    except (torch.OutOfMemoryError, MemoryError):
        raise ModelMemoryError(Phrase("load.no_memory", title=entry.title), reason=Phrase("why.no_memory")) from None
    except gguf.GGUFError as err:  # already in words: unsupported architecture, unreadable file, no cache
        raise ModelLoadError(Phrase("load.cannot_use", title=entry.title, why=err.visitor),
                             detail=str(err), reason=err.visitor) from err
    except Exception as err:  # many exception types reach here: OSError, SafetensorError, ValueError...
        message, detail = _explain(entry, err)
        why = Phrase("why.files_damaged") if entry.is_local else Phrase("why.not_loaded")
        raise ModelLoadError(message, detail, why) from err
    model.eval()
    if not contract.is_ours(model):  # ours pack what gains inside their own step (textgen/models/recurrent.py)
        # a crowd's batched steps at a fraction of the cost, on CPU (see there), where the copies fit
        pack_linear_layers(model, max_bytes=packing_room(model, memory_budget_bytes))
    return LoadedModel(entry, model, tokenizer, model.device, time.perf_counter() - start)


def packing_room(model: torch.nn.Module, memory_budget_bytes: int | None = None) -> int | None:
    """Bytes that copies of a just-loaded model's weights may take: half the memory still free (the rest stays
    for the crowd's caches and the next model), and no more than the operator's budget leaves beside the model."""
    room = [free // 2] if (free := available_memory_bytes()) is not None else []
    if memory_budget_bytes is not None:
        own = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
        room.append(memory_budget_bytes - own)
    return min(room) if room else None


def needs_preparing(entry: ModelEntry) -> bool:
    """Whether the model needs one-time work before its first load: a GGUF file whose fast-loading copy is not
    made yet (textgen/local/gguf.py)."""
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
        self._loaded: OrderedDict[str, Backend] = OrderedDict()
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self.failed: dict[str, str] = {}  # name -> why its last load failed, in words for visitors

    def get(self, name: str, progress: Callable[[str], None] | None = None) -> Backend:
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
                    loaded = load_model(entry, self.device, memory_budget_bytes=self.budget_bytes,
                                        **({"progress": progress} if progress else {}))
                except ModelMemoryError:
                    self.clear()  # free every other model and try once more before giving up
                    loaded = load_model(entry, self.device, memory_budget_bytes=self.budget_bytes)
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
        if name in self.catalog and not self.catalog.get(name).runs_here:
            return self.catalog.get(name).unavailable_reason()  # the engine's state, whether or not used before
        if name in self._loaded:
            return None
        if name in self.failed:
            return self.failed[name]
        return self.catalog.get(name).unavailable_reason()

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def loaded(self) -> list[Backend]:
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


def load_for_cli(name_or_dir: str, catalog: Catalog | None = None, device: str | None = None) -> Backend:
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
    try:  # only on a GPU machine, for a hub model: a config read with no weights made
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
            Phrase("load.needs_download", title=entry.title),
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
        return (Phrase("load.damaged", title=entry.title),
                f"the checkpoint of {entry.title} at {shown} is missing, incomplete or corrupt "
                f"({text.replace(entry.source, shown)}); retrain it or restore its files.")
    return (Phrase("load.failed", title=entry.title),
            f"could not load {entry.title} ({entry.source}): {text}")


def _shown_path(source: str) -> str:
    """A checkpoint's path as page users may see it: relative to the project, never the server's full path."""
    path = Path(source)
    try:
        return str(path.resolve().relative_to(ASSETS.parent))
    except ValueError:
        return path.name
