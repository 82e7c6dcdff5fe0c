"""Run under torchrun by tests/test_distributed.py: trains a few steps, then says whether the processes agree.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_probe.py DATA OUT

Each process prints one JSON line: its index, a checksum of its weights after training, and the start of the
first window its batch generator drew (so the test can see the weights agree and the data differs).
"""

import json
import sys

import torch

from textgen.training.config import TrainConfig
from textgen.training.data import random_windows
from textgen.training.trainer import Trainer

data, out = sys.argv[1], sys.argv[2]
trainer = Trainer(TrainConfig(arch="lstm", data=data, out=out, hidden_size=32, embedding_size=16, num_layers=1,
                              block_size=32, batch_size=4, max_steps=4, eval_interval=2, eval_batches=1,
                              val_fraction=0.2, tensorboard=False))
peek = torch.Generator()
peek.set_state(trainer.generator.get_state())  # a copy: the run itself draws from the original
first = random_windows(trainer.train_ids, 4, 32, peek)[0, :8].tolist()
summary = trainer.train()
model = trainer.accelerator.unwrap_model(trainer.model)
checksum = sum(float(p.double().sum()) for p in model.parameters())
print(json.dumps({"process": trainer.accelerator.process_index, "checksum": checksum, "first_window": first,
                  "val": summary["best_val_loss_per_token"]}), flush=True)
