"""Our own architectures: the registry, the written contract and one model file each.

- `architectures`: the registry, one entry per architecture (no torch: the CLI's --help reads it);
- `contract`: `TextgenModel`, the base class every architecture meets (memory, context, one step);
- `recurrent`, `transformer`: the model files; `common`: the loss they share;
- `auto`: registers them with transformers' Auto classes (`import textgen.models.auto`).

This face imports nothing, so `from textgen.models import architectures` stays free of torch.
"""
