"""A class on the page: several Chromium pages press Generate together, and what each person sees is timed.

    python benchmarks/load.py --build-gpt2-shaped /tmp/gpt2-shaped          # once
    python benchmarks/crowd_page.py --model /tmp/gpt2-shaped --pages 8 --tokens 50
    python benchmarks/crowd_page.py --pages 16 --tokens 100                 # the shipped LSTM

Starts the app on a free port (with `--model DIR` added when given), opens the pages (the first at phone width, the
others at laptop width), picks the model and the length on each as a person does, lets the first page write once
alone, then clicks Generate on every page within a fraction of a second and polls them all: when text first
appears on each, and when each says it stopped. Screenshots of a phone page and a laptop page halfway and at the
end go to --shots. The browsers run on the same machine as the server, so on a 2-core machine they take CPU from it:
a harder test than a class, each of whom brings their own computer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import (  # noqa: E402  (shared with the tests)
    CHROMIUM,
    CHROMIUM_ARGS,
    page_errors,
    set_slider,
    start_app,
    stop_app,
    wait_for,
)

PHONE, LAPTOP = {"width": 390, "height": 844}, {"width": 1366, "height": 900}


def open_page(browser, url: str, model: str, tokens: int, phone: bool, prompt: str):
    page = browser.new_page(viewport=PHONE if phone else LAPTOP)
    page.goto(url)
    page.locator("#generate").wait_for(timeout=120_000)
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#model input").click()
    page.get_by_role("option", name=model).first.click()
    if not page.locator("#max_new_tokens input[type=number]").is_visible():
        page.get_by_text("Sampling controls").first.click()
    set_slider(page, "max_new_tokens", tokens)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="DIR", help="a model folder to add (its name is the folder's)")
    parser.add_argument("--pick", help="the model's name in the picker (default: the folder's name, else lstm)")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--shots", type=Path, default=Path("/tmp/crowd-page"))
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}")
        return 2
    from playwright.sync_api import sync_playwright

    pick = args.pick or (Path(args.model).name if args.model else "LSTM")
    args.shots.mkdir(parents=True, exist_ok=True)
    url, server = start_app(*(["--model", args.model] if args.model else []), timeout=300)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            pages = [open_page(browser, url, pick, args.tokens, i == 0, f"Person {i + 1} writes:")
                     for i in range(args.pages)]
            start = time.monotonic()
            pages[0].locator("#generate").click()
            wait_for(lambda: "stopped:" in pages[0].locator("#stats").inner_text(), args.timeout)
            print(f"one page alone: stopped after {time.monotonic() - start:.1f} s; it reads: "
                  f"{pages[0].locator('#stats').inner_text().splitlines()[0]}")
            time.sleep(2)
            before = [page.locator("#stats").inner_text() for page in pages]  # the first page's alone run's numbers
            start = time.monotonic()
            for page in pages:  # a click from inside each page: all within a fraction of a second
                page.evaluate("document.querySelector('#generate').click()")
            clicks = time.monotonic() - start
            first: list[float | None] = [None] * len(pages)
            done: list[float | None] = [None] * len(pages)
            halfway = False
            while time.monotonic() - start < args.timeout and None in done:
                for i, page in enumerate(pages):
                    if done[i] is not None:
                        continue
                    stats = page.locator("#stats").inner_text()
                    if stats == before[i]:
                        continue
                    # A fast model may have finished by the time a busy browser is next polled: "stopped" without
                    # "writing" ever seen counts as text shown then too.
                    if first[i] is None and ("writing" in stats or "stopped:" in stats):
                        first[i] = time.monotonic() - start
                    if "stopped:" in stats:
                        done[i] = time.monotonic() - start
                if not halfway and sum(f is not None for f in first) * 2 >= len(pages):
                    pages[0].screenshot(path=args.shots / "phone-halfway.png")
                    pages[-1].screenshot(path=args.shots / "laptop-halfway.png")
                    halfway = True
                time.sleep(0.05)
            pages[0].screenshot(path=args.shots / "phone-end.png")
            pages[-1].screenshot(path=args.shots / "laptop-end.png")
            errors = sum(page_errors(page) for page in pages)
            browser.close()
    finally:
        stop_app(server)

    def shown(values: list[float | None]) -> str:
        return ", ".join("never" if v is None else f"{v:.1f}" for v in values)

    print(f"{len(pages)} pages clicked within {clicks:.2f} s")
    print(f"text first showed after (s): {shown(first)}")
    print(f"stopped after (s):           {shown(done)}")
    print(f"error messages on the pages: {errors}; screenshots in {args.shots}")
    return 0 if None not in done and errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
