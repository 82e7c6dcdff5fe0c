"""The one seam every model source meets: a backend writes, chats and scores, and says what it can do.

    backend = manager.get("lstm")                 # textgen.service.loading picks the backend a catalog entry opens
    for event in backend.stream(GenerationSettings.parse("ROMEO:", seed=1)):
        ...                                       # TextEvents, then one Summary (textgen/core/events.py)
    backend.chat([{"role": "user", "content": "Hi"}], None, settings)   # a ChatPrompt first, then the same
    backend.score("To be, or not to be").bits_per_char
    backend.capabilities.runs_here                # False for a model on an inference engine

Two kinds meet it today: a model whose weights are in this process (ours, any Hugging Face causal LM, a
converted GGUF file: `textgen.local.model.LoadedModel`) and a model on an inference engine
(`textgen.remote.backend.RemoteModel`). The service layer (playground, chat, explain, the CLI) reads only this
protocol and the capabilities: none of it asks which kind it holds. Like textgen/core/events.py it imports neither torch
nor any other backend, so that either kind can be added, tested or left out on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from textgen.core.chat import ChatPrompt
    from textgen.core.events import Score, Summary, TextEvent, Waiting
    from textgen.core.settings import GenerationSettings, Limits


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so that the layers above decide by ability, never by kind."""

    # Its weights are in this process: the step-by-step view, attention and hidden units can look inside it.
    # False: another server does the work, so a request holds one of the engine slots while it streams
    # (textgen.remote.client.engine_concurrency) instead of a place in a local scheduler.
    runs_here: bool
    # Whether it has a chat template: True or False once known, None when only its server can tell (an engine's
    # model is given the benefit of the doubt; the engine refuses in words if it has none).
    chat_template: bool | None
    # What the probabilities it reports are: "sampled", the distribution a token was drawn from (after the
    # sampling controls), or "model", the model's own before the controls (as engines report them).
    probabilities: str = "sampled"
    # What the step view can show inside it (only where it runs here): attention weights, who each token looks at
    # (a Transformer, GPT-2), and memory units carried from token to token (an RNN, LSTM or GRU). A model with
    # neither (a bigram) still writes, scores and shows its next-token stages; the two views say why they are empty.
    attention: bool = False
    units: bool = False


class Entry(Protocol):
    """What a backend knows of the catalog entry it opened (textgen.service.catalog.ModelEntry is one)."""

    name: str  # the key the page, the API and the CLI use
    title: str  # what a visitor reads
    source: str  # a folder, a Hub id, a file, or an engine's address
    model_id: str  # the engine's name for it ("" for models here)


@runtime_checkable
class Backend(Protocol):
    """One catalogued model, ready to use. `textgen.service.loading.ModelManager.get` hands these out."""

    entry: Entry
    load_seconds: float

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def context(self) -> int | None:
        """Tokens it can read at once; None for a model without a limit (our recurrent ones)."""

    @property
    def nbytes(self) -> int:
        """Memory its weights take here (0 on an engine): what the memory budget counts."""

    def info(self) -> dict | None:
        """What the page's model note says of it (parameters, device, kind of tokens), or None for nothing."""

    def set_limits(self, limits: Limits) -> None:
        """The operator's limits for its requests (a local model's batch size and queue)."""

    def stream(self, settings: GenerationSettings, cancel: threading.Event | None = None,
               prompt_ids: list[int] | None = None, patience: Callable[[], float] | None = None,
               ) -> Iterator[TextEvent | Summary | Waiting]:
        """Its text for one request: `Waiting` while it queues, TextEvents as tokens arrive, then one Summary.
        `prompt_ids` are ready-made token ids (a chat template's) used instead of encoding the prompt. `patience()`:
        how many seconds the reader can wait before it next wants the events so far (a page shown at a pace; a
        backend may let them gather meanwhile)."""

    def chat(self, messages: object, system: object, settings: GenerationSettings,
             cancel: threading.Event | None = None, limits: Limits | None = None,
             patience: Callable[[], float] | None = None,
             ) -> Iterator[ChatPrompt | TextEvent | Summary | Waiting]:
        """Its reply to a conversation (textgen.core.chat): the ChatPrompt it reads first, then as `stream`."""

    def score(self, text: str, progress: Callable[[float], None] | None = None) -> Score:
        """How surprised it is by `text` (after a new line), per character; `progress` hears the fraction done."""
