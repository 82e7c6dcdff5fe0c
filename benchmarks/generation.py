"""Generation speed at batch 1: our streaming engine vs a bare forward loop vs transformers' `generate`.

    python benchmarks/generation.py                 # shipped models + a GPT-2-architecture model (124M)
    python benchmarks/generation.py --threads 2 --tokens 300 --json
    python benchmarks/generation.py --no-shipped    # the GPT-2 comparison alone

For each model, the same prompt ids, sampling settings (temperature 0.8, top-p 0.95) and number of new tokens
(rates count the tokens each path really produced) through three paths, each run `--repeats` times, median kept:
  engine    textgen.local.generation.stream, consumed to the end (per-token probabilities, alternatives, text)
  bare      prefill, then forward one token at a time with the cache/state, warp, sample; nothing else
  generate  model.generate(do_sample=True, ...), the same logits warpers
The GPT-2 model has random weights (no Hub here) and a stand-in 50257-token vocabulary.
Thread settings and machine load are printed with the numbers: measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from textgen.core.events import Summary
from textgen.core.settings import GenerationSettings
from textgen.local.devices import configure_cpu_threads
from textgen.local.generation import stream
from textgen.local.model import LoadedModel
from textgen.models import contract
from textgen.service.catalog import Catalog, ModelEntry
from textgen.service.loading import load_model

TEMPERATURE, TOP_P = 0.8, 0.95


def gpt2_124m() -> LoadedModel:
    config = GPT2Config()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    # Words "t0".."t50255" split on spaces, so that the engine's prompt (decoded text) encodes back to the very
    # ids the other two paths get: all three answer the same request.
    vocab = {f"t{i}": i for i in range(config.vocab_size - 1)}
    vocab["<|endoftext|>"] = config.vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    entry = ModelEntry("gpt2-arch", "GPT-2 architecture (random weights)", "", "", "local")
    return LoadedModel(entry, model, tokenizer, torch.device("cpu"), 0.0)


def prompt_ids(loaded: LoadedModel) -> list[int]:
    if loaded.entry.name == "gpt2-arch":
        return [int(i) for i in torch.randint(0, 50000, (8,), generator=torch.Generator().manual_seed(0))]
    return loaded.tokenizer("ROMEO:\n", add_special_tokens=False)["input_ids"]


def run_engine(loaded: LoadedModel, ids: list[int], n: int) -> tuple[float, float]:
    prompt = loaded.tokenizer.decode(ids)
    assert loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids, "not the same prompt"
    settings = GenerationSettings.parse(prompt, temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=n, seed=1)
    start, first = time.perf_counter(), None
    summary = None
    for event in stream(loaded, settings):
        if first is None:
            first = time.perf_counter() - start
        if isinstance(event, Summary):
            summary = event
    total = time.perf_counter() - start
    return sum(summary.tokens) / total, first


@torch.inference_mode()
def run_bare(loaded: LoadedModel, ids: list[int], n: int) -> tuple[float, float]:
    model = loaded.model
    gen = torch.Generator().manual_seed(1)
    warpers = [TemperatureLogitsWarper(TEMPERATURE), TopPLogitsWarper(TOP_P)]
    start = time.perf_counter()
    x = torch.tensor([ids])
    memory = contract.start_memory(model, 1)
    first = None
    all_ids = x
    for _ in range(n):
        scores, memory = contract.step(model, x, memory)  # the same step the playground's loop takes
        for w in warpers:
            scores = w(all_ids, scores)
        x = torch.multinomial(torch.softmax(scores, -1), 1, generator=gen)
        all_ids = torch.cat([all_ids, x], 1)
        if first is None:
            first = time.perf_counter() - start
    return n / (time.perf_counter() - start), first


def run_generate(loaded: LoadedModel, ids: list[int], n: int) -> tuple[float, float]:
    torch.manual_seed(1)
    start = time.perf_counter()
    out = loaded.model.generate(torch.tensor([ids]), do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0,
                                max_new_tokens=n, pad_token_id=0)  # no min_new_tokens: the engine has none
    produced = out.shape[1] - len(ids)
    return produced / (time.perf_counter() - start), float("nan")


PATHS = {"engine": run_engine, "bare": run_bare, "generate": run_generate}


def bench(loaded: LoadedModel, n: int, repeats: int) -> dict:
    ids = prompt_ids(loaded)
    if loaded.context is not None:  # the bare loop and generate stop at the context; compare like with like
        n = min(n, loaded.context - len(ids) - 1)
    row = {"model": loaded.entry.name, "parameters": loaded.n_params, "tokens": n}
    for name, fn in PATHS.items():
        fn(loaded, ids, min(n, 20))  # warm-up
        runs = [fn(loaded, ids, n) for _ in range(repeats)]
        row[f"{name}_tok_s"] = round(statistics.median(r[0] for r in runs), 1)
        ttft = statistics.median(r[1] for r in runs)
        row[f"{name}_ttft_ms"] = None if ttft != ttft else round(ttft * 1000, 1)
    row["engine_vs_generate"] = round(row["engine_tok_s"] / row["generate_tok_s"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per run (GPT-2: a quarter of this)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gpt2", action="store_true")
    parser.add_argument("--no-shipped", action="store_true", help="only the GPT-2-architecture model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    threads = configure_cpu_threads(args.threads)
    rows = []
    for entry in [] if args.no_shipped else Catalog.default(include_gpt2=False):
        if entry.origin != "shipped":
            continue
        try:
            loaded = load_model(entry, torch.device("cpu"))
        except Exception as err:  # a broken or missing checkpoint: report it, go on
            print(f"skipping {entry.name}: {err}")
            continue
        rows.append(bench(loaded, args.tokens, args.repeats))
    if not args.no_gpt2:
        rows.append(bench(gpt2_124m(), max(args.tokens // 4, 10), args.repeats))
    load = os.getloadavg()
    print(f"torch threads {threads}, cpu count {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}, torch {torch.__version__}")
    cols = ["model", "parameters", "tokens", "engine_tok_s", "bare_tok_s", "generate_tok_s", "engine_vs_generate",
            "engine_ttft_ms", "bare_ttft_ms"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    if args.json:
        print(json.dumps({"threads": threads, "load": load, "rows": rows}))


if __name__ == "__main__":
    main()
