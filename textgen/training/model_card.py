"""What a finished training run leaves for its readers: the model card, the loss chart and the run's lineage.

    from textgen.training.model_card import train_command, earlier_stages
    print(train_command(TrainConfig(arch="lstm", data="x.txt", time_budget=60).resolved()))
    earlier_stages("assets/models/transformer")   # the runs behind a checkpoint continued with --init-from

`textgen.training.trainer` calls `write_model_card` and `plot_loss` at the end of a run. Nothing here imports torch at
module level (the hardware line of the card does, when a card is written).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, fields
from pathlib import Path

from textgen.training.config import TrainConfig


def earlier_stages(checkpoint: str | Path) -> list[dict]:
    """The runs that made `checkpoint`, oldest first, read from its training_summary.json ([] if it has none).

    A model continued with --init-from (say, in a later session) thereby keeps the commands, steps and time
    of every run behind it, and its card can show how to reproduce it and what it really cost.
    """
    path = Path(checkpoint) / "training_summary.json"
    if not path.is_file():
        return []
    done = json.loads(path.read_text())
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in done.get("config", {}).items() if k in known})
    stage = {"command": train_command(cfg, done.get("processes", 1)), "steps": done.get("steps"),
             "train_seconds": done.get("train_seconds"), "val_nats_per_char": done.get("val_nats_per_char")}
    return [*done.get("earlier_stages", []), stage]


def train_command(cfg: TrainConfig, processes: int = 1) -> str:
    """The command that reproduces `cfg` (with torchrun's launcher when it ran as several processes)."""
    launcher = (f"python -m torch.distributed.run --nproc_per_node {processes} -m textgen train" if processes > 1
                else "python -m textgen train")
    return " ".join([launcher, *_cli_args(cfg)])


def write_model_card(out: Path, cfg: TrainConfig, summary: dict, n_params: int) -> None:
    """README.md for the checkpoint: what it was trained on, the exact command(s), and what it scored."""
    from textgen.local.devices import describe_hardware  # imports torch; only a finished run gets here

    nats, bits = summary.get("val_nats_per_char", float("nan")), summary.get("val_bits_per_char", float("nan"))
    stages = summary.get("earlier_stages") or []
    minutes = [s["train_seconds"] / 60 for s in stages] + [summary["train_seconds"] / 60]
    time_text = " + ".join(f"{m:.1f}" for m in minutes) + " min" + (f" ({sum(minutes):.1f} in all)" if stages else "")
    steps_text = " + ".join(f"{n:,}" for n in [*(s["steps"] for s in stages), summary["steps"]])
    held_out = held_out_text(cfg)
    tail_row = ""
    if cfg.val_chunks > 1:  # with one piece, the tail is the whole validation: no second row for the same number
        tail = summary.get("tail_nats_per_char", float("nan"))
        tail_row = (f"| of which the file's tail | {tail:.4f} nats/char over {summary.get('tail_chars', 0):,} chars "
                    "(the last held-out piece alone, at the file's end) |\n")
    heldback_row = heldback_line(summary)
    processes = summary.get("processes", 1)
    hardware = describe_hardware() + (f", {processes} processes" if processes > 1 else "")
    batch_row = ""
    if processes > 1:
        batch_row = (f"| batch | {summary['effective_batch_size']} windows a step ({cfg.batch_size} in each of "
                     f"{processes} data-parallel processes) |\n")
    text = f"""---
license: mit
library_name: transformers
tags: [textgen, {cfg.arch}, {"character-level" if cfg.tokenizer == "char" else "byte-level-bpe"}]
---
# {cfg.arch} language model ({out.name})

A {n_params / 1e6:.2f}M-parameter {cfg.arch} trained by `textgen` on `{Path(cfg.data).name}`
({cfg.tokenizer} tokenizer). Load it with `import textgen.models.auto` then
`AutoModelForCausalLM.from_pretrained("{out}")`, or pick it in the playground.

| | |
|---|---|
| training data | `{Path(cfg.data).name}`, {held_out} |
| parameters | {n_params:,} |
| steps | {steps_text} |
{batch_row}| training time | {time_text} on {hardware} |
| validation loss | {nats:.4f} nats/char ({bits:.4f} bits/char) over {summary.get("val_chars", 0):,} held-out chars |
{tail_row}{heldback_row}
{_commands_text(cfg, stages, processes)}

The loss curve (of the last run) is `loss.csv` / `loss.png`.
"""
    (out / "README.md").write_text(text)


def held_out_text(cfg: TrainConfig) -> str:
    """What the run held out, in the card's words: '10% held out for validation in 3 stretches spread over the
    file', or for a single piece 'its last 1.5% held out for validation'."""
    share = f"{cfg.val_fraction * 100:.3g}%"  # 0.015 reads 1.5%, where :.0% would round it to 2%
    if cfg.val_chunks == 1:
        return f"its last {share} held out for validation"
    return f"{share} held out for validation in {cfg.val_chunks} stretches spread over the file"


def heldback_line(summary: dict) -> str:
    """The card's row for the held-back plays, when the maintainers have measured the model there ('' if not)."""
    nats = summary.get("heldback_nats_per_char")
    if not isinstance(nats, (int, float)):
        return ""
    return (f"| unseen plays | {nats:.3f} nats/char on the held-back plays after the training file (tiny "
            "Shakespeare's last 10%, never trained or validated on; measured by the maintainers) |\n")


def _commands_text(cfg: TrainConfig, stages: list[dict], processes: int = 1) -> str:
    if not stages:
        return f"Training command:\n\n```\n{train_command(cfg, processes)}\n```"
    lines = [f"Trained in {len(stages) + 1} runs, each continuing from the checkpoint the one before it wrote "
             "(its weights and tokenizer, with a fresh optimizer and learning-rate schedule):", ""]
    for i, stage in enumerate(stages, 1):
        lines += [f"{i}. {stage['steps']:,} steps, {stage['train_seconds'] / 60:.1f} min, "
                  f"{stage['val_nats_per_char']} nats/char:", "", "   ```", f"   {stage['command']}", "   ```", ""]
    lines += [f"{len(stages) + 1}. this run (its numbers are in the table):", "", "   ```",
              f"   {train_command(cfg, processes)}", "   ```"]
    return "\n".join(lines)


def _cli_args(cfg: TrainConfig) -> list[str]:
    # Every resolved value that differs from TrainConfig's own default, recipe values included, so that the
    # command still reproduces the model if the recipes change.
    # The split is always written: which text was held out is part of what the model is (its default changed once).
    defaults = TrainConfig()
    args = []
    for name, value in asdict(cfg).items():
        always = name in ("arch", "val_fraction", "val_chunks")
        if name == "resume" or value is None or (value == getattr(defaults, name) and not always):
            continue
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):  # on/off flags: --tensorboard / --no-tensorboard
            args.append(flag if value else f"--no-{name.replace('_', '-')}")
        else:
            args += [flag, str(value)]
    return args


def read_loss_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def loss_figure(rows: list[dict], title: str):
    """The training and validation loss against the step, as a matplotlib Figure.

    Every evaluation is a marker, joined by a line: a short run evaluates once or twice, and a line alone
    through one point draws nothing. The x axis starts at step 0, so a short run shows how little of a long one
    it is; the legend gives the last values, the numbers a reader of a one-point chart wants.
    """
    import matplotlib  # only when a chart is drawn: a second of import that `textgen --help` need not pay

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = [float(r[key]) for r in rows]
        last = f" (last {values[-1]:.3f})" if values else ""
        ax.plot(steps, values, marker="o", markersize=4, label=label + last)
    ax.set_xlim(left=0, right=max(steps, default=1) * 1.05)
    ax.margins(y=0.15)  # with one or two points the data limits are the points: keep them off the frame
    ax.set_xlabel("step")
    ax.set_ylabel("loss per token (nats)")
    evaluations = f"{len(rows)} evaluation{'s' if len(rows) != 1 else ''}"
    ax.set_title(f"{title} ({evaluations})")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_loss(out: Path) -> None:
    """OUT/loss.png from OUT/loss.csv (nothing when there is no curve yet)."""
    path = out / "loss.csv"
    if not path.exists():
        return
    rows = read_loss_rows(path)
    if not rows:
        return
    import matplotlib.pyplot as plt  # only when a chart is drawn (see plot_loss)

    fig = loss_figure(rows, out.name)
    fig.savefig(out / "loss.png")
    plt.close(fig)


