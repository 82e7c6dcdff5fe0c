"""How often a small assistant answers plain questions right, by sampling style: the measure behind Chat's default.

    python benchmarks/chat_accuracy.py                          # SmolLM2, every candidate style, seeds 1-10
    python benchmarks/chat_accuracy.py --styles answers precise --seeds 5 --system ""   # the model's own prompt

Each question is asked alone (a new conversation with the Chat tab's system prompt, or `--system`), through
`Playground.chat`, the path the page's Chat tab takes. A reply counts as right when it contains one of the
question's accepted answers (whole words, any case). Prints, per style, the right answers out of the tries for
every question, the total, and how many questions were right in at least 9 tries of 10 (the issue's bar). A style
is the sampling controls it sets; `answers` is Chat's default (Answers), `precise` is Write's Precise.

The questions are plain facts a 135M assistant is expected to know (a capital, a sum, a colour, an animal);
they are not the ones the bar is checked on, so a style is chosen by its total over all of them, not per question.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from textgen.core.settings import CHAT_STYLE, CHAT_SYSTEM_PROMPT, preset_values  # noqa: E402

QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is 2 + 2?", ("4", "four")),
    ("What is 10 minus 3?", ("7", "seven")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What color is grass?", ("green",)),
    ("How many days are in a week?", ("7", "seven")),
    ("How many legs does a spider have?", ("8", "eight")),
    ("What is the opposite of hot?", ("cold",)),
    ("Which animal says moo?", ("cow", "cows")),
    ("What do bees make?", ("honey",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("What is frozen water called?", ("ice",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
)

# A second set, written after the system prompt had been chosen on the first, to check that choice on questions it
# was not chosen with (`--questions fresh`).
FRESH: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Spain?", ("madrid",)),
    ("What is 3 + 5?", ("8", "eight")),
    ("How many hours are in a day?", ("24", "twenty")),
    ("What color is a banana?", ("yellow",)),
    ("What is the opposite of up?", ("down",)),
    ("How many months are in a year?", ("12", "twelve")),
    ("At what temperature in Celsius does water boil?", ("100",)),
    ("Which planet do we live on?", ("earth",)),
    ("What is the largest ocean on Earth?", ("pacific",)),
    ("Who painted the Mona Lisa?", ("leonardo", "vinci")),
    ("What is the tallest animal?", ("giraffe", "giraffes")),
    ("What do you call a baby cat?", ("kitten",)),
    ("What is the color of snow?", ("white",)),
)
QUESTION_SETS = {"main": QUESTIONS, "fresh": FRESH}

# Candidate styles: Chat's own (Answers), Write's presets, and the other values tried (benchmarks/CHAT.md).
STYLES: dict[str, dict[str, float]] = {
    "answers": dict(CHAT_STYLE),
    "precise": preset_values("Precise"),
    "balanced": preset_values("Balanced"),
    "answers-t0.2": {**CHAT_STYLE, "temperature": 0.2},
    "answers-t0.3": {**CHAT_STYLE, "temperature": 0.3},
    "greedy": {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0},
}


# The bar counts a question as answered when it is right in at least 9 tries of 10: a style is judged both by
# its total and by how many questions it answers that steadily.
STEADY = 0.9


def right(reply: str, accepted: tuple[str, ...]) -> bool:
    """Whether the reply holds one of the accepted answers as a whole word."""
    words = set(re.findall(r"[a-z0-9]+", reply.lower()))
    return any(a in words for a in accepted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=list(STYLES))
    parser.add_argument("--seeds", type=int, default=10, help="seeds for each question: N of them")
    parser.add_argument("--first-seed", type=int, default=1, help="the first of the seeds (default 1: seeds 1..N)")
    parser.add_argument("--tokens", type=int, default=40, help="max new tokens of a reply (answers come first)")
    parser.add_argument("--system", default=CHAT_SYSTEM_PROMPT,
                        help="the system prompt (default: the Chat tab's; \"\" for the model's own)")
    parser.add_argument("--show", action="store_true", help="print every reply")
    parser.add_argument("--questions", choices=list(QUESTION_SETS), default="main",
                        help="which questions: the set the defaults were chosen on, or a fresh one to check them")
    args = parser.parse_args(argv)

    from textgen.service.catalog import Catalog
    from textgen.service.loading import ModelManager
    from textgen.service.playground import Playground

    playground = Playground(ModelManager(Catalog.default()))
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    questions = QUESTION_SETS[args.questions]
    print(f"{args.model}: {len(questions)} questions x seeds {seeds[0]}-{seeds[-1]}, {args.tokens} tokens a reply",
          flush=True)
    totals = {}
    for style in args.styles:
        started, score, steady = time.perf_counter(), 0, 0
        print(f"\n{style}: {STYLES[style]}", flush=True)
        for question, accepted in questions:
            hits = 0
            for seed in seeds:
                settings = playground.parse("", seed=seed, max_new_tokens=args.tokens, **STYLES[style])
                *_, live = playground.chat(args.model, [{"role": "user", "content": question}], args.system,
                                           settings)
                ok = right(live.text, accepted)
                hits += ok
                if args.show:
                    print(f"    {'+' if ok else '-'} {live.text[:90]!r}")
            score += hits
            steady += hits >= STEADY * args.seeds
            print(f"  {hits:>2}/{args.seeds}  {question}", flush=True)
        totals[style] = score, steady
        print(f"  {score}/{len(questions) * args.seeds} right, {steady}/{len(questions)} questions right at least "
              f"{STEADY:.0%} of the time ({time.perf_counter() - started:.0f} s)", flush=True)
    print("\n" + "  ".join(f"{s}: {n}/{len(questions) * args.seeds} ({k}/{len(questions)} steady)"
                           for s, (n, k) in totals.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
