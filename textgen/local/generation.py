"""One streaming generation path for every model: ours (RNN, LSTM, GRU, Transformer) and any Hugging Face
causal LM.

    settings = GenerationSettings.parse("ROMEO:", temperature=0.8, seed=1)
    for event in stream(manager.get("lstm"), settings):   # what LoadedModel.stream does (textgen/local/model.py)
        if isinstance(event, TextEvent):
            print(event.text, end="", flush=True)   # event.token has id, probability, alternatives
        else:
            print(event)                            # a Summary: speed, tokens, why it stopped

Why our own decoding loop rather than `model.generate` in a thread with a streamer:
- it is a plain generator that runs only while someone reads it: a consumer that stops reading (a
  closed page, a dropped client) stops the model at once, and `cancel.set()` from any thread stops it
  before its next forward step;
- each step reports the chosen token's probability and the top alternatives, which `generate` does not
  stream;
- per-step overhead stays small enough for a char LSTM to stream hundreds of tokens per second.
The sampling controls themselves are transformers' logits processors, not our own copies, built in one place,
`sampling_stages`, which `textgen.service.explain` also uses to show what each control does to the model's wish.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import torch
from transformers.generation.logits_process import (
    LogitsProcessor,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from textgen.core.events import Clock, Summary, TextEvent, TokenInfo, Waiting
from textgen.core.settings import GenerationSettings
from textgen.core.words import Phrase
from textgen.local.batching import Choice, Forward, Process, Scheduler, choose, process_together, step_together
from textgen.local.tokenization import encode, end_of_text_ids
from textgen.models import contract


class LocalWeights(Protocol):
    """What the decoding loop reads of a model here (textgen.local.model.LoadedModel is one): its weights,
    tokenizer and device, its context, the tokens a text starts with, its scheduler and its tokens as text."""

    model: Any  # a transformers PreTrainedModel (ours included)
    tokenizer: Any  # its transformers tokenizer
    device: torch.device

    @property
    def context(self) -> int | None: ...

    @property
    def prompt_start(self) -> list[int]: ...

    @property
    def scheduler(self) -> Scheduler: ...

    def token_text(self, token_id: int) -> str: ...

    def token_label(self, token_id: int) -> str: ...


def stream(
    loaded: LocalWeights, settings: GenerationSettings, cancel: threading.Event | None = None,
    prompt_ids: list[int] | None = None, patience: Callable[[], float] | None = None,
) -> Iterator[TextEvent | Summary | Waiting]:
    """Generate for one request; yields TextEvents as tokens arrive, then one Summary.

    `prompt_ids`, when given, is the prompt as ready-made token ids with their special tokens (a chat
    template's, see textgen.core.chat): used as they are, instead of encoding `settings.prompt` and adding a BOS.
    A local model writes through its scheduler (textgen.local.batching), together with everyone else's requests to
    it; while every place there is taken, `Waiting` says how many are ahead. `patience`: how long the reader can wait
    for its next events (see Scheduler.submit).
    """
    run = Run(loaded, settings, cancel or threading.Event(), prompt_ids)
    yield from loaded.scheduler.submit(run.steps(), rows=settings.num_samples, patience=patience)


class Run:
    """The state of one request: its own random generator, memory, decoders and clocks.

    `steps()` is the request as a step coroutine: it never calls the model, it yields a `Forward` whenever it
    needs a step and is sent the answer, so a scheduler can answer many requests with one forward pass
    (textgen.local.batching). `events()` answers its steps itself, for one request on its own.
    """

    def __init__(self, loaded: LocalWeights, settings: GenerationSettings, cancel: threading.Event,
                 prompt_ids: list[int] | None = None):
        self.loaded, self.settings, self.cancel = loaded, settings, cancel
        self.ready_ids = list(prompt_ids or [])
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.device = loaded.device
        self.warnings = list(settings.warnings)
        self.notes: list[str] = []
        self.seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
        self.rng = torch.Generator(device=self.device).manual_seed(self.seed)
        self.uniforms = Uniforms(self.rng)
        self.memory_tokens = 0  # tokens the memory holds, to keep within the context
        self.context = loaded.context
        self.forward_steps = 0
        self.eos_ids = end_of_text_ids(self.model, self.tokenizer)
        # The stages' processors only: the names are for textgen.service.explain; the loop wants a plain list.
        self.pipeline = [processor for _, processor in sampling_stages(settings, self.tokenizer, self.eos_ids)]
        self.sampling_key = sampling_key(settings)

    # -- prompt ------------------------------------------------------------------------------------------

    def prompt_ids(self) -> tuple[list[int], int]:
        prompt = self.settings.prompt
        if not prompt and not self.ready_ids:
            start = self.tokenizer.bos_token or self.tokenizer.eos_token
            ids = [self.tokenizer.convert_tokens_to_ids(start)] if start else encode(self.tokenizer, "\n").ids
            self.warnings.append(Phrase("warning.empty_prompt"))
            return ids, 0
        if self.ready_ids:  # re-encoding a template's text would add a second BOS and unsanitise control tokens
            ids, start = self.ready_ids, []
        else:
            enc = encode(self.tokenizer, prompt)
            if enc.message:
                self.warnings.append(enc.message)
            ids, start = enc.ids, self.loaded.prompt_start  # the BOS a Llama-style model expects; none for ours
        cut = 0
        room = self.context - 1 - len(start) if self.context is not None else None
        if room is not None and len(ids) > room:
            cut = len(ids) - room
            ids = ids[cut:]
            self.warnings.append(Phrase("warning.prompt_cut", context=self.context, cut=cut))
        return [*start, *ids], cut

    # -- the loop ----------------------------------------------------------------------------------------

    def events(self) -> Iterator[TextEvent | Summary]:
        """The request's events, its model steps taken here, one at a time (the scheduler batches them)."""
        steps, reply = self.steps(), None
        while True:
            try:
                with torch.inference_mode():  # as the scheduler's thread drives `steps`
                    item = steps.send(reply)
            except StopIteration:
                return
            reply = self._answer(item) if isinstance(item, (Forward, Process)) else None
            if reply is None:
                yield item

    def steps(self) -> Generator[TextEvent | Summary | Forward, Any, None]:
        """The request as a step coroutine (textgen.local.batching): its events, and a Forward or Process whenever
        it needs the model. Driven in inference mode (the scheduler's round, or `events`): not entered here,
        where it would be entered and left again at every token of every request (a tenth of a crowd's time)."""
        s = self.settings
        clock = Clock()
        ids, cut = self.prompt_ids()
        samples = [_Sample(self.tokenizer, ids, s.stop) for _ in range(s.num_samples)]
        all_ids = torch.tensor([ids] * len(samples), dtype=torch.long, device=self.device)
        ttft = None
        logits, cache = yield from self.prefill_steps(all_ids)
        for step in range(s.max_new_tokens if logits is not None else 0):
            choice = yield from self._pick(logits, all_ids, samples)
            if choice is None:
                break
            ttft = clock.active() if ttft is None else ttft
            next_ids = choice.tokens
            all_ids = torch.cat([all_ids, next_ids[:, None]], dim=1)
            events = [self._advance(row, sample, choice) for row, sample in enumerate(samples) if sample.reason is None]
            for event in events:
                with clock:
                    yield event
            if all(sample.reason for sample in samples) or step == s.max_new_tokens - 1:
                break  # no forward step for a token that will not be drawn
            if self.cancel.is_set():
                break
            logits, cache = yield from self.next_steps(all_ids, next_ids, cache)
        ended = "cancelled" if self.cancel.is_set() or logits is None else "length"
        for row, sample in enumerate(samples):
            tail = sample.finish(ended)  # text held back for a stop sequence that never came
            if tail:
                with clock:
                    yield TextEvent(row, tail, None)
        seconds = clock.active()
        tokens = [sample.tokens for sample in samples]
        yield Summary(
            texts=[sample.text for sample in samples], tokens=tokens,
            stop_reasons=[sample.reason for sample in samples], prompt_tokens=len(ids), prompt_tokens_cut=cut,
            time_to_first_token=ttft or 0.0, tokens_per_second=sum(tokens) / seconds if seconds > 0 else 0.0,
            seconds=seconds, seed=self.seed, forward_steps=self.forward_steps, warnings=self.warnings,
            notes=self.notes,
        )

    def _pick(self, logits: torch.Tensor, all_ids: torch.Tensor, samples: list[_Sample]):
        """The choice of every sample's next token (textgen.local.batching.Choice); None if none can go on."""
        uniforms = None if self.settings.greedy else self.uniforms.take(len(samples))
        choice = yield Process(self.sampling_key, self.pipeline, all_ids, logits, uniforms, self.settings.alternatives)
        for row, blocked in enumerate(choice.blocked):
            if blocked:
                # The rules left a sample no token at all (say, no-repeat size 1 after every character was used): it
                # ends here; its row was drawn from the raw logits only so that the rest of the batch can go on.
                samples[row].reason = samples[row].reason or "no_allowed_token"
        if all(sample.reason for sample in samples):
            return None
        return choice

    def _advance(self, row: int, sample: _Sample, choice: Choice) -> TextEvent:
        token_id = choice.ids[row]
        if token_id in self.eos_ids:
            sample.reason = "end_of_text"
            return TextEvent(row, "", self._token_info(token_id, choice, row))
        piece, new_text = sample.add(token_id)
        return TextEvent(row, new_text, self._token_info(token_id, choice, row, piece))

    def next_steps(self, all_ids: torch.Tensor, next_ids: torch.Tensor, cache):
        """The step after `next_ids` (one token a row); at the context's end, a new start from the recent half."""
        if self.context is not None and self.memory_tokens + 1 > self.context:
            # The text outgrew the context: start over from its most recent half (one prefill per
            # context/2 tokens, instead of re-reading a full window for every token).
            # Not a warning: nothing is wrong with the request, this is how a Transformer works. Said once.
            note = Phrase("note.context_restart", context=self.context)
            if note not in self.notes:
                self.notes.append(note)
            return (yield from self._forward(all_ids[:, -(self.context // 2):], self._new_memory(len(all_ids))))
        return (yield from self._forward(next_ids[:, None], cache))

    def prefill_steps(self, input_ids: torch.Tensor):
        """The prompt's forward steps; (None, None) if cancelled first.

        A model without a context limit reads a long prompt in pieces, checking for a stop between them, so that
        even a 10,000-character prompt stops within one piece (its memory carries across: same result), and a
        scheduler can take other requests' steps in between.
        """
        piece = PREFILL_CHUNK if self.context is None else input_ids.shape[1]
        logits, memory = None, self._new_memory(len(input_ids))
        for start in range(0, input_ids.shape[1], piece):
            if self.cancel.is_set():
                return None, None
            logits, memory = yield from self._forward(input_ids[:, start : start + piece], memory)
        return logits, memory

    def prefill(self, input_ids: torch.Tensor):
        """`prefill_steps`, its steps taken in turn by the scheduler: (logits, memory) after the prompt (the step
        view's start)."""
        return self._drive(self.prefill_steps(input_ids))

    def next_logits(self, all_ids: torch.Tensor, next_ids: torch.Tensor, cache):
        """`next_steps`, its step taken in turn by the scheduler: (logits, memory) after `next_ids`."""
        return self._drive(self.next_steps(all_ids, next_ids, cache))

    def _drive(self, steps):
        """The step coroutine `steps` run to its end by the model's scheduler, with everyone else's requests."""
        return self.loaded.scheduler.call(steps)

    @torch.inference_mode()
    def _answer(self, ask: Forward | Process):
        # The scheduler's own functions, so that a step taken here is the one a batch would take.
        if isinstance(ask, Process):
            return process_together([ask])[0]
        return step_together(self.model, [ask])[0]

    def _new_memory(self, batch_size: int):
        self.memory_tokens = 0
        return contract.start_memory(self.model, batch_size)

    def _forward(self, input_ids: torch.Tensor, memory):
        """One step of the model over `input_ids` (B, T), asked of whoever drives this run: the last position's
        logits (B, V) and the new memory."""
        self.forward_steps += 1
        self.memory_tokens += input_ids.shape[1]
        return (yield Forward(input_ids, memory))

    def _token_info(self, token_id: int, choice: Choice, row: int, piece: str | None = None) -> TokenInfo:
        alternatives = [(self.loaded.token_label(i), round(p, 5)) for i, p in choice.top[row] if p > 0]
        label = self.loaded.token_label(token_id)  # a special token's plain words, never raw markup
        text = piece if piece is not None and label == self.loaded.token_text(token_id) else label
        return TokenInfo(token_id, text, round(choice.chosen[row], 5), alternatives)


PREFILL_CHUNK = 256  # prompt tokens per forward step of a recurrent model's prefill

# Every stage a sampler can have, in the order applied; "model" is the model's own wish, the others are controls.
STAGE_NAMES = ("model", "repetition_penalty", "no_repeat_ngram", "temperature", "top_k", "top_p", "min_p")


def sampling_stages(
    settings: GenerationSettings, tokenizer, eos_ids: frozenset[int]
) -> list[tuple[str, LogitsProcessor]]:
    """What the decoding loop does to a model's logits before it draws a token, as (name, processor) in order.

    The one place the sampler is built: the decoding loop runs these processors and nothing else, and
    textgen.service.explain runs the same ones one by one to show what each did. A control that is off under
    `settings` has no stage. Greedy decoding (temperature 0) has no warpers: the decoding loop takes the argmax of
    the penalised scores (see `draw`).

    "model" is no control: it is the model's own distribution with `<unk>` removed. A char model's `<unk>`
    stands for "some character I do not know", which it must never write; it is one logit set to -inf,
    which commutes with the penalties (they touch each token's logit on its own), so it goes first and the
    bars start from what the model can actually write.
    """
    s = settings
    stages: list[tuple[str, LogitsProcessor]] = []
    unk = tokenizer.unk_token_id
    if unk is not None and unk not in eos_ids:
        stages.append(("model", _Suppress(unk)))
    if s.repetition_penalty != 1.0:
        stages.append(("repetition_penalty", RepetitionPenaltyLogitsProcessor(s.repetition_penalty)))
    if s.no_repeat_ngram_size:
        stages.append(("no_repeat_ngram", NoRepeatNGramLogitsProcessor(s.no_repeat_ngram_size)))
    if not s.greedy:
        if s.temperature != 1.0:
            stages.append(("temperature", TemperatureLogitsWarper(s.temperature)))
        if s.top_k:
            stages.append(("top_k", TopKLogitsWarper(s.top_k)))
        if s.top_p < 1.0:
            stages.append(("top_p", NucleusWarper(s.top_p)))
        if s.min_p > 0:
            stages.append(("min_p", MinPLogitsWarper(s.min_p)))
    return stages


def sampling_key(settings: GenerationSettings) -> tuple | None:
    """What makes two requests' controls the same (textgen.local.batching processes such requests together); None for
    controls that read each text's exact sequence of tokens (the no-repeat rule), which are applied alone."""
    s = settings
    if s.no_repeat_ngram_size:
        return None
    return (s.repetition_penalty, s.greedy, s.temperature, s.top_k, s.top_p, s.min_p)


def draw(scores: torch.Tensor, greedy: bool, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoding loop's choice from processed scores (batch x vocab), for callers outside it (the step view, the
    decoding methods): one token per row, and the distribution. Greedy takes the argmax and draws nothing from
    `rng`; otherwise one number per row from `rng`, as the loop draws them (`Uniforms`), so a seeded generator
    gives the same tokens wherever this is called (see textgen.local.batching.choose)."""
    uniforms = None if greedy else torch.rand(len(scores), 1, generator=rng, device=scores.device)
    choice = choose(scores, scores, uniforms)
    return choice.tokens, choice.probs


class Uniforms:
    """A request's random numbers, drawn from its generator a few hundred at a time and handed out in order.

    The same numbers in the same order as one draw a token (`torch.rand` of n numbers equals n draws of one:
    tests/test_generation.py checks it), so a seed writes the same text; drawn ahead, they cost no operation a
    token, and a batch's choice (textgen.local.batching.process_together) gets them as one tensor.
    """

    AHEAD = 256

    def __init__(self, rng: torch.Generator):
        self.rng = rng
        self.ahead = torch.empty(0, device=rng.device)
        self.used = 0

    def take(self, rows: int) -> torch.Tensor:
        """The next `rows` numbers in [0, 1), as (rows, 1)."""
        if self.used + rows > len(self.ahead):
            more = torch.rand(max(self.AHEAD, rows), generator=self.rng, device=self.rng.device)
            self.ahead, self.used = torch.cat([self.ahead[self.used :], more]), 0
        numbers = self.ahead[self.used : self.used + rows]
        self.used += rows
        return numbers[:, None]


class NucleusWarper(TopPLogitsWarper):
    """transformers' top-p, without sorting the token numbers of a large vocabulary.

    Why ours: `TopPLogitsWarper` sorts the whole vocabulary with its indices at every step. For GPT-2's 50,257
    tokens that took 60 ms for 8 rows on this CPU (a third of an 8-row batched step of a GPT-2-small-shaped
    model, and the one cost of the step that grows row by row). The nucleus needs only the score at its edge:
    the scores sorted as plain numbers (NumPy's vectorised sort, 6 ms for the same 8 rows) give it, through the
    warper's own sums (the softmax of the sorted scores, added up from the least likely), and every token
    scored at least that stays. The tokens kept are the warper's (tests/test_generation.py compares them);
    only where several tokens tie exactly at the edge does this keep them all, where the warper keeps some.
    Small vocabularies (our character models) and other devices keep the warper itself.
    """

    SMALLEST = 4096  # vocabularies up to this size keep transformers' warper: it is as fast there

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[-1] <= self.SMALLEST or self.min_tokens_to_keep > 1 or scores.device.type != "cpu":
            return super().__call__(input_ids, scores)
        ranked = torch.from_numpy(_sort_rows(scores.float().numpy()))  # (B, V), least likely first
        below = ranked.softmax(dim=-1).cumsum(dim=-1)  # the share of each token and all less likely ones
        # How many shares are at most 1 - top_p: the sums rise along the row, so a binary search counts them.
        limit = torch.full((len(below), 1), 1 - self.top_p, dtype=below.dtype)
        cut = torch.searchsorted(below, limit, right=True).clamp(max=scores.shape[-1] - 1)  # (B, 1)
        edge = ranked.gather(-1, cut)  # (B, 1): the lowest score that stays
        return scores.masked_fill(scores < edge, self.filter_value)


_SORTERS: ThreadPoolExecutor | None = None


def _sort_rows(scores: np.ndarray) -> np.ndarray:
    """Each row of `scores` sorted, the rows split between this thread's torch threads where it has several (the
    scheduler gives a large batch's choice all the cores: StepThreads.wide). NumPy lets go of Python's lock while
    it sorts, so two threads sort 8 rows of GPT-2's scores in 2.4 ms instead of 4.5."""
    global _SORTERS
    threads = min(torch.get_num_threads(), len(scores))
    if threads < 2:
        return np.sort(scores, axis=-1)
    if _SORTERS is None:
        _SORTERS = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="textgen-sort")
    ranked = scores.copy()
    parts = np.array_split(np.arange(len(scores)), threads)
    list(_SORTERS.map(lambda rows: ranked[rows[0]: rows[-1] + 1].sort(axis=-1), parts))
    return ranked


class _Suppress(LogitsProcessor):
    """Never pick one token. (transformers' SuppressTokensLogitsProcessor builds an index and runs `isin`
    over the vocabulary at every step, ~50 us: a tenth of a char LSTM's whole step.)"""

    def __init__(self, token_id: int):
        self.token_id = token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        scores[:, self.token_id] = float("-inf")
        return scores


class _Sample:
    """One continuation of the prompt: its text so far, its token count, and why it ended."""

    def __init__(self, tokenizer, prompt_ids: list[int], stops: tuple[str, ...]):
        self.decoder = IncrementalDecoder(tokenizer, prompt_ids)
        self.stops = _StopMatcher(stops)
        self.text = ""
        self.tokens = 0
        self.reason: str | None = None

    def add(self, token_id: int) -> tuple[str, str]:
        """The token's own text, and the new text it releases (less any that may start a stop sequence)."""
        self.tokens += 1
        piece = self.decoder.push(token_id)
        new_text, hit = self.stops.push(piece)
        self.text += new_text
        if hit:
            self.reason = "stop_sequence"
        return piece, new_text

    def finish(self, reason: str) -> str:
        self.reason = self.reason or reason
        tail = self.stops.flush()
        self.text += tail
        return tail


class IncrementalDecoder:
    """Text for each new token, right even when a character spans several tokens (byte-level BPE).

    Decodes a short window before the new token and emits only what it adds; a window that ends in an
    incomplete UTF-8 sequence (U+FFFD) waits for the next token.
    """

    def __init__(self, tokenizer, prompt_ids: list[int]):
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-4:])  # a little context, for tokenizers whose spacing depends on it
        self.prefix, self.read = 0, len(self.ids)
        self.pieces = _letter_pieces(tokenizer)

    def push(self, token_id: int) -> str:
        if self.pieces is not None and 0 <= token_id < len(self.pieces):
            return self.pieces[token_id]  # a character tokenizer: each token's text, whatever came before
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        after = self.tokenizer.decode(self.ids[self.prefix :])
        if after.endswith("\ufffd") or not after.startswith(before):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]


def _letter_pieces(tokenizer) -> list[str] | None:
    """Each token's text, where a tokenizer's texts simply follow one another (our character tokenizers: a text
    decodes to its tokens' texts end to end); None for any other (byte-level BPE, spacing that depends on context).
    Why: decoding two windows a token took 27 us on our CPU and looking it up 0.3 us: 43 ms of the LSTM's 16-text,
    100-token burst, on the scheduler's one thread. Checked once per tokenizer, on every token and on pairs of them."""
    cached = getattr(tokenizer, "_textgen_letter_pieces", False)
    if cached is not False:
        return cached
    pieces = None
    vocab = tokenizer.get_vocab()
    if 0 < len(vocab) <= 1024:
        ids = sorted(vocab.values())
        if ids == list(range(len(ids))):
            texts = [tokenizer.decode([i]) for i in ids]
            letters = sum(len(t) == 1 for t in texts) >= 0.9 * len(texts) and not any("\ufffd" in t for t in texts)
            pairs = [(a, b) for a in ids for b in ids[:: max(1, len(ids) // 16)]]
            if letters and all(tokenizer.decode([a, b]) == texts[a] + texts[b] for a, b in pairs):
                pieces = texts
    try:
        tokenizer._textgen_letter_pieces = pieces
    except AttributeError:  # a tokenizer that takes no new attribute: checked again next time
        pass
    return pieces


class _StopMatcher:
    """Holds back text that might be the start of a stop sequence; reports when one appears."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.pending = ""

    def push(self, piece: str) -> tuple[str, bool]:
        if not self.stops:
            return piece, False
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        keep = max((_overlap(self.pending, s) for s in self.stops), default=0)
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a beginning of `stop`."""
    for k in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0
