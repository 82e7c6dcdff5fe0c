"""A model whose weights are here, as a backend (textgen/core/backend.py): ours, any Hugging Face causal LM,
a GGUF file.

    loaded = ModelManager(Catalog.default()).get("lstm")     # a LoadedModel (textgen/service/loading.py loads it)
    loaded.model, loaded.tokenizer, loaded.context, loaded.n_params
    for event in loaded.stream(GenerationSettings.parse("ROMEO:", seed=1)):
        ...
    loaded.token_label(0)                                  # a token as a visitor reads it

It writes through its own scheduler (textgen/local/batching.py) with our decoding loop
(textgen/local/generation.py), chats through its chat template (textgen/core/chat.py) and scores with the
evaluation code of training (textgen/local/evaluate.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from textgen.core.backend import Capabilities, Entry
from textgen.core.chat import ChatPrompt, build_chat_prompt, reply_settings
from textgen.core.events import Score, Summary, TextEvent, Waiting
from textgen.core.settings import GenerationSettings, Limits
from textgen.core.vocabulary import token_kind
from textgen.core.words import Phrase
from textgen.local import generation
from textgen.local.batching import Scheduler
from textgen.local.evaluate import score_text
from textgen.local.tokenization import end_of_text_ids, special_label
from textgen.models.contract import context_length, is_ours
from textgen.models.packed import packed_bytes

_SCHEDULERS_LOCK = threading.Lock()


@dataclass
class LoadedModel:
    entry: Entry  # the catalog entry it opened (name, title, source, model_id)
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
        own = sum(t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers()))
        return own + packed_bytes(self.model)  # the packed copies of its weights, where it has them

    @cached_property
    def prompt_start(self) -> list[int]:
        """Special tokens the tokenizer puts before any text (Llama's BOS); [] for ours and GPT-2's."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return list(full[: full.index(bare[0])]) if bare and bare[0] in full else []

    @property
    def scheduler(self) -> Scheduler:
        """The one scheduler of this model (textgen.local.batching): every local generation with it goes through it."""
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
    def token_kind(self) -> Phrase:
        """What one of its tokens is, in words a visitor reads (textgen.core.vocabulary.token_kind)."""
        return token_kind(self.tokenizer.get_vocab())

    def info(self) -> dict:
        return {"name": self.name, "title": self.entry.title, "parameters": self.n_params,
                "context": self.context, "device": str(self.device), "dtype": str(self.model.dtype),
                "load_seconds": round(self.load_seconds, 2), "tokens": self.token_kind}

    # -- the backend protocol (textgen/core/backend.py) ------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        # Ours say what they have in the written contract; a Hugging Face causal LM is a Transformer, and one that
        # does not report its attention weights is refused in words when asked (textgen.service.explain).
        ours = is_ours(self.model)
        return Capabilities(runs_here=True, chat_template=bool(getattr(self.tokenizer, "chat_template", None)),
                            attention=self.model.has_attention if ours else True,
                            units=ours and self.model.has_units)

    def set_limits(self, limits: Limits) -> None:
        self.scheduler.set_limits(limits)

    def stream(self, settings: GenerationSettings, cancel: threading.Event | None = None,
               prompt_ids: list[int] | None = None, patience: Callable[[], float] | None = None,
               ) -> Iterator[TextEvent | Summary | Waiting]:
        yield from generation.stream(self, settings, cancel, prompt_ids, patience)

    def chat(self, messages: object, system: object, settings: GenerationSettings,
             cancel: threading.Event | None = None, limits: Limits | None = None,
             patience: Callable[[], float] | None = None,
             ) -> Iterator[ChatPrompt | TextEvent | Summary | Waiting]:
        # The conversation through the model's chat template, fitted to its context (textgen.core.chat), then written
        # as any text, from the template's token ids.
        warnings: list[str] = []
        prompt = build_chat_prompt(self, messages, system, settings.max_new_tokens, limits, warnings)
        yield prompt
        yield from self.stream(reply_settings(settings, prompt, warnings), cancel, prompt_ids=list(prompt.ids),
                               patience=patience)

    def score(self, text: str, progress: Callable[[float], None] | None = None) -> Score:
        return score_text(self.model, self.tokenizer, text, progress=progress)
