"""The command line: `python -m textgen {train,eval,models,generate,explain,decode,prepare} --help`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, fields

from textgen.core.events import TextEvent
from textgen.core.settings import CONTROLS, GenerationSettings, Limits, bounded_controls
from textgen.models import architectures
from textgen.training.config import TrainConfig  # torch-free: `--help` and `models` must answer at once

# Plain words for every `train` flag (argparse help: a literal % is written %%). The default is added to each
# (_train_default_words): the architecture's recipe values where the recipe decides.
TRAIN_HELP = {
    "arch": "model architecture",
    "data": "UTF-8 text file to train on (--val-fraction of it, in stretches spread over the file, is held out)",
    "out": "directory for the best checkpoint, tokenizer, loss.csv/png and model card",
    "tokenizer": "char: one token per character; bpe: byte-level BPE",
    "bpe_vocab_size": "how many tokens the BPE tokenizer learns (only with --tokenizer bpe)",
    "n_layer": "Transformer blocks stacked on each other",
    "n_embd": "width of the Transformer: numbers per token in every block",
    "n_head": "attention heads per Transformer block (must divide --n-embd)",
    "position_embedding": "how a Transformer knows where each token stands: learned (one trained vector per "
                          "place) or rotary (queries and keys turned by their place; no weights)",
    "hidden_size": "width of the recurrent network's memory (numbers per layer)",
    "embedding_size": "numbers per character entering the recurrent network",
    "num_layers": "recurrent layers stacked on each other",
    "dropout": "share of activations switched off at random while training, against overfitting",
    "block_size": "tokens per training window (the Transformer's context length)",
    "batch_size": "windows per optimizer step, in each process",
    "lr": "peak learning rate, reached at the end of the warmup",
    "warmup_steps": "steps over which the learning rate rises from near zero to --lr",
    "min_lr_ratio": "where the cosine schedule ends, as a fraction of --lr",
    "weight_decay": "AdamW weight decay of the weight matrices (biases and norms are not decayed)",
    "grad_clip": "largest gradient norm; larger gradients are scaled down (0: no clipping)",
    "max_steps": "stop after this many optimizer steps",
    "time_budget": "stop after this many seconds (the learning-rate schedule fits the budget)",
    "eval_interval": "validate, and keep the checkpoint if it is the best so far, every this many steps",
    "eval_batches": "batches of held-out windows in each quick validation",
    "val_fraction": "share of the file held out for validation",
    "val_chunks": "held-out stretches of consecutive text spread over the file (1: only its tail)",
    "seed": "random seed of the first weights and of the batches",
    "threads": "CPU threads for torch",
    "init_from": ("start from this checkpoint's weights, sizes and tokenizer, with a fresh optimizer and schedule "
                  "(--dropout, if given, applies from this run on)"),
    "resume": "continue the run saved in --out",
    "tensorboard": "log the losses to TensorBoard in OUT/tensorboard",
}
DEFAULT_WORDS = {  # for options whose default is not a plain value
    "max_steps": "no step limit; give --max-steps or --time-budget, or both",
    "time_budget": "no time limit; give --max-steps or --time-budget, or both",
    "threads": "1, or $TEXTGEN_THREADS; see textgen/local/devices.py",
    "init_from": "a fresh model",
    "tensorboard": "on when the tensorboard package is installed",
}


def _train_default_words(name: str, default: object) -> str:
    """The default of one train flag in words, e.g. "the architecture's recipe: 0.003 for lstm, gru; ..."."""
    if name in DEFAULT_WORDS:
        return DEFAULT_WORDS[name]
    if name in architectures.RECIPE_FIELDS or name in architectures.SIZE_FIELDS:
        by_value: dict[str, list[str]] = {}
        for arch in architectures.all_architectures():
            if name in arch.recipe:
                value = arch.recipe[name]
                by_value.setdefault(value if isinstance(value, str) else f"{value:g}", []).append(arch.name)
        values = "; ".join(f"{value} for {', '.join(archs)}" for value, archs in by_value.items())
        return f"the architecture's recipe: {values}"
    return str(default).replace("%", "%%")


def _add_train(sub: argparse._SubParsersAction) -> None:
    titles = ", ".join(a.title for a in architectures.all_architectures())
    p = sub.add_parser("train", help="train a model on a text file",
                       description=f"Train a language model ({titles}) on a text file. Options left out take "
                                   "the architecture's recipe, sized for a few CPU minutes.")
    defaults = TrainConfig()
    choices = {"arch": architectures.names(), "tokenizer": ["char", "bpe"],
               "position_embedding": list(architectures.POSITION_EMBEDDINGS)}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        words = f"{TRAIN_HELP[f.name]} (default: {_train_default_words(f.name, default)})"
        if f.name == "resume":
            p.add_argument(flag, action="store_true", help=TRAIN_HELP[f.name])
        elif str(f.type).startswith("bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=words)
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=default, choices=choices.get(f.name), required=f.name == "data",
                           help=TRAIN_HELP[f.name] if f.name == "data" else words)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a text file under a model",
                       description="Loss of a text under a model: nats and bits per character, perplexity.")
    p.add_argument("--model", required=True, help="catalog name (see `models`) or a model directory")
    p.add_argument("--data", required=True, help="UTF-8 text file to score")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    _add_catalog_flags(p)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model catalog",
                       description="The models the app and CLI can use, where each comes from, and whether "
                                   "it loads without a network.")
    _add_catalog_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object per model")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="do the one-time work some models need before their first use",
                       description="Make the fast-loading copy of every GGUF model in the catalog (SmolLM2: about "
                                   "a minute, once per machine), so that its first chat starts within seconds. "
                                   "The app does the same in the background when it starts; run this at install.")
    _add_catalog_flags(p)


def _add_catalog_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--add-model", action="append", default=[], metavar="SOURCE",
                   help="add a Hub id or model directory to the catalog (repeatable)")
    p.add_argument("--catalog", help="JSON file of extra models (see textgen/service/catalog.py)")
    p.add_argument("--engine", action="append", default=[], metavar="URL",
                   help="an OpenAI-compatible inference engine (vLLM) whose models join the catalog, e.g. "
                        "http://127.0.0.1:8000/v1 (repeatable; also $TEXTGEN_ENGINES)")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="stream text from a model",
                       description="Stream a continuation of --prompt to stdout as it is produced.")
    p.add_argument("--model", required=True, help="catalog name (see `models`) or a model directory")
    p.add_argument("--prompt", required=True, help="text to continue ('' starts from scratch)")
    for c in bounded_controls(Limits.from_env()).values():
        p.add_argument("--" + c.name.replace("_", "-"), type=int if c.whole else float,
                       help=f"{c.help} ({c.low:g} to {c.high:g}; default {c.default:g})")
    p.add_argument("--stop", action="append", help="stop when this text appears (repeatable)")
    p.add_argument("--seed", type=int, help="same seed, same request -> same text")
    p.add_argument("--json", action="store_true", help="one JSON object per event, the summary last")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default 1)")
    _add_catalog_flags(p)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show what a model wants to write next and what each control does",
                       description="The model's likeliest next tokens after --prompt, and their probabilities "
                                   "after each sampling control in the order the sampler applies them.")
    p.add_argument("--model", required=True, help="catalog name (see `models`) or a model directory")
    p.add_argument("--prompt", required=True, help="text to continue ('' starts from scratch)")
    controls = bounded_controls(Limits.from_env())
    for name in EXPLAIN_CONTROLS:
        c = controls[name]
        p.add_argument("--" + name.replace("_", "-"), type=int if c.whole else float,
                       help=f"{c.help} ({c.low:g} to {c.high:g}; default {c.default:g})")
    p.add_argument("--top-n", type=int, default=10, help="how many of the model's likeliest tokens to list")
    p.add_argument("--json", action="store_true", help="print one JSON object (the stages) instead of a table")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default 1)")
    _add_catalog_flags(p)


# The controls `explain` shows, in the order the sampler applies them (textgen.local.generation.sampling_stages).
EXPLAIN_CONTROLS = ("repetition_penalty", "no_repeat_ngram_size", "temperature", "top_k", "top_p", "min_p")


def cmd_models(args: argparse.Namespace) -> int:
    # here, not at the top: torch and the models load only for the command that runs (`--help` answers at once)
    from textgen.service.catalog import Catalog

    for entry in Catalog.default(args.add_model, args.catalog, engines=args.engine):
        row = {"name": entry.name, "title": entry.title, "origin": entry.origin, "source": entry.source,
               "offline": entry.available_offline(), "description": entry.description}
        if not entry.runs_here:  # whether its engine serves it now, instead of a download
            row.update(offline=False, model=entry.model_id, unavailable=entry.unavailable_reason())
        if args.json:
            print(json.dumps(row))
        elif not entry.runs_here:
            where = f"not available: {row['unavailable']}" if row["unavailable"] else "served by its engine"
            print(f"{entry.name:<14} {entry.origin:<8} {where:<18} {entry.title}: {entry.description}")
        else:
            where = "available offline" if row["offline"] else "needs a download"
            print(f"{entry.name:<14} {entry.origin:<8} {where:<18} {entry.title}: {entry.description}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    # here, not at the top: torch and the models load only for the command that runs (`--help` answers at once)
    from textgen.service.catalog import Catalog
    from textgen.service.loading import needs_preparing, prepare_model

    todo = [e for e in Catalog.default(args.add_model, args.catalog, engines=args.engine) if needs_preparing(e)]
    for entry in todo:
        prepare_model(entry, lambda message: print(message, file=sys.stderr, flush=True))
        if needs_preparing(entry):  # the child failed; its reason is above, on its own stderr
            print(f"error: {entry.name} could not be prepared", file=sys.stderr)
            return 1
        print(f"{entry.name}: ready")
    if not todo:
        print("every model is ready: nothing to prepare")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    # here, not at the top: torch and the models load only for the command that runs (`--help` answers at once)
    from textgen.local.devices import configure_cpu_threads
    from textgen.local.generation import stream
    from textgen.service.catalog import Catalog
    from textgen.service.loading import load_for_cli

    configure_cpu_threads(args.threads)
    controls = {name: getattr(args, name) for name in CONTROLS}
    settings = GenerationSettings.parse(args.prompt, Limits.from_env(), stop=args.stop, seed=args.seed, **controls)
    loaded = load_for_cli(args.model, Catalog.default(args.add_model, args.catalog, engines=args.engine), args.device)
    later: dict[int, str] = {}
    for event in stream(loaded, settings):
        if args.json:
            print(json.dumps(_event_json(event), ensure_ascii=False), flush=True)
        elif isinstance(event, TextEvent):
            if event.sample == 0:
                sys.stdout.write(event.text)
                sys.stdout.flush()
            else:
                later[event.sample] = later.get(event.sample, "") + event.text
        else:
            for sample in sorted(later):
                sys.stdout.write(f"\n\n--- sample {sample + 1} ---\n{later[sample]}")
            print()
            print(_summary_line(event), file=sys.stderr)
    return 0


def _event_json(event) -> dict:
    kind = "text" if isinstance(event, TextEvent) else "summary"
    return {"event": kind, **asdict(event)}


def _summary_line(summary) -> str:
    reason = summary.stop_description()
    lines = [f"[{sum(summary.tokens)} tokens, {summary.tokens_per_second:.1f} tokens/s, first token after "
             f"{summary.time_to_first_token * 1000:.0f} ms, seed {summary.seed}; {reason}]"]
    lines += [f"[note: {w}]" for w in [*summary.warnings, *summary.notes]]
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    # here, not at the top: torch and the models load only for the command that runs (`--help` answers at once)
    from textgen.training.trainer import Trainer

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    trainer = Trainer(TrainConfig(**values))
    summary = trainer.train()
    if trainer.accelerator.is_main_process:  # one summary line, also under torchrun's several processes
        print(json.dumps(summary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    # here, not at the top: torch and the models load only for the command that runs (`--help` answers at once)
    from textgen.local.evaluate import score_text
    from textgen.service.catalog import Catalog
    from textgen.service.loading import load_for_cli
    from textgen.training.data import read_text

    text = read_text(args.data)
    loaded = load_for_cli(args.model, Catalog.default(args.add_model, args.catalog, engines=args.engine), args.device)
    score = score_text(loaded.model, loaded.tokenizer, text)
    if args.json:
        print(json.dumps(score.as_dict()))
    else:
        for key, value in score.as_dict().items():  # 4 decimals for people; --json keeps every digit
            if key == "unknown_chars":
                value = value or "none"  # a blank after the colon reads as a missing answer
            print(f"{key:>14}: {value:.4f}" if isinstance(value, float) else f"{key:>14}: {value}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    # here, not at the top: torch and the models load only for the command that runs (`--help` answers at once)
    from textgen.local.devices import configure_cpu_threads
    from textgen.service.catalog import Catalog
    from textgen.service.explain import next_token_json, parse_controls, stages_table
    from textgen.service.loading import load_for_cli

    configure_cpu_threads(args.threads)
    limits = Limits.from_env()
    settings = parse_controls({name: getattr(args, name) for name in EXPLAIN_CONTROLS}, limits)  # before loading
    loaded = load_for_cli(args.model, Catalog.default(args.add_model, args.catalog, engines=args.engine), args.device)
    result = next_token_json(loaded, args.prompt, settings, args.top_n, limits)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"What {loaded.entry.title} wants to write after {args.prompt[-40:]!r}, and what each control does:\n")
    print(stages_table(result["stages"]))
    for warning in result["warnings"]:
        print(f"[note: {warning}]", file=sys.stderr)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    # here, not at the top: torch and the models load only for the command that runs (`--help` answers at once)
    from textgen.local.decoding import check, decode, outline
    from textgen.local.devices import configure_cpu_threads
    from textgen.service.catalog import Catalog
    from textgen.service.loading import load_for_cli

    configure_cpu_threads(args.threads)
    given = {name: getattr(args, name) for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                                                     "no_repeat_ngram_size", "seed") if getattr(args, name) is not None}
    settings = GenerationSettings.parse(args.prompt, Limits.from_env(), max_new_tokens=args.max_new_tokens, **given)
    check(args.method, args.width, settings.max_new_tokens)  # before loading
    loaded = load_for_cli(args.model, Catalog.default(args.add_model, args.catalog, engines=args.engine), args.device)
    if not loaded.capabilities.runs_here:
        raise ValueError(f"{loaded.entry.title} runs on an inference engine, which offers no beam search")
    tree = decode(loaded, settings, args.method, args.width)
    if args.json:
        print(json.dumps(tree.as_json(), ensure_ascii=False))
        return 0
    print(f"{loaded.entry.title}, {args.method} ({tree.width} wide), {settings.max_new_tokens} tokens after "
          f"{args.prompt[-40:]!r}:\n")
    for i, sequence in enumerate(tree.sequences, 1):
        print(f"{i}. {sequence.text!r}  log-probability {sequence.logprob:.2f}")
    print("\nThe choices (each line: the text a path adds, its log-probability, candidates dropped on the way):")
    print(outline(tree))
    for line in [*tree.warnings, *tree.notes]:
        print(f"[note: {line}]", file=sys.stderr)
    return 0


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decode", help="greedy search, beam search or samples, as a tree of choices",
                       description="Write --max-new-tokens tokens after --prompt by one method and print the tree of "
                                   "choices: each kept path, how likely the model finds it (log-probability, "
                                   "higher is likelier), and how many candidates were dropped on the way.")
    p.add_argument("--model", required=True, help="catalog name (see `models`) or a model directory")
    p.add_argument("--prompt", required=True, help="text to continue ('' starts from scratch)")
    p.add_argument("--method", choices=["greedy", "beam", "sample"], default="beam")
    p.add_argument("--width", type=int, default=4, help="beams, or samples (1 to 8; default 4)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens each text writes (1 to 64; default 16)")
    controls = bounded_controls(Limits.from_env())
    for name in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram_size"):
        c = controls[name]
        p.add_argument("--" + name.replace("_", "-"), type=int if c.whole else float,
                       help=f"{c.help} ({c.low:g} to {c.high:g}; default {c.default:g})")
    p.add_argument("--seed", type=int, help="the samples' seed: same seed, same samples")
    p.add_argument("--json", action="store_true", help="print one JSON object (the API's /decode) instead")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default 1)")
    _add_catalog_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m textgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_models(sub)
    _add_generate(sub)
    _add_explain(sub)
    _add_decode(sub)
    _add_prepare(sub)
    return parser


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "models": cmd_models, "generate": cmd_generate,
            "explain": cmd_explain, "decode": cmd_decode, "prepare": cmd_prepare}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        # The operator's words where an error has them (ModelLoadError.detail: which file, what to do).
        print(f"error: {getattr(err, 'detail', None) or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; `--resume` continues from the last validation" if args.command == "train" else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`generate ... | head`): stop quietly, as other Unix tools do. Point stdout at
        # devnull so that Python's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
