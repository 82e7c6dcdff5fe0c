"""Models whose weights are here: tokenizers, devices, GGUF files, the decoding loop, the scheduler, scoring.

- `tokenization`: char and byte-level BPE tokenizers, end-of-text tokens, special-token labels;
- `devices`: where a model runs (CPU threads, GPU, dtype);
- `gguf`: GGUF files, converted once to a safetensors folder (`python -m textgen.local.gguf FILE`);
- `batching`: the scheduler of each loaded model (one forward pass a token for every request);
- `generation`: the one streaming loop and the sampler; `evaluate`: scoring a text;
- `model`: `LoadedModel`, a local model as a backend.

It uses `core` and `models`, and knows nothing of the catalog, the page or engines.
"""
