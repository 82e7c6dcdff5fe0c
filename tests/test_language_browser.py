"""The page in Chinese and in English, as a browser set to each language gets it (headless Chromium).

Drives Write, Step by step and Compare in both languages, and saves Chinese screenshots, wide and at phone width:
set TEXTGEN_SCREENSHOT_DIR=assets to refresh the README's (assets/screenshot-zh.png, assets/screenshot-zh-phone.png).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import page_errors, wait_for

from textgen.service.catalog import Catalog

pytestmark = pytest.mark.browser  # the `browser` fixture (conftest.py) skips where Chromium is missing

HAN = re.compile(r"[\u3400-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")
TAB_NAMES = {"zh-CN": ["写作", "逐步生成", "解码方法", "对话", "对比", "困惑度", "训练"],
             "en-US": ["Write", "Step by step", "Decoding", "Chat", "Compare", "Perplexity", "Train"]}


@pytest.fixture(scope="module")
def page_url(shipped_page):
    return shipped_page  # conftest.py: the page on the shipped models


def _open(browser, url: str, locale: str, width: int = 1366, height: int = 768, **options):
    context = browser.new_context(locale=locale, viewport={"width": width, "height": height}, **options)
    page = context.new_page()
    page.goto(url)
    page.locator("#generate").wait_for(timeout=60_000)
    return context, page


def _interface_text(page, cat: Catalog) -> str:
    """The words of the interface as a person reads them: the text boxes' contents are not in it (inner text), and
    the names of models and of controls such as Top-k, and the example prompts, are taken out."""
    text = page.locator("body").inner_text()
    examples = page.locator(".gallery, table.table").all_inner_texts()  # the examples' prompts
    names = [e.title for e in cat] + [e.name for e in cat] + ["Top-k", "Top-p", "Min-p", "API", "GRU", "LSTM", "RNN",
                                                             "Transformer", "GPT-2", "SmolLM2", "Gradio", "English"]
    for part in [*examples, *sorted(names, key=len, reverse=True)]:
        text = text.replace(part, " ")
    return text


def _chinese_share(text: str) -> float:
    han, latin = len(HAN.findall(text)), len(LATIN.findall(text))
    return han / max(1, han + latin)


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_a_chinese_browser_gets_the_page_in_chinese_and_a_chinese_refusal(page_url, browser, tmp_path):
    url, cat = page_url
    context, page = _open(browser, url, "zh-CN")
    assert wait_for(lambda: HAN.search(page.locator("#model-note").inner_text()), 30), "the model's note in Chinese"
    tabs = [t.strip() for t in page.get_by_role("tab").all_inner_texts()]
    assert tabs == TAB_NAMES["zh-CN"]
    share = _chinese_share(_interface_text(page, cat))
    assert share >= 0.6, f"only {share:.0%} of the interface's letters are Chinese"
    # Write: a text written with its numbers in Chinese, then a prompt over the length limit refused in Chinese.
    page.locator("#generate").click()
    assert wait_for(lambda: "停止原因" in page.locator("#stats").inner_text(), 60), page.locator("#stats").inner_text()
    assert "个词元" in page.locator("#stats").inner_text()
    shots = Path(os.environ.get("TEXTGEN_SCREENSHOT_DIR") or tmp_path)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "screenshot-zh.png"))
    page.locator("#prompt textarea").fill("x" * 10_001)
    page.locator("#generate").click()
    toast = page.locator(".toast-body")
    assert wait_for(lambda: toast.count() > 0, 20)
    assert "提示有 10,001 个字符，上限是 10,000 个" in toast.first.inner_text()
    title = page.evaluate("getComputedStyle(document.querySelector('.toast-title'), '::before').content")
    assert "出错了" in title  # its heading too (Gradio writes "Error" there; the page draws its own word over it)
    page.locator("#prompt textarea").fill("ROMEO:\n")
    # Step by step: started, one token sampled, its words in Chinese.
    _tab(page, "逐步生成")
    page.locator("#step-start").click()
    assert wait_for(lambda: HAN.search(page.locator("#step-bars").inner_text() or ""), 60)
    page.locator("#step-sample").click()
    assert wait_for(lambda: "个词元" in page.locator("#step-status").inner_text(), 60), \
        page.locator("#step-status").inner_text()
    # Compare: every box's numbers in Chinese.
    _tab(page, "对比")
    page.locator("#cmp-run").click()
    assert wait_for(lambda: "停止原因" in page.locator("#cmp-stats-0").inner_text()
                    and "停止原因" in page.locator("#cmp-stats-1").inner_text(), 90)
    assert page_errors(page) <= 1  # the refused prompt's toast, and nothing else
    context.close()


def test_an_english_browser_gets_no_chinese_at_all(page_url, browser):
    url, _ = page_url
    context, page = _open(browser, url, "en-US")
    tabs = [t.strip() for t in page.get_by_role("tab").all_inner_texts()]
    assert tabs == TAB_NAMES["en-US"]
    page.locator("#prompt textarea").fill("x" * 10_001)
    page.locator("#generate").click()
    toast = page.locator(".toast-body")
    assert wait_for(lambda: toast.count() > 0, 20)
    assert "the prompt has 10,001 characters; the limit is 10,000" in toast.first.inner_text()
    page.locator("#prompt textarea").fill("ROMEO:\n")
    page.locator("#generate").click()
    assert wait_for(lambda: "stopped:" in page.locator("#stats").inner_text(), 60)
    _tab(page, "Step by step")
    page.locator("#step-start").click()
    page.locator("#step-sample").click()
    assert wait_for(lambda: "written after the prompt" in page.locator("#step-status").inner_text(), 60)
    _tab(page, "Compare")
    page.locator("#cmp-run").click()
    assert wait_for(lambda: "stopped:" in page.locator("#cmp-stats-0").inner_text(), 90)
    for name in TAB_NAMES["en-US"]:  # every tab, as drawn
        _tab(page, name)
        page.wait_for_timeout(300)
        assert not HAN.search(page.locator("body").inner_text()), f"Chinese on the English page, in {name}"
    context.close()


def test_the_switch_and_a_link_change_the_language_and_the_phone_page_is_chinese_too(page_url, browser, tmp_path):
    url, cat = page_url
    context, page = _open(browser, url + "?lang=zh", "en-US", width=390, height=844, is_mobile=True, has_touch=True)
    assert page.get_by_role("tab").first.inner_text().strip() == "写作"  # an English browser, a Chinese link
    assert wait_for(lambda: HAN.search(page.locator("#model-note").inner_text()), 30)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1, "no sideways scroll on a phone"
    shots = Path(os.environ.get("TEXTGEN_SCREENSHOT_DIR") or tmp_path)
    page.screenshot(path=str(shots / "screenshot-zh-phone.png"))
    page.get_by_role("link", name="English").click()  # the switch: back to English, remembered
    assert wait_for(lambda: page.get_by_role("tab").first.inner_text().strip() == "Write", 30)
    page.goto(url)  # the plain address keeps the choice
    page.locator("#generate").wait_for(timeout=60_000)
    assert page.get_by_role("tab").first.inner_text().strip() == "Write"
    page.get_by_role("link", name="Chinese (Simplified)").click()
    assert wait_for(lambda: page.get_by_role("tab").first.inner_text().strip() == "写作", 30)
    context.close()
