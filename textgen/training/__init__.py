"""Training our own models: `python -m textgen train --arch lstm --data FILE --out DIR`.

- `data`: reading and splitting a text file; `config`: `TrainConfig` (no torch);
- `trainer`: the training loop (one or many processes) and its checkpoints;
- `model_card`: what a finished run leaves for its readers (card, summary, loss figure).

It uses `models` and `local` (tokenizers, devices, scoring); nothing above it.
"""
