"""The Decoding tab in headless Chromium, as a person uses it: pick a model, write all three, read the texts and
their chances, fold a branch of the tree, on a laptop and a phone.

Needs Debian's Chromium (/usr/bin/chromium) and the playwright Python package (never `playwright install`).
Runs on the shipped models; TEXTGEN_DECODE_SCREENSHOT=assets/screenshot-decode.png refreshes the README's picture
(otherwise the screenshots stay in a temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import free_port
from helpers import page_errors, wait_for

import app
from textgen.service.catalog import SHIPPED_DIR, Catalog, shipped_entries
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest.py) skips where Chromium is missing


@pytest.fixture(scope="module")
def page_url():
    entries = shipped_entries(SHIPPED_DIR)
    if not {"lstm", "transformer"} <= {e.name for e in entries}:
        pytest.skip("needs the shipped LSTM and Transformer")
    cat = Catalog(entries)
    demo, url = app.serve(Playground(ModelManager(cat, device="cpu")), free_port())
    yield url, cat
    demo.close()


def _write_all_three(page, url: str, cat, model: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Decoding").click()
    page.locator("#dec-model input").click()
    page.get_by_role("option", name=cat.get(model).title, exact=True).click()
    page.locator("#dec-run").click()
    assert wait_for(lambda: "chance of about 1 in" in page.locator("#dec-sample").inner_text(), 60), "no samples"


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_greedy_beams_and_samples_side_by_side_on_a_laptop(page_url, browser, tmp_path, model):
    url, cat = page_url
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    _write_all_three(page, url, cat, model)
    greedy, beam = page.locator("#dec-greedy"), page.locator("#dec-beam")
    assert greedy.locator(".dc-texts li").count() == 1
    assert beam.locator(".dc-texts li").count() in (4, 5)  # four beams (and greedy's text, when it won)
    assert page.locator("#dec-sample .dc-texts li").count() == 3
    boxes = [page.locator(f"#dec-{name}").bounding_box() for name in ("greedy", "beam", "sample")]
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"], "the three methods should stand side by side"
    sliders = [page.locator(f"#dec-{name}").bounding_box() for name in ("beams", "samples", "tokens")]
    assert len({round(b["y"]) for b in sliders}) == 1, sliders  # and the three sliders in one row
    # The tree folds: a click on a branch's line closes it, and its lines below are hidden.
    branch = beam.locator(".dc-tree details").first
    assert branch.get_attribute("open") is not None
    branch.locator("summary").first.click()
    assert wait_for(lambda: branch.get_attribute("open") is None)
    assert beam.locator(".dc-best").count() > 0  # the best text's path is marked
    shot = os.environ.get("TEXTGEN_DECODE_SCREENSHOT") if model == "lstm" else None
    branch.locator("summary").first.click()  # open again for the picture
    page.screenshot(path=str(Path(shot) if shot else tmp_path / "decode.png"), full_page=True)
    assert page_errors(page) == 0


def test_on_a_phone_the_methods_stand_one_under_another(page_url, browser, tmp_path):
    url, cat = page_url
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    _write_all_three(page, url, cat, "lstm")
    boxes = [page.locator(f"#dec-{name}").bounding_box() for name in ("greedy", "beam", "sample")]
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes), boxes
    # So do the sliders: side by side, each had half a phone and its help wrapped one word a line.
    sliders = [page.locator(f"#dec-{name}").bounding_box() for name in ("beams", "samples", "tokens")]
    assert all(a["y"] + a["height"] <= b["y"] + 1 for a, b in zip(sliders, sliders[1:])), sliders
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
    page.screenshot(path=str(tmp_path / "decode-phone.png"), full_page=True)
    assert page_errors(page) == 0
