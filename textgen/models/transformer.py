"""A small decoder-only Transformer language model (GPT-style), as a Hugging Face model.

Pre-norm blocks of causal multi-head self-attention and an MLP, dropout, and the output head tied to the token
embedding. Positions are either learned, one vector per place in the context (GPT-2's way, the config's default and
every checkpoint before 2026-12-07), or rotary (`position_embedding="rotary"`, RoFormer's way, as Llama does it):
queries and keys are turned by an angle that grows with their place, so attention sees how far apart two tokens are
rather than where each one stands. Keys and values of earlier tokens live in transformers' `DynamicCache` (rotary
keys are cached already turned), so `generate` (and our decoding loop) feed one new token per step.

    python -c "from textgen.models.transformer import *; print(TransformerConfig(position_embedding='rotary'))"
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import DynamicCache, PretrainedConfig
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from textgen.models.architectures import POSITION_EMBEDDINGS
from textgen.models.common import causal_lm_loss
from textgen.models.contract import TextgenModel


class TransformerConfig(PretrainedConfig):
    model_type = "textgen_transformer"
    # The names transformers (and our decoding loop) look for, as GPT-2 maps them.
    attribute_map = {
        "max_position_embeddings": "n_positions",
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
    }

    vocab_size: int = 66
    n_positions: int = 256
    n_embd: int = 256
    n_layer: int = 6
    n_head: int = 8
    dropout: float = 0.1
    bias: bool = False
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    position_embedding: str = "learned"  # learned | rotary
    rope_theta: float = 10000.0  # rotary only: the slowest pair of a head turns once in about 2 pi * theta tokens

    def __post_init__(self, **kwargs):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding must be one of {', '.join(POSITION_EMBEDDINGS)}, "
                             f"not {self.position_embedding!r}")
        if self.position_embedding == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rotary positions need an even head size, not {self.n_embd // self.n_head}")
        super().__post_init__(**kwargs)


# (cos, sin), each (..., T, head size): the angles of rotary positions for the tokens at hand, or None when learned.
Angles = tuple[torch.Tensor, torch.Tensor] | None


class Rotary(nn.Module):
    """Rotary position angles (RoFormer, arXiv:2104.09864): pair i of a head's numbers turns by pos * theta^(-2i/D).

    Written out rather than taken from transformers' Llama code: that one is tied to Llama's config and cache
    layout, and this is a few lines. The frequencies are computed at each call, not kept in a buffer: transformers
    builds a model on the meta device before loading its weights, and a buffer that is not in the checkpoint would
    come back uninitialised (it did, in a test); D/2 numbers cost nothing next to the attention.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.head_size = config.n_embd // config.n_head
        self.theta = config.rope_theta

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(0, self.head_size, 2, dtype=torch.float32, device=positions.device) / self.head_size
        angles = positions.float()[..., None] * self.theta ** -steps  # (..., D/2)
        angles = torch.cat((angles, angles), dim=-1)  # (..., D): the two halves of a head form the pairs
        return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, angles: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Queries or keys (B, H, T, D) turned by their positions' angles (cos, sin), each broadcast to (B, H, T, D)."""
    cos, sin = angles
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((-second, first), dim=-1) * sin.to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, cache: Cache | None, angles: Angles, attentions: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if angles is not None:
            q, k = rotate(q, angles), rotate(k, angles)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        S = k.shape[2]
        if T == S:
            mask, causal = None, T > 1
        elif T == 1:
            mask, causal = None, False  # one new token may look at everything before it
        else:  # several new tokens after a cached prefix: causal within the new ones
            mask, causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T), False
        if attentions is not None:
            y = self._with_weights(q, k, v, mask, causal, attentions)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
            )
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))

    def _with_weights(self, q, k, v, mask, causal: bool, attentions: list[torch.Tensor]) -> torch.Tensor:
        """The same attention written out, for when its weights are asked for (`output_attentions=True`):
        scaled_dot_product_attention returns none. Only then: the fused kernel is faster and leaner."""
        T, S = q.shape[2], k.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        if causal:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        attentions.append(weights)  # batch x heads x queries x keys, before dropout: what the model attends to
        return F.dropout(weights, self.dropout, self.training) @ v


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = SelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cache: Cache | None, angles: Angles, attentions: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, angles, attentions)
        return x + self.mlp(self.ln_2(x))


class TransformerForCausalLM(TextgenModel):
    """A GPT-style decoder. Its memory is a key/value cache of every token it has read, at most n_positions."""

    config_class = TransformerConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    memory = "cache"
    _tied_weights_keys = {"lm_head.weight": "wte.weight"}

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        rotary = config.position_embedding == "rotary"
        self.wpe = None if rotary else nn.Embedding(config.n_positions, config.n_embd)
        self.rotary = Rotary(config) if rotary else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # GPT-2's scaled init of the projections that write into the residual stream.
        if isinstance(module, (SelfAttention, MLP)):
            std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
            init.normal_(module.proj.weight, mean=0.0, std=std)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    # -- the contract (textgen/models/contract.py) --

    def context_length(self) -> int:
        return self.config.n_positions

    def start_memory(self, batch_size: int) -> Cache:
        return DynamicCache(config=self.config)

    def step(self, input_ids: torch.LongTensor, memory: Cache | None, all_logits: bool = False
             ) -> tuple[torch.Tensor, Cache]:
        out = self(input_ids=input_ids, past_key_values=memory, use_cache=True, logits_to_keep=0 if all_logits else 1)
        return (out.logits if all_logits else out.logits[:, -1]).float(), out.past_key_values

    def step_rows(self, input_ids: torch.LongTensor, memories: list[Cache], sizes: list[int]
                  ) -> tuple[torch.Tensor, list[Cache]]:
        """One new token for several texts at once (textgen.local.batching), each with its own cache.

        Why this way rather than one padded cache with an attention mask: every layer that mixes no tokens
        (embeddings, layer norms, the linear layers, the MLP: nearly all the weights) runs once over all rows,
        which is what batching saves; attention, the only part that reads the past, runs text by text against
        that text's own cache, exactly as the text alone would. So a text comes out bit for bit the same in any
        batch, with no padding of caches to a common length, no masks and no copying of caches to join them.
        Rows past sum(sizes) are padding (textgen.local.batching pads to a multiple of 4): they get no attention.
        """
        n, C = input_ids.shape[0], self.config.n_embd
        H = self.config.n_head
        lengths = [memory.get_seq_length() for memory in memories]
        if max(lengths) + 1 > self.config.n_positions:
            raise ValueError(f"{max(lengths) + 1} tokens exceed this model's context of {self.config.n_positions}")
        pos = torch.tensor([p for length, size in zip(lengths, sizes) for p in [length] * size]
                           + [0] * (n - sum(sizes)), device=input_ids.device)
        x, angles = self._embed(input_ids, pos[:, None])  # (N, 1, C)
        if angles is not None:
            angles = tuple(a[:, None] for a in angles)  # (N, 1, 1, D): each row at its own place
        for block in self.blocks:
            attn = block.attn
            q, k, v = attn.qkv(block.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(n, 1, H, C // H).transpose(1, 2) for t in (q, k, v))  # (N, H, 1, D)
            if angles is not None:
                q, k = rotate(q, angles), rotate(k, angles)
            y = torch.zeros_like(q)
            start = 0
            for memory, size in zip(memories, sizes):
                rows = slice(start, start + size)
                keys, values = memory.update(k[rows], v[rows], attn.layer_idx)
                y[rows] = F.scaled_dot_product_attention(q[rows], keys, values)
                start += size
            x = x + attn.proj(y.transpose(1, 2).reshape(n, 1, C))
            x = x + block.mlp(block.ln_2(x))
        return self.lm_head(self.ln_f(x))[:, -1].float(), memories

    def _embed(self, input_ids: torch.LongTensor, pos: torch.Tensor) -> tuple[torch.Tensor, Angles]:
        """The tokens' vectors, with learned positions added to them; or, for rotary positions, the angles that
        attention turns queries and keys by. `pos` has the shape of `input_ids` or of its last dimension."""
        if self.rotary is not None:
            return self.wte(input_ids), self.rotary(pos)
        return self.wte(input_ids) + self.wpe(pos), None

    def attention_weights(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """(layers, heads, T): where each head looks from the last token of `input_ids` (1, T)."""
        attentions = self(input_ids=input_ids, output_attentions=True, use_cache=False).attentions
        return torch.stack([a[0, :, -1, :].float() for a in attentions])

    def forward(
        self,
        input_ids: torch.LongTensor,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        T = input_ids.shape[1]
        if past + T > self.config.n_positions:
            raise ValueError(
                f"{past + T} tokens exceed this model's context of {self.config.n_positions}; "
                "cut the input from the left"
            )
        pos = torch.arange(past, past + T, device=input_ids.device)
        x, angles = self._embed(input_ids, pos)  # (B, T, C); angles (T, D) broadcast over batch and heads
        x = self.drop(x)
        # Attention weights are computed only when asked for (textgen.service.explain); None keeps the fused kernel.
        attentions: list[torch.Tensor] | None = [] if output_attentions else None
        for block in self.blocks:
            x = block(x, past_key_values, angles, attentions)
        x = self.ln_f(x)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = self.lm_head(x)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=past_key_values,
                                      attentions=tuple(attentions) if attentions is not None else None)
