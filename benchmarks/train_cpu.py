"""How fast the default Transformer recipe learns on CPU: validation loss over a fixed wall-clock budget.

    python benchmarks/train_cpu.py --budget 240                  # ours, and nanoGPT's CPU recipe beside it
    python benchmarks/train_cpu.py --budget 240 --only ours --threads 2

Runs `python -m textgen train --arch transformer --time-budget BUDGET` (the default recipe, nothing else
set) and, at the same time in a second process, nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide, block 64,
batch 12, lr 1e-3 decaying to 1e-4 over 2000 steps, no dropout) reproduced in the same trainer, so both are
scored on the same held-out text. Each process gets `--threads` torch threads: run it on an otherwise idle
machine with threads x 2 <= cores. Prints the validation curve (loss per token, the trainer's quick
estimate) and each final checkpoint's nats per character over the whole held-out split.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare_train.txt"
NANOGPT_CPU = ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64", "--batch-size", "12",
               "--lr", "1e-3", "--min-lr-ratio", "0.1", "--dropout", "0.0", "--warmup-steps", "100",
               "--max-steps", "2000", "--weight-decay", "0.1"]


def command(name: str, out: Path, budget: float, threads: int, data: Path) -> list[str]:
    base = [sys.executable, "-m", "textgen", "train", "--arch", "transformer", "--data", str(data),
            "--out", str(out / name), "--threads", str(threads), "--eval-interval", "100"]
    if name == "ours":
        return [*base, "--time-budget", str(budget)]
    return [*base, *NANOGPT_CPU]


def curve(path: Path) -> list[tuple[float, float]]:
    with path.open() as f:
        return [(float(r["seconds"]), float(r["val_loss"])) for r in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=240)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=["ours", "nanogpt"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "train_cpu")
    args = parser.parse_args()
    names = [args.only] if args.only else ["ours", "nanogpt"]
    procs = {n: subprocess.Popen(command(n, args.out, args.budget, args.threads, args.data), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for n in names}
    results = {}
    for name, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed (exit {proc.returncode})")
        results[name] = json.loads(out.strip().splitlines()[-1])
    for name in names:
        r = results[name]
        print(f"\n{name}: {r['steps']} steps in {r['train_seconds']:.0f} s, "
              f"held-out {r['val_nats_per_char']:.4f} nats/char ({r['val_bits_per_char']:.3f} bits/char)")
        print("  seconds  val loss/token")
        for seconds, loss in curve(args.out / name / "loss.csv"):
            print(f"  {seconds:7.0f}  {loss:.4f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
