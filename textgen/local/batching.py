"""Many requests to one model, one forward pass a token: the scheduler behind every local generation.

    scheduler = Scheduler(loaded.model, Limits())
    for item in scheduler.submit(run.steps(), rows=1):   # run: a textgen.local.generation.Run
        ...                                              # Waiting while it waits, then its TextEvents and Summary

Why: writing one token is bound by reading the weights, so sixteen rows can cost little more than one, given a
matrix product made for a few rows (textgen/models/packed.py: the shipped LSTM's large product, one thread, 1.9 ms
for 1 row, 2.2 for 4, 4.5 for 16, where torch's default takes 1.7, 4.5 and 7.6). Gradio's `batch=True` cannot stream,
and transformers' continuous batching has no recurrent models and no per-request alternatives, so this is ours.

How (vLLM's engine core and TGI's router, in small): a request is a *step coroutine*
(`textgen.local.generation.Run.steps`) that yields its events and, whenever it needs the model, a `Forward`; it never
calls the model itself. One thread per model drives every admitted request to its next `Forward`, then answers:
- the decode steps (one new token a row) of every request are joined into one batch (`step_together`);
- a prompt (several tokens) is read alone, one piece a prompt per round (a recurrent model reads 256 tokens a
  piece), as many prompts in a round as PREFILL_WORK allows and always the oldest, so a long prompt holds the
  others up for one piece at a time, never for the whole prompt; a Hugging Face model reads several texts' first
  tokens in one padded step (`contract.prefill_rows`), as many as PREFILL_WORK allows;
- a request that ends, is stopped or whose reader went away leaves at once; a new one joins at the next round.
Each request keeps its own controls, random generator, probabilities and Stop: only the forward pass is shared,
and a slow reader never slows the batch (its events wait in its own queue).

Exactness: torch's default matrix product rounds differently for fewer than 4 rows (a matrix-vector kernel) than
for 4 or more, and with 2 threads also for some counts that are not a multiple of 4. `step_together` pads every
decode batch to a multiple of 4 rows, a request alone included, so a seeded request writes bit for bit the same
text alone as in any batch (tests/test_batching.py checks it on the four shipped models). The large products on
packed weights (the LSTM's and RNN's layers, a Hugging Face model's) give each row exactly as alone at any size;
the padding is for the small ones (the GRU's cell, our Transformer's layers, the output layers). The price: a
request alone pays for 4 rows (`benchmarks/packed.py` measures a step at 1, 4, 8 and 16 rows).

Models with a key/value cache: each text keeps its own cache. Our Transformer's `step_rows` runs the shared
layers over all rows and attention text by text (exact, as above); a Hugging Face model's caches are joined
left-padded for the step, with a mask (`contract.step_rows`: equal to float precision, not bit for bit). A
cache that cannot be joined (a sliding window's) is stepped alone, each such request every round.

Threads: a Hugging Face model's steps of 4 rows or more (a prompt of T tokens is T rows) take all the cores while
that is measured faster (textgen.local.devices.StepThreads): a GPT-2-shaped step of 8 rows took 136 ms on one
thread and 96 on two. Its attention over the cache rounds differently on two threads (the kernel splits the cache
between them), one more reason its batch is not bit for bit; a text alone stays on the process's count. Our
recurrent models' batches of 8 rows or more do the same, bit for bit as on one thread; our Transformer stays on the
process's count throughout (`_step_threads`).
"""

from __future__ import annotations

__all__ = ["Busy", "Choice", "Forward", "Process", "Scheduler", "apply_processors", "choose", "process_together",
           "step_together"]

import atexit
import logging
import queue
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from textgen.core.events import Waiting
from textgen.core.settings import Limits, RequestError
from textgen.core.words import Phrase
from textgen.local.devices import StepThreads
from textgen.models import contract

log = logging.getLogger("textgen")
PAD_ROWS = 4  # decode batches are padded to a multiple of this many rows (see Exactness above)
# A Hugging Face model's batch holds rows x its longest text in one joined cache for the step: at most this many
# token places (GPT-2 small: 73 KB a place, so 600 MB), or the batch is cut into groups of similar lengths.
PADDED_PLACES = 8192
# Prompt tokens x parameters read in one round beside the decode step: about 500 characters of the shipped LSTM
# (3.5 M parameters), 16 tokens of GPT-2 small (so one prompt a round there, as a prompt costs that model about as
# much as a decode step of the batch).
PREFILL_WORK = 2_000_000_000
# What a place of a joined prompt step (a Hugging Face model reading several texts' first tokens at once, padded to
# the longest) costs, as a share of a prompt token read alone. A GPT-2-shaped model read 7 prompts of 1-7 tokens
# (49 places) in 200 ms together, against 70-80 ms each alone; at this share a round joins up to 64 such places.
JOINED_SHARE = 0.25


@dataclass
class Forward:
    """A model step a request asks for: read `input_ids` (rows, T) after `memory`; answered with
    (logits (rows, V) of the last position, the memory after them)."""

    input_ids: torch.Tensor
    memory: Any

    @property
    def is_decode(self) -> bool:
        return self.input_ids.shape[1] == 1


@dataclass
class Process:
    """A request's choice of its next tokens: its sampling controls applied to its next-token logits (rows, V)
    after its ids (rows, L), then one token drawn a row (`uniforms` (rows, 1): its random numbers, None when
    greedy); answered with a `Choice`. Requests with the same `key` (same controls, greedy or not) are chosen
    for as one batch; None: alone."""

    key: tuple | None
    processors: list
    ids: torch.Tensor
    logits: torch.Tensor
    uniforms: torch.Tensor | None = None
    alternatives: int = 0  # the likeliest tokens to report for each row, besides the one chosen


@dataclass
class Choice:
    """What a `Process` ask is answered with, a row per sample: the tokens (rows,), the distribution they were
    drawn from (rows, V), and which rows the controls left no token at all (those were drawn from the model's own
    logits instead, and end there). As plain numbers for the request's events: each row's token, its probability,
    and its likeliest tokens [(id, probability)] (the ask's `alternatives` of them, those above 0)."""

    tokens: torch.Tensor
    probs: torch.Tensor
    blocked: list[bool]
    ids: list[int]
    chosen: list[float]
    top: list[list[tuple[int, float]]]


def apply_processors(processors: list, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    # transformers' LogitsProcessorList would inspect every processor's signature on every call (~0.2 ms a step).
    for processor in processors:
        scores = processor(ids, scores)
    return scores


def choose(scores: torch.Tensor, logits: torch.Tensor, uniforms: torch.Tensor | None, alternatives: int = 0
           ) -> Choice:
    """One token a row from processed `scores` (rows, V): the argmax when `uniforms` is None (greedy; the first on
    a tie), else the token where the row's uniform number (rows, 1), scaled to the row's total, falls on its
    cumulative distribution (inverse transform sampling). A row the controls blocked entirely is drawn from its
    raw `logits`. Each row's `alternatives` likeliest tokens come with it.

    Why not `torch.multinomial`: for one draw it makes a random number for every token of the vocabulary (GPT-2's
    50,257: 27 ms for 8 rows on this CPU, a sixth of an 8-row batched step of a GPT-2-small-shaped model); the
    cumulative sum and one number a row pick from the same distribution in 1 ms. And no step here waits on a
    Python `if` over a tensor, and the numbers the events need leave the tensors in one go, so a whole batch is
    chosen for in a handful of operations.
    """
    blocked = (scores.amax(dim=-1) == float("-inf")).tolist()  # one pass over the scores, not two
    if any(blocked):
        scores = torch.where(torch.tensor(blocked, device=scores.device)[:, None], logits, scores)
    probs = torch.softmax(scores, dim=-1)  # (rows, V)
    if uniforms is None:
        tokens = scores.argmax(dim=-1)
    else:
        cumulative = probs.cumsum(dim=-1)  # (rows, V)
        total = cumulative[:, -1:].contiguous()  # (rows, 1)
        chosen = torch.searchsorted(cumulative, uniforms.to(cumulative.dtype) * total, right=True)  # (rows, 1)
        # A target that rounded up onto the total would land past the end: the last token with any probability.
        tokens = torch.minimum(chosen, torch.searchsorted(cumulative, total)).squeeze(1)
    top_p, top_i = probs.topk(min(alternatives, probs.shape[-1]), dim=-1)  # (rows, k)
    return Choice(tokens, probs, blocked, tokens.tolist(),
                  probs.gather(-1, tokens[:, None]).squeeze(1).tolist(),
                  [list(zip(i, p)) for i, p in zip(top_i.tolist(), top_p.tolist())])


def process_together(asks: list[Process]) -> list[Choice]:
    """Choose the next tokens of several requests that share their controls (one `key`) in one go.

    Why: on a small model the choosing costs more than the model (the shipped LSTM, 16 rows: 0.25 ms a row of
    tiny tensor operations against 0.2 ms a row of forward pass), and each tiny operation lets go of Python's lock,
    which a busy server's other threads then hold; batched, they cost about one request's. Each row's result is
    what it would be alone: every control and the choice work row by row, and the rows' ids, which differ in
    length, are padded on the left with each row's own first id (a repeat changes no control that can share a
    key: the repetition penalty counts a token once; the no-repeat rule, which reads sequences, never shares).
    """
    first = asks[0]
    if len(asks) == 1:
        return [choose(apply_processors(first.processors, first.ids, first.logits), first.logits, first.uniforms,
                       first.alternatives)]
    width = max(ask.ids.shape[1] for ask in asks)
    ids = torch.cat([torch.cat([ask.ids[:, :1].expand(-1, width - ask.ids.shape[1]), ask.ids], dim=1)
                     for ask in asks])
    logits = torch.cat([ask.logits for ask in asks])
    uniforms = None if first.uniforms is None else torch.cat([ask.uniforms for ask in asks])
    choice = choose(apply_processors(first.processors, ids, logits), logits, uniforms,
                    max(ask.alternatives for ask in asks))
    out, start = [], 0
    for ask, size in zip(asks, [ask.logits.shape[0] for ask in asks]):
        rows = slice(start, start + size)
        out.append(Choice(choice.tokens[rows], choice.probs[rows], choice.blocked[rows], choice.ids[rows],
                          choice.chosen[rows], [top[: ask.alternatives] for top in choice.top[rows]]))
        start += size
    return out


class Busy(RequestError):
    """Every place at this model is taken, in the batch and in its queue."""


def step_together(model, asks: list[Forward]) -> list[tuple[torch.Tensor, Any]]:
    """Answer several requests' decode steps with one forward pass (or one request's step of any length).

    The only place a local model takes a generation step: alone or in a batch, a request's rows go through the
    same padded batch shape, so they come out the same.
    """
    # Our models take a decode step alone through the batch's shape too (that is what makes them exact); a
    # Hugging Face model, which cannot be exact in a batch anyway, keeps its faster step alone.
    exact = contract.is_ours(model) and contract.can_batch(model)
    if len(asks) == 1 and not (asks[0].is_decode and exact):
        return [contract.step(model, asks[0].input_ids, asks[0].memory)]
    sizes = [ask.input_ids.shape[0] for ask in asks]
    if not contract.is_ours(model) and all(contract.is_fresh(ask.memory) for ask in asks):  # texts' first tokens
        logits, caches = contract.prefill_rows(model, [ask.input_ids for ask in asks])
        return list(zip(logits.split(sizes), caches))
    ids = torch.cat([ask.input_ids for ask in asks])  # (rows, 1)
    pad = -len(ids) % PAD_ROWS
    if contract.memory_kind(model) == "cache":  # each text keeps its own cache: the model joins the rows
        ids = torch.cat([ids, ids[:1].expand(pad, -1)])
        logits, memories = contract.step_rows(model, ids, [ask.memory for ask in asks], sizes)
        return list(zip(logits[: sum(sizes)].split(sizes), memories))
    memory = contract.join_memory(model, [ask.memory for ask in asks])
    if pad:  # copies of the first row, thrown away after the step
        first = contract.split_memory(model, memory, [1])[0]
        ids = torch.cat([ids, ids[:1].expand(pad, -1)])
        memory = contract.join_memory(model, [memory, *[first] * pad])
    logits, memory = contract.step(model, ids, memory)  # (rows + pad, V)
    return list(zip(logits[: sum(sizes)].split(sizes), contract.split_memory(model, memory, sizes)))


_END = object()
_SCHEDULERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for scheduler in list(_SCHEDULERS):
        scheduler.close()


class _Request:
    """One request inside the scheduler: its step coroutine, the step it waits for, and its reader's queue."""

    def __init__(self, steps: Generator, rows: int):
        self.steps, self.rows = steps, rows
        self.out: queue.SimpleQueue = queue.SimpleQueue()
        self.urgent = threading.Event()  # set with its end, an error or its place in the queue: wakes its reader
        self.ask: Forward | None = None  # the step it waits for
        self.reply: Any = None  # the answer to its last ask, to send it (an exception is thrown into it)
        self.gone = False  # its reader stopped reading (a closed page): it leaves without finishing
        self.ahead: int | None = None  # the place last told to its reader while it waits

    def advance(self) -> bool:
        """Run the request to its next Forward (its events go to its reader); False once it has ended."""
        while self.ask is None:
            try:
                if isinstance(self.reply, Exception):
                    item = self.steps.throw(self.reply)
                else:
                    item = self.steps.send(self.reply)
            except StopIteration:
                self.tell(_END, urgent=True)
                return False
            except Exception as err:  # its reader raises it, and says it in words (textgen.service.playground)
                self.tell(err, urgent=True)
                return False
            self.reply = None
            if isinstance(item, (Forward, Process)):
                self.ask = item
            else:
                self.out.put(item)
        return True

    def tell(self, item: Any, urgent: bool = False) -> None:
        """Hand its reader `item`; `urgent` wakes a reader that is letting events gather (see Scheduler.submit)."""
        self.out.put(item)
        if urgent:
            self.urgent.set()

    def take(self) -> list:
        """Everything handed to its reader since it last looked, waiting for at least one item."""
        items = [self.out.get()]
        while True:
            try:
                items.append(self.out.get_nowait())
            except queue.Empty:
                return items


def _step_threads(model) -> StepThreads:
    """How many threads a model's steps take (see StepThreads): on a CPU, all the cores for a batch while that is
    measured faster, and the process's count for a text alone.

    - A Hugging Face model: from 4 rows (a prompt of T tokens is T rows). Its batch is not bit for bit the same as
      alone anyway (joined caches); a text alone (1 row) gained nothing from a second thread (57 ms, 59 on two).
    - Our recurrent models: from 8 rows, so a text alone (padded to 4 rows) keeps one thread. Their large products
      (textgen/models/packed.py) and the small padded ones came out bit for bit the same on one thread or two: 42
      texts in batches of 5-16 each equal to alone, on the LSTM, RNN and GRU, with their steps on either count.
      16 LSTM texts of 100 tokens through the REST API took 1.16-1.52 s against 1.46-1.65 s on one thread
      (alternating runs). A text alone would be a quarter faster on two (0.34-0.38 s against 0.46-0.51), but it
      already writes hundreds of tokens a second, faster than the page shows them, and the second core is then the
      web server's, for everyone else's pages.
    - Our Transformer keeps the process's count: its layers round differently on two threads, and its texts are
      promised bit for bit the same in any batch.
    """
    cpu = next((p.device.type == "cpu" for p in model.parameters()), True) if hasattr(model, "parameters") else True
    if not cpu:
        return StepThreads(most=1)
    if not contract.is_ours(model):
        return StepThreads()
    return StepThreads(min_rows=8) if contract.memory_kind(model) == "state" else StepThreads(most=1)


class Scheduler:
    """Every request to one model, advanced together: at most `limits.max_batch` rows a step, and at most
    `limits.max_waiting` requests waiting for a place (more are told the model is busy).

    Thread-safe; its thread runs while there is work and ends when there is none (a later request starts it
    again), so a model that is unloaded leaves no thread behind. `batch_rows` counts the rows of each decode
    step taken (before padding), for the benchmarks.
    """

    def __init__(self, model, limits: Limits | None = None):
        self.model = model
        self.set_limits(limits or Limits.from_env())
        self.batches = contract.can_batch(model)
        self.joins_prompts = self.batches and contract.reads_prompts_together(model)
        self.threads = _step_threads(model)
        self.parameters = sum(p.numel() for p in model.parameters()) if hasattr(model, "parameters") else 1
        self.batch_rows: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        _SCHEDULERS.add(self)

    def close(self) -> None:
        """End every request (their readers get no more) and wait for the thread to finish its round: torch must
        not be mid-step in a thread when the interpreter exits (it aborts the process)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    def submit(self, steps: Generator, rows: int = 1, patience: Callable[[], float] | None = None) -> Iterator:
        """What the request `steps` yields (Waiting while it waits for a place), in the reader's thread.

        Raises Busy when every place is taken. A reader that stops reading (closes this iterator) takes the
        request out at the scheduler's next round.

        `patience()`, when given, is how many seconds the reader can wait before it next wants what has come (a
        page shown at a pace): until then its thread sleeps and the events gather, instead of its thread waking
        at every token; its end, an error and its place in the queue still wake it at once. Measured in the
        scheduler alone, 16 LSTM texts of 100 tokens at once: the requests' own work went from 0.22-0.25 s to
        0.15-0.17 s of the burst's 1.05-1.20 s, each reader's wake-up at every token having taken Python's lock
        from the scheduler.
        """
        request = _Request(steps, rows)
        with self._lock:
            if self._closed:
                steps.close()
                raise RequestError(Phrase("error.shutting_down"))
            if len(self._waiting) >= self.max_waiting and (self._active or self._waiting):
                steps.close()
                raise Busy("so many people are writing with this model right now that there is no place left; "
                           "try again in a moment")
            self._waiting.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="textgen-scheduler", daemon=True)
                self._thread.start()
        try:
            while True:
                wait = patience() if patience is not None else 0.0
                if wait > 0 and request.urgent.wait(wait):
                    request.urgent.clear()  # (set after its item was handed over: the item is taken below)
                for item in request.take():
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            request.gone = True

    def call(self, steps: Generator, rows: int = 1) -> Any:
        """Run a step coroutine that only asks for steps (no events) to its end, in turn with everyone else's
        requests; its return value. The step-by-step view's forward steps come this way, so they wait their turn
        in the batch like any text being written instead of stepping the model from their own thread."""
        result = []

        def keep() -> Generator:
            result.append((yield from steps))

        for _ in self.submit(keep(), rows):
            pass  # its place while it waits: the step view shows its own "working…"
        return result[0]

    def set_limits(self, limits: Limits) -> None:
        """The operator's limits (the playground that serves this model applies its own); taken from the next round."""
        self.max_rows, self.max_waiting = limits.max_batch, limits.max_waiting

    @property
    def load(self) -> tuple[int, int]:
        """(rows being written, requests waiting) right now."""
        with self._lock:
            return sum(r.rows for r in self._active), len(self._waiting)

    # -- the scheduler's thread ------------------------------------------------------------------------------

    def _loop(self) -> None:
        # A thread takes torch's remembered count at its first op, and another model's step may have changed it
        # for a moment (StepThreads): this one starts from the process's own.
        torch.set_num_threads(self.threads.base)
        while True:
            with self._lock:
                if self._closed:
                    for request in [*self._active, *self._waiting]:
                        request.steps.close()
                        request.tell(_END, urgent=True)
                    self._active, self._waiting = [], deque()
                self._admit()
                if not self._active:
                    self._thread = None  # nothing left: a new request starts a new thread
                    return
                active = list(self._active)
            try:
                self._round(active)
            except BaseException:  # a bug here must not leave readers waiting forever
                log.exception("the scheduler failed")
                for request in active:
                    request.tell(RuntimeError("the model's scheduler failed"), urgent=True)
                with self._lock:
                    self._active = [r for r in self._active if r not in active]

    def _admit(self) -> None:
        """Move waiting requests into the batch while their rows fit (the first always fits an empty batch);
        tell the others their place when it changed. Called with the lock held."""
        rows = sum(r.rows for r in self._active)
        while self._waiting and (self._waiting[0].gone or not self._active
                                 or rows + self._waiting[0].rows <= self.max_rows):
            request = self._waiting.popleft()
            if request.gone:
                request.steps.close()
                continue
            self._active.append(request)
            rows += request.rows
            if request.ahead is not None:  # it was told to wait: its turn has come
                request.tell(Waiting(0, over=True), urgent=True)
        for ahead, request in enumerate(self._waiting):
            if request.ahead != ahead:
                request.ahead = ahead
                request.tell(Waiting(ahead), urgent=True)

    @torch.inference_mode()
    def _round(self, active: list[_Request]) -> None:
        """Drive every request to its next step (its sampling controls applied on the way, batched with the
        others'), take the steps, hand back the answers."""
        asking, ended = [], []
        for request in active:
            if request.gone:
                request.steps.close()
                ended.append(request)
            elif request.advance():
                asking.append(request)
            else:
                ended.append(request)
        while processing := [r for r in asking if isinstance(r.ask, Process)]:
            self._process(processing)
            for request in processing:
                if not request.advance():
                    asking.remove(request)
                    ended.append(request)
        if ended:
            with self._lock:
                self._active = [r for r in self._active if r not in ended]
        for group in self._groups(asking):
            try:
                with self.threads.around(sum(r.ask.input_ids.numel() for r in group)):
                    replies = step_together(self.model, [r.ask for r in group])
            except Exception as err:  # out of memory, a broken model: each request's reader says it
                for request in group:
                    request.steps.close()
                    request.tell(err, urgent=True)
                with self._lock:
                    self._active = [r for r in self._active if r not in group]
                continue
            if (len(group) > 1 or group[0].ask.is_decode) and not self._first(group[0]):
                self.batch_rows[sum(r.rows for r in group)] += 1
            for request, reply in zip(group, replies):
                request.ask, request.reply = None, reply

    def _process(self, requests: list[_Request]) -> None:
        groups: dict = {}
        for request in requests:  # the same controls together; key None alone
            groups.setdefault(request.ask.key if request.ask.key is not None else id(request), []).append(request)
        for group in groups.values():
            try:
                with self.threads.wide(sum(r.ask.logits.numel() for r in group)):
                    replies = process_together([r.ask for r in group])
            except Exception as err:  # a control that failed on these scores: its requests' readers say it
                replies = [err] * len(group)
            for request, reply in zip(group, replies):
                request.ask, request.reply = None, reply

    def _joins(self, memory) -> bool:
        kind = contract.memory_kind(self.model)
        if kind == "none":
            return True
        if kind == "state" or contract.is_ours(self.model):
            return memory is not None
        return contract.joinable_caches([memory])  # a Hugging Face model's: plain and filled

    def _groups(self, asking: list[_Request]) -> list[list[_Request]]:
        """Which steps go together this round: every decode step that can join in one batch, each one that
        cannot (a first step with no memory yet, a sliding-window cache) alone, and the oldest prompt's next piece
        alone (the other prompts wait a round). A model that cannot batch takes each request alone."""
        if not self.batches:
            return [[r] for r in asking]
        first = [r for r in asking if self._first(r)]
        asking = [r for r in asking if not self._first(r)]
        decode = [r for r in asking if r.ask.is_decode and self._joins(r.ask.memory)]
        lone = [[r] for r in asking if r.ask.is_decode and not self._joins(r.ask.memory)]
        groups = lone + [[r] for r in self._prompts_this_round([r for r in asking if not r.ask.is_decode])]
        if first:
            groups.append(self._first_tokens_this_round(first))
        if decode and contract.memory_kind(self.model) == "cache" and not contract.is_ours(self.model):
            return groups + self._padded_groups(decode)
        return groups + ([decode] if decode else [])

    def _prompts_this_round(self, prompts: list[_Request]) -> list[_Request]:
        """The prompts whose next piece is read this round, each alone: the oldest's always, then the next ones'
        while the round's prompt work (tokens x the model's parameters) stays within PREFILL_WORK. A class that
        presses Generate together then joins the batch within a round or two, not one prompt a round (16 LSTM
        prompts had taken 16 rounds, the last text starting 0.3 s after the first), and a long prompt or a large
        model's still holds the others up for one piece at a time."""
        chosen, work = [], 0
        for request in prompts:
            cost = request.ask.input_ids.numel() * self.parameters
            if chosen and work + cost > PREFILL_WORK:
                break
            chosen.append(request)
            work += cost
        return chosen

    def _first(self, request: _Request) -> bool:
        """Whether the step `request` asks for reads its text's first tokens, and may join others' such steps (a
        Hugging Face model's: contract.prefill_rows)."""
        return self.joins_prompts and contract.is_fresh(request.ask.memory)

    def _first_tokens_this_round(self, first: list[_Request]) -> list[_Request]:
        """The texts whose first tokens are read together this round: the oldest always, then the next ones while
        the joined step's work stays within PREFILL_WORK, counted as JOINED_SHARE of a token read alone for every
        place of the padded step (rows x the longest)."""
        chosen, longest, rows = [], 0, 0
        for request in first:
            ids = request.ask.input_ids
            cost = (rows + ids.shape[0]) * max(longest, ids.shape[1]) * self.parameters * JOINED_SHARE
            if chosen and cost > PREFILL_WORK:
                break
            chosen.append(request)
            longest, rows = max(longest, ids.shape[1]), rows + ids.shape[0]
        return chosen

    @staticmethod
    def _padded_groups(decode: list[_Request]) -> list[list[_Request]]:
        """Decode steps of a Hugging Face model in groups whose joined cache (rows x longest text) stays within
        PADDED_PLACES: shortest texts first, so that a long text does not pad many short ones."""
        groups: list[list[_Request]] = [[]]
        rows = 0
        for request in sorted(decode, key=lambda r: r.ask.memory.get_seq_length()):
            length = request.ask.memory.get_seq_length() + 1
            if groups[-1] and (rows + request.rows) * length > PADDED_PLACES:
                groups.append([])
                rows = 0
            groups[-1].append(request)
            rows += request.rows
        return groups
