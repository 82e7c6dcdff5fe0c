"""The page's words in two languages: one catalog each (textgen/locales), every key in both, every visible text of
the page from them, and the visitor's language chosen from the browser, a link or the switch."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from conftest import free_port
from gradio.i18n import I18nData
from gradio_client import Client

import app
from textgen.core.settings import CONTROLS, GenerationSettings, InvalidRequest, Limits
from textgen.core.words import CHINESE, ENGLISH, LANGUAGES, LOCALES, Phrase, catalog, language_of, say, words_of
from textgen.service.playground import Playground
from ui.language import EARLY_JS, I18N_PREFIX, language, shown

ROOT = Path(__file__).resolve().parents[1]
HAN = re.compile(r"[\u3400-\u9fff]")


def fields(text: str) -> set[str]:
    return {name.split("!")[0].split(":")[0] for _, name, _, _ in string.Formatter().parse(text) if name}


# -- the catalogs -------------------------------------------------------------------------------------------------


def test_every_key_is_in_both_languages_with_the_same_fields_and_some_words():
    english, chinese = catalog(ENGLISH), catalog(CHINESE)
    assert sorted(LOCALES.glob("*.json")) == sorted(LOCALES / f"{lang}.json" for lang in LANGUAGES)
    assert set(english) - set(chinese) == set(), "keys missing in Chinese"
    assert set(chinese) - set(english) == set(), "keys missing in English"
    for key, text in english.items():
        assert text.strip() and chinese[key].strip(), f"{key} is empty"
        assert fields(text) == fields(chinese[key]), f"{key}: the two languages fill in different fields"


def test_english_has_no_chinese_and_chinese_is_chinese():
    english, chinese = catalog(ENGLISH), catalog(CHINESE)
    assert [k for k, text in english.items() if HAN.search(text)] == []
    # Every Chinese text that has words has Chinese words (a text left in English would have none), except the
    # few that are names or symbols the same in both.
    same = [english[k] for k in english if english[k] == chinese[k]]
    assert [text for text in same if re.search(r"[a-z]{3,}", re.sub(r"\{[^}]*\}", "", text))] == []  # names only
    untranslated = [k for k, text in chinese.items()
                    if re.search(r"[A-Za-z]{4,}", re.sub(r"\{[^}]*\}|<[^>]*>", "", text)) and not HAN.search(text)]
    assert untranslated == []


def test_every_key_the_code_names_is_in_the_catalog():
    named = set()
    for path in [ROOT / "app.py", *(ROOT / "ui").glob("*.py"), *(ROOT / "textgen").rglob("*.py")]:
        source = path.read_text(encoding="utf-8")
        named |= set(re.findall(r"""\b(?:tr|say|Phrase)\(\s*["']([a-z0-9_.\-]+)["']""", source))
    assert named, "the scan found no keys: its pattern is stale"
    assert sorted(named - set(catalog(ENGLISH))) == []
    for name in CONTROLS:  # the keys made from a control's name
        assert f"control.{name}.label" in catalog(ENGLISH) and f"control.{name}.help" in catalog(ENGLISH)


def test_say_fills_in_fields_and_a_phrase_is_english_until_said_in_another_language():
    said = say("error.text_too_long", CHINESE, what="提示", chars=12_000, limit=10_000)
    assert said.startswith("提示有 12,000 个字符")
    phrase = Phrase("error.text_too_long", what=Phrase("what.prompt"), chars=12_000, limit=10_000)
    assert phrase == "the prompt has 12,000 characters; the limit is 10,000. Shorten it."
    assert json.dumps([phrase]) == json.dumps([str(phrase)])  # a str: logs, JSON and the API stay English
    assert words_of(InvalidRequest(phrase), CHINESE) == "提示有 12,000 个字符，上限是 10,000 个。请删短一些。"
    assert words_of(ValueError("plain words"), CHINESE) == "plain words"  # not yet in the catalog: as it is
    # a text without fields still writes its braces once ({{ }} in the catalog)
    assert Phrase("chat.history_type") == "history must be a list of {role, content} messages"
    with pytest.raises(KeyError):
        Phrase("no.such.key")
    import copy
    import pickle

    for again in (copy.deepcopy(phrase), pickle.loads(pickle.dumps(phrase))):  # a Live is copied, an error pickled
        assert again == phrase and again.in_language(CHINESE) == phrase.in_language(CHINESE)


def test_a_prompt_over_the_limit_is_refused_in_the_visitors_language():
    with pytest.raises(InvalidRequest) as caught:
        GenerationSettings.parse("x" * 11, Limits(max_prompt_chars=10))
    assert str(caught.value) == "the prompt has 11 characters; the limit is 10. Shorten it."
    assert words_of(caught.value, CHINESE) == "提示有 11 个字符，上限是 10 个。请删短一些。"


# -- which language ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("accept", "choice", "expected"), [
    (None, None, ENGLISH),
    ("zh-CN,zh;q=0.9,en;q=0.8", None, CHINESE),
    ("zh", None, CHINESE),
    ("en-US,en;q=0.9,zh-CN;q=0.8", None, ENGLISH),
    ("fr-FR,zh-CN;q=0.5", None, CHINESE),  # the first language we speak, by preference
    ("de-DE,fr;q=0.9", None, ENGLISH),
    ("zh-TW,zh;q=0.9", None, CHINESE),  # Traditional first, then plain Chinese: Simplified is closer than English
    ("zh-TW", None, ENGLISH),  # our catalog is Simplified; Gradio's own words follow zh-TW
    ("en-US", "zh", CHINESE),  # the switch or ?lang= wins over the browser
    ("zh-CN", "en", ENGLISH),
    ("zh-CN", "klingon", CHINESE),  # an unknown choice is ignored
    ("en;q=garbage,zh-CN;q=0.1", None, CHINESE),
])
def test_the_language_comes_from_the_choice_then_the_browser(accept, choice, expected):
    assert language_of(accept, choice) == expected


def _request(headers=None, query=None, cookies=None):
    return SimpleNamespace(headers=headers or {}, query_params=query or {}, cookies=cookies or {})


def test_a_request_says_its_language_by_link_referer_cookie_or_header():
    assert language(None) == ENGLISH  # a caller that says nothing: English
    assert language(_request({"accept-language": "zh-CN"})) == CHINESE
    assert language(_request({"accept-language": "zh-CN"}, {"lang": "en"})) == ENGLISH  # ?lang= on the page
    # Later requests from that page carry its address in the Referer, and the switch's choice in a cookie.
    assert language(_request({"referer": "http://host/?lang=zh", "accept-language": "en"})) == CHINESE
    assert language(_request({"accept-language": "en-US"}, cookies={"textgen_lang": "zh"})) == CHINESE


# -- the page ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(manager):
    return app.build_demo(Playground(manager))


def _visible_texts(demo) -> list[tuple[str, str, str]]:
    """(component, property, text) for every text of the page a visitor reads before doing anything, except what
    is theirs or the models': text boxes' values, model names in pickers, example prompts."""
    texts = []
    for block in demo.blocks.values():
        if getattr(block, "visible", True) is False or isinstance(block, (gr.State, gr.JSON)) or \
                type(block).__name__ == "Api":  # an API-only endpoint's parameters: never drawn
            continue
        kind = type(block).__name__
        props = ["label", "info", "placeholder", "title", "x_title", "y_title"]
        if isinstance(block, (gr.Markdown, gr.HTML, gr.Button)):
            props.append("value")
        for prop in props:
            value = getattr(block, prop, None)
            if isinstance(value, I18nData):
                value = str(value)  # "__i18n__{…key…}": what Gradio's front end translates
            if isinstance(value, str) and value:
                texts.append((f"{kind}#{getattr(block, 'elem_id', None)}", prop, value))
        if isinstance(block, gr.Radio):
            texts += [(f"{kind}#{block.elem_id}", "choice", str(label)) for label, _ in block.choices]
    return texts


def test_every_visible_text_of_the_page_comes_from_the_catalog(demo):
    texts = _visible_texts(demo)
    assert len(texts) > 80 and any(prop == "label" for _, prop, _ in texts)
    def words(text: str) -> bool:  # letters that make words (a name such as "my-lstm" is not one)
        letters = re.search(r"[A-Za-z]{2,}", re.sub(r"<[^>]*>", "", text))
        return bool(letters) and not re.fullmatch(r"[a-z0-9._-]+", text)

    outside = [(where, prop, text[:60]) for where, prop, text in texts
               if not text.startswith(I18N_PREFIX) and words(text)]
    assert outside == [], "English written outside the catalog"


def test_every_tab_has_a_chinese_name_and_the_english_page_has_no_chinese(demo):
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert len(tabs) >= 7
    for tab in tabs:
        assert HAN.search(shown(tab.label, CHINESE)), shown(tab.label)
        assert not HAN.search(shown(tab.label, ENGLISH))
    english = [shown(text, ENGLISH) for _, _, text in _visible_texts(demo)]
    assert [t for t in english if HAN.search(t)] == []


def test_the_page_gets_the_early_script_and_the_api_refuses_in_the_callers_language(manager, tmp_path):
    import urllib.request

    demo, url = app.serve(Playground(manager, Limits(max_prompt_chars=20)), free_port())
    try:
        with urllib.request.urlopen(url) as page:
            html = page.read().decode()
        assert EARLY_JS in html and html.index(EARLY_JS) < html.index('type="module"')  # before Gradio starts
        with urllib.request.urlopen(url + "gradio_api/info") as info:  # other answers pass through untouched
            assert EARLY_JS not in info.read().decode()
        too_long = ("x" * 30, "lstm", 0.8, 0, 1.0, 0.0, 1.0, 0, 5, 1, False)
        for headers, expected in (({}, "the prompt has 30 characters; the limit is 20"),
                                  ({"Accept-Language": "zh-CN,zh;q=0.9"}, "提示有 30 个字符，上限是 20 个"),
                                  ({"Accept-Language": "en-GB"}, "the prompt has 30 characters")):
            client = Client(url, verbose=False, headers=headers)
            with pytest.raises(Exception) as caught:
                client.predict(*too_long, api_name="/generate")
            assert expected in str(caught.value), (headers, str(caught.value))
    finally:
        demo.close()
