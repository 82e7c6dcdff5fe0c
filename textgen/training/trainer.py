"""Train one of our language models on a UTF-8 text file.

    python -m textgen train --arch transformer --data ../shared/data/tinyshakespeare_train.txt \
        --out runs/transformer --time-budget 240

Three stretches of consecutive text (10% of the file) are held out for validation. The learning rate warms up, then
follows a cosine down to a tenth of its peak over the run's length, measured in steps or in seconds, whichever
limit is set (with a time budget the schedule still ends exactly when the time is up). The checkpoint with the
best validation loss is kept in `--out`/training_state/best while it trains, and moves into `--out` as a Hugging
Face directory (config, safetensors weights, tokenizer) only with its model card, summary, `loss.csv` and
`loss.png`: a run that fails or is stopped never leaves weights without them. `--resume` continues an
interrupted run from `--out`.
Device placement and mixed precision are accelerate's, so `accelerate launch -m textgen train ...` runs
on several GPUs, and `python -m torch.distributed.run --nproc_per_node 2 -m textgen train ...` on several CPU
processes (data-parallel: one model, each process its own windows, the effective batch is batch x processes).

The config and recipes are in textgen/training/config.py (no torch), the architectures in
textgen/models/architectures.py, the model card and loss chart in textgen/training/model_card.py; this module is
the loop and the --resume state.
"""

from __future__ import annotations

import csv
import gc
import importlib.util
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, gather
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

import textgen.models.auto  # noqa: F401  (registers the registry's architectures with the Auto classes)
from textgen.local.devices import configure_cpu_threads, pick_device, pick_mixed_precision
from textgen.local.evaluate import score_text
from textgen.local.tokenization import train_bpe_tokenizer, train_char_tokenizer
from textgen.models import architectures
from textgen.models.contract import context_length, start_memory, step
from textgen.training.clock import TrainingClock
from textgen.training.config import SIZE_FIELDS, TrainConfig, lr_at
from textgen.training.data import random_windows, read_text, split_text
from textgen.training.model_card import earlier_stages, plot_loss, write_model_card

STATE_DIR = "training_state"
# The best checkpoint so far, inside STATE_DIR: it moves into OUT only once its card and summary are written, so
# that OUT never holds weights without them (a run that fails or is stopped leaves OUT as it was; --resume goes on).
BEST_DIR = "best"
# Held-out pieces at least this long are whole stretches of scenes (textgen.training.config: the default split), whose
# score predicts unseen text; the page's default model is chosen by it (app.default_model).
BLOCK_CHARS = 20_000
MODEL_FILES = ("model.safetensors", "generation_config.json", "config.json")  # config.json last: it makes a model
# The batch generators of processes 1..N-1 of a data-parallel run (process 0's stays in optimizer.safetensors,
# where a one-process run keeps it: its state files are the same as before multi-process training existed).
PROCESS_RNG_FILE = "process_rng.safetensors"
# The bar counts percent of the run (steps or seconds, whichever limit is nearer), so it reads
# " 22%|██▏       | 00:07 elapsed, 00:24 left, step 40, loss 2.314, 9,120 tok/s" (tqdm puts the ", " before
# the postfix).
BAR_FORMAT = "{percentage:3.0f}%|{bar:10}| {elapsed} elapsed, {remaining} left{postfix}"


def build_model(cfg: TrainConfig, vocab_size: int) -> PreTrainedModel:
    """A fresh model of `cfg.arch` with the size flags its config takes (the registry's `size_fields`)."""
    arch = architectures.get(cfg.arch)
    config_cls, model_cls = arch.classes()
    sizes = {n: getattr(cfg, n) for n in arch.size_fields if getattr(cfg, n) is not None}
    if arch.context_field:  # a Transformer's context is the training window
        sizes[arch.context_field] = cfg.block_size
    return model_cls(config_cls(vocab_size=vocab_size, **sizes))


def build_tokenizer(cfg: TrainConfig, text: str) -> PreTrainedTokenizerBase:
    if cfg.tokenizer == "char":
        return train_char_tokenizer(text)
    if cfg.tokenizer == "bpe":
        return train_bpe_tokenizer(text.splitlines(keepends=True), vocab_size=cfg.bpe_vocab_size)
    raise ValueError(f"unknown tokenizer {cfg.tokenizer!r}; choose char or bpe")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices only: biases, norms and (as in nanoGPT) nothing 1-D is pulled towards zero.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """One training run. `report`, `report_every` and `stop` are for a watcher (the page's Train tab, through
    textgen/training/worker.py): every `report_every` seconds of training, and at the first and last step, the run
    validates, keeps its best weights and hands `report` a record {"step", "seconds", "train_loss", "val_loss",
    "sample", "tokens_per_second", "progress"}, the sample a few tokens written by the current weights after
    `sample_prompt`; `stop()` returning True ends the run at the next step as if its time were up (so it still
    writes its card and keeps its best weights)."""

    def __init__(self, cfg: TrainConfig, report: Callable[[dict], None] | None = None, report_every: float = 0.0,
                 stop: Callable[[], bool] | None = None, sample_prompt: str = "", sample_tokens: int = 80):
        self.report, self.report_every, self.stop = report, report_every, stop or (lambda: False)
        self.sample_prompt, self.sample_tokens = sample_prompt, sample_tokens
        if cfg.max_steps is None and cfg.time_budget is None:
            raise ValueError("give --max-steps or --time-budget (or both)")
        asked, cfg = cfg, cfg.resolved()  # `asked`: only the flags given (--init-from tells them from the recipe's)
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.tensorboard = _tensorboard_wanted(cfg.tensorboard)
        # cpu=True on a CPU-only machine: only then does accelerate turn torchrun's processes into one gloo
        # (MULTI_CPU) data-parallel group; without it each process would train alone, all writing one folder.
        self.accelerator = Accelerator(mixed_precision=pick_mixed_precision(), cpu=pick_device().type == "cpu",
                                       log_with="tensorboard" if self.tensorboard else None, project_dir=cfg.out)
        acc = self.accelerator
        self.processes = acc.num_processes
        if acc.device.type == "cpu":
            configure_cpu_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # the same first weights in every process (DDP also copies process 0's)
        split = split_text(read_text(cfg.data), cfg.val_fraction, cfg.val_chunks)
        self.val_texts = split.val
        resuming = cfg.resume and (self.out / STATE_DIR).is_dir()
        if resuming:
            self.tokenizer = load_tokenizer(self.out / STATE_DIR)
        elif cfg.init_from:
            self.tokenizer = load_tokenizer(cfg.init_from)
        else:
            self.tokenizer = self._shared_tokenizer(cfg, "".join(split.train))
        self.train_ids = torch.cat([self._ids(piece) for piece in split.train])
        self.val_windows = self._val_windows([self._ids(chunk) for chunk in split.val])
        self.model = self._init_model(cfg, asked)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99), fused=False
        )
        self.step, self.elapsed, self.best_val = 0, 0.0, float("inf")
        # Read now, not when the run ends: --init-from's folder may be replaced while this run trains (a newer
        # stage shipped in its place), and the card must list the stages these weights really came from.
        self.earlier_stages = earlier_stages(cfg.init_from) if cfg.init_from else []
        # Each process draws its own windows: the data is split between them by the seed (process 0 keeps the
        # plain seed, so a one-process run draws what it always drew).
        self.generator = torch.Generator().manual_seed(cfg.seed + acc.process_index)
        if resuming:
            self._load_state()
        elif acc.is_main_process:
            (self.out / "loss.csv").unlink(missing_ok=True)  # a new run starts a new curve
        if self.processes > 1 and not acc.is_main_process:
            torch.manual_seed(cfg.seed + acc.process_index)  # dropout masks of its own, too
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)  # DDP when several processes

    def _shared_tokenizer(self, cfg: TrainConfig, text: str) -> PreTrainedTokenizerBase:
        """A new tokenizer; with several processes, trained once by process 0 and read by the others, so that
        every process is sure to hold the same vocabulary."""
        acc = self.accelerator
        if self.processes == 1:
            return build_tokenizer(cfg, text)
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            build_tokenizer(cfg, text).save_pretrained(self.out)
        acc.wait_for_everyone()
        return load_tokenizer(self.out)

    def _init_model(self, cfg: TrainConfig, asked: TrainConfig) -> PreTrainedModel:
        if not cfg.init_from:
            return build_model(cfg, len(self.tokenizer))
        # Continue from a finished checkpoint (say, a shipped model in a later session): its weights and
        # tokenizer, with a fresh optimizer and schedule. Its shape is in its weights, so a size flag that differs
        # is refused, not ignored. Dropout is no shape: given, it applies from this stage on (a later stage may
        # want more of it; it was once ignored here, and a run meant to test 0.4 repeated 0.3).
        # In float32 whatever the checkpoint's stored dtype: transformers 5 loads a float16 file (a stage kept small
        # to commit) as float16, and the optimizer would then step in half precision.
        # Set on the config rather than passed as a keyword: a checkpoint of another kind (a GPT-2 folder, say) would
        # otherwise fail inside transformers before the clear refusal below.
        config = AutoConfig.from_pretrained(cfg.init_from)
        if asked.dropout is not None:
            config.dropout = asked.dropout
        model = AutoModelForCausalLM.from_pretrained(cfg.init_from, config=config, dtype=torch.float32)
        arch = architectures.get(cfg.arch)
        expected = arch.classes()[1]
        if type(model) is not expected:
            raise ValueError(f"{cfg.init_from} holds a {type(model).__name__}, not a {expected.__name__}")
        for name in arch.size_fields:
            wanted, has = getattr(asked, name), getattr(model.config, name, None)
            if name != "dropout" and wanted is not None and wanted != has:
                raise ValueError(f"--{name.replace('_', '-')} {wanted} cannot change the shape of {cfg.init_from} "
                                 f"(it has {has}); leave the flag out to continue from it")
        # The checkpoint's sizes, so the card does not list them again; a new dropout stays on it.
        sizes = {name: None for name in SIZE_FIELDS if name != "dropout"} | {"dropout": asked.dropout}
        context = getattr(model.config, arch.context_field, None) if arch.context_field else None
        if context is not None and cfg.block_size > context:
            sizes["block_size"] = context
        self.cfg = replace(cfg, **sizes)
        return model

    # -- the loop ------------------------------------------------------------------------------------

    def progress(self) -> float:
        parts = []
        if self.cfg.max_steps:
            parts.append(self.step / self.cfg.max_steps)
        if self.cfg.time_budget:
            parts.append(self.elapsed / self.cfg.time_budget)
        return max(parts)

    @property
    def effective_batch_size(self) -> int:
        """Windows per optimizer step over all processes: DDP averages the processes' gradients."""
        return self.cfg.batch_size * self.processes

    def train(self) -> dict:
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save_pretrained(self.out)
        n_params = sum(p.numel() for p in self.model.parameters())
        batch = (f"{cfg.batch_size} x {self.processes} processes = {self.effective_batch_size}" if self.processes > 1
                 else f"{cfg.batch_size}")
        acc.print(f"{cfg.arch}: {n_params / 1e6:.2f}M parameters, vocab {len(self.tokenizer)}, "
                  f"{len(self.train_ids):,} train tokens, {len(self.val_texts)} held-out chunks "
                  f"({sum(map(len, self.val_texts)):,} chars), device {acc.device}, "
                  f"effective batch {batch} windows of {cfg.block_size} tokens")
        self._start_tracking()
        tokens_per_step = self.effective_batch_size * cfg.block_size
        # `initial`: a resumed run's bar starts where it stopped, and tqdm measures its rate (so the time left)
        # from the progress made since, not from 0% in the first seconds.
        bar = tqdm(total=100, initial=100 * self.progress(), disable=not acc.is_main_process, bar_format=BAR_FORMAT)
        clock, last_report, loss_ema = TrainingClock(already=self.elapsed), time.perf_counter(), None
        tokens_since, last_sent = 0, -math.inf
        self.model.train()
        finished = self.progress() >= 1.0
        while not finished:
            lr = lr_at(cfg, self.step, self.progress())
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batch = random_windows(self.train_ids, cfg.batch_size, cfg.block_size, self.generator).to(acc.device)
            # oneDNN on for the training step alone: the playground turns it off because nn.LSTM's oneDNN path is
            # slow one token at a time, but over whole windows it is the faster one (a 2x512 LSTM over 32 x 128
            # characters, forward and backward on one thread: 2.8 s with it, 3.8 s without).
            with torch.backends.mkldnn.flags(enabled=True):
                with acc.autocast():
                    loss = self.model(input_ids=batch, labels=batch).loss
                acc.backward(loss)
            if cfg.grad_clip:
                acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            tokens_since += tokens_per_step
            loss_ema = loss.item() if loss_ema is None else 0.9 * loss_ema + 0.1 * loss.item()
            # Every process must stop (and validate) at the same step, or one would wait for the others'
            # gradients forever: they all take process 0's clock.
            self.elapsed = self._agree(clock.lap())  # paused minutes (kill -STOP) not counted: training/clock.py
            finished = self.progress() >= 1.0 or bool(self._agree(float(self.stop())))
            checkpoint = self.step % cfg.eval_interval == 0 or finished
            watched = self.report is not None and (self.step == 1 or self.elapsed - last_sent >= self.report_every)
            if checkpoint or watched:
                val = self.validate()
                train_loss = self._mean(loss_ema)  # each process's loss is on its own windows
                if acc.is_main_process:
                    self._log(train_loss, val, lr)
                rate = tokens_per_step * self.step / max(self.elapsed, 1e-9)
                acc.log({"loss/train": train_loss, "loss/validation": val, "learning_rate": lr,
                         "tokens_per_second": rate}, step=self.step)
                if val < self.best_val:
                    self.best_val = val
                    if acc.is_main_process:
                        self._save_best()
                if checkpoint:  # the full --resume state: a watcher's more frequent records need only the best
                    self._save_state()
                if self.report is not None and acc.is_main_process:
                    self.report({"step": self.step, "seconds": round(self.elapsed, 1),
                                 "train_loss": round(train_loss, 4), "val_loss": round(val, 4),
                                 "sample": self.sample(), "tokens_per_second": round(rate),
                                 "progress": round(min(1.0, self.progress()), 3)})
                    last_sent = self.elapsed
                self.model.train()
            now = time.perf_counter()
            if now - last_report > 1.0:
                bar.n = min(100.0, 100 * self.progress())
                bar.set_postfix_str(f"step {self.step}, loss {loss_ema:.3f}, "
                                    f"{tokens_since / (now - last_report):,.0f} tok/s", refresh=True)
                last_report, tokens_since = now, 0
        clock.close()
        bar.n = 100
        bar.close()
        summary = {"steps": self.step, "train_seconds": round(self.elapsed, 1),
                   "best_val_loss_per_token": round(self.best_val, 4), "processes": self.processes,
                   "effective_batch_size": self.effective_batch_size}
        if cfg.init_from or self.earlier_stages:
            summary["earlier_stages"] = self.earlier_stages
        if acc.is_main_process:
            summary.update(self.final_validation())
            (self.out / "training_summary.json").write_text(
                json.dumps({**summary, "config": asdict(cfg)}, indent=2))
            plot_loss(self.out)
            write_model_card(self.out, cfg, summary, n_params)
            self._publish_best()
        acc.wait_for_everyone()  # the others end with process 0, once its files are written
        # Let go of the data-parallel wrapper (its reducer keeps gloo work alive) before the process group ends:
        # left to the interpreter's exit, that work was seen to abort a process ("terminate called without an
        # active exception", exit -6) after a finished run, under load, and torchrun then reports a failure.
        self.model = acc.unwrap_model(self.model)
        acc.free_memory()
        gc.collect()
        acc.end_training()  # last: it also ends the process group that wait_for_everyone needs
        return summary

    @torch.no_grad()
    def sample(self) -> str:
        """A few tokens the current weights write after `sample_prompt`, drawn at temperature 0.8 with a generator
        of their own (the training's random streams are left as they were), through the model contract's step."""
        model = self.accelerator.unwrap_model(self.model).eval()
        prompt = self._ids(self.sample_prompt or "\n")
        if not len(prompt):
            return ""
        generator = torch.Generator().manual_seed(self.cfg.seed)  # the same draws each time: only the weights change
        limit = context_length(model)
        prompt = prompt[-(limit - self.sample_tokens):] if limit and limit > self.sample_tokens else prompt
        logits, memory = step(model, prompt[None].to(self.accelerator.device), start_memory(model, 1))
        written = []
        for _ in range(self.sample_tokens):
            token = torch.multinomial(torch.softmax(logits[0].float().cpu() / 0.8, -1), 1, generator=generator)
            written.append(token.item())
            if limit and len(prompt) + len(written) >= limit:
                break
            logits, memory = step(model, token[None].to(self.accelerator.device), memory)
        return self.tokenizer.decode(written, skip_special_tokens=True)  # an untrained model draws <unk> too

    def final_validation(self) -> dict:
        """The kept (best) checkpoint scored over every character of every held-out chunk, and of the last
        chunk (the file's tail) alone, which earlier cards reported."""
        best = AutoModelForCausalLM.from_pretrained(self._best_dir()).to(self.accelerator.device).eval()
        scores = [score_text(best, self.tokenizer, chunk) for chunk in self.val_texts]
        chars = sum(s.chars for s in scores)
        nats = sum(s.nats_per_char * s.chars for s in scores) / chars
        result = {"val_nats_per_char": round(nats, 4), "val_bits_per_char": round(nats / math.log(2), 4),
                  "val_chars": chars, "val_chunks": len(scores),
                  "tail_nats_per_char": round(scores[-1].nats_per_char, 4), "tail_chars": scores[-1].chars}
        if min(s.chars for s in scores) >= BLOCK_CHARS:  # whole stretches of scenes: the measure of new text
            result["blocks_nats_per_char"] = result["val_nats_per_char"]
        return result

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    def _val_windows(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        """The fixed windows of the quick validation, (eval_batches * batch_size, T), drawn from every chunk
        in turn so that each part of the file counts; the same windows at every evaluation."""
        gen = torch.Generator().manual_seed(0)
        length = min(self.cfg.block_size, min(len(c) for c in chunks) - 1)
        count = self.cfg.eval_batches * self.cfg.batch_size
        return torch.cat([random_windows(chunks[i % len(chunks)], 1, length, gen) for i in range(count)])

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss per token over the fixed validation windows.

        Every process scores the same windows with the same weights, on the bare model (no DDP wrapper, so no
        collective step that the processes would have to take together), and they agree on the mean.
        """
        self.model.eval()
        model = self.accelerator.unwrap_model(self.model)
        losses = []
        for batch in self.val_windows.split(self.cfg.batch_size):
            with self.accelerator.autocast():
                batch = batch.to(self.accelerator.device)
                losses.append(model(input_ids=batch, labels=batch).loss.item())
        return self._mean(sum(losses) / len(losses))

    def _agree(self, value: float) -> float:
        """Process 0's value, in every process (as is with one process)."""
        if self.processes == 1:
            return value
        return broadcast(torch.tensor([value], dtype=torch.float64), from_process=0).item()

    def _mean(self, value: float) -> float:
        """The mean of `value` over the processes (as is with one process)."""
        if self.processes == 1:
            return value
        return self.accelerator.reduce(torch.tensor([value], dtype=torch.float64), reduction="mean").item()

    # -- files -----------------------------------------------------------------------------------------

    def _start_tracking(self) -> None:
        """TensorBoard through accelerate's tracker: `tensorboard --logdir OUT/tensorboard` shows the run."""
        if self.tensorboard:
            hparams = {k: v for k, v in asdict(self.cfg).items() if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers("tensorboard", config=hparams)

    def _log(self, train_loss: float, val_loss: float, lr: float) -> None:
        path = self.out / "loss.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "seconds", "train_loss", "val_loss", "lr"])
            w.writerow([self.step, round(self.elapsed, 1), round(train_loss, 4), round(val_loss, 4), f"{lr:.3g}"])

    def _best_dir(self) -> Path:
        return self.out / STATE_DIR / BEST_DIR

    def _save_best(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(self._best_dir())

    def _publish_best(self) -> None:
        """The finished model into OUT, beside its card: weights first, config.json (what makes a model) last."""
        for name in MODEL_FILES:
            if (self._best_dir() / name).is_file():
                (self._best_dir() / name).replace(self.out / name)

    def _save_state(self) -> None:
        """Everything --resume needs, rewritten at every validation; weights in safetensors, no pickles.

        Called in every process (the batch generators are gathered), written by process 0 only.
        """
        generators = None
        if self.processes > 1:  # (processes, 5056) bytes: every process's generator, process 0's first
            generators = gather(self.generator.get_state()[None].to(self.accelerator.device)).cpu()
        if not self.accelerator.is_main_process:
            return
        state = self.out / STATE_DIR
        state.mkdir(exist_ok=True)
        if generators is not None:
            save_file({f"rng.batches.{i}": g.contiguous() for i, g in enumerate(generators) if i},
                      state / PROCESS_RNG_FILE)
        model = self.accelerator.unwrap_model(self.model)
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
                  state / "model.safetensors")
        tensors, groups = _optimizer_to_tensors(self.optimizer.state_dict())
        tensors.update({"rng.batches": self.generator.get_state(), "rng.torch": torch.get_rng_state()})
        save_file(tensors, state / "optimizer.safetensors", metadata={"param_groups": groups})
        self.tokenizer.save_pretrained(state)
        (state / "progress.json").write_text(json.dumps(
            {"step": self.step, "elapsed": self.elapsed, "best_val": self.best_val,
             "earlier_stages": self.earlier_stages}))

    def _load_state(self) -> None:
        state = self.out / STATE_DIR
        self.model.load_state_dict(load_file(state / "model.safetensors"), strict=False)
        self.model.tie_weights()
        with safe_open(state / "optimizer.safetensors", framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            groups = f.metadata()["param_groups"]
        batches = tensors.pop("rng.batches")
        torch.set_rng_state(tensors.pop("rng.torch"))
        self.optimizer.load_state_dict(_optimizer_from_tensors(tensors, groups))
        index = self.accelerator.process_index
        if index == 0:
            self.generator.set_state(batches)
        elif (state / PROCESS_RNG_FILE).is_file():
            saved = load_file(state / PROCESS_RNG_FILE)
            if f"rng.batches.{index}" in saved:
                self.generator.set_state(saved[f"rng.batches.{index}"])
            # else: a run resumed with more processes than it had; this one keeps its fresh seed
        progress = json.loads((state / "progress.json").read_text())
        self.step, self.elapsed, self.best_val = progress["step"], progress["elapsed"], progress["best_val"]
        # (A state saved before the stages were kept in it has only the --init-from folder to go by.)
        self.earlier_stages = progress.get("earlier_stages", self.earlier_stages)
        self.accelerator.print(f"resuming {self.out} at step {self.step} ({self.elapsed:.0f} s in, "
                               f"best val {self.best_val:.4f})")


# What transformers records while loading a tokenizer (where its files came from): save_pretrained would write
# them into the new checkpoint's tokenizer_config.json as if they were settings of the tokenizer itself.
LOADING_FACTS = ("is_local", "local_files_only")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in `path`, to be saved again with a new checkpoint as it was."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    for key in LOADING_FACTS:
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def _optimizer_to_tensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], str]:
    """An optimizer's state as flat safetensors entries ("state.<param>.<name>") plus its param groups as JSON:
    resumable without a pickle (torch.save writes one, and a pickle can run code when loaded)."""
    tensors = {f"state.{index}.{name}": value if torch.is_tensor(value) else torch.tensor(value)
               for index, values in state_dict["state"].items() for name, value in values.items()}
    return tensors, json.dumps(state_dict["param_groups"])


def _optimizer_from_tensors(tensors: dict[str, torch.Tensor], groups: str) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    # JSON turned tuples (Adam's betas) into lists; only "params" was a list.
    param_groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
                    for group in json.loads(groups)]
    return {"state": state, "param_groups": param_groups}


def _tensorboard_wanted(asked: bool | None) -> bool:
    installed = importlib.util.find_spec("tensorboard") is not None
    if asked and not installed:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard")
    return installed if asked is None else asked


def train(cfg: TrainConfig, **watch) -> dict:
    """Run one training; `watch` takes Trainer's report, report_every, stop and sample_prompt."""
    return Trainer(cfg, **watch).train()
