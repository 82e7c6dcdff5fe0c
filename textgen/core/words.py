"""The words a visitor reads, in each language the page speaks: one catalog per language, keyed once.

    say("error.text_too_long", "zh-CN", what="提示", chars=12_000, limit=10_000)   # "提示有 12,000 个字符……"
    language_of("zh-CN,zh;q=0.9,en;q=0.8")                        # -> "zh-CN"
    raise InvalidRequest(Phrase("error.no_text_to_score"))   # English by str(), any language by words_of()

The catalogs are `textgen/locales/<language>.json`, flat {key: text} with `{name}` fields filled by str.format
(numbers are formatted there too: `{limit:,}`). The page gives the same catalogs to Gradio's own translation
(`gr.I18n`) for its fixed labels, and calls `say` for what it writes at run time (numbers, messages). Model output,
the API's values and the command line stay in English whatever the language.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

LOCALES = Path(__file__).resolve().parent.parent / "locales"
ENGLISH = "en"
CHINESE = "zh-CN"
LANGUAGES = (ENGLISH, CHINESE)
# What the page's language switch shows for each language, in that language.
LANGUAGE_NAMES = {ENGLISH: "English", CHINESE: "中文"}


@cache
def catalog(language: str) -> dict[str, str]:
    """All the texts of one language, by key (read once)."""
    if language not in LANGUAGES:
        raise ValueError(f"no catalog for {language!r}; the page speaks {', '.join(LANGUAGES)}")
    return json.loads((LOCALES / f"{language}.json").read_text(encoding="utf-8"))


def say(key: str, language: str = ENGLISH, /, **fields) -> str:
    """The text `key` in `language` (English where that language lacks it, which a test forbids), fields filled."""
    texts = catalog(language if language in LANGUAGES else ENGLISH)
    text = texts.get(key)
    if text is None:
        text = catalog(ENGLISH)[key]  # a KeyError here is a bug: every key is in the English catalog
    return text.format(**fields)  # always: a text without fields may still write a brace as {{ }}


def normalise(tag: str | None) -> str | None:
    """One of LANGUAGES for a language tag ("zh", "zh-CN", "zh-Hans-SG", "en-GB", …), or None for the others.
    Traditional Chinese (zh-TW, zh-HK, zh-Hant) gets None: the catalog is Simplified."""
    tag = (tag or "").strip().lower().replace("_", "-")
    if tag.startswith("zh"):
        return None if any(part in tag for part in ("-tw", "-hk", "-mo", "hant")) else CHINESE
    if tag == "en" or tag.startswith("en-"):
        return ENGLISH
    return None


def language_of(accept_language: str | None = None, choice: str | None = None) -> str:
    """The visitor's language: their explicit choice (the page's switch or `?lang=`) if it is one we speak, else the
    first language of the browser's Accept-Language that we speak (in the order of its q-values), else English."""
    chosen = normalise(choice)
    if chosen:
        return chosen
    ranked = []
    for i, item in enumerate((accept_language or "").split(",")):
        tag, _, q = item.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        ranked.append((-weight, i, tag))
    for _, _, tag in sorted(ranked):
        spoken = normalise(tag)
        if spoken:
            return spoken
    return ENGLISH


class Phrase(str):
    """A visitor's message that remembers its key and fields: as a str it is the English text (logs, tests, the CLI,
    JSON), and `in_language` says it in any other. Fields that are Phrases themselves are said in the same language.

        err = InvalidRequest(Phrase("error.text_too_long", what=Phrase("what.prompt"), chars=12_000, limit=10_000))
        str(err)                         # "the prompt has 12,000 characters; …"
        words_of(err, "zh-CN")           # "提示有 12,000 个字符……"
    """

    key: str
    fields: dict

    def __new__(cls, key: str, **fields):
        phrase = super().__new__(cls, _said(key, ENGLISH, fields))  # a KeyError for an unknown key, here
        phrase.key, phrase.fields = key, fields
        return phrase

    def in_language(self, language: str) -> str:
        return _said(self.key, language, self.fields)

    def __reduce__(self):  # copy.deepcopy and pickle make it again from its key and fields
        return (_phrase, (self.key, self.fields))

    def __repr__(self) -> str:
        return f"Phrase({self.key!r}, **{self.fields!r})"


def _phrase(key: str, fields: dict) -> Phrase:
    return Phrase(key, **fields)


def _said(key: str, language: str, fields: dict) -> str:
    return say(key, language, **{k: v.in_language(language) if isinstance(v, Phrase) else v
                                 for k, v in fields.items()})


def words_of(message: object, language: str = ENGLISH) -> str:
    """Any message in `language`: an exception or a Phrase said there, anything else as its str()."""
    if isinstance(message, BaseException) and message.args:
        message = message.args[0] if len(message.args) == 1 else message
    if isinstance(message, Phrase):
        return message.in_language(language)
    return str(message)


def message_of(err: BaseException) -> str:
    """An exception's message as it was raised (a Phrase stays a Phrase, to be said in the visitor's language)."""
    if len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]
    return str(err)


def joined(messages) -> str:
    """Several messages as one, each once; a single one as it is (so that a Phrase stays one)."""
    unique = list(dict.fromkeys(m for m in messages if m))
    return unique[0] if len(unique) == 1 else " ".join(unique)
