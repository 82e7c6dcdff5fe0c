"""The real page in headless Chromium, used the way a person uses it.

Needs Debian's Chromium (/usr/bin/chromium) and the playwright Python package (never `playwright install`:
it downloads a browser). Runs on the shipped models when they are there, so the screenshot it saves shows
real output; set TEXTGEN_SCREENSHOT=assets/screenshot.png to refresh the README's picture.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from helpers import page_errors, set_slider, wait_for

from textgen.core.settings import Limits

# Seconds the page may take to answer while text streams, or to say it stopped after Stop: a frozen page took
# several; a healthy one on a busy machine a few tenths. benchmarks/page.py runs the same test at 0.5 s.
FREEZE = float(os.environ.get("TEXTGEN_PAGE_FREEZE", "3"))

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest.py) skips where Chromium is missing


@pytest.fixture(scope="module")
def page_url(shipped_page):
    return shipped_page  # conftest.py: the page on the shipped models


def _output(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea").input_value()


_wait_for, _set_slider, _errors = wait_for, set_slider, page_errors


def _stats(page) -> str:
    return page.locator("#stats").inner_text()


def _ours(cat) -> list[str]:
    return [e.name for e in cat if e.origin != "hub"]


def _pick_model(page, cat, name: str) -> None:
    """Pick a model from the dropdown as a person does: open it, click the option."""
    page.locator("#model input").click()
    page.get_by_role("option", name=cat.get(name).title, exact=True).click()
    assert _wait_for(lambda: cat.get(name).description[:20] in page.locator("#model-note").inner_text())


def test_a_long_text_streams_with_the_page_responsive_and_stop_answers(page_url, browser, tmp_path):
    """1000 tokens: the text grows in many steps, the page answers within a blink all along, and Stop pressed
    mid-run ends the text within a second and says so."""
    url, cat = page_url
    name = "lstm" if "lstm" in cat else _ours(cat)[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    _pick_model(page, cat, name)
    page.get_by_text("Sampling controls").click()
    _set_slider(page, "max_new_tokens", 1000)

    # A whole run: how the text grows, and how long the page takes to answer a script meanwhile (a page
    # frozen by updates answers late).
    clicked = time.monotonic()
    page.locator("#generate").click()
    lengths, answers, first_text = [], [], None
    while time.monotonic() - clicked < 60 and "stopped" not in _stats(page):
        asked = time.monotonic()
        lengths.append(page.evaluate("document.querySelector('#output textarea').value.length"))
        answers.append(time.monotonic() - asked)
        if first_text is None and lengths[-1] > 0:
            first_text = time.monotonic() - clicked
        time.sleep(0.02)
    assert "1000 tokens" in _stats(page), _stats(page)
    growth = sorted(set(lengths))
    assert first_text is not None and first_text < 15, first_text  # generous: the first use loads the model
    assert len(growth) >= 5, f"the text should grow in many steps, not jumps: {growth}"
    # While text streams (from the first text on: the wait before it is `first_text`), the page keeps answering.
    streaming = [a for a, n in zip(answers, lengths) if n > 0]
    slow = [(round(a, 2), n) for a, n in zip(answers, lengths) if n > 0 and a > 0.2]  # (seconds, text length)
    # A page frozen by its updates answered seconds late; a busy machine (CI) can add a few tenths to a healthy
    # page, so the test asks for no freeze (FREEZE) and prints the figure; the strict one is measured with
    # `python benchmarks/page.py` on a quiet machine (README: Performance).
    assert max(streaming) < FREEZE, f"the page stopped answering while text streamed: {slow} of {len(streaming)}"
    assert page.locator("#tokens .tg-tok").count() == 1000
    print(f"\n1000 tokens: first text after {first_text:.2f} s, {len(growth)} visible steps, "
          f"slowest page answer while streaming {max(streaming) * 1000:.0f} ms")

    # Stop, pressed while it writes.
    page.locator("#generate").click()
    assert _wait_for(lambda: 0 < len(_output(page, "output")) and "writing" in _stats(page), 15, 0.01)
    time.sleep(0.3)
    pressed = time.monotonic()
    page.locator("#stop").click()
    assert _wait_for(lambda: "you pressed Stop" in _stats(page), 5, 0.01), _stats(page)
    answered = time.monotonic() - pressed
    stopped_at = len(_output(page, "output"))
    time.sleep(1.0)
    assert len(_output(page, "output")) == stopped_at, "text kept coming after Stop"
    assert answered < FREEZE, f"the page said it stopped only {answered:.2f} s after the click"
    assert stopped_at < 1000
    print(f"Stop: the page said so {answered * 1000:.0f} ms after the click, at {stopped_at} characters")
    assert _errors(page) == 0
    page.close()


def _contrast_on_white(css_color: str) -> float:
    """WCAG's contrast ratio of an rgb(...) colour against white (4.5 is the least for text to read)."""
    def linear(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (float(v) for v in re.findall(r"[\d.]+", css_color)[:3])
    luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    return 1.05 / (luminance + 0.05)


def test_write_and_the_token_probabilities(page_url, browser, tmp_path):
    url, cat = page_url
    target = "transformer" if "transformer" in cat else _ours(cat)[0]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    # The help under the controls reads on a projector (Gradio's own grey was about 1.9:1 on white).
    helps = page.locator(".info-text")
    assert _wait_for(lambda: helps.count() > 0, 30)
    assert _contrast_on_white(helps.first.evaluate("e => getComputedStyle(e).color")) >= 4.5
    page.locator("#prompt textarea").fill("ROMEO:\n")
    _pick_model(page, cat, target)
    page.get_by_text("Sampling controls").click()
    _set_slider(page, "temperature", 0.7)
    assert _wait_for(lambda: page.locator("#preset input:checked").count() == 0), \
        "a slider moved by hand should clear the Style"
    page.get_by_text("Precise").click()
    assert _wait_for(lambda: page.locator("#temperature input[type=number]").input_value() == "0.3")
    page.locator("#generate").click()  # the default length
    assert _wait_for(lambda: "stopped" in _stats(page), 60), _stats(page)
    # A text longer than the Transformer's context is how it works, not a problem: a note, never a warning.
    assert "⚠️" not in _stats(page)
    tokens = page.locator("#tokens .tg-tok")
    assert _wait_for(lambda: tokens.count() > 5)
    tokens.nth(2).hover()
    pop = page.locator(".tg-pop-write")
    assert _wait_for(lambda: pop.is_visible())
    assert "%" in pop.inner_text() and "The model weighed" in pop.inner_text()

    shot = Path(os.environ.get("TEXTGEN_SCREENSHOT") or tmp_path / "screenshot.png")
    page.get_by_text("Sampling controls").click()  # fold the sliders away again for the picture
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    page.close()


def test_on_a_phone_every_tab_is_on_screen_without_a_hidden_menu(page_url, browser):
    url, _ = page_url
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(url)
    page.locator("#generate").wait_for(timeout=60_000)
    tabs = page.locator('[role="tab"]')
    assert _wait_for(lambda: tabs.count() == 7), tabs.count()
    for i in range(tabs.count()):
        tab = tabs.nth(i)
        box = tab.bounding_box()
        assert tab.is_visible() and box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (tab.inner_text(), box)
    tabs.nth(5).tap()  # the sixth, Perplexity, is one tap away like the first
    assert _wait_for(lambda: tabs.nth(5).get_attribute("aria-selected") == "true")
    # Before Score: no empty chart, no table headed "1 | 2 | 3"; after it, both, with a row per model.
    assert page.locator("#ppl-run").is_visible() and not page.locator("#ppl-table").is_visible()
    assert not page.locator("#ppl-plot").is_visible()
    page.locator("#ppl-run").tap()
    assert _wait_for(lambda: page.locator("#ppl-table").is_visible(), 120)
    assert _wait_for(lambda: "Surprise per character" in page.locator("#ppl-table").inner_text())
    assert page.locator("#ppl-plot").is_visible()
    # The chart's axes are named in words, not by a raw translation key ("__i18n__{...", as they once were).
    plot = page.locator("#ppl-plot")
    assert _wait_for(lambda: "surprise per character" in plot.inner_html())
    assert "__i18n__" not in plot.inner_html()
    # The table is wider than a phone and scrolls sideways inside its box: a line above it says so.
    assert page.locator("#ppl-swipe").is_visible()
    page.close()


BROKEN_WORDS_JS = """() => {  // the words of the table's headers that the layout split across two lines
  const broken = [];
  for (const th of document.querySelectorAll('#ppl-table th')) {
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        if (range.getClientRects().length > 1) broken.push(m[0]);
      }
    }
  }
  return broken;
}"""


def test_on_a_laptop_the_perplexity_table_lists_unknown_characters_and_breaks_no_word(page_url, browser, tmp_path):
    url, _ = page_url
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url)
    page.get_by_role("tab", name="Perplexity").click()
    text, box = "The café opened at 9 o'clock — 100% sure!", page.locator("#ppl-text textarea")
    # Typed once the tab is drawn with its sample text: filled sooner, the tab's first drawing can put it back.
    assert _wait_for(lambda: box.input_value() != "", 30)
    page.wait_for_timeout(500)
    box.fill(text)
    assert _wait_for(lambda: box.input_value() == text)
    page.locator("#ppl-run").click()
    table = page.locator("#ppl-table")
    assert _wait_for(lambda: "“é” “9” “—”" in table.inner_text(), 120), table.inner_text()
    assert page.evaluate(BROKEN_WORDS_JS) == []  # "Tokens" once read "Token / s" beside the unknown characters
    assert not page.locator("#ppl-swipe").is_visible()  # the phone's hint to swipe: this table fits a laptop
    page.screenshot(path=str(tmp_path / "perplexity.png"))
    assert _errors(page) == 0
    page.close()


def test_on_a_laptop_each_tab_opens_with_its_main_button_in_the_window(page_url, browser):
    """At 1366x768 a newcomer sees what to press without scrolling: Write's Generate was once 60 px under the
    window's bottom, below the style and the settings, and Compare's, Chat's, Score's and Train's likewise."""
    url, cat = page_url
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url)
    page.locator("#generate").wait_for(timeout=60_000)
    for tab, button in [("Write", "#generate"), ("Step by step", "#step-start"), ("Chat", "#chat-send"),
                        ("Compare", "#cmp-run"), ("Perplexity", "#ppl-run"), ("Train", "#train-run")]:
        page.get_by_role("tab", name=tab).click()
        page.locator(button).wait_for(state="visible", timeout=10_000)
        boxes = {"Compare": "#cmp-models", "Perplexity": "#ppl-models"}.get(tab)
        if boxes and "gpt2" in cat:  # measured once the models that cannot be used here are put in one line
            assert _wait_for(lambda: "Not available here" in page.locator(boxes).inner_text(), 30)  # noqa: B023
        page.evaluate("window.scrollTo(0, 0)")
        box = page.locator(button).bounding_box()
        assert box and box["y"] + box["height"] <= 768, (tab, box)
    assert page.evaluate(CUT_PICKER_JS) is False  # Train's kind of model read "LSTM: A recurrent network with gated me"
    page.close()


CUT_PICKER_JS = """() => { const i = document.querySelector('#train-arch input');
    return i.scrollWidth > i.clientWidth + 1; }"""  # whether the picker's words run on under its arrow


def test_on_a_phone_the_text_and_the_pop_up_stay_on_screen(page_url, browser, tmp_path):
    url, cat = page_url
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(url)
    page.locator("#generate").click()
    assert _wait_for(lambda: "stopped" in _stats(page), 60), _stats(page)
    box = page.locator("#output").bounding_box()
    assert box["y"] < 844 and box["y"] + 40 > 0, f"the output is off screen after Generate: {box}"
    tokens = page.locator("#tokens .tg-tok")
    last = tokens.nth(tokens.count() - 1)
    last.scroll_into_view_if_needed()
    last.tap()
    pop = page.locator(".tg-pop-write")
    assert _wait_for(lambda: pop.is_visible())
    pbox = pop.bounding_box()
    assert pbox["x"] >= 0 and pbox["x"] + pbox["width"] <= 390, f"the pop-up is cut off: {pbox}"
    page.screenshot(path=str(tmp_path / "phone.png"))
    page.close()


def test_an_unavailable_model_is_marked_in_a_list_and_named_beside_the_boxes(page_url, browser):
    """Offline, GPT-2 is marked in Write's list and its note says so; Compare offers no box that could only fail,
    and names it under the title instead (five such boxes pushed a phone's Compare button 320 px down). That a
    failing model leaves the others intact in Compare is tested through the API (test_api_bars.py)."""
    url, cat = page_url
    if "gpt2" not in cat:
        pytest.skip("needs the catalog with GPT-2 (the shipped models are missing)")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator("#model input").click()
    option = page.get_by_role("option", name=cat.get("gpt2").title, exact=False).first
    assert _wait_for(lambda: "unavailable: needs internet" in option.inner_text()), option.inner_text()
    option.click()
    assert _wait_for(lambda: "Not available on this server" in page.locator("#model-note").inner_text())

    page.get_by_role("tab", name="Compare").click()
    group = page.locator("#cmp-models")
    line = f"Not available here (needs internet to download): {cat.get('gpt2').title}"
    assert _wait_for(lambda: line in group.inner_text()), group.inner_text()
    labels = [group.locator("label").nth(i).inner_text() for i in range(group.locator("label").count())]
    assert cat.get("lstm").title in labels and not any("GPT-2" in label for label in labels), labels
    page.locator("#cmp-run").click()
    assert _wait_for(lambda: "stopped" in page.locator("#cmp-stats-0").inner_text(), 60)
    assert _errors(page) == 0
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
    # The boxes end level, however much text each model wrote in its tokens (a long one scrolls inside).
    assert _wait_for(lambda: all("stopped" in page.locator(f"#cmp-stats-{i}").inner_text() for i in range(chosen)), 120)
    heights = {round(page.locator(f"#cmp-out-{i}").bounding_box()["height"]) for i in range(chosen)}
    assert len(heights) == 1, heights
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
    assert _wait_for(lambda: toast.count() > 0)
    assert "limit" in toast.first.inner_text() and "Traceback" not in toast.first.inner_text()
    page.close()


def test_branch_from_a_token_writes_on_and_keeps_the_original(page_url, browser, tmp_path):
    url, cat = page_url
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_text("Sampling controls").click()
    _set_slider(page, "max_new_tokens", 60)
    page.locator("#generate").click()
    assert _wait_for(lambda: "stopped" in _stats(page), 60), _stats(page)
    original = _output(page, "output")
    assert _wait_for(lambda: page.locator("#tokens .tg-tok").count() == 60)
    # A token the model had a real choice at (where top-k/top-p left one token, there is nothing to branch to).
    index = page.evaluate("[...document.querySelectorAll('#tokens .tg-tok')]"
                          ".findIndex((t, i) => i >= 5 && JSON.parse(t.dataset.a).length > 1)")
    assert index >= 0, "no token with alternatives in 60"
    token = page.locator("#tokens .tg-tok").nth(index)
    choice = page.locator(".tg-pop-write .tg-branch").first
    # A click pins the pop-up and offers the other words as buttons (clicked again if a late redraw ate it).
    assert _wait_for(lambda: choice.is_visible() or token.click() or choice.is_visible(), 15)
    picked = choice.inner_text().split("  ")[0]
    sure = page.evaluate("[...document.querySelectorAll('#tokens .tg-tok')]"
                         ".findIndex(t => JSON.parse(t.dataset.a).length === 1)")
    if sure >= 0:  # a token with no other choice says why instead of offering nothing
        page.locator("#tokens .tg-tok").nth(sure).click()
        assert _wait_for(lambda: page.locator(".tg-pop-write .tg-none").is_visible())
        token.click()
        assert _wait_for(choice.is_visible)
    choice.click()
    branch = page.locator("#branch-output textarea")
    assert _wait_for(lambda: "stopped" in page.locator("#branch-stats").inner_text(), 60)
    assert _wait_for(lambda: f"[{picked.replace('␣', ' ').replace('↵', chr(10))}]" in branch.input_value()), \
        (picked, branch.input_value())
    assert _output(page, "output") == original, "the original text must stay as it was"
    # The branch is where the person is looking: the page went to it.
    assert _wait_for(lambda: page.evaluate(
        "(() => { const r = document.getElementById('branch-output').getBoundingClientRect();"
        " return r.top >= 0 && r.top < window.innerHeight; })()"), 10)
    assert "Earlier branches" not in page.locator("#branch-log").inner_text()  # the current one is not "earlier"
    page.screenshot(path=str(tmp_path / "branch.png"))
    # A second branch: the first moves to the list of earlier ones.
    first = branch.input_value()
    token.click()
    assert _wait_for(choice.is_visible, 15) or (token.click() or _wait_for(choice.is_visible, 5))
    choice.click()
    assert _wait_for(lambda: "Earlier branches" in page.locator("#branch-log").inner_text(), 30)
    assert _wait_for(lambda: "stopped" in page.locator("#branch-stats").inner_text(), 60)
    log = page.locator("#branch-log").inner_text()
    assert first[:20].replace("\n", "↵").lstrip("…") in log.replace("\n", "↵") and log.count("Branch at token") == 1
    # A new text: the old text's branches go.
    page.locator("#generate").click()
    assert _wait_for(lambda: not branch.is_visible(), 30)  # the section folds away, no empty box left open
    page.locator("#branches button").first.click()  # opened again, it is empty
    assert _wait_for(lambda: branch.input_value() == "" and page.locator("#branch-log").inner_text() == "", 30)
    assert _errors(page) == 0
    page.close()
