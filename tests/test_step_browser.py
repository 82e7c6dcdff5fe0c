"""The Step by step tab in headless Chromium, used the way a person uses it: start, move a slider, pick a token by
clicking its bar (and with the keyboard), take it back, sample many, run N, and look inside the models.

Needs Debian's Chromium (/usr/bin/chromium) and the playwright Python package (never `playwright install`).
Runs on the shipped models; saves its screenshots in a temporary folder and the tab's picture in
assets/screenshot-step.png (set TEXTGEN_STEP_SCREENSHOT to put it elsewhere).
"""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import free_port
from helpers import page_errors, set_slider, wait_for

import app
from textgen.service.catalog import SHIPPED_DIR, Catalog, shipped_entries
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest.py) skips where Chromium is missing
# TEXTGEN_STEP_SCREENSHOT=assets/screenshot-step.png refreshes the README's picture; otherwise it stays in tmp.
SHOTS = os.environ.get("TEXTGEN_STEP_SCREENSHOT")


@pytest.fixture(scope="module")
def page_url():
    entries = shipped_entries(SHIPPED_DIR)
    names = {e.name for e in entries}
    if not {"lstm", "transformer"} <= names:
        pytest.skip("needs the shipped LSTM and Transformer")
    cat = Catalog(entries)
    demo, url = app.serve(Playground(ModelManager(cat, device="cpu")), free_port())
    yield url, cat
    demo.close()


_wait_for, _set_slider, _errors = wait_for, set_slider, page_errors


def _open_tab(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Step by step").click()
    page.locator("#step-prompt textarea").wait_for()


def _written(page) -> int:
    return page.locator("#step-text .tg-tok").count()


def _last_stage(page):
    return page.locator("#step-bars section").last


def _start(page, prompt: str = "ROMEO:\n") -> None:
    page.locator("#step-prompt textarea").fill(prompt)
    page.locator("#step-start").click()
    assert _wait_for(lambda: page.locator("#step-bars .sg-bar").count() > 0, 60), "no bars after Start"
    assert _wait_for(lambda: "read your prompt" in page.locator("#step-status").inner_text())


def _pick_model(page, cat, name: str) -> None:
    page.locator("#step-model input").click()
    page.get_by_role("option", name=cat.get(name).title, exact=True).click()


def test_step_pick_back_sample_many_and_run(page_url, browser, tmp_path):
    url, cat = page_url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _open_tab(page, url)
    for name, value in (("temperature", 1), ("top_p", 1), ("repetition_penalty", 1), ("min_p", 0)):
        _set_slider(page, f"step-{name}", value)
    _start(page)
    assert page.locator("#step-bars section").count() == 1, "with every control off there is only the model's wish"
    assert page.locator("#step-bars .sg-cut").count() == 0

    # Top-k 3: a new box, where all but three of the listed tokens are greyed out, at once and without the model.
    status_before = page.locator("#step-status").inner_text()
    _set_slider(page, "step-top_k", 3)
    last = _last_stage(page)
    assert _wait_for(lambda: "Top-k 3" in last.inner_text()), last.inner_text()
    rows = last.locator(".sg-bar")
    cut = last.locator(".sg-cut")
    assert rows.count() - cut.count() == 3 and cut.count() >= 5
    opacity = float(cut.first.locator(".sg-tok").evaluate("e => getComputedStyle(e).opacity"))
    assert opacity < 0.6, "a removed token should look greyed out"
    runs = lambda text: text.split("the model has run")[1]  # noqa: E731
    assert runs(page.locator("#step-status").inner_text()) == runs(status_before), "the slider ran the model"
    page.screenshot(path=str(tmp_path / "top-k.png"))

    # Pick: click the likeliest bar of the last box; the text grows by that token.
    bar = last.locator(".sg-bar:not(.sg-cut)").first
    token = bar.locator(".sg-tok").inner_text()
    bar.click()
    assert _wait_for(lambda: _written(page) == 1, 15)
    assert "You picked" in page.locator("#step-status").inner_text()
    shown = page.locator("#step-text .tg-tok").last.inner_text()
    assert shown.replace("↵", "").strip() == token.replace("␣", " ").replace("↵", "").strip()

    # The keyboard does it too: Tab to a bar of the last box, Enter.
    _last_stage(page).locator(".sg-bar").nth(1).focus()
    page.keyboard.press("Enter")
    assert _wait_for(lambda: _written(page) == 2, 15)

    # Back: the text shrinks by one token.
    page.locator("#step-back").click()
    assert _wait_for(lambda: _written(page) == 1, 15)
    assert "Took back" in page.locator("#step-status").inner_text()

    # Sample many: 200 draws counted beside the last box's bars.
    page.locator("#step-many").click()
    counts = page.locator("#step-bars .sg-count")
    assert _wait_for(lambda: counts.count() > 0, 15)
    total = sum(int(c.replace("×", "")) for c in counts.all_inner_texts() if c)  # none beside a removed token
    assert total == 200 and "200 draws" in page.locator("#step-bars").inner_text()
    assert _written(page) == 1

    # Run N: ten more tokens, then it stops for a look.
    _set_slider(page, "step-n", 10)
    page.locator("#step-run").click()
    assert _wait_for(lambda: _written(page) == 11, 30), _written(page)
    assert "Wrote 10 tokens" in page.locator("#step-status").inner_text()

    # Hovering over a written token shows what else was possible then.
    page.locator("#step-text .tg-tok").first.hover()
    pop = page.locator(".tg-pop-step")
    assert _wait_for(lambda: pop.is_visible()) and "%" in pop.inner_text()
    assert page.locator(".tg-pop-step").count() == 1  # one pop-up for this view, apart from the Write tab's
    page.mouse.move(0, 0)
    assert _wait_for(lambda: not pop.is_visible())
    # So does a token that Run wrote: its pop-up lists the other tokens it was drawn among, not itself alone.
    page.locator("#step-text .tg-tok").last.hover()
    assert _wait_for(lambda: pop.is_visible()) and pop.inner_text().count("%") >= 2, pop.inner_text()
    page.mouse.move(0, 0)
    assert _wait_for(lambda: not pop.is_visible())

    # The README's picture: a word about to start, three controls on, and 200 draws beside the bars.
    page.locator("#step-prompt textarea").fill("ROMEO:\nBut soft, what light through yonder window")
    for name, value in (("temperature", 0.8), ("top_k", 5), ("top_p", 0.9)):
        _set_slider(page, f"step-{name}", value)
    page.locator("#step-start").click()
    assert _wait_for(lambda: _written(page) == 0 and "yonder" in page.locator("#step-text").inner_text(), 30)
    model_stage = page.locator("#step-bars section").first
    assert _wait_for(lambda: "Top-p 0.9" in _last_stage(page).inner_text())
    space = model_stage.locator(".sg-bar", has_text="␣")
    (space if space.count() else model_stage.locator(".sg-bar")).first.click()
    assert _wait_for(lambda: _written(page) == 1, 15)
    page.locator("#step-many").click()
    assert _wait_for(lambda: page.locator("#step-bars .sg-count").count() > 0, 15)
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(tmp_path / "step.png"), full_page=False)
    assert (tmp_path / "step.png").stat().st_size > 20_000
    if SHOTS:
        shutil.copy(tmp_path / "step.png", SHOTS)
    assert _errors(page) == 0
    page.close()


def test_inside_the_models(page_url, browser, tmp_path):
    url, cat = page_url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    _open_tab(page, url)
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    _pick_model(page, cat, "lstm")
    _start(page, text)
    page.get_by_text("Inside the model").click()
    # Before a look there is nothing to pick from: the pickers come with the look, those that fit the model.
    pickers = {name: page.locator(f"#step-{name}") for name in ("att-layer", "att-head", "att-query", "units")}
    assert _wait_for(lambda: page.locator("#step-look").is_visible())
    assert not any(p.is_visible() for p in pickers.values())
    page.locator("#step-look").click()
    # The LSTM: units worth a look, one shown as a heat map; attention says in one line that it has none.
    assert _wait_for(lambda: "Unit" in page.locator("#step-heat").inner_text(), 30)
    assert "has no attention" in page.locator("#step-attention").inner_text()
    assert pickers["units"].is_visible() and not pickers["att-layer"].is_visible()
    # Only the view that fits keeps its heading: no "Where a Transformer looks" above the LSTM's note.
    intros = {name: page.locator(f"#step-{name}-intro") for name in ("attention", "units")}
    assert intros["units"].is_visible() and not intros["attention"].is_visible()
    options = page.locator("#step-units label")
    assert options.count() >= 3 and "seems to" in options.first.inner_text()
    first_map = page.locator("#step-heat").inner_html()
    options.nth(1).click()
    assert _wait_for(lambda: page.locator("#step-heat").inner_html() != first_map)
    page.locator("#step-heat").screenshot(path=str(tmp_path / "units.png"))

    # The Transformer: where a token looks; click another token to look from it.
    _pick_model(page, cat, "transformer")
    title = cat.get("transformer").title
    assert _wait_for(lambda: f"{title} has read your prompt" in page.locator("#step-status").inner_text(), 30)
    # Another model: the LSTM's units go at once, and no attention picker is offered before the look.
    assert _wait_for(lambda: not any(p.is_visible() for p in pickers.values()))
    assert all(intro.is_visible() for intro in intros.values())  # before a look, both say what it can show
    page.locator("#step-look").click()
    view = page.locator("#step-attention")
    assert _wait_for(lambda: "Looking from token" in view.inner_text(), 30)
    assert "no memory units" in page.locator("#step-heat").inner_text()
    assert pickers["att-layer"].is_visible() and pickers["att-head"].is_visible()
    assert not pickers["units"].is_visible()
    assert intros["attention"].is_visible() and not intros["units"].is_visible()
    keys = view.locator(".sg-key")
    n = keys.count()  # the prompt's tokens: 62 characters, fewer tokens for a BPE model
    keys.nth(n // 3).click()
    assert _wait_for(lambda: f"Looking from token {n // 3}" in view.inner_text(), 15), view.inner_text()
    assert view.locator(".sg-later").count() > n // 3  # the tokens after it, which it cannot look at
    view.screenshot(path=str(tmp_path / "attention.png"))
    assert _errors(page) == 0
    page.close()


def test_on_a_phone_the_bars_fit_the_screen(page_url, browser, tmp_path):
    url, cat = page_url
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    _open_tab(page, url)
    _pick_model(page, cat, "lstm")  # a model with units to show (whatever the page starts on)
    # The sliders are folded away on a phone, so that Start is on the first screen; a person opens them.
    controls = page.locator("#step-controls > .label-wrap")
    assert _wait_for(lambda: "open" not in (controls.get_attribute("class") or "open"))
    assert page.locator("#step-start").bounding_box()["y"] < 844 * 1.5
    controls.click()
    _set_slider(page, "step-top_k", 5)
    _start(page)
    bars = page.locator("#step-bars")
    # Start brings the text and its bars up (on a phone they are laid out far below the button).
    assert _wait_for(lambda: page.locator("#step-bars .sg-bar").first.bounding_box()["y"] < 844), \
        page.locator("#step-bars").bounding_box()
    bars.scroll_into_view_if_needed()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width} px"
    for box in (b.bounding_box() for b in bars.locator(".sg-bar").all()[:20]):
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    # Two steps side by side, so that the four take two screens, not four (the page was 2,900 px tall).
    stages = [s.bounding_box() for s in bars.locator(".sg-stage").all()[:2]]
    assert len(stages) == 2 and abs(stages[0]["y"] - stages[1]["y"]) < 2, stages
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    # Tapping a bar writes its token on a phone too.
    _last_stage(page).locator(".sg-bar:not(.sg-cut)").first.tap()
    assert _wait_for(lambda: _written(page) == 1, 15)
    # Inside the model fits as well: the units of the LSTM over a few lines.
    _set_slider(page, "step-n", 40)
    page.locator("#step-run").tap()
    assert _wait_for(lambda: _written(page) == 41, 30)
    page.get_by_text("Inside the model").tap()
    page.locator("#step-look").tap()
    assert _wait_for(lambda: "Unit" in page.locator("#step-heat").inner_text(), 30)
    page.locator("#step-heat").scroll_into_view_if_needed()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone once the units show: {width} px"
    page.screenshot(path=str(tmp_path / "phone-units.png"))
    assert _errors(page) == 0
    page.close()
