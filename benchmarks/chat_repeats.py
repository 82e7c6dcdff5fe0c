"""Whether a small assistant repeats itself in a long reply, by sampling style: why Chat's poem example is Balanced.

    python benchmarks/chat_repeats.py                                   # the poem and the explanation, seeds 1-5
    python benchmarks/chat_repeats.py --prompts "Write a song about rain." --seeds 10

Each prompt is sent alone (a new conversation with the Chat tab's system prompt) through `Playground.chat`, the
path the page's Chat tab takes, up to 200 tokens a reply as the tab's default. Prints, per prompt and style, how
many times the reply's most repeated line (8 characters or more) occurs in it, seed by seed: 1 is no repetition.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from textgen.core.settings import CHAT_STYLE, CHAT_SYSTEM_PROMPT, preset_values  # noqa: E402

PROMPTS = ("Write a short poem about the sea.", "Explain in two sentences what a language model is.")
STYLES: dict[str, dict[str, float]] = {
    "answers": dict(CHAT_STYLE),
    "balanced": preset_values("Balanced"),
    "creative": preset_values("Creative"),
    "precise": preset_values("Precise"),
    "answers-rep1.1": {**CHAT_STYLE, "repetition_penalty": 1.1},
}


def most_repeated_line(text: str) -> int:
    """How often the reply's most frequent line of 8 characters or more occurs (0 when it has none)."""
    lines = [line.strip().lower() for line in text.splitlines() if len(line.strip()) >= 8]
    return max(collections.Counter(lines).values(), default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=list(STYLES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args(argv)

    from textgen.service.catalog import Catalog
    from textgen.service.loading import ModelManager
    from textgen.service.playground import Playground

    playground = Playground(ModelManager(Catalog.default()))
    for prompt in args.prompts:
        print(prompt, flush=True)
        for style in args.styles:
            repeats, lengths = [], []
            for seed in range(1, args.seeds + 1):
                settings = playground.parse("", seed=seed, max_new_tokens=args.tokens, **STYLES[style])
                *_, live = playground.chat(args.model, [{"role": "user", "content": prompt}], CHAT_SYSTEM_PROMPT,
                                           settings)
                repeats.append(most_repeated_line(live.text))
                lengths.append(len(live.text))
            print(f"  {style:>15}: most repeated line, seed by seed {repeats}; characters {lengths}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
