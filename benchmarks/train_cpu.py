"""Our default Transformer recipe against nanoGPT's CPU recipe, given the same wall-clock time on this CPU.

    python benchmarks/train_cpu.py --budget 240                                   # ours alone
    python benchmarks/train_cpu.py --budget 240 --nanogpt ~/src/nanoGPT            # and nanoGPT beside it
    python benchmarks/train_cpu.py --budget 240 --nanogpt ~/src/nanoGPT --heldout unseen.txt --json

ours     `python -m textgen train --arch transformer --time-budget BUDGET` (the default recipe, nothing else set).
nanoGPT  its README's CPU command (4 layers of 128, 4 heads, context 64, batch 12, lr 1e-3 decaying over the run,
         no dropout, `--compile=False`), run by its own `train.py` from a checkout you point to (nothing of it is
         copied into this project; the checkout is copied to OUT/nanogpt and used there, yours is not touched).
         It has no time budget, so its iterations are fitted to BUDGET: a short probe run times its iterations
         (and its evaluations), and the real run gets `--max_iters` = `--lr_decay_iters` = what fits. Its README's
         fixed 2000 iterations stop after about two minutes here, which compares a shorter run.

Both train on the same text: ours holds out `textgen train`'s default validation (three stretches of scenes, 10% of
the file, `textgen.training.data`), and nanoGPT is given the rest as its `input.txt` (its `prepare.py` then keeps its
own last 10% for its validation). Both are then scored by `textgen.local.evaluate.score_text`, every character, on
those stretches and on `--heldout` (text neither saw, e.g. the 10% of tiny Shakespeare after the training file). Side
by side, one torch thread each (`--threads`), as the numbers in benchmarks/TRAINING.md were measured; `--sequential`
runs one after the other.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing

from textgen.training.config import TrainConfig  # noqa: E402
from textgen.training.data import read_text, split_text  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare_train.txt"
# nanoGPT's README, "I only have a macbook": the CPU command, less the iteration counts (fitted to the budget).
NANOGPT_CPU = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
               "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
               "--dropout=0.0"]
EVAL_INTERVAL = 250  # nanoGPT's shakespeare_char config evaluates (and saves its best) every 250 iterations


def env(threads: int) -> dict[str, str]:
    # nanoGPT does not set torch's threads: OMP_NUM_THREADS does (ours reads --threads, and this too).
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TEXTGEN_THREADS": str(threads)}


# -- ours ---------------------------------------------------------------------------------------------------------

def ours_command(out: Path, budget: float, threads: int, data: Path) -> list[str]:
    return [sys.executable, "-m", "textgen", "train", "--arch", "transformer", "--data", str(data),
            "--out", str(out / "ours"), "--time-budget", str(budget), "--threads", str(threads)]


def load_ours(out: Path):
    from textgen.service.loading import load_for_cli

    loaded = load_for_cli(str(out / "ours"), device="cpu")
    return loaded.model, loaded.tokenizer


# -- nanoGPT ------------------------------------------------------------------------------------------------------

def prepare_nanogpt(checkout: Path, out: Path, train_text: str) -> Path:
    """A working copy of the checkout whose shakespeare_char data is our training text."""
    if not (checkout / "train.py").exists() or not (checkout / "data" / "shakespeare_char" / "prepare.py").exists():
        raise SystemExit(f"{checkout} does not look like a nanoGPT checkout (train.py, data/shakespeare_char)")
    work = out / "nanogpt"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(checkout, work, ignore=shutil.ignore_patterns(".git", "assets", "*.ipynb", "out*"))
    data = work / "data" / "shakespeare_char"
    (data / "input.txt").write_text(train_text, encoding="utf-8")  # present: prepare.py downloads nothing
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, stdout=subprocess.DEVNULL)
    return work


def nanogpt_command(iters: int, out_dir: str = "out-cpu") -> list[str]:
    return [sys.executable, "train.py", *NANOGPT_CPU, f"--max_iters={iters}", f"--lr_decay_iters={iters}",
            f"--eval_interval={eval_interval(iters)}", f"--out_dir={out_dir}"]


def eval_interval(iters: int) -> int:
    """About nanoGPT's 250, dividing `iters`: it saves a checkpoint only at an evaluation that beats the last,
    so the last iteration must be one (`fit_iters` picks such counts)."""
    return iters // math.ceil(iters / EVAL_INTERVAL)


def probe_nanogpt(work: Path, threads: int, iters: int = 40) -> tuple[float, float]:
    """(seconds per iteration, seconds per evaluation) from a short run of the same command."""
    start = time.monotonic()
    run = subprocess.run(nanogpt_command(iters, "out-probe"), cwd=work, env=env(threads), check=True,
                         capture_output=True, text=True)
    total = time.monotonic() - start
    times = [float(t) / 1000 for t in re.findall(r"^iter \d+: .*time ([\d.]+)ms", run.stdout, re.M)]
    per_iter = statistics.median(times[5:] or times)
    # The probe evaluated once (at iteration 0); what its iterations do not explain is that evaluation and the
    # start-up, an upper bound of one evaluation's cost.
    per_eval = max(0.0, total - per_iter * iters - 3.0)
    shutil.rmtree(work / "out-probe", ignore_errors=True)
    return per_iter, per_eval


def fit_iters(budget: float, per_iter: float, per_eval: float) -> int:
    """The iterations whose training and evaluations fill `budget` seconds, trimmed (by fewer than one per
    evaluation) to a multiple of their evaluation interval, so that the run ends with an evaluation."""
    iters = max(1, int(budget / (per_iter + per_eval / EVAL_INTERVAL)))
    return eval_interval(iters) * math.ceil(iters / EVAL_INTERVAL)


def load_nanogpt(work: Path):
    """nanoGPT's best checkpoint, read by its own model code, seen through what `score_text` reads."""
    import torch

    from textgen.local.tokenization import UNK, char_tokenizer

    spec = importlib.util.spec_from_file_location("nanogpt_model", work / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = torch.load(work / "out-cpu" / "ckpt.pt", map_location="cpu", weights_only=True)
    gpt = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    gpt.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    gpt.eval()
    with open(work / "data" / "shakespeare_char" / "meta.pkl", "rb") as f:  # written by prepare.py just now
        stoi = pickle.load(f)["stoi"]
    return NanoGPTScored(gpt, len(stoi)), char_tokenizer({**stoi, UNK: len(stoi)}), ckpt["iter_num"]


class NanoGPTScored:
    """nanoGPT's GPT as `textgen.local.evaluate` reads a model: every position's logits, its context, its output width.
    A character it never saw (our `<unk>`, one id past its vocabulary) gets a logit of -20: about 20 nats."""

    def __init__(self, gpt, vocab: int):
        self.gpt, self.vocab = gpt, vocab
        self.config = SimpleNamespace(max_position_embeddings=gpt.config.block_size)
        self.device = "cpu"

    def get_output_embeddings(self):
        return self.gpt.lm_head

    def __call__(self, input_ids, use_cache: bool = False):
        import torch

        ids = input_ids.clamp(max=self.vocab - 1)
        logits, _ = self.gpt(ids, targets=ids)  # given targets, nanoGPT returns every position's logits
        unknown = torch.full((*logits.shape[:2], 1), -20.0)
        return SimpleNamespace(logits=torch.cat([logits, unknown], dim=-1))


# -- both ---------------------------------------------------------------------------------------------------------

def score(model, tokenizer, texts: list[str]) -> float:
    """Nats per character over all of `texts`, every character scored."""
    from textgen.local.evaluate import score_text

    scores = [score_text(model, tokenizer, t) for t in texts]
    return sum(s.nats_per_char * s.chars for s in scores) / sum(s.chars for s in scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=240, help="seconds of training each")
    parser.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout (github.com/karpathy/nanoGPT)")
    parser.add_argument("--heldout", type=Path, help="text neither model trained on, scored as well")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sequential", action="store_true", help="one run after the other, not side by side")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "train_cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    # What `textgen train` holds out by default (three stretches of scenes, 10%), read from its config: when the
    # default was ten short chunks this line said so by hand, and it went on scoring those after the default
    # changed, some of them text our run had trained on.
    held_out = TrainConfig()
    split = split_text(read_text(args.data), held_out.val_fraction, chunks=held_out.val_chunks)
    print(f"validation: {held_out.val_chunks} stretches, {held_out.val_fraction:.0%} of the file, held out from both",
          file=sys.stderr)

    runs: dict[str, tuple[list[str], Path, dict]] = {"ours": (ours_command(args.out, args.budget, args.threads,
                                                                          args.data), ROOT, {})}
    if args.nanogpt:
        work = prepare_nanogpt(args.nanogpt.expanduser().resolve(), args.out, "".join(split.train))
        per_iter, per_eval = probe_nanogpt(work, args.threads)
        iters = fit_iters(args.budget, per_iter, per_eval)
        print(f"nanoGPT: {per_iter * 1000:.0f} ms an iteration, about {per_eval:.1f} s an evaluation here: "
              f"{iters} iterations fit {args.budget:.0f} s", file=sys.stderr)
        runs["nanogpt"] = (nanogpt_command(iters), work, {"iterations": iters})

    seconds: dict[str, float] = {}
    procs: dict[str, tuple[subprocess.Popen, float]] = {}
    for name, (cmd, cwd, _) in runs.items():
        procs[name] = (subprocess.Popen(cmd, cwd=cwd, env=env(args.threads), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL), time.monotonic())
        if args.sequential:
            proc, began = procs[name]
            proc.wait()
            seconds[name] = time.monotonic() - began
    for name, (proc, began) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name} failed (exit {proc.returncode}): run `{' '.join(runs[name][0])}` to see why")
        seconds.setdefault(name, time.monotonic() - began)

    results = {}
    for name, (_, _, facts) in runs.items():
        if name == "ours":
            model, tokenizer = load_ours(args.out)
            summary = json.loads((args.out / "ours" / "training_summary.json").read_text())
            facts = {"steps": summary.get("steps")}
        else:
            model, tokenizer, best_iter = load_nanogpt(runs[name][1])
            facts = {**facts, "best_checkpoint_iteration": best_iter}
        results[name] = {**facts, "wall_seconds": round(seconds[name]),
                         "val_nats_per_char": round(score(model, tokenizer, split.val), 4)}
        if args.heldout:
            results[name]["heldout_nats_per_char"] = round(score(model, tokenizer, [read_text(args.heldout)]), 4)
    if "nanogpt" in seconds and abs(seconds["nanogpt"] - args.budget) > 0.1 * args.budget:
        # Its probe timed a short run; a long one can go faster or slower (the machine's other work, warm caches).
        results["note"] = (f"nanoGPT's run took {seconds['nanogpt']:.0f} s of the {args.budget:.0f} s budget "
                           "(its probe misjudged its speed): weigh the comparison accordingly")
    results["load_average"] = round(os.getloadavg()[0], 1)
    if args.json:
        print(json.dumps(results))
        return
    for name in runs:
        r = results[name]
        held = f", held-out text {r['heldout_nats_per_char']:.4f}" if args.heldout else ""
        counts = {k: v for k, v in r.items() if k in ("steps", "iterations", "best_checkpoint_iteration")}
        print(f"{name:8} {r['wall_seconds']:5d} s wall: held-out stretches {r['val_nats_per_char']:.4f} "
              f"nats/char{held}   {counts}")
    if "note" in results:
        print(results["note"])
    print(f"load average at the end: {results['load_average']}")


if __name__ == "__main__":
    main()
