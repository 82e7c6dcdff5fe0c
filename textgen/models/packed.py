"""Matrix products for a batch of a few rows on CPU, on weights that oneDNN has laid out once: faster, and each
row bit for bit what it is alone.

    from textgen.models.packed import PackedWeight, pack_linear_layers
    product = PackedWeight.of(weight)            # weight (out, in); None where packing does not apply
    y = product(x, bias)                         # x (rows, in) -> (rows, out), as torch.addmm(bias, x, weight.t())
    added = pack_linear_layers(hf_model)         # a Hugging Face model's linear layers; the bytes it added

Why: the scheduler (textgen.local.batching) writes a crowd's texts one forward pass a token, which pays only if
a product of 8 or 16 rows costs little more than one row. torch's default CPU path (MKL's sgemm) does not give
that for the small, wide products of decoding. Measured on our 2-core CPU, one thread:
- GPT-2 small's output layer (768 x 50,257): MKL 21 ms for 1 row, 109 ms for 8, 144 ms for 16; packed 21, 45, 76;
- the shipped LSTM's second layer ([x | h] 1,024 -> 2,048 gates): MKL 1.7 ms for 1 row, 4.5 for 4, 7.6 for 16;
  packed 1.9, 2.2, 4.5.
Exactness: MKL rounds a row differently for 2-7 rows than alone (so the scheduler pads our models' decode batches
to 4 rows); on packed weights each row came out bit for bit the same for 1 to 40 rows, on one thread or two,
for every weight shape of our models and GPT-2's (tests/test_packed.py checks it), once a single row goes
through as two where this CPU's oneDNN would round it apart (PackedWeight._rounds_one_row_apart). torch itself
uses these kernels only inside `torch.compile`'s frozen graphs, which would compile again for every batch size and cache
length a crowd goes through; this keeps the models eager and swaps only the product.

Only large weights are packed (at least MIN_ELEMENTS): a call on packed weights costs about 0.1 ms more, which
small layers (our Transformer's 192-wide ones: 0.05 ms a product on MKL) do not win back. Float32 on CPU only,
and only where no gradient is taken (generation runs in inference mode; training takes the plain product).
The price is memory: a second copy of each packed weight (GPT-2 small: about 500 MB). `TEXTGEN_PACK_WEIGHTS=0`
turns it off.
"""

from __future__ import annotations

__all__ = ["MIN_ELEMENTS", "PackedWeight", "pack_linear_layers", "packed_bytes"]

import functools
import logging
import os
import types
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger("textgen")
MIN_ELEMENTS = 1 << 18  # 1 MB of float32: GPT-2's 768 x 768 and up, the recurrent models' [x | h] weights
# The batch size oneDNN lays the weights out for; any number of rows works, this one picks the layout (a
# crowd's decode batches are 4-32 rows).
LAYOUT_ROWS = 8


def enabled() -> bool:
    """Whether this torch has the kernel, it runs on this CPU, and the operator has not turned packing off."""
    return os.environ.get("TEXTGEN_PACK_WEIGHTS", "1") != "0" and _kernel_works()


@functools.cache
def _kernel_works() -> bool:
    """One tiny packed product, tried once: a torch built without oneDNN, or a CPU its kernels refuse, keeps the
    default products everywhere instead of failing mid-text."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(8, 8), LAYOUT_ROWS)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(2, 8), weight, None, "none", [], "")
        return bool(torch.equal(out, torch.full((2, 8), 8.0)))
    except RuntimeError as err:
        log.warning("oneDNN's packed products do not run here (%s); the default kernels are used", err)
        return False


class PackedWeight:
    """A weight (out, in) laid out for oneDNN, packed again whenever the weight changes in place."""

    def __init__(self, source: Callable[[], torch.Tensor], version: Callable[[], int]):
        self.source, self.version = source, version
        self.packed: torch.Tensor | None = None
        self.packed_version = -1
        self.nbytes = 0
        self.single_apart = False  # found when it packs: _rounds_one_row_apart

    @classmethod
    def of(cls, weight: torch.Tensor, version: Callable[[], int] | None = None) -> PackedWeight | None:
        """A packed product for `weight` (out, in), or None where packing does not apply (not float32 on CPU, too
        small, turned off). `version` says when the weight changed (default: the tensor's own version)."""
        if (not enabled() or weight.device.type != "cpu" or weight.dtype != torch.float32
                or weight.dim() != 2 or weight.numel() < MIN_ELEMENTS):
            return None
        return cls(lambda: weight, version or (lambda: weight._version))

    def usable(self, x: torch.Tensor) -> bool:
        """Whether `x` can take the packed product: float32 on CPU, and no gradient wanted."""
        return not torch.is_grad_enabled() and x.dtype == torch.float32 and x.device.type == "cpu"

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x (rows, in) times the weight's transpose, plus bias: (rows, out)."""
        if self.packed is None or self.version() != self.packed_version:
            weight = self.source().detach().contiguous()
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, LAYOUT_ROWS)
            self.packed_version, self.nbytes = self.version(), weight.numel() * weight.element_size()
            self.single_apart = self._rounds_one_row_apart(weight.shape[1])
        if len(x) == 1 and self.single_apart:  # as a batch of two (itself and zeros) rounds it: see below
            pair = torch.cat([x, x.new_zeros(1, x.shape[1])])
            return self._product(pair, bias)[:1]
        return self._product(x.contiguous(), bias)

    def _product(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, bias, "none", [], "")

    def _rounds_one_row_apart(self, width: int) -> bool:
        """Whether oneDNN rounds a row alone differently from the same row in a batch, for this weight on this CPU:
        on an AVX-512 EPYC it takes another kernel for one row at 3,072 inputs (GPT-2's MLP output), and not at
        1,024. Where it does, one row goes through as two (itself and zeros), at about 0.02 ms more a product;
        elsewhere it keeps the plain call."""
        rows = torch.randn(2, width, generator=torch.Generator().manual_seed(0))
        return not torch.equal(self._product(rows[:1], None), self._product(rows, None)[:1])


def pack_linear_layers(model: nn.Module, max_bytes: int | None = None) -> int:
    """Give each large linear layer of a Hugging Face model a packed product for inference; the bytes it added.

    `nn.Linear` layers and transformers' `Conv1D` (GPT-2's) qualify. A layer keeps its parameters (saving, tied
    embeddings and the inside-the-model views read those) and its own forward for one row (MKL is a little
    faster there: GPT-2 small, 70 against 80 ms a step) and wherever a gradient is taken.
    Nothing is packed when the copies would take more than `max_bytes`: a crowd served a little slower is
    better than a server killed for memory (a 7B model's copies would be 28 GB).
    """
    if getattr(model, "_packed_bytes", 0):
        return model._packed_bytes
    layers = [(module, product) for module in model.modules()
              if (weight := _weight_of(module)) is not None
              and (product := PackedWeight.of(weight, lambda module=module: module.weight._version)) is not None]
    wanted = sum(_weight_of(module).numel() * 4 for module, _ in layers)  # float32 copies
    if max_bytes is not None and wanted > max_bytes:
        log.info("weights not packed for batched steps: the copies would take %d MB, %d MB can be spared",
                 wanted >> 20, max(0, max_bytes) >> 20)
        return 0
    added = 0
    for module, product in layers:
        weight = _weight_of(module)
        try:
            product(torch.zeros(1, weight.shape[1]), None)  # packs now, and fails here on a CPU without the kernel
        except RuntimeError as err:
            log.warning("could not pack %s's weights (%s); they stay on the default kernels",
                        type(module).__name__, err)
            break
        module.forward = types.MethodType(_packed_forward(product, module.forward), module)
        added += product.nbytes
    model._packed_bytes = added
    return added


def packed_bytes(model: nn.Module) -> int:
    """Memory the packed copies of `model`'s weights take (0 when none were made)."""
    return getattr(model, "_packed_bytes", 0)


def _weight_of(module: nn.Module) -> torch.Tensor | None:
    """The (out, in) weight of a linear layer, or None for anything else."""
    if type(module) is nn.Linear:
        return module.weight
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers' GPT-2 layer: x @ W (in, out)
        return module.weight.t()
    return None


def _packed_forward(product: PackedWeight, own: Callable) -> Callable:
    def forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1] or not product.usable(x):  # one row, or a gradient wanted: the layer's own
            return own(x)
        out = product(x.reshape(-1, x.shape[-1]), module.bias)  # (B*T, out)
        return out.view(*x.shape[:-1], out.shape[-1])
    return forward
