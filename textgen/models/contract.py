"""The written contract of our architectures, and the one place any model takes a step.

    from textgen.models.contract import TextgenModel, context_length, start_memory, step
    memory = start_memory(model, batch_size=1)
    logits, memory = step(model, ids, memory)          # (B, V): what comes after the last token of ids
    logits, memory = step(model, next_ids, memory)     # one more token, reading only the new one

An architecture is one model file (a transformers config class and a model class deriving from `TextgenModel`)
and one entry in `textgen/models/architectures.py`. Generation, evaluation, the step-by-step views and the benchmarks
read a model only through what this module defines, never through private flags, so a new architecture of any
kind (recurrent, attention, or neither) trains, evaluates, writes its card, generates and shows in every picker.

What the model class says:

- `memory`: what it carries from one token to the next while writing,
  "state": a fixed-size hidden state (RNN, LSTM, GRU): it reads texts of any length;
  "cache": keys and values of every token so far (a Transformer): it reads at most `context_length()` tokens;
  "none": nothing at all (a bigram model): the next token depends only on the tokens it is handed.
- `context_length()`: how many tokens it can look at; None for no limit ("state" and "none" models).
- `start_memory(batch_size)`: the memory before the first token (None when it starts empty).
- `step(input_ids, memory, all_logits=False)`: read `input_ids` (B, T) after what `memory` holds; return the
  logits of the last position (B, V), or of every position (B, T, V) with `all_logits`, and the memory after them.
  A "none" model is handed only the new tokens too: whatever it needs of the past it must keep in its memory.
- `memory_batch_dim`: where the rows (one per text being written) sit in a "state" memory's tensors (0 unless
  said; 1 for torch's RNNs, whose state is (layers, B, hidden)). It lets several requests' memories be stepped
  as one batch (`join_memory`, `split_memory`, used by textgen.local.batching); a "cache" model batches with
  `step_rows`.
- Optional, for a "cache" model to be batched: `step_rows(input_ids, memories, sizes)`: one new token for each
  row of `input_ids` (N, 1), where the first `sizes[0]` rows continue `memories[0]`, the next `sizes[1]`
  `memories[1]`, and so on (rows past them are padding, to be ignored); returns the logits (N, V) and the
  memories, each row's result what `step` would give it alone at the same N. Each text keeps its own cache, so
  no padding or mask is needed however their lengths differ.
- Nothing to write for beam search (textgen.local.decoding): `select_rows` below picks and repeats rows of any
  kind of memory (a cache is reordered, a state indexed along `memory_batch_dim`), so every model searches.
- `forward(input_ids, labels=None)`: training's call, transformers' convention (an output with `.loss`, `.logits`).
- Optional, for the step-by-step views (each says plainly when a model does not offer it):
  `attention_weights(input_ids)` -> (layers, heads, T): where each head looks from the last token;
  `unit_layers`, `unit_states` and `unit_values(input_ids, layer, state)` -> (T, units): a recurrent model's memory
  units after each token.

Hugging Face models that are not ours (GPT-2, Llama, anything `from_pretrained` loads) take their step here too,
through their key/value cache: `step`, `start_memory`, `context_length` and `memory_kind` below cover both.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import Cache, DynamicCache, GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicLayer

MEMORY_KINDS = ("state", "cache", "none")


class TextgenModel(PreTrainedModel, GenerationMixin):
    """The base class of our architectures: the contract above, with the defaults of a model with no extras."""

    memory: ClassVar[str] = "state"  # one of MEMORY_KINDS
    unit_layers: ClassVar[int] = 0  # layers of memory units the units view can show (0: none)
    unit_states: ClassVar[tuple[str, ...]] = ()  # their kinds, e.g. ("cell", "hidden") for an LSTM
    memory_batch_dim: ClassVar[int] = 0  # the rows' dimension in a "state" memory's tensors

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.memory not in MEMORY_KINDS:
            raise TypeError(f"{cls.__name__}.memory must be one of {MEMORY_KINDS}, not {cls.memory!r}")
        # transformers' generate reads these two: a model without a key/value cache carries its own memory
        # (an output field named `state`) and must not be handed a DynamicCache.
        cls._is_stateful = cls.memory != "cache"

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return cls.memory == "cache"

    def context_length(self) -> int | None:
        return None

    def start_memory(self, batch_size: int) -> Any:
        return None

    def step(self, input_ids: torch.LongTensor, memory: Any, all_logits: bool = False) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define step(input_ids, memory, all_logits)")

    def step_rows(self, input_ids: torch.LongTensor, memories: list[Any], sizes: list[int]
                  ) -> tuple[torch.Tensor, list[Any]]:
        raise NotImplementedError

    @property
    def has_attention(self) -> bool:
        return type(self).attention_weights is not TextgenModel.attention_weights

    @property
    def has_units(self) -> bool:
        return self.unit_layers > 0 and type(self).unit_values is not TextgenModel.unit_values

    def attention_weights(self, input_ids: torch.LongTensor) -> torch.Tensor:
        raise NotImplementedError

    def unit_values(self, input_ids: torch.LongTensor, layer: int, state: str) -> torch.Tensor:
        raise NotImplementedError


# -- any model, ours or Hugging Face's ------------------------------------------------------------------------------


def is_ours(model: object) -> bool:
    return isinstance(model, TextgenModel)


def memory_kind(model: PreTrainedModel) -> str:
    """"state", "cache" or "none" (see TextgenModel.memory); a Hugging Face model keeps a key/value cache."""
    return model.memory if is_ours(model) else "cache"


def context_length(model: PreTrainedModel) -> int | None:
    """How many tokens the model can look at, or None when it has no limit (recurrent and memoryless models)."""
    if is_ours(model):
        return model.context_length()
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def start_memory(model: PreTrainedModel, batch_size: int = 1) -> Any:
    """The memory before the first token: ours say; a Hugging Face model gets an empty key/value cache."""
    return model.start_memory(batch_size) if is_ours(model) else DynamicCache(config=model.config)


def can_batch(model: PreTrainedModel) -> bool:
    """Whether several requests' decode steps can be taken as one batch: ours with a fixed-size state or none
    (their memories are joined, `join_memory`) or with `step_rows`; Hugging Face models (`step_rows` below)."""
    if not is_ours(model):
        return True
    return model.memory in ("state", "none") or has_step_rows(model)


def has_step_rows(model: PreTrainedModel) -> bool:
    """Whether `step_rows` batches this model's decode steps: ours that define it, and Hugging Face models."""
    return type(model).step_rows is not TextgenModel.step_rows if is_ours(model) else True


def step_rows(model: PreTrainedModel, input_ids: torch.LongTensor, memories: list[Any], sizes: list[int]
              ) -> tuple[torch.Tensor, list[Any]]:
    """One new token for several texts, each with its own memory (see TextgenModel.step_rows): ours say how;
    a Hugging Face model's caches are joined, left-padded to the longest, and split again after the step."""
    if is_ours(model):
        return model.step_rows(input_ids, memories, sizes)
    return _padded_step(model, input_ids, memories, sizes)


def _padded_step(model: PreTrainedModel, input_ids: torch.LongTensor, memories: list[DynamicCache],
                 sizes: list[int]) -> tuple[torch.Tensor, list[DynamicCache]]:
    """A Hugging Face model's decode step over texts of different lengths, as `generate` batches them: one cache
    padded on the left, an attention mask that hides the padding and each row's own positions.

    Why this and not a paged or static cache: the texts join and leave at every token, and a request keeps its
    own cache between steps (Stop, the step view's undo), so joining copies the caches at every step. Each is
    copied once into the joined cache, and the texts keep views of the step's cache; padding, joining, filling a
    new cache, cutting out and filling again had copied each five times, besides the model's own append. A
    GPT-2-shaped model's 8 x 50 tokens then took 10.8-11.0 s, now 9.4-9.7 (in-process, one thread).
    Unlike our own models, a row's numbers are not exactly those of the text alone (attention over padded
    lengths rounds differently), so a sampled text can differ from the same request alone: README, Performance,
    says how often.
    """
    n = input_ids.shape[0]
    lengths = [memory.get_seq_length() for memory in memories]
    longest = max(lengths)
    row_lengths = [length for length, size in zip(lengths, sizes) for _ in range(size)]
    row_lengths += [longest] * (n - len(row_lengths))  # padding rows: attend to the longest text's slot
    joined = _cache_of([(_joined(n, longest, [memory.layers[layer].keys for memory in memories]),
                         _joined(n, longest, [memory.layers[layer].values for memory in memories]))
                        for layer in range(len(memories[0].layers))])
    positions = torch.arange(longest + 1, device=input_ids.device)
    starts = torch.tensor([longest - length for length in row_lengths], device=input_ids.device)
    mask = (positions[None, :] >= starts[:, None]).long()  # (rows, longest + 1): 0 over the padding
    position_ids = torch.tensor(row_lengths, device=input_ids.device)[:, None]
    out = model(input_ids=input_ids, past_key_values=joined, attention_mask=mask, position_ids=position_ids,
                use_cache=True, logits_to_keep=1)
    new, start = [], 0
    for length, size in zip(lengths, sizes):
        rows, keep = slice(start, start + size), slice(longest - length, None)
        # Views of the step's cache, not copies: the next step's join reads them once, and the model's own update
        # makes a new tensor rather than writing into them.
        new.append(_cache_of([(layer.keys[rows, :, keep], layer.values[rows, :, keep])
                              for layer in out.past_key_values.layers]))
        start += size
    return out.logits[:, -1].float(), new


def reads_prompts_together(model: PreTrainedModel) -> bool:
    """Whether `prefill_rows` can read several texts' first tokens in one step: Hugging Face models whose fresh
    cache is plain (no sliding window, whose layers keep only their last tokens and cannot be cut per text)."""
    return not is_ours(model) and all(type(layer).__name__ == "DynamicLayer" for layer in start_memory(model).layers)


def is_fresh(memory: Any) -> bool:
    """Whether a Hugging Face model's memory holds nothing yet (a text's first piece comes next)."""
    return isinstance(memory, DynamicCache) and memory.get_seq_length() == 0


def prefill_rows(model: PreTrainedModel, prompts: list[torch.LongTensor]) -> tuple[torch.Tensor, list[DynamicCache]]:
    """Several texts' first tokens, each (rows, T) with T its own, read by a Hugging Face model in one step:
    left-padded to the longest, with a mask that hides the padding and each row's own positions, as `generate`
    batches its prompts. (logits (all rows, V) after each text's last token, each text's cache as views.)

    Why: a crowd's short prompts, read one after another, each took a step of nearly a whole decode step's cost
    (a GPT-2-shaped model reads 2 tokens or 7 in 70-80 ms, bound by reading its weights), so the eighth text of a
    class started half a second after the first. Not exact, as `_padded_step`."""
    lengths = [ids.shape[1] for ids in prompts]
    longest = max(lengths)
    starts = torch.tensor([longest - length for ids, length in zip(prompts, lengths) for _ in range(ids.shape[0])],
                          device=prompts[0].device)  # (rows,)
    ids = torch.cat([torch.cat([ids[:, :1].expand(-1, longest - ids.shape[1]), ids], dim=1) for ids in prompts])
    positions = torch.arange(longest, device=ids.device)[None, :] - starts[:, None]  # (rows, longest)
    mask = (positions >= 0).long()  # 0 over the padding
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions.clamp(min=0), use_cache=True,
                past_key_values=start_memory(model), logits_to_keep=1)
    caches, row = [], 0
    for prompt, length in zip(prompts, lengths):
        rows, keep = slice(row, row + prompt.shape[0]), slice(longest - length, None)
        caches.append(_cache_of([(layer.keys[rows, :, keep], layer.values[rows, :, keep])
                                 for layer in out.past_key_values.layers]))
        row += prompt.shape[0]
    return out.logits[:, -1].float(), caches


def _cache_of(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A plain cache holding these (keys, values) of each layer as they are: `DynamicCache.update` on an empty
    cache would copy them (it appends to an empty tensor)."""
    cache = DynamicCache()
    for keys, values in layers:
        layer = DynamicLayer()
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        cache.layers.append(layer)
    return cache


def _joined(n: int, longest: int, parts: list[torch.Tensor]) -> torch.Tensor:
    """The texts' (rows, heads, T, head size) tensors in one of n rows, each left-padded with zeros to `longest`;
    rows past theirs copy the first. One copy of each cache (padding it, then joining, was two)."""
    first = parts[0]
    out = torch.empty((n, first.shape[1], longest, first.shape[3]), dtype=first.dtype, device=first.device)
    start = 0
    for part in parts:
        rows, length = part.shape[0], part.shape[2]
        out[start:start + rows, :, :longest - length] = 0
        out[start:start + rows, :, longest - length:] = part
        start += rows
    if start < n:
        out[start:] = out[:1]
    return out


def joinable_caches(memories: list[Any]) -> bool:
    """Whether Hugging Face caches can be joined by `_padded_step`: plain ones, every layer filled (no sliding
    windows, which keep only their last tokens)."""
    return all(isinstance(m, DynamicCache) and m.layers and all(
        type(layer).__name__ == "DynamicLayer" and layer.is_initialized for layer in m.layers) for m in memories)


def join_memory(model: PreTrainedModel, memories: list[Any]) -> Any:
    """One memory holding the rows of `memories` in order (for `can_batch` models)."""
    return _map_tensors(lambda *parts: torch.cat(parts, dim=model.memory_batch_dim), *memories)


def split_memory(model: PreTrainedModel, memory: Any, sizes: list[int]) -> list[Any]:
    """`memory`'s rows back as one memory per request, `sizes[i]` rows each (extra rows at the end dropped)."""
    dim, out, start = model.memory_batch_dim, [], 0
    for size in sizes:
        out.append(_map_tensors(lambda t, start=start, size=size: t.narrow(dim, start, size), memory))
        start += size
    return out


def select_rows(model: PreTrainedModel, memory: Any, rows: torch.LongTensor) -> Any:
    """The memory of the texts `rows` (row numbers of `memory`, repeats allowed): how a beam search keeps its best
    texts. A key/value cache (ours or a Hugging Face model's) is reordered in place, as transformers' own beam
    search does it; a fixed-size state has its rows picked along `memory_batch_dim`."""
    if memory is None:
        return None
    if isinstance(memory, Cache):
        memory.reorder_cache(rows)
        return memory
    return _map_tensors(lambda t: t.index_select(model.memory_batch_dim, rows), memory)


def _map_tensors(fn, *trees: Any) -> Any:
    """`fn` applied across the tensors of memories of one shape: a tensor, a tuple or list of them, or None."""
    first = trees[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return fn(*trees)
    return type(first)(_map_tensors(fn, *parts) for parts in zip(*trees))


def step(model: PreTrainedModel, input_ids: torch.LongTensor, memory: Any, all_logits: bool = False
         ) -> tuple[torch.Tensor, Any]:
    """The model reads `input_ids` (B, T) after `memory`: (logits (B, V) of the last position, or (B, T, V) with
    `all_logits`; the memory after them)."""
    if is_ours(model):
        return model.step(input_ids, memory, all_logits)
    out = model(input_ids=input_ids, past_key_values=memory, use_cache=True, logits_to_keep=0 if all_logits else 1)
    logits = out.logits if all_logits else out.logits[:, -1]
    return logits.float(), out.past_key_values
