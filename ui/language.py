"""Which language a visitor reads the page in, and the page's side of textgen.core.words.

    gr.Button(tr("common.generate"))     # a fixed label: Gradio translates it in the browser (gr.I18n)
    say(key, language(request), **fields) # a text written at run time, in the visitor's language
    demo.launch(i18n=I18N, app_kwargs={"middleware": [Middleware(EarlyScript)]})

The browser's language decides (Accept-Language on the server, navigator.language in Gradio's front end); a link
with `?lang=zh` or `?lang=en`, or the switch at the top of the page, overrides it and is remembered in a cookie.
Gradio reads navigator.language once, before any script of ours would normally run, so EarlyScript puts a small
script at the top of the page's HTML that makes a chosen language (and a bare "zh") what Gradio sees.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import gradio as gr

from textgen.core.words import CHINESE, ENGLISH, LANGUAGES, catalog, language_of, say

COOKIE = "textgen_lang"
I18N = gr.I18n(**{lang: dict(catalog(lang)) for lang in LANGUAGES})  # copies: tr() adds filled-in texts


def tr(key: str, **fields):
    """A fixed text of the page by its key, translated by Gradio in the browser (the key must be in every
    catalog; tests/test_words.py checks). Fields known when the page is built (an operator's limit) are filled in
    here, once per language: Gradio's translation itself takes no fields. A field may be a function of the
    language (model titles, say)."""
    if not fields:
        return I18N(key)

    def in_(lang: str) -> dict:
        return {name: value(lang) if callable(value) else value for name, value in fields.items()}

    filled = key + "?" + "&".join(f"{name}={value}" for name, value in sorted(in_(ENGLISH).items()))
    for lang in LANGUAGES:
        I18N.translations[lang][filled] = say(key, lang, **in_(lang))
    return I18N(filled)


def shown(value, lang: str = ENGLISH) -> str:
    """What a visitor reading `lang` sees for a component's text: a `tr` key translated as Gradio's front end does
    (tests read the page's texts with this); any other value as it is."""
    text = str(value)
    if text.startswith(I18N_PREFIX):
        key = json.loads(text[len(I18N_PREFIX):])["key"]
        return I18N.translations[lang].get(key, I18N.translations[ENGLISH][key])
    return text


I18N_PREFIX = "__i18n__"  # how Gradio writes a translation key into a component's value


def language(request: gr.Request | None) -> str:
    """The language of the visitor behind `request`: `?lang=` on the page's address (also seen in the Referer of
    later requests), then the cookie the switch sets, then the browser's Accept-Language; English for callers that
    say nothing (an API client)."""
    if request is None:
        return ENGLISH
    headers = getattr(request, "headers", None) or {}
    choice = None
    params = getattr(request, "query_params", None) or {}
    if params.get("lang"):
        choice = params.get("lang")
    elif headers.get("referer"):
        choice = (parse_qs(urlparse(headers.get("referer")).query).get("lang") or [None])[0]
    if not choice:
        cookies = getattr(request, "cookies", None) or {}
        choice = cookies.get(COOKIE)
    return language_of(headers.get("accept-language"), choice)


def toast_css() -> str:
    """Gradio's message boxes title themselves with their kind in English ("Error"), whatever their title: in
    another language the page draws its own word there (Gradio sets <html lang> to the page's language)."""
    rules = []
    for lang in LANGUAGES:
        if lang != ENGLISH:
            word = say("common.error", lang).replace('"', "")
            rules.append(f'html:lang({lang}) .toast-title.error {{ font-size: 0; }}\n'
                         f'html:lang({lang}) .toast-title.error::before {{ content: "{word}"; font-size: 1rem; }}')
    return "\n".join(rules) + "\n"


# Runs before Gradio's own code (module scripts wait for the page to be parsed): remembers `?lang=` and tells
# Gradio's front end the language it should use. Traditional Chinese is left to Gradio (our catalog is Simplified).
EARLY_JS = f"""(() => {{
  const wanted = new URLSearchParams(location.search).get('lang');
  if (wanted) document.cookie = '{COOKIE}=' + encodeURIComponent(wanted) + '; path=/; max-age=31536000; SameSite=Lax';
  const saved = (document.cookie.match(/(?:^|; ){COOKIE}=([^;]*)/) || [])[1];
  const tag = wanted || (saved && decodeURIComponent(saved)) || navigator.language || '';
  const zh = /^zh/i.test(tag) && !/(tw|hk|mo|hant)/i.test(tag);
  const lang = zh ? '{CHINESE}' : (wanted || saved) && /^en/i.test(tag) ? '{ENGLISH}' : null;
  if (!lang) return;
  Object.defineProperty(navigator, 'language', {{get: () => lang, configurable: true}});
  Object.defineProperty(navigator, 'languages', {{get: () => [lang], configurable: true}});
}})();"""


class EarlyScript:
    """ASGI middleware: puts EARLY_JS first in the <head> of the page itself (GET of an HTML document); every
    other request (the API, the queue's streams, files) passes through untouched."""

    def __init__(self, app):
        self.app = app
        self.tag = f"<script>{EARLY_JS}</script>".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or not scope["path"].endswith("/"):
            await self.app(scope, receive, send)
            return
        start = {}

        async def rewrite(message):
            if message["type"] == "http.response.start":
                start.update(message)  # held until the body is known: its length changes
                return
            if message["type"] == "http.response.body" and start:
                headers = dict(start.get("headers", []))
                html = headers.get(b"content-type", b"").startswith(b"text/html")
                if html and not message.get("more_body") and b"<head>" in message.get("body", b""):
                    body = message["body"].replace(b"<head>", b"<head>" + self.tag, 1)
                    start["headers"] = [(k, v) for k, v in start["headers"] if k != b"content-length"]
                    start["headers"].append((b"content-length", str(len(body)).encode()))
                    message = {**message, "body": body}
                await send(dict(start))
                start.clear()
            await send(message)

        await self.app(scope, receive, rewrite)
