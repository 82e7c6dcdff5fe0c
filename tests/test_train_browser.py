"""The Train tab in headless Chromium, as a visitor uses it: paste a text, train for a few seconds, watch the curve
grow and the sample change, then write with the new model in the Write tab; and on a phone.

Needs Debian's Chromium (/usr/bin/chromium) and the playwright Python package (never `playwright install`).
TEXTGEN_TRAIN_SCREENSHOT=assets/screenshot-train.png refreshes the README's picture.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import free_port
from helpers import page_errors, set_slider, wait_for

import app
import textgen.service.training as training
from textgen.service.catalog import SHIPPED_DIR, Catalog, shipped_entries
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest.py) skips where Chromium is missing

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TEXTGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setattr(training, "MIN_SECONDS", 4)  # a few seconds are enough to see the curve grow
    mp.setattr(training, "REPORT_EVERY", 1.0)
    cat = Catalog([e for e in shipped_entries(SHIPPED_DIR) if e.name == "lstm"])
    demo, url = app.serve(Playground(ModelManager(cat, device="cpu")), free_port())
    yield url
    demo.close()
    mp.undo()


# The loss curve's lines that the page really draws: a path with points and a visible colour.
DRAWN_LINES_JS = """() => [...document.querySelectorAll('#train-plot .mark-line path')]
    .filter(p => (p.getAttribute('d') || '').includes('L') && getComputedStyle(p).stroke !== 'none')
    .map(p => getComputedStyle(p).stroke)"""


def _train(page, url: str, seconds: int, name: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-text textarea").fill(TEXT)
    page.locator("#train-name input, #train-name textarea").first.fill(name)
    set_slider(page, "train-seconds", seconds)
    page.locator("#train-run").click()


def _status_shows(page, *words: str, seconds: float) -> None:
    """Wait until the status line says one of `words`; a failure names what it said instead (once CI's busy
    machine only reported "no progress shown", which told apart neither a lost click, a refusal nor a slow start)."""
    status = page.locator("#train-status")
    if not wait_for(lambda: any(w in status.inner_text() for w in words), seconds):
        errors = page.locator(".toast-body").all_inner_texts()
        raise AssertionError(f"after {seconds} s the status says {status.inner_text()!r}, not {words}; "
                             f"messages on the page: {errors}")


def _progress_shown(page) -> None:
    """The click is taken (the trainer starts) and then the first step shows. The deadlines are generous: on a
    busy machine the trainer's process takes many seconds to load torch before its first step."""
    _status_shows(page, "Starting the trainer", "Step ", seconds=60)
    _status_shows(page, "Step ", seconds=240)


def test_train_watch_it_learn_and_write_with_the_model(page_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    _train(page, page_url, 15, "bard")  # long enough that the steps show on a busy machine
    _progress_shown(page)
    samples = {page.locator("#train-sample textarea").input_value()}
    _status_shows(page, "Done after", seconds=120)
    samples.add(page.locator("#train-sample textarea").input_value())
    assert len(samples) == 2, "the sample should change as the model learns"
    # Both lines drawn in a colour, and named in the legend: once the axes showed and the lines had no colour.
    assert wait_for(lambda: len(page.evaluate(DRAWN_LINES_JS)) == 2, 15), page.evaluate(DRAWN_LINES_JS)
    legend = page.locator("#train-plot .role-legend").text_content()
    assert "on the training text" in legend and "on the part held back" in legend, legend
    download = page.locator("#train-download")  # Gradio shows the name in two parts: "bard" and ".zip"
    assert wait_for(lambda: "bard.zip" in download.inner_text().replace("\n", ""), 15), download.inner_text()
    shot = os.environ.get("TEXTGEN_TRAIN_SCREENSHOT")
    page.screenshot(path=str(Path(shot) if shot else tmp_path / "train.png"), full_page=True)
    # The model is in Write's picker now; it writes there.
    page.get_by_role("tab", name="Write").click()
    page.locator("#model input").click()
    page.get_by_role("option", name="bard (yours: LSTM, small)").click()
    page.locator("#generate").click()
    assert wait_for(lambda: "tokens/s" in page.locator("#stats").inner_text(), 60), "the new model did not write"
    assert page.locator("#output textarea").input_value().strip()
    assert page_errors(page) == 0


def test_on_a_phone_the_training_and_stop_fit_the_screen(page_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    _train(page, page_url, 60, "pocket")
    _progress_shown(page)
    page.locator("#train-stop").click()
    _status_shows(page, "Stopped after", seconds=60)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
    # The kind of model has a line of its own, its words in full ("LSTM: gated mem" under the arrow, when two
    # controls shared a line).
    assert page.evaluate("""() => { const i = document.querySelector('#train-arch input');
        return i.scrollWidth <= i.clientWidth + 1; }""")
    page.screenshot(path=str(tmp_path / "train-phone.png"), full_page=True)
    assert page_errors(page) == 0
