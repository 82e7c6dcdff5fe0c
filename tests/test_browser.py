"""The real page in headless Chromium, used the way a person uses it.

Needs Debian's Chromium (/usr/bin/chromium) and the playwright Python package (never `playwright install`:
it downloads a browser). Runs on the shipped models when they are there, so the screenshot it saves shows
real output; set TEXTGEN_SCREENSHOT=assets/screenshot.png to refresh the README's picture.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import free_port

import app
from textgen.catalog import SHIPPED_DIR, Catalog
from textgen.loading import ModelManager
from textgen.playground import Playground
from textgen.settings import Limits

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
playwright = pytest.importorskip("playwright.sync_api")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_url(catalog, tmp_path_factory):
    shipped = [d for d in SHIPPED_DIR.glob("*") if (d / "model.safetensors").exists()]
    cat = Catalog.default(include_gpt2=False) if len(shipped) >= 2 else catalog
    demo = app.build_demo(Playground(ModelManager(cat, device="cpu")))
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS)
    yield f"http://127.0.0.1:{port}/", cat
    demo.close()


@pytest.fixture(scope="module")
def browser():
    # launch() gives the browser a fresh temporary profile of its own.
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _output(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea").input_value()


def _wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def _set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def _errors(page) -> int:
    return page.locator(".toast-body.error, .error-badge, [data-testid='toast-body']").count()


def test_write_stream_stop_and_probabilities(page_url, browser, tmp_path):
    url, cat = page_url
    names = cat.names()
    target = names[1] if len(names) > 1 else names[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator("#prompt textarea").fill("ROMEO:\n")
    # pick a model from the dropdown as a person does: open it, click the option
    page.locator("#model input").click()
    page.get_by_role("option", name=cat.get(target).title).click()
    assert _wait_for(lambda: cat.get(target).description[:20] in page.locator("#model-note").inner_text(), 10)
    page.get_by_text("Sampling controls").click()
    _set_slider(page, "temperature", 0.7)
    _set_slider(page, "max_new_tokens", 1000)
    page.locator("#generate").click()

    assert _wait_for(lambda: len(_output(page, "output")) > 5), "no text appeared"
    first = len(_output(page, "output"))
    assert _wait_for(lambda: len(_output(page, "output")) > first + 5, interval=0.02), "the text did not grow"
    page.locator("#stop").click()
    assert _wait_for(lambda: "stopped by request" in page.locator("#stats").inner_text(), 15), \
        page.locator("#stats").inner_text()
    stopped_at = len(_output(page, "output"))
    time.sleep(1.0)
    assert len(_output(page, "output")) == stopped_at, "text kept coming after Stop"
    assert stopped_at < 1000
    assert _errors(page) == 0

    # a complete run, for the probability view and the picture
    _set_slider(page, "max_new_tokens", 400)
    page.locator("#generate").click()
    assert _wait_for(lambda: "maximum number" in page.locator("#stats").inner_text(), 60)
    tokens = page.locator("#tokens .tg-tok")
    assert _wait_for(lambda: tokens.count() > 5, 10)
    tokens.nth(2).hover()
    assert tokens.nth(2).locator(".tg-alts").is_visible()
    assert "%" in tokens.nth(2).locator(".tg-alts").inner_text()

    shot = Path(os.environ.get("TEXTGEN_SCREENSHOT") or tmp_path / "screenshot.png")
    page.get_by_text("Sampling controls").click()  # fold the sliders away again for the picture
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    page.close()


def test_compare_streams_models_side_by_side(page_url, browser):
    url, cat = page_url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Compare").click()
    # one click on an example fills the form and starts the models
    page.get_by_text("First Citizen:").filter(visible=True).first.click()
    chosen = min(len(cat.names()), Limits().max_compare)
    assert _wait_for(lambda: all(len(_output(page, f"cmp-out-{i}")) > 20 for i in range(min(chosen, 2))), 60)
    assert _wait_for(lambda: all("tokens/s" in page.locator(f"#cmp-stats-{i}").inner_text()
                                 for i in range(min(chosen, 2))), 60)
    assert "First Citizen" in page.locator("#cmp-prompt textarea").input_value()
    assert _errors(page) == 0
    page.close()


def test_a_bad_value_shows_a_message_not_a_traceback(page_url, browser):
    url, _ = page_url
    page = browser.new_page()
    page.goto(url)
    page.locator("#prompt textarea").fill("")
    page.locator("#prompt textarea").fill("x" * 10_001)
    page.locator("#generate").click()
    toast = page.locator(".toast-body")
    assert _wait_for(lambda: toast.count() > 0, 15)
    assert "limit" in toast.first.inner_text() and "Traceback" not in toast.first.inner_text()
    page.close()
