"""Greedy search, beam search and samples side by side, for every model kind, as one tree of choices.

    from textgen.local.decoding import decode
    tree = decode(manager.get("lstm"), settings, method="beam", width=4)   # settings: GenerationSettings.parse
    tree.sequences[0].text, tree.sequences[0].logprob    # the likeliest text the search found, and how likely
    tree.as_json()                                       # {"sequences": [...], "nodes": [...]}: the API's /decode

The three methods, each writing exactly `settings.max_new_tokens` tokens after the prompt:
- "greedy": the likeliest next token every time (what Write writes at temperature 0);
- "beam": `width` texts kept at every step, the `width` likeliest continuations of all of them taken together
  (transformers' `generate(num_beams=width, do_sample=False, min_new_tokens=max_new_tokens)` finds the same);
- "sample": `width` texts drawn under the sampling controls from one seeded generator, as Write draws
  `num_samples` of them, so the same seed gives the same texts.
Ends of text are set aside (as `min_new_tokens` does in transformers) so that every text has the same length and
the tree the same depth. Greedy and beam search rank the model's own log-probabilities after the repetition
penalty and the no-repeat rule when those are set, as transformers' beam search does; the numbers reported
(`logprob`) are always the model's own, before any control, so a text's is the sum of its tokens' along its path.

Why our own beam search: transformers' refuses models whose memory it cannot reorder ("cannot use beam search with
a cache currently"), which are our recurrent ones. Here the beams are rows of one memory, reordered through the
model contract (`contract.select_rows`), so the RNN, LSTM, GRU, a bigram and any Hugging Face model search alike;
and each step's candidates, kept or dropped, are recorded as the tree a person reads. The model's steps are asked
of its scheduler like any request's (textgen.local.batching), so a search waits its turn beside the texts being
written instead of stepping the model from its own thread.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.generation.logits_process import SuppressTokensLogitsProcessor

from textgen.core.settings import DECODE_MAX_NEW_TOKENS, DECODE_MAX_WIDTH, GenerationSettings, InvalidRequest
from textgen.core.words import Phrase
from textgen.local.batching import apply_processors
from textgen.local.generation import LocalWeights, Run, draw, sampling_stages
from textgen.models import contract

METHODS = ("greedy", "beam", "sample")
MAX_WIDTH, MAX_NEW_TOKENS = DECODE_MAX_WIDTH, DECODE_MAX_NEW_TOKENS  # beams or samples; tokens a text writes
GREEDY_ALTERNATIVES = 3  # the candidates greedy search shows it passed over at each step


@dataclass
class Node:
    """One token the search looked at: `kept` when it went on into a text (a beam kept it, or a sample drew it)."""

    id: int
    parent: int | None  # the node before it; None for the first token after the prompt
    step: int  # 0 for the first new token
    token_id: int
    text: str  # as a visitor reads it (special tokens in plain words)
    logprob: float  # of this token after its parent, under the model, before any control
    kept: bool


@dataclass
class Sequence:
    """One text the method wrote: its new tokens, the sum of their log-probabilities and its last node."""

    text: str
    token_ids: list[int]
    logprob: float
    node: int


@dataclass
class DecodeTree:
    method: str
    width: int
    seed: int | None
    prompt_tokens: int
    sequences: list[Sequence]  # best first (greedy and beam), in drawing order (samples)
    nodes: list[Node]
    # Both in words for a visitor (Phrases: English as str, any language by textgen.core.words.words_of).
    warnings: list[str] = field(default_factory=list)  # what went differently from the request (a prompt cut)
    notes: list[str] = field(default_factory=list)  # what is worth knowing about the result

    def as_json(self) -> dict:
        return {"method": self.method, "width": self.width, "seed": self.seed, "prompt_tokens": self.prompt_tokens,
                "sequences": [dataclasses.asdict(s) for s in self.sequences],
                "nodes": [dataclasses.asdict(n) for n in self.nodes], "warnings": self.warnings,
                "notes": self.notes}


def check(method: object, width: object, max_new_tokens: int) -> tuple[str, int]:
    """The method and width of a request, or InvalidRequest in words."""
    if method not in METHODS:
        raise InvalidRequest(Phrase("decode.bad_method", methods=", ".join(METHODS), got=repr(str(method)[:40])))
    if method == "greedy":
        width = 1
    if isinstance(width, float) and width.is_integer():
        width = int(width)
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_WIDTH:
        what = Phrase("decode.what_beams" if method == "beam" else "decode.what_samples")
        raise InvalidRequest(Phrase("decode.bad_width", what=what, limit=MAX_WIDTH, got=str(width)[:40]))
    if max_new_tokens > MAX_NEW_TOKENS:
        raise InvalidRequest(Phrase("decode.too_many_tokens", limit=MAX_NEW_TOKENS, got=max_new_tokens))
    return method, width


def decode(loaded: LocalWeights, settings: GenerationSettings, method: str, width: int,
           cancel: threading.Event | None = None) -> DecodeTree:
    """Run one method on a model here (see the module's docstring); its steps go through the model's scheduler."""
    method, width = check(method, width, settings.max_new_tokens)
    search = _Search(loaded, settings, method, width, cancel or threading.Event())
    return loaded.scheduler.call(search.steps(), rows=width)


@dataclass
class _Shadow:
    """The greedy text a beam search follows beside its beams: its tokens, their log-probabilities and its score."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    score: float = 0.0

    def follow(self, judged: torch.Tensor, own: torch.Tensor) -> int:
        """Its next token from its row's judged scores (V,) and the model's own log-probabilities (V,)."""
        token = int(judged.argmax())
        self.tokens.append(token)
        self.logprobs.append(float(own[token]))
        self.score += float(judged[token])
        return token


class _Search:
    """One search: the texts it keeps (rows of one memory), their scores, and the tree so far."""

    def __init__(self, loaded: LocalWeights, settings: GenerationSettings, method: str, width: int,
                 cancel: threading.Event):
        self.loaded, self.method, self.width = loaded, method, width
        self.run = Run(loaded, settings, cancel)
        self.settings = settings
        self.nodes: list[Node] = []
        self.notes: list[str] = []
        self.children: dict[tuple[int | None, int], int] = {}  # (parent, token) -> node, so samples share prefixes
        set_aside = SuppressTokensLogitsProcessor(sorted(self.run.eos_ids), device=loaded.device)
        # The search's controls: for greedy and beam the rules that judge a text (penalty, no-repeat) on the
        # model's log-probabilities, as transformers' beam search applies them; for samples the Write tab's whole
        # sampler on the logits. Both set the ends of text aside.
        searching = dataclasses.replace(settings, temperature=0.0) if method != "sample" else settings
        stages = [p for _, p in sampling_stages(searching, loaded.tokenizer, self.run.eos_ids)]
        self.processors = [*stages, set_aside] if self.run.eos_ids else stages

    def steps(self) -> Generator[Any, Any, DecodeTree]:
        ids, cut = self._prompt_ids()
        # The samples read the prompt as `width` rows, as Write reads it for as many samples (the same numbers, so
        # the same seed draws the same texts); the beams read it once and start as one text.
        rows = self.width if self.method == "sample" else 1
        all_ids = torch.tensor([ids] * rows, dtype=torch.long, device=self.loaded.device)  # (rows, T)
        logits, memory = yield from self.run.prefill_steps(all_ids)
        if logits is None:
            return self._tree([], len(ids), cut)
        scores = torch.zeros(rows, device=self.loaded.device)  # what ranks the beams (their controls applied)
        logprobs = torch.zeros(rows, device=self.loaded.device)  # the model's own, summed along each text
        last: list[int | None] = [None] * rows
        # A beam search wider than 1 also follows the greedy text, in one more row after the beams, because beam
        # search can prune the path greedy takes and end below it (the shipped char models did on 3 prompts of 60).
        # That text joins the tree and the results only if it is likelier than every beam's.
        greedy = _Shadow() if self.method == "beam" and self.width > 1 else None
        new = self.settings.max_new_tokens
        for step in range(new):  # (rows grows from 1 to width after a beam search's first step)
            own = torch.log_softmax(logits.float(), dim=-1)  # (rows, V): the model's own log-probabilities
            if self.method == "sample":
                tokens, _ = draw(apply_processors(self.processors, all_ids, logits), self.settings.greedy,
                                 self.run.rng)
                rows_from = torch.arange(len(tokens), device=tokens.device)
                last = [self._node(last[r], step, int(t), float(own[r, t]), True) for r, t in enumerate(tokens)]
            else:
                judged = apply_processors(self.processors, all_ids, own)  # (rows, V)
                beams = len(scores)  # the beam rows; the greedy row after them (at the first step, the same row)
                ranked = judged[:beams] + scores[:, None]
                rows_from, tokens, last = self._choose(ranked, own, last, step)
                scores = ranked[rows_from, tokens]
                if greedy is not None:
                    row = 0 if step == 0 else beams
                    token = greedy.follow(judged[row], own[row])
                    rows_from = torch.cat([rows_from, rows_from.new_tensor([row])])
                    tokens = torch.cat([tokens, tokens.new_tensor([token])])
            logprobs = logprobs[rows_from] + own[rows_from, tokens]
            all_ids = torch.cat([all_ids[rows_from], tokens[:, None]], dim=1)
            if step == new - 1 or self.run.cancel.is_set():
                break
            memory = contract.select_rows(self.loaded.model, memory, rows_from)
            logits, memory = yield from self.run.next_steps(all_ids, tokens, memory)
        order = range(len(last)) if self.method == "sample" else scores.argsort(descending=True, stable=True).tolist()
        sequences = [self._sequence(all_ids[r, len(ids):].tolist(), float(logprobs[r]), last[r]) for r in order]
        if greedy is not None and sequences and greedy.score > float(scores.max()) + 1e-6:
            sequences.insert(0, self._greedy_sequence(greedy))
        return self._tree(sequences, len(ids), cut)

    def _greedy_sequence(self, greedy: _Shadow) -> Sequence:
        node = None
        for step, (token, logprob) in enumerate(zip(greedy.tokens, greedy.logprobs)):
            node = self._node(node, step, token, logprob, True)
        self.notes.append(Phrase("decode.greedy_won", width=self.width))
        return self._sequence(greedy.tokens, sum(greedy.logprobs), node)

    def _choose(self, judged: torch.Tensor, own: torch.Tensor, last: list[int | None], step: int):
        """The `width` best (row, token) pairs of all rows together (one for greedy), and the tree's nodes: each
        row's best candidates, the chosen ones kept."""
        vocab = judged.shape[1]
        if self.width == 1:  # greedy: the first likeliest token, as Write's argmax takes it
            best = judged[0].argmax().view(1)
        else:
            best = judged.flatten().topk(min(self.width, judged.numel())).indices  # best first
        rows_from, tokens = best // vocab, best % vocab
        chosen = set(zip(rows_from.tolist(), tokens.tolist()))
        shown = max(self.width, GREEDY_ALTERNATIVES if self.width == 1 else 0)
        kept_node = {}
        for row in range(judged.shape[0]):
            for token in judged[row].topk(min(shown, vocab)).indices.tolist():
                if judged[row, token] == float("-inf"):
                    continue  # a control ruled it out: nothing to look at
                node = self._node(last[row], step, token, float(own[row, token]), (row, token) in chosen)
                if (row, token) in chosen:
                    kept_node[(row, token)] = node
        for row, token in chosen - kept_node.keys():  # cannot happen (a chosen pair is among its row's best)
            kept_node[(row, token)] = self._node(last[row], step, token, float(own[row, token]), True)
        new_last = [kept_node[(r, t)] for r, t in zip(rows_from.tolist(), tokens.tolist())]
        return rows_from, tokens, new_last

    def _node(self, parent: int | None, step: int, token: int, logprob: float, kept: bool) -> int:
        if (parent, token) in self.children:  # the same token after the same text: one node (samples agree)
            node = self.nodes[self.children[(parent, token)]]
            node.kept = node.kept or kept
            return node.id
        node = Node(len(self.nodes), parent, step, token, self.loaded.token_label(token), round(logprob, 5), kept)
        self.nodes.append(node)
        self.children[(parent, token)] = node.id
        return node.id

    def _sequence(self, token_ids: list[int], logprob: float, node: int | None) -> Sequence:
        text = self.loaded.tokenizer.decode(token_ids)
        return Sequence(text, token_ids, round(logprob, 5), -1 if node is None else node)

    def _prompt_ids(self) -> tuple[list[int], int]:
        """The prompt's ids as Write reads them, cut further so that the prompt and every new token fit the
        model's context (a search cannot start over from half its text as Write does)."""
        ids, cut = self.run.prompt_ids()
        context = self.run.context
        room = None if context is None else context - self.settings.max_new_tokens
        if room is not None and len(ids) > room:
            more = len(ids) - room
            ids, cut = ids[more:], cut + more
            self.run.warnings.append(Phrase("decode.prompt_cut", room=room, new=self.settings.max_new_tokens,
                                            context=context))
        return ids, cut

    def _tree(self, sequences: list[Sequence], prompt_tokens: int, cut: int) -> DecodeTree:
        seed = self.run.seed if self.method == "sample" else None
        return DecodeTree(self.method, self.width, seed, prompt_tokens, sequences, self.nodes,
                          list(dict.fromkeys(self.run.warnings)), self.notes)


def outline(tree: DecodeTree) -> str:
    """The tree as text (the CLI's `decode`): the kept paths as an outline, a stretch with no choice on one line,
    its text, the log-probability it adds, and how many candidates were dropped along it."""
    kids: dict[int | None, list[Node]] = {}
    for node in tree.nodes:
        kids.setdefault(node.parent, []).append(node)
    lines: list[str] = []

    def stretch(node: Node) -> tuple[str, float, int, Node]:
        text, logprob, dropped = node.text, node.logprob, 0
        while True:
            below = kids.get(node.id, [])
            kept = [n for n in below if n.kept]
            dropped += len(below) - len(kept)
            if len(kept) != 1:
                return text, logprob, dropped, node
            node = kept[0]
            text, logprob = text + node.text, logprob + node.logprob

    def walk(parent: int | None, prefix: str) -> None:
        kept = [n for n in kids.get(parent, []) if n.kept]
        for i, node in enumerate(kept):
            text, logprob, dropped, end = stretch(node)
            last = i == len(kept) - 1
            also = f"  ({dropped} dropped)" if dropped else ""
            lines.append(f"{prefix}{'└─ ' if last else '├─ '}{text!r} {logprob:+.2f}{also}")
            walk(end.id, prefix + ("   " if last else "│  "))

    walk(None, "")
    return "\n".join(lines)
