"""Watch a model choose: what it wanted to write next, what each sampling control did to that wish, and
(for our small models) what goes on inside it.

    from textgen.service.catalog import Catalog
    from textgen.service.explain import StepSession, attention, interesting_units, next_token_json
    from textgen.service.loading import ModelManager

    manager = ModelManager(Catalog.default())
    session = StepSession(manager.get("lstm"), "ROMEO:\\n")   # one forward pass over the prompt
    stages = session.stages({"temperature": 0.5, "top_k": 3})  # per stage, the likeliest tokens: no forward pass
    session.sample({"temperature": 0.8}, seed=1)                # draw one token as the decoding loop does: one step
    session.pick(stages[0]["tokens"][1]["id"])                  # or choose one yourself
    session.back()                                              # and take it back (no forward pass)
    session.run(20, {"temperature": 0}, seed=1)                 # write 20 tokens, then stop for a look
    session.sample_many({"top_p": 0.9}, n=200, seed=1)          # 200 draws of the next token, counted
    next_token_json(manager.get("lstm"), "ROMEO:", {"top_p": 0.5}, top_n=10)
    attention(manager.get("transformer"), "To be, or not to be")   # who each token looks at
    interesting_units(manager.get("lstm"), open("some_play.txt").read()[:2000])

Everything takes plain data (text, numbers, a dict of controls or GenerationSettings) and returns plain
data (dicts, lists, numbers, text), ready for JSON. Bad controls raise `InvalidRequest` with the same
message as generation (they are parsed by `GenerationSettings.parse`); `open_session` turns every error a
page user can cause (an unknown model too) into `RequestError`, as `textgen.service.playground` does.

The words a visitor reads come from the catalogs (textgen.core.words): the messages of errors and a unit's guess
are `Phrase`s (English as text; the page says them in the visitor's language), and `stages(..., lang=)` names its
stages in the language asked for (English unless told: the API and the command line).

Why the bars can be trusted: the stages are `textgen.local.generation.sampling_stages`, the very processors the
decoding loop runs, applied one at a time to the logits the decoding loop's own `Run` computed (same prompt ids, BOS,
context cut and refill), and a token is drawn with the decoding loop's `draw`. Nothing here is a copy of the
sampler.

Cost, measured on the shipped models (one CPU thread on a 2-core machine that was also training two models;
median of 300 calls): a `stages()` redraw with all six controls on takes 0.7 ms (0.3 ms with no control on),
with no forward pass; writing a token (`pick` then `back`, one forward step) 1.0-1.3 ms for the LSTM and
2.5-7 ms for the Transformer after a 77-character prompt. So moving a slider redraws the bars without
touching the model.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from textgen.core.events import STOP_REASONS, shown
from textgen.core.settings import GenerationSettings, InvalidRequest, Limits, RequestError
from textgen.core.words import ENGLISH, Phrase, catalog, message_of, say
from textgen.local.batching import apply_processors
from textgen.local.generation import IncrementalDecoder, Run, draw, sampling_stages
from textgen.local.model import LoadedModel
from textgen.models import contract
from textgen.service.catalog import UnknownModelError
from textgen.service.loading import ModelLoadError, ModelManager

__all__ = [
    "FEATURES",
    "StepSession",
    "activations",
    "attention",
    "interesting_units",
    "next_token_json",
    "open_session",
    "parse_controls",
    "shown",
    "stages_table",
    "text_features",
]

Controls = GenerationSettings | Mapping[str, Any] | None

MAX_TOP_N = 50
MAX_DRAWS = 10_000
MAX_UNDO = 64  # snapshots kept for an instant `back`; further back is replayed (exactly) from the prompt
MIN_UNIT_TOKENS = 20  # below this, a correlation says nothing
MAX_UNIT_TOKENS = 5_000  # read one token at a time (~1 ms each for the shipped LSTM)

# Plain words for each stage: a column header and a sentence (the controls' own help, from the control table).
STAGE_CONTROL = {"repetition_penalty": "repetition_penalty", "no_repeat_ngram": "no_repeat_ngram_size",
                 "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p"}


def parse_controls(controls: Controls, limits: Limits | None = None) -> GenerationSettings:
    """Settings from a dict of controls (checked exactly as generation checks them) or settings as they are."""
    if isinstance(controls, GenerationSettings):
        return controls
    values = {k: v for k, v in dict(controls or {}).items() if k != "prompt"}  # the session has the text
    return GenerationSettings.parse("", limits or Limits.from_env(), **values)


# -- one position, stage by stage --------------------------------------------------------------------------


@dataclass
class _Snapshot:
    """What the model said after a given prefix: the logits of the next token and the cache behind them."""

    logits: torch.Tensor  # 1 x vocab, float32
    cache: Any  # a recurrent state (immutable tensors) or a DynamicCache (grows in place)
    length: int | None  # the DynamicCache's length at this point, to crop back to; None for a state


class StepSession:
    """A text being written one token at a time, with the model's next-token logits kept for inspection.

    The model reads the prompt once (the decoding loop's own prefill). `stages` then costs no forward pass however
    often the controls change; `sample`, `pick` and `run` cost one forward step per token written, and `back`
    none (the last MAX_UNDO positions are kept). `forward_passes` counts the model calls so far.
    Not for use by two threads at once (each page session has its own); the model itself is shared safely.
    """

    def __init__(self, loaded: LoadedModel, prompt: str, limits: Limits | None = None):
        self.loaded = loaded
        self.limits = limits or Limits.from_env()
        # The prompt goes through the same checks as a generation request (length, control characters).
        base = GenerationSettings.parse(prompt, self.limits)
        self.prompt = base.prompt
        # The decoding loop's own run drives the model: its prompt ids (BOS, empty prompt, context cut), its prefill
        # (in pieces for a recurrent model) and its step (refilling from the recent half past the context).
        self._run = Run(loaded, base, threading.Event())
        ids, self.prompt_tokens_cut = self._run.prompt_ids()
        self.prompt_ids: list[int] = ids
        self._ids = torch.tensor([ids], dtype=torch.long, device=loaded.device)
        self._history = [self.prefill()]
        self._decoder = IncrementalDecoder(loaded.tokenizer, ids)
        self._pieces: list[str] = []

    # -- what there is to see ------------------------------------------------------------------------------

    @property
    def forward_passes(self) -> int:
        return self._run.forward_steps

    @property
    def warnings(self) -> list[str]:
        return list(self._run.warnings)

    @property
    def written_ids(self) -> list[int]:
        return self._ids[0, len(self.prompt_ids):].tolist()

    @property
    def written(self) -> str:
        """The text written after the prompt so far."""
        return "".join(self._pieces)

    def stages(self, controls: Controls = None, top_n: int = 10, lang: str = ENGLISH) -> list[dict]:
        """The next token's distribution after each stage of the sampler, in the order applied ("label" and
        "help" in `lang`).

        Returns [{"name", "label", "help", "value", "tokens": [{"id", "text", "shown", "prob", "removed"}],
        "kept", "other", "top", "blocked"}]. The first stage is always "model" (the model's own softmax,
        <unk> removed); a control that is off has no stage; with temperature 0 the last stage is "greedy",
        all probability on the likeliest token, which is what the decoding loop writes. Every stage lists the same
        tokens, ranked by the model stage: its top_n, plus any token among the top_n of the last stage that
        the model ranked lower (a repetition penalty can lift one); never a token the model itself cannot
        write (<unk>). "prob" is that token's probability in that stage, renormalised (0.0 for a token the
        stage removed, and then "removed" is true); "kept" is how many tokens the stage leaves possible,
        "other" the probability of the tokens not listed, "top" the stage's likeliest token. No forward pass.
        """
        settings = parse_controls(controls, self.limits)
        top_n = _whole("top_n", top_n, 1, MAX_TOP_N)
        named = self._stage_scores(settings)
        scores = torch.cat([s for _, s in named]).float()  # stages x vocab
        # All zero, not NaN, for a stage that allowed no token at all (softmax of nothing but -inf).
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        k = min(top_n, probs.shape[1])
        ids: list[int] = []
        for row in (probs[0], probs[-1]):  # the model's favourites, then any the last stage adds
            top = row.topk(k)
            ids += [i for p, i in zip(top.values.tolist(), top.indices.tolist()) if p > 0 and i not in ids]
        model_p = probs[0, ids].tolist()
        ids = [i for _, i in sorted(zip(model_p, ids), key=lambda pair: (-pair[0], pair[1]))]  # never <unk>
        # One conversion per quantity, not one per token: a redraw stays well under a forward step.
        index = torch.tensor(ids, dtype=torch.long)
        table, removed = probs[:, index].tolist(), torch.isneginf(scores[:, index]).tolist()
        kept, totals = torch.isfinite(scores).sum(1).tolist(), probs.sum(1).tolist()
        best_p, best = (t.tolist() for t in probs.max(dim=1))
        texts = [self._token_text(i) for i in ids]
        out = []
        for s, (name, _) in enumerate(named):
            listed = [{**text, "prob": round(p, 6), "removed": cut}
                      for text, p, cut in zip(texts, table[s], removed[s])]
            allowed = totals[s] > 0
            top = {**self._token_text(best[s]), "prob": round(best_p[s], 6), "removed": False}
            out.append({
                "name": name, "label": _label(name, settings, lang), "help": _help(name, lang),
                "value": _value(name, settings),
                "tokens": listed,
                "kept": int(kept[s]),
                "other": round(max(0.0, 1.0 - sum(table[s])), 6) if allowed else 0.0,
                "top": top if allowed else None,
                "blocked": not allowed,
            })
        return out

    def to_json(self, controls: Controls = None, top_n: int = 10) -> dict:
        """The whole picture at this point: the text, what was written, the stages, notes for the reader."""
        return {"model": self.loaded.name, "prompt": self.prompt, "written": self.written,
                "written_tokens": [self._token_text(i) for i in self.written_ids],
                "prompt_tokens": len(self.prompt_ids), "prompt_tokens_cut": self.prompt_tokens_cut,
                "stages": self.stages(controls, top_n), "forward_passes": self.forward_passes,
                "warnings": self.warnings}

    # -- actions -------------------------------------------------------------------------------------------

    def sample(self, controls: Controls = None, seed: int | None = None) -> dict:
        """Draw the next token as the decoding loop does (its processors, `torch.multinomial` with a generator seeded
        with `seed`, else the controls' seed, else a random one) and append it: one forward step.

        Returns {"token": {...}, "seed", "stop_reason"}: stop_reason is None when the token was written,
        "end_of_text" when the model ended the text (nothing is appended, as the decoding loop ends there) or
        "no_allowed_token" when the controls left nothing to draw (token None).
        """
        settings = parse_controls(controls, self.limits)
        seed, rng = self._rng(settings, seed)
        token_id, probs = self._draw(settings, rng)
        return {**self._write(token_id, probs), "seed": seed}

    def pick(self, token_id: int) -> dict:
        """Append a token of your choice (manual sampling): one forward step. Returns {"token", "stop_reason"};
        the token's "prob" is the model stage's, since no controls were involved."""
        vocab = self._history[-1].logits.shape[-1]
        token_id = _whole("token_id", token_id, 0, vocab - 1)
        no_controls = GenerationSettings(prompt="", temperature=1.0)  # leaves only the "model" stage
        return self._write(token_id, _softmax(self._stage_scores(no_controls)[0][1]))

    def back(self) -> dict | None:
        """Undo the last written token (none in the prompt); returns it, or None when there was none."""
        written = self.written_ids
        if not written:
            return None
        token = self._token_text(written[-1])
        self._ids = self._ids[:, :-1]
        self._history.pop()
        if not self._history:  # beyond the kept snapshots: replay the same forward steps from the prompt
            self._history = self._replay()
        top = self._history[-1]
        if top.length is not None and top.cache.get_seq_length() > top.length:
            with torch.inference_mode():  # the cache object grew in place since: cut it back (a negative count)
                top.cache.crop(top.length - top.cache.get_seq_length())
        self._pieces.pop()
        self._decoder = IncrementalDecoder(self.loaded.tokenizer, self.prompt_ids)
        for i in self.written_ids:  # the decoder's window is a few tokens: rebuild it rather than undo it
            self._decoder.push(i)
        return token

    def run(self, n: int, controls: Controls = None, seed: int | None = None) -> dict:
        """Write up to n tokens as the decoding loop writes them, then stop for a look.

        The same seed and controls from the same prompt give the decoding loop's tokens
        (`textgen.local.generation.stream`): one generator, one draw per token. Returns {"tokens": [...],
        "text", "seed", "stop_reason"} with stop_reason "length", "end_of_text" or "no_allowed_token"; each token
        also lists its "alternatives", the likeliest tokens of the distribution it was drawn from (itself included),
        as a token written by `sample` can show them.
        """
        settings = parse_controls(controls, self.limits)
        n = _whole("n", n, 1, self.limits.max_new_tokens)
        n = min(n, self._room())
        seed, rng = self._rng(settings, seed)
        tokens, text, reason = [], "", "length"
        for _ in range(n):
            token_id, probs = self._draw(settings, rng)
            result = self._write(token_id, probs)
            if result["token"] is not None:
                tokens.append({**result["token"], "alternatives": self._likeliest(probs)})
            if result["stop_reason"]:
                reason = result["stop_reason"]
                break
            text += result["piece"]
        return {"tokens": tokens, "text": text, "seed": seed, "stop_reason": reason}

    def sample_many(self, controls: Controls = None, n: int = 200, seed: int | None = None) -> dict:
        """n draws of the next token from the last stage's distribution, counted; no forward pass, nothing
        appended. Returns {"draws", "seed", "counts": [{"id", "text", "shown", "count", "prob"}]}, most drawn
        first (a token never drawn is not listed)."""
        settings = parse_controls(controls, self.limits)
        n = _whole("n", n, 1, MAX_DRAWS)
        seed, rng = self._rng(settings, seed)
        scores = self._stage_scores(settings)[-1][1]
        probs = _softmax(scores)
        if probs.sum() == 0:
            return {"draws": 0, "seed": seed, "counts": []}
        drawn = torch.multinomial(probs, n, replacement=True, generator=rng)
        counts = torch.bincount(drawn, minlength=probs.numel())
        ids = counts.nonzero().flatten().tolist()
        rows = [{**self._token_text(i), "count": int(counts[i]), "prob": round(float(probs[i]), 6)} for i in ids]
        return {"draws": n, "seed": seed, "counts": sorted(rows, key=lambda r: (-r["count"], -r["prob"]))}

    # -- inside ----------------------------------------------------------------------------------------------

    def _stage_scores(self, settings: GenerationSettings) -> list[tuple[str, torch.Tensor]]:
        """(name, 1 x vocab scores) after each stage. The "model" stage folds in the <unk> suppressor, which
        the decoding loop applies first and no one controls; with temperature 0 a "greedy" stage closes the list."""
        loaded = self.loaded
        logits = self._history[-1].logits
        named = [("model", logits)]
        scores = logits
        for name, processor in sampling_stages(settings, loaded.tokenizer, self._run.eos_ids):
            scores = processor(self._ids, scores)  # transformers' processors return new tensors, never edit
            if name == "model":
                named[0] = (name, scores)
            else:
                named.append((name, scores))
        if settings.greedy and torch.isfinite(scores).any():
            greedy = torch.full_like(scores, float("-inf"))
            greedy[0, scores.argmax(dim=-1)] = 0.0  # the decoding loop's choice: `draw` takes this same argmax
            named.append(("greedy", greedy))
        return named

    def _draw(self, settings: GenerationSettings, rng: torch.Generator) -> tuple[int | None, torch.Tensor | None]:
        # What the decoding loop does for one sample (its Run._pick): its processors, the "nothing allowed"
        # rule, its `draw`.
        pipeline = [p for _, p in sampling_stages(settings, self.loaded.tokenizer, self._run.eos_ids)]
        scores = apply_processors(pipeline, self._ids, self._history[-1].logits)
        if torch.isneginf(scores).all():
            return None, None
        token, probs = draw(scores, settings.greedy, rng)
        return int(token[0]), probs[0]

    def _write(self, token_id: int | None, probs: torch.Tensor | None) -> dict:
        if token_id is None:
            return {"token": None, "stop_reason": "no_allowed_token", "piece": "",
                    "message": STOP_REASONS["no_allowed_token"]}
        token = {**self._token_text(token_id), "prob": round(float(probs[token_id]), 6)}
        if token_id in self._run.eos_ids:
            return {"token": token, "stop_reason": "end_of_text", "piece": "", "message": STOP_REASONS["end_of_text"]}
        self._room()
        self._step(token_id)
        piece = self._decoder.push(token_id)
        self._pieces.append(piece)
        return {"token": token, "stop_reason": None, "piece": piece}

    def _likeliest(self, probs: torch.Tensor, k: int = 5) -> list[dict]:
        """The k likeliest tokens of a distribution (those it allows), likeliest first: {"id", "text", "shown",
        "prob"} each."""
        top = probs.topk(min(k, probs.numel()))
        return [{**self._token_text(i), "prob": round(p, 6)}
                for p, i in zip(top.values.tolist(), top.indices.tolist()) if p > 0]

    def _room(self) -> int:
        """Tokens this text may still take: a session writes at most what one request may (max_new_tokens)."""
        room = self.limits.max_new_tokens - (self._ids.shape[1] - len(self.prompt_ids))
        if room <= 0:
            raise InvalidRequest(Phrase("explain.text_full", count=self.limits.max_new_tokens))
        return room

    @torch.inference_mode()
    def prefill(self) -> _Snapshot:
        logits, cache = self._run.prefill(self._ids)
        return _snapshot(logits, cache)

    @torch.inference_mode()
    def _step(self, token_id: int) -> None:
        new = torch.tensor([token_id], dtype=torch.long, device=self._ids.device)
        self._ids = torch.cat([self._ids, new[:, None]], dim=1)
        logits, cache = self._run.next_logits(self._ids, new, self._history[-1].cache)
        self._history.append(_snapshot(logits, cache))
        del self._history[:-MAX_UNDO]

    def _replay(self) -> list[_Snapshot]:
        """The snapshots after the prompt and each written token, recomputed by the same forward steps as
        the first time (so past the context the refills fall in the same places): exact, not approximate."""
        written = self.written_ids
        self._ids = self._ids[:, : len(self.prompt_ids)]
        self._history = [self.prefill()]
        for token_id in written:
            self._step(token_id)
        return self._history

    def _rng(self, settings: GenerationSettings, seed: int | None) -> tuple[int, torch.Generator]:
        if seed is not None:
            seed = GenerationSettings.parse("", seed=seed).seed  # same checks as a request's seed
        seed = seed if seed is not None else settings.seed
        seed = seed if seed is not None else secrets.randbelow(2**31)
        # As the decoding loop seeds its own: one generator on the model's device, one draw per token.
        return seed, torch.Generator(device=self.loaded.device).manual_seed(seed)

    def _token_text(self, token_id: int) -> dict:
        return _token_dict(self.loaded, token_id)


def _snapshot(logits: torch.Tensor, cache: Any) -> _Snapshot:
    length = cache.get_seq_length() if hasattr(cache, "get_seq_length") else None
    return _Snapshot(logits, cache, length)


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Probabilities of a 1 x vocab row; all zero (not NaN) when a stage allowed no token at all."""
    row = scores[0].float()
    if not torch.isfinite(row).any():
        return torch.zeros_like(row)
    return torch.softmax(row, dim=-1)


def _label(name: str, s: GenerationSettings, lang: str = ENGLISH) -> str:
    """A short column header: the stage and its setting ("Top-k 3")."""
    if name in ("model", "greedy"):
        return say(f"explain.label.{name}", lang)
    return say("explain.label.control", lang, name=say(f"explain.stage.{name}", lang), value=f"{_value(name, s):g}")


def _help(name: str, lang: str = ENGLISH) -> str:
    """A stage's sentence: the model's and greedy's own, else the control's help (the control table's words)."""
    if name in ("model", "greedy"):
        return say(f"explain.help.{name}", lang)
    return say(f"control.{STAGE_CONTROL[name]}.help", lang)


def _value(name: str, s: GenerationSettings) -> float | int | None:
    return getattr(s, STAGE_CONTROL[name]) if name in STAGE_CONTROL else None


def _whole(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise InvalidRequest(Phrase("error.not_whole", name=name, got=f"{value!r:.40}"))
    if not low <= value <= high:
        raise InvalidRequest(Phrase("error.out_of_range", name=name, low=low, high=high, got=value))
    return int(value)


# -- one-call helpers ----------------------------------------------------------------------------------------


def next_token_json(loaded: LoadedModel, prompt: str, controls: Controls = None, top_n: int = 10,
                    limits: Limits | None = None) -> dict:
    """What the model wants to write after `prompt`, and what each control does to it (see
    `StepSession.stages` for the stage fields). Raises InvalidRequest for a bad prompt or control."""
    limits = limits or Limits.from_env()
    settings = parse_controls(controls, limits)  # the controls first: a bad one fails before the forward pass
    return StepSession(loaded, prompt, limits).to_json(settings, top_n)


def open_session(manager: ModelManager, name: object, prompt: object, limits: Limits | None = None) -> StepSession:
    """A StepSession on a catalogued model, for the page: every error a user can cause comes out as
    RequestError with generation's message (unknown model, broken checkpoint, too long a prompt)."""
    try:
        return StepSession(manager.get(name), prompt, limits)
    except (UnknownModelError, ModelLoadError, InvalidRequest) as err:
        raise RequestError(message_of(err)) from None


def _title(loaded: LoadedModel) -> str:
    """The model's title for a message: the catalogs' words for a model this project names (so the page can say
    it in the visitor's language), an operator's own model as they called it."""
    entry = loaded.entry
    key = f"model.{entry.name}.title"
    if entry.origin in ("shipped", "hub", "gguf") and catalog(ENGLISH).get(key) == entry.title:
        return Phrase(key)
    return entry.title


# -- inside a Transformer: attention ------------------------------------------------------------------------

_EAGER_LOCK = threading.Lock()


def attention(loaded: LoadedModel, text: str, query: int = -1, limits: Limits | None = None) -> dict:
    """Where each attention head of a Transformer looks from one token of `text` (the `query`, default the
    last), over that token and every earlier one.

    Returns {"tokens": [{"id", "text", "shown"}], "query": index, "layers": L, "heads": H,
    "weights": [layer][head][key] (each row sums to 1), "layer_average": [layer][key] (over heads),
    "average": [key] (over every head of every layer)}. The text is read as generation reads a prompt
    (same BOS, same cut to the context). Works for our Transformer and Hugging Face models that can return
    attention weights (GPT-2 among them); InvalidRequest for a recurrent model, which has none.
    """
    can = loaded.capabilities
    if not can.attention:
        why = "units" if can.units else "other"  # a recurrent model's memory is worth a look instead
        raise InvalidRequest(Phrase(f"explain.no_attention.{why}", title=_title(loaded)))
    ids = _text_ids(loaded, text, limits)
    query = _whole("query", query, -len(ids), len(ids) - 1) % len(ids)
    batch = torch.tensor([ids[: query + 1]], dtype=torch.long, device=loaded.device)
    weights = _attention_weights(loaded.model, batch)  # layer x head x key, for the query (the last row)
    per_layer = weights.mean(dim=1)
    return {"tokens": [_token_dict(loaded, i) for i in ids], "query": query,
            "layers": weights.shape[0], "heads": weights.shape[1],
            "weights": _rounded(weights), "layer_average": _rounded(per_layer), "average": _rounded(per_layer.mean(0))}


@torch.inference_mode()
def _attention_weights(model, batch: torch.Tensor) -> torch.Tensor:
    if contract.is_ours(model):
        return model.attention_weights(batch)
    out = model(input_ids=batch, output_attentions=True, use_cache=False)
    attentions = out.attentions
    if not attentions and getattr(model.config, "_attn_implementation", "eager") != "eager":
        # A Hugging Face model on the fused SDPA kernel returns no weights. Switch it to the eager
        # implementation for this one call: the same arithmetic, so a generation running meanwhile on the
        # shared model still gets the same tokens (only a little slower); the lock keeps two switches apart.
        with _EAGER_LOCK:
            previous = model.config._attn_implementation
            model.set_attn_implementation("eager")
            try:
                attentions = model(input_ids=batch, output_attentions=True, use_cache=False).attentions
            finally:
                model.set_attn_implementation(previous)
    if not attentions:
        raise InvalidRequest(Phrase("explain.no_attention_weights"))
    return torch.stack([a[0, :, -1, :].float() for a in attentions])


# -- inside a recurrent model: units ------------------------------------------------------------------------


def activations(loaded: LoadedModel, text: str, layer: int = -1, state: str = "cell",
                units: list[int] | None = None, limits: Limits | None = None) -> dict:
    """Every unit's value in one layer of an RNN, LSTM or GRU after reading each token of `text`.

    `state` is "cell" (the LSTM's cell state c: its long memory, unbounded, where counters such as "how far
    into the line" tend to live) or "hidden" (h, what the layer passes on, in -1..1; the RNN and GRU have
    only this, and "cell" means h for them). Returns {"tokens", "layer", "state", "units": [unit numbers],
    "values": [unit][token]}; `units` picks a few (default all).
    """
    values, ids, layer, state = _unit_values(loaded, text, layer, state, limits)
    chosen = list(range(values.shape[1])) if units is None else [
        _whole("unit", u, 0, values.shape[1] - 1) for u in units]
    return {"tokens": [_token_dict(loaded, i) for i in ids], "layer": layer, "state": state, "units": chosen,
            "values": _rounded(values[:, chosen].T)}


# Simple things a reader can see in a text, each a number per token. Most are known once that token is read;
# a speaker's name and a word in capitals are marked from their first letter (the text is known in full).
# Their words are the catalogs' "explain.feature.<name>".
FEATURES = {name: say(f"explain.feature.{name}") for name in (
    "line_position", "line_start", "speaker_name", "word_position", "caps_word", "in_quote", "in_parentheses",
    "sentence_end")}


def text_features(pieces: list[str]) -> dict[str, list[float]]:
    """FEATURES for each token, given each token's text; a feature is measured at the token's last character."""
    text = "".join(pieces)
    speaker = _speaker_spans(text)
    values: dict[str, list[float]] = {name: [] for name in FEATURES}
    line = word = depth = 0
    quote = False
    end = 0
    for piece in pieces:
        for ch in piece:
            line = 0 if ch == "\n" else line + 1
            word = word + 1 if ch.isalpha() or ch == "'" else 0
            depth = depth + (ch == "(") - (ch == ")") if ch in "()" else depth
            quote = not quote if ch == '"' else quote
        end += len(piece)
        last = piece[-1:] or " "
        values["line_position"].append(line)
        values["line_start"].append(float(last == "\n"))
        values["speaker_name"].append(float(speaker[end - 1]) if end else 0.0)
        values["word_position"].append(word)
        values["caps_word"].append(float(last.isalpha() and _caps_word_at(text, end - 1)))
        values["in_quote"].append(float(quote))
        values["in_parentheses"].append(float(depth > 0))
        values["sentence_end"].append(float(last in ".!?"))
    return values


def interesting_units(loaded: LoadedModel, text: str, layer: int = -1, state: str = "cell", count: int = 6,
                      limits: Limits | None = None) -> dict:
    """A few units of a recurrent model worth looking at, found by correlating each unit's value with simple
    features of `text` (FEATURES), with a one-line guess in plain words.

    Returns {"tokens", "layer", "state", "units": [{"unit", "feature", "correlation", "guess", "values"}],
    "features": {feature: {"unit", "correlation"} for the best unit of each feature found in the text}}.
    The units are the best one for each feature first (strongest first), then the next strongest pairs,
    each unit once. A correlation is Pearson's r over the tokens of this text: it says what a unit goes
    along with here, not what it is for.
    """
    count = _whole("count", count, 1, 50)
    values, ids, layer, state = _unit_values(loaded, text, layer, state, limits)
    pieces = [loaded.token_text(i) for i in ids]
    features = {k: v for k, v in text_features(pieces).items() if len(set(v)) > 1}  # a constant says nothing
    if not features:
        raise InvalidRequest(Phrase("explain.too_uniform"))
    names = list(features)
    r = _correlations(values, torch.tensor([features[n] for n in names], dtype=torch.float64).T)
    best = {n: (int(r[:, j].abs().argmax()), float(r[:, j][r[:, j].abs().argmax()])) for j, n in enumerate(names)}
    order = sorted(((abs(c), u, n, c) for n, (u, c) in best.items()), reverse=True)
    # Then every other (unit, feature) pair, strongest first, to fill up to `count`.
    flat = r.abs().flatten().argsort(descending=True)[: count * len(names) * 4].tolist()
    order += [(abs(float(r.flatten()[k])), k // len(names), names[k % len(names)], float(r.flatten()[k])) for k in flat]
    chosen: list[dict] = []
    for _, unit, feature, corr in order:
        if len(chosen) == count:
            break
        if any(c["unit"] == unit for c in chosen) or not math.isfinite(corr):
            continue
        chosen.append({"unit": unit, "feature": feature, "correlation": round(corr, 3),
                       "guess": _guess(feature, corr), "values": _rounded(values[:, unit])})
    return {"tokens": [_token_dict(loaded, i) for i in ids], "layer": layer, "state": state, "units": chosen,
            "features": {n: {"unit": u, "correlation": round(c, 3)} for n, (u, c) in best.items()}}


def _guess(feature: str, corr: float) -> Phrase:
    """A unit's guess in a line ("seems to track how far into the line the text is: it strongly rises as the line
    goes on"), English as text and in any language by `in_language`."""
    strength = "strongly_" if abs(corr) >= 0.6 else "" if abs(corr) >= 0.3 else "weakly_"
    how = Phrase(f"explain.how.{strength}{'rises' if corr > 0 else 'falls'}")
    what = Phrase(f"explain.feature.{feature}")
    if feature in ("line_position", "word_position"):
        where = Phrase("explain.where.line" if feature == "line_position" else "explain.where.word")
        return Phrase("explain.guess.track", feature=what, how=how, where=where)
    return Phrase("explain.guess.notice", feature=what, how=how)


def _correlations(values: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Pearson's r of every unit (columns of values, tokens x units) with every feature: units x features."""
    a = values.double()
    a = a - a.mean(0)
    f = features - features.mean(0)
    cov = a.T @ f
    scale = a.norm(dim=0)[:, None] * f.norm(dim=0)[None, :]
    return torch.where(scale > 0, cov / scale.clamp_min(1e-12), torch.zeros_like(cov))


@torch.inference_mode()
def _unit_values(loaded: LoadedModel, text: str, layer: int, state: str,
                 limits: Limits | None) -> tuple[torch.Tensor, list[int], int, str]:
    model = loaded.model
    if not loaded.capabilities.units:  # only ours have units (textgen.models.contract), so `model` is one of ours
        raise InvalidRequest(Phrase("explain.no_units", title=_title(loaded)))
    if state not in ("cell", "hidden"):
        raise InvalidRequest(Phrase("explain.bad_state", got=f"{state!r:.40}"))
    layers = model.unit_layers
    layer = _whole("layer", layer, -layers, layers - 1) % layers
    if state not in model.unit_states:
        state = model.unit_states[0]  # an RNN's or GRU's only state
    ids = _text_ids(loaded, text, limits)
    if len(ids) < MIN_UNIT_TOKENS:
        raise InvalidRequest(Phrase("explain.too_short", count=MIN_UNIT_TOKENS, have=len(ids)))
    ids = ids[:MAX_UNIT_TOKENS]
    batch = torch.tensor([ids], dtype=torch.long, device=loaded.device)
    return model.unit_values(batch, layer, state).float().cpu(), ids, layer, state


def _text_ids(loaded: LoadedModel, text: str, limits: Limits | None) -> list[int]:
    """A text's token ids exactly as generation reads a prompt (checks, BOS, cut to the context)."""
    settings = GenerationSettings.parse(text, limits or Limits.from_env())
    if not settings.prompt:
        raise InvalidRequest(Phrase("explain.no_text"))
    return Run(loaded, settings, threading.Event()).prompt_ids()[0]


def _token_dict(loaded: LoadedModel, token_id: int) -> dict:
    """A token for the views: its id, its text, and how a person sees it (a special token as its label)."""
    text = loaded.token_text(token_id)
    label = loaded.token_label(token_id)
    return {"id": token_id, "text": text, "shown": label if label != text else shown(text)}


def _rounded(t: torch.Tensor, digits: int = 5) -> Any:
    """Nested lists of floats, rounded: JSON a page can take without megabytes of digits."""
    if t.dim() == 0:
        return round(float(t), digits)
    return [_rounded(x, digits) for x in t] if t.dim() > 1 else [round(v, digits) for v in t.tolist()]


def _speaker_spans(text: str) -> list[bool]:
    """Per character: inside a speaker's name line ("ROMEO:" or "First Citizen:" alone on its line)."""
    marks = [False] * len(text)
    for m in re.finditer(r"(?m)^[A-Z][A-Za-z' ]{0,40}:$", text):
        for i in range(m.start(), m.end()):
            marks[i] = True
    return marks


def _caps_word_at(text: str, i: int) -> bool:
    start = i
    while start > 0 and text[start - 1].isalpha():
        start -= 1
    end = i
    while end + 1 < len(text) and text[end + 1].isalpha():
        end += 1
    word = text[start : end + 1]
    return len(word) >= 2 and word.isupper()


# -- as text, for the command line ------------------------------------------------------------------------------


def stages_table(stages: list[dict]) -> str:
    """The stages as a table for people: one row per token, one column per stage, "cut" where a stage removed
    the token; then the share of the tokens not listed, and how many tokens each stage leaves possible."""
    headers = ["next token", *(s["label"] for s in stages)]
    rows = [[t["shown"], *(_percent(s["tokens"][i]) for s in stages)] for i, t in enumerate(stages[0]["tokens"])]
    rows.append(["(all others)", *(f"{100 * s['other']:.1f}%" for s in stages)])
    rows.append(["tokens possible", *(str(s["kept"]) for s in stages)])
    widths = [max(len(r[c]) for r in [headers, *rows]) for c in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
             for r in [headers, *rows]]
    return "\n".join(lines)


def _percent(token: dict) -> str:
    if token["removed"]:
        return "cut"
    p = 100 * token["prob"]
    return f"{p:.1f}%" if p >= 0.05 else "<0.1%"  # still possible, however unlikely: never "0.0%"
