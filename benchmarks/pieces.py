"""Two models on the same text, piece by piece: is one better throughout, or only on average?

    python benchmarks/pieces.py --data LAST.txt --pieces 15 assets/models/transformer runs/tf-rope-long-wd10

One figure over a whole text can hide that a model wins on one passage and loses on the rest. This cuts the text
into N pieces of about equal length, scores each piece alone (from a newline, as `python -m textgen eval` does) with
both models, and prints nats per character of each, their difference, and on how many pieces the second model is
better. Scored alone, a piece loses the context before it, the same for both models, so the pieces' mean is a little
above the whole text's figure; the comparison stays fair.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from textgen.local.devices import configure_cpu_threads  # noqa: E402
from textgen.local.evaluate import score_text  # noqa: E402
from textgen.service.catalog import Catalog  # noqa: E402
from textgen.service.loading import load_for_cli  # noqa: E402
from textgen.training.data import read_text  # noqa: E402


def cut(text: str, pieces: int) -> list[str]:
    """`text` in `pieces` consecutive parts of nearly equal length."""
    bounds = [round(i * len(text) / pieces) for i in range(pieces + 1)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def scores(model: str, parts: list[str]) -> list[float]:
    loaded = load_for_cli(model, Catalog.default(), "cpu")
    return [score_text(loaded.model, loaded.tokenizer, part).nats_per_char for part in parts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", help="a catalog name or a model directory")
    parser.add_argument("second", help="the model compared with the first")
    parser.add_argument("--data", required=True, help="a UTF-8 text file")
    parser.add_argument("--pieces", type=int, default=15)
    args = parser.parse_args()
    configure_cpu_threads()
    text = read_text(args.data)
    if not 1 <= args.pieces <= len(text):
        parser.error(f"--pieces must be from 1 to the text's length ({len(text):,} characters)")
    parts = cut(text, args.pieces)
    first, second = scores(args.first, parts), scores(args.second, parts)
    print("piece  chars  first   second  second-first")
    for i, (part, a, b) in enumerate(zip(parts, first, second)):
        print(f"{i:5d} {len(part):6d}  {a:.4f}  {b:.4f}  {b - a:+.4f}")
    wins = sum(b < a for a, b in zip(first, second))
    n = len(parts)
    print(f"mean   {sum(first) / n:.4f}  {sum(second) / n:.4f}  second better on {wins} of {n} pieces")


if __name__ == "__main__":
    main()
