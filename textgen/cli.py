"""The command line: `python -m textgen {train,eval,models,generate} --help`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from textgen.train import TrainConfig

TRAIN_HELP = {
    "arch": "model architecture",
    "data": "UTF-8 text file to train on (its tail is held out for validation)",
    "out": "directory for the best checkpoint, tokenizer, loss.csv/png and model card",
    "tokenizer": "char: one token per character; bpe: byte-level BPE",
    "time_budget": "stop after this many seconds (the learning-rate schedule fits the budget)",
    "max_steps": "stop after this many optimizer steps",
    "block_size": "tokens per training window (the Transformer's context length)",
    "threads": "CPU threads for torch (default 1, see textgen/devices.py)",
    "resume": "continue the run saved in --out",
}
CHOICES = {"arch": ["rnn", "lstm", "gru", "transformer"], "tokenizer": ["char", "bpe"]}


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a text file",
                       description="Train an RNN, LSTM, GRU or Transformer language model on a text file.")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "resume":
            p.add_argument(flag, action="store_true", help=TRAIN_HELP[f.name])
            continue
        kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
        p.add_argument(flag, type=kind, default=default, choices=CHOICES.get(f.name),
                       required=f.name == "data", help=TRAIN_HELP.get(f.name, f"(default {default})"))


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a text file under a model",
                       description="Loss of a text under a model: nats and bits per character, perplexity.")
    p.add_argument("--model", required=True, help="catalog name or model directory")
    p.add_argument("--data", required=True, help="UTF-8 text file to score")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")


def cmd_train(args: argparse.Namespace) -> int:
    from textgen.train import train

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    summary = train(TrainConfig(**values))
    print(json.dumps(summary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from textgen.data import read_text
    from textgen.evaluate import score_text
    from textgen.loading import load_for_cli

    text = read_text(args.data)
    loaded = load_for_cli(args.model)
    score = score_text(loaded.model, loaded.tokenizer, text)
    if args.json:
        print(json.dumps(score.as_dict()))
    else:
        for key, value in score.as_dict().items():
            print(f"{key:>14}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m textgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    return parser


COMMANDS = {"train": cmd_train, "eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
