"""What the page shows, as HTML and Markdown strings: shaded tokens, numbers, model notes, pickers, tables.

`textgen` returns data (text, tokens, numbers); this module turns it into what a person reads. Plain
functions of plain data, tested without a browser (tests/test_render.py), and free of torch and Gradio so
that the page can be built before either is imported.

    view = TokenView()
    html = view.render(live.tokens)      # only the tokens added since the last call are rendered
    stats_markdown(live)                 # "**120** tokens · first token after **40 ms** · …"
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

from textgen.core.events import shown  # torch-free: the one rule for showing a token's text
from textgen.core.words import ENGLISH, LANGUAGES, say, words_of

if TYPE_CHECKING:  # only for annotations: the page imports this module before torch is loaded
    from textgen.core.events import Live, ScoreRow, TokenInfo
    from textgen.service.catalog import Catalog

# The token view. Every token is a span shaded by its probability (--p, 0..1); its alternatives travel in a
# compact attribute and are drawn into ONE pop-up by TOKEN_JS when a token is hovered, focused or tapped, so
# that a 1,000-token text is ~100 KB rather than ~250 KB, and the pop-up can be kept inside a phone's screen.
TOKEN_CSS = """
#tokens { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; line-height: 1.9; font-size: 0.95em;
  overflow-wrap: anywhere; }
/* The legend and its token view are two blocks: take back the column's gap and the legend's own bottom padding,
   which left a blank band of about 40 px between them. */
.block.tg-legend-block { margin-bottom: -10px; }
#tokens, #chat-tokens { margin-top: -10px; }
.tg-tok { white-space: pre-wrap; border-radius: 3px; padding: 1px 0; cursor: help; outline: none;
  background: hsla(calc(var(--p) * 120), 75%, 50%, 0.35); }
.tg-tok:hover, .tg-tok:focus, .tg-tok.tg-on { box-shadow: 0 0 0 2px #3b82f6; }
.tg-pop { position: fixed; z-index: 1000; min-width: 10em; max-width: min(22em, 90vw);
  background: var(--background-fill-primary, #fff); color: var(--body-text-color, #111);
  border: 1px solid var(--border-color-primary, #ccc); border-radius: 6px; padding: 4px 8px;
  font: 0.85em/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; box-shadow: 0 4px 12px rgba(0,0,0,.18);
  white-space: pre; }
.tg-pop b { font-weight: 700; }
.tg-pop .tg-none { opacity: .7; font-style: italic; white-space: normal; }
/* The heading wraps inside the pop-up (its lines of tokens keep their spacing: white-space pre). */
.tg-pop .tg-head { white-space: normal; opacity: .7; margin-bottom: 2px; }
/* The other words, when they can be picked, look like buttons: a border, a fill, an arrow. */
.tg-pop .tg-branch { font: inherit; text-align: left; width: 100%; cursor: pointer; border-radius: 4px;
  border: 1px solid var(--border-color-primary, #ccc); background: var(--button-secondary-background-fill, #f3f4f6);
  color: inherit; padding: 2px 6px; margin: 3px 0; }
.tg-pop .tg-branch::before { content: "↪ "; opacity: .6; }
.tg-pop .tg-branch:hover, .tg-pop .tg-branch:focus { background: rgba(59, 130, 246, .18); border-color: #3b82f6; }
.tg-legend { font-size: 0.85em; opacity: 0.85; margin-bottom: 6px; }
/* Perplexity's table wraps between words only, at every width: the table's own style broke "Surprise" into
   "Surpri/se" on a phone and "Tokens" into "Token/s" on a laptop once a column of unknown characters took room. */
#ppl-table th, #ppl-table th *, #ppl-table .body-cell, #ppl-table .body-cell * { word-break: normal !important;
  overflow-wrap: normal !important; hyphens: manual; }
/* On a phone: the model's name wraps in a narrow first column, so that the numbers show, in a smaller font, and
   what still does not fit scrolls sideways. */
@media (max-width: 700px) {
  #ppl-table td:first-child, #ppl-table th:first-child { max-width: 7em; min-width: 6em; white-space: normal; }
  #ppl-table th { min-width: 5em; }
  #ppl-table table, #ppl-table .body-cell, #ppl-table th { font-size: 12px; }
  #ppl-table .first-column, #ppl-table th:first-child { min-width: 8.5em !important; }
}
@media (min-width: 701px) { #ppl-swipe { display: none !important; } }
#ppl-swipe { font-size: 0.85em; margin-bottom: -8px; }
/* The legend's coloured words; not Gradio's own span around a Markdown's text, whose padding made the blank lines
   around its paragraph take room (a gap of 35-50 px above and below the Train tab's limits). */
.tg-legend span:not(.md) { padding: 0 6px; border-radius: 3px; }
/* The language switch sits at the top right, above the title. */
.tg-lang { text-align: right; font-size: 0.9em; margin-bottom: -28px; }
@media (max-width: 700px) { .tg-lang { margin-bottom: 0; } }
"""

# Runs once when a token view mounts (gr.HTML's js_on_load); listens on the component, so it keeps working
# however often the text inside is replaced. One pop-up per view (class tg-pop-VIEW), placed inside the window
# (phones included). With branching (the Write tab), a click pins the pop-up and its other words become buttons
# that trigger the view's "branch" event.
_TOKEN_JS = """
// The page's language (Gradio sets <html lang>), and the pop-up's words in it.
const ALL = ALL_WORDS;
const WORDS = ALL[document.documentElement.lang] || ALL['en'];
const pop = document.createElement('div');
pop.className = 'tg-pop tg-pop-VIEW'; pop.style.display = 'none'; document.body.appendChild(pop);
let current = null;
let pinned = false;  // opened by a click or a tap: stays until the next click elsewhere, and offers branching
const raw = t => t === '∅' ? '' : t.replaceAll('␣', ' ').replaceAll('↵', '\\n').replaceAll('⇥', '\\t');
function branchFrom(tok, alt) {
  // The text before this token, as the model wrote it (a newline token shows as "↵" + newline).
  const before = [];
  for (const t of element.querySelectorAll('.tg-tok')) {
    if (t === tok) break;
    before.push(t.textContent.replaceAll('↵\\n', '\\n'));
  }
  const index = before.length;
  hide(); pinned = false;
  trigger('branch', {index: index, prefix: before.join(''), alt: raw(alt), original: tok.textContent});
  // The branch is written below the text, often under the bottom of a laptop's screen: go where it appears,
  // and again once its box has opened and grown (the first words come a moment later).
  const go = () => document.getElementById('branch-output')?.scrollIntoView({behavior: 'smooth', block: 'center'});
  go(); setTimeout(go, 900);
}
const special = t => t.startsWith('⟨') && t.endsWith('⟩');  // "⟨end of text⟩": a label, not text to write on
function show(tok) {
  if (current) current.classList.remove('tg-on');
  current = tok; tok.classList.add('tg-on');
  pop.replaceChildren();
  const head = document.createElement('div');
  head.className = 'tg-head';
  head.textContent = pinned && BRANCHING ? WORDS.heading + ' (' + WORDS.pick + '):' : WORDS.heading + ':';
  pop.appendChild(head);
  for (const [chosen, text, pct] of JSON.parse(tok.dataset.a || '[]')) {
    const pickable = pinned && BRANCHING && !chosen && !special(text);
    const line = document.createElement(pickable ? 'button' : (chosen ? 'b' : 'div'));
    line.textContent = text + '  ' + pct; line.style.display = 'block';
    if (line.tagName === 'BUTTON') {
      line.className = 'tg-branch'; line.title = WORDS.instead;
      line.addEventListener('click', e => { e.stopPropagation(); branchFrom(tok, text); });
    }
    pop.appendChild(line);
  }
  if (pinned && BRANCHING && !pop.querySelector('button')) {  // say why there is nothing to pick
    const none = document.createElement('div'); none.className = 'tg-none';
    none.textContent = WORDS.none;
    pop.appendChild(none);
  }
  pop.style.display = 'block';
  pop.style.left = '0px'; pop.style.top = '0px';  // measured at the left edge: where it was last could narrow it
  const r = tok.getBoundingClientRect(), w = pop.offsetWidth, h = pop.offsetHeight;
  const width = document.documentElement.clientWidth || window.innerWidth;  // less any scroll bar
  const left = Math.max(8, Math.min(r.left, width - w - 8));  // clear of the screen's edges, a phone's included
  const top = r.bottom + h + 6 < window.innerHeight ? r.bottom + 4 : Math.max(4, r.top - h - 4);
  pop.style.left = left + 'px'; pop.style.top = top + 'px';
}
function hide() { pop.style.display = 'none'; if (current) current.classList.remove('tg-on'); current = null; }
element.addEventListener('mouseover', e => { const t = e.target.closest('.tg-tok'); if (t && !pinned) show(t); });
element.addEventListener('mouseout', e => { if (e.target.closest('.tg-tok') && !pinned) hide(); });
element.addEventListener('focusin', e => { const t = e.target.closest('.tg-tok'); if (t && !pinned) show(t); });
element.addEventListener('focusout', () => { if (!pinned) hide(); });
document.addEventListener('click', e => {
  if (pop.contains(e.target)) return;
  const t = element.contains(e.target) ? e.target.closest('.tg-tok') : null;
  pinned = !!t; if (t) show(t); else hide();
});
element.addEventListener('keydown', e => {  // Enter on a focused token: pin it and go to its alternatives
  const t = e.target.closest('.tg-tok');
  if (t && e.key === 'Enter') { e.preventDefault(); pinned = true; show(t); pop.querySelector('button')?.focus(); }
});
pop.addEventListener('keydown', e => {
  if (e.key === 'Escape') { const t = current; pinned = false; hide(); t?.focus(); }
});
window.addEventListener('scroll', () => { if (current) show(current); }, {passive: true, capture: true});
"""


def token_js(view: str, branching: bool = False, heading: str = "pop.weighed") -> str:
    """The script of one token view: `view` names its pop-up (`.tg-pop-<view>`), `branching` offers "write on
    from here with this token instead", `heading` is the catalog key of the pop-up's heading. The pop-up's words
    travel in every language the page speaks; the browser picks the page's own."""
    words = {lang: {"heading": say(heading, lang), "pick": say("pop.pick", lang), "instead": say("pop.instead", lang),
                    "none": say("pop.none", lang)} for lang in LANGUAGES}
    return (_TOKEN_JS.replace("VIEW", view).replace("BRANCHING", "true" if branching else "false")
            .replace("ALL_WORDS", json.dumps(words, ensure_ascii=False)))


TOKEN_JS = token_js("write", branching=True)  # the Write tab's view


def legend(branching: bool = False, lang: str = ENGLISH) -> str:
    """The line above a token view that says how to read it (the page shows it by its key, LEGEND_KEYS)."""
    return f'<div class="tg-legend">{say(LEGEND_KEYS[branching], lang)}</div>'


LEGEND_KEYS = {False: "legend.text", True: "legend.branching"}


def _attr(value: str) -> str:
    """Text for a single-quoted HTML attribute (JSON's double quotes then need no escaping: smaller)."""
    return value.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;").replace(">", "&gt;")


def token_span(tok: TokenInfo) -> str:
    """One token: its text (escaped), shaded by its probability, its alternatives in data-a for the pop-up:
    a JSON list of [chosen (0/1), text as shown, probability as shown]."""
    rows = [[int(alt == tok.text), shown(alt), f"{p:.1%}"] for alt, p in tok.alternatives]
    if not any(chosen for chosen, _, _ in rows):
        rows.append([1, shown(tok.text), f"{tok.prob:.1%}"])
    text = html.escape(tok.text)
    if tok.text.endswith("\n"):
        text = html.escape(tok.text[:-1]) + "↵\n"
    data = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return f"<span class=tg-tok tabindex=0 style=--p:{tok.prob:.2f} data-a='{_attr(data)}'>{text}</span>"


class TokenView:
    """The token view of one streaming text, rendered incrementally: each token's span is made once, and the
    view only ever grows at its end, so Gradio sends the browser just the new spans ("append" diffs)."""

    def __init__(self):
        self._spans: list[str] = []
        self._html = ""

    def render(self, tokens: list[TokenInfo]) -> str:
        if len(tokens) > len(self._spans):
            new = [token_span(tok) for tok in tokens[len(self._spans):]]
            self._spans += new
            self._html += "".join(new)
        return self._html


def tokens_html(tokens: list[TokenInfo]) -> str:
    """The whole token view at once (for a finished text)."""
    return TokenView().render(tokens)


# -- numbers ------------------------------------------------------------------------------------------------

STOP_REASONS = ("length", "end_of_text", "stop_sequence", "cancelled", "no_allowed_token")


def stopped(reason: str, lang: str = ENGLISH) -> str:
    """Why a text ended, finishing the sentence "Stopped: …" (an unknown reason as it came)."""
    return say(f"stopped.{reason}", lang) if reason in STOP_REASONS else reason


STOPPED = {reason: stopped(reason) for reason in STOP_REASONS}  # in English, by reason


def _ms(seconds: float, lang: str = ENGLISH) -> str:
    if seconds < 1:
        return say("stats.ms", lang, value=f"{seconds * 1000:.0f}")
    return say("stats.s", lang, value=f"{seconds:.1f}")


def stats_markdown(live: Live, lang: str = ENGLISH) -> str:
    """The numbers under a text, the same while it streams and at the end (one clock, see Live), in `lang`."""
    if live.error:
        return f"⚠️ {words_of(live.error, lang)}"
    if live.first_token_at is None and live.summary is None:
        return words_of(live.status, lang) if live.status else say("stats.waiting_first", lang)
    count = len(live.tokens)
    parts = [say("stats.token" if count == 1 else "stats.tokens", lang, count=count)]
    if live.first_token_at is not None:
        waits = [say("stats.waited", lang, time=_ms(seconds, lang), what=say(what, lang)) for seconds, what in
                 ((live.start_wait, "stats.waited_server"), (live.waited, "stats.waited_place")) if seconds]
        waited = f" ({say('stats.list', lang).join(waits)})" if waits else ""
        parts.append(say("stats.first_token", lang, time=_ms(live.first_token_at, lang)) + waited)
    if count > 1:
        parts.append(say("stats.rate", lang, rate=f"{live.tokens_per_second:.0f}"))
    join = say("stats.join", lang)
    if live.summary is None:
        return join.join([*parts, say("stats.writing", lang)])
    summary = live.summary
    reasons = list(dict.fromkeys(summary.stop_reasons))
    parts.append(say("stats.stopped", lang, reasons=say("stats.list", lang).join(stopped(r, lang) for r in reasons)))
    parts.append(say("stats.seed", lang, seed=summary.seed))
    lines = [join.join(parts)]
    if live.load_seconds is not None:
        lines.append(say("stats.loading", lang, time=_ms(live.load_seconds, lang)))
    lines += [f"⚠️ {words_of(w, lang)}" for w in summary.warnings]
    lines += [f"ℹ️ {_sentence(words_of(n, lang))}" for n in summary.notes]
    return "  \n".join(lines)


def _sentence(text: str) -> str:
    """A note as a sentence: a capital first letter and a full stop (a Chinese one ends in 。)."""
    if not text:
        return text
    end = "" if text[-1] in ".。!！?？" else ("。" if "\u4e00" <= text[-1] <= "\u9fff" else ".")
    return text[0].upper() + text[1:] + end


# -- models -------------------------------------------------------------------------------------------------


def model_words(entry, lang: str = ENGLISH) -> tuple[str, str]:
    """A catalog entry's title and description in `lang`: the catalog's words for the models this project names
    (`model.<name>.title`), a visitor's trained model in their words (Phrases), an operator's own as described."""
    if lang != ENGLISH and entry.origin in ("shipped", "hub", "gguf"):
        try:
            return say(f"model.{entry.name}.title", lang), say(f"model.{entry.name}.description", lang)
        except KeyError:
            pass
    return words_of(entry.title, lang), words_of(entry.description, lang)


def model_note(title: str, description: str, info: dict | None = None, unavailable: str | None = None,
               lang: str = ENGLISH, tokens: str | None = None) -> str:
    """What the model picker says about the picked model: `info` once it is loaded; before, `tokens` (what its
    tokens are, read from its files) where known, since the help everywhere refers to this note."""
    note = f"**{html.escape(title)}**: {html.escape(description)}"
    if unavailable:
        return note + "  \n" + say("note.unavailable", lang, why=html.escape(words_of(unavailable, lang)))
    if not info and tokens:
        return note + "  \n" + say("note.tokens_only", lang, tokens=words_of(tokens, lang))
    if info:
        ctx = (say("note.context_unlimited", lang) if info.get("context") is None
               else say("note.context_tokens", lang, count=info["context"]))
        fields = {"params": f"{info['parameters'] / 1e6:.2f}", "context": ctx, "device": info["device"]}
        if info.get("tokens"):
            note += "  \n" + say("note.info_tokens", lang, tokens=words_of(info["tokens"], lang), **fields)
        else:
            note += "  \n" + say("note.info", lang, **fields)
    return note


def model_choices(catalog: Catalog, unavailable: dict[str, str] | None = None,
                  session: str | None = None, lang: str = ENGLISH, leave_out: bool = False) -> list[tuple[str, str]]:
    """(label, name) for every picker: everyone's models and those `session` trained (textgen.service.training); a
    model that cannot be used here says so, briefly, in its label, or with `leave_out` is not offered at all (a
    picker of boxes names them in one line instead: `unavailable_line`)."""
    unavailable = unavailable or {}
    choices = []
    for e in catalog.visible(session) if session else catalog:
        title = model_words(e, lang)[0]
        if e.name in unavailable:
            if leave_out:
                continue
            title = say("choice.unavailable", lang, title=title, why=words_of(unavailable[e.name], lang))
        choices.append((title, e.name))
    return choices


def listed(items, lang: str = ENGLISH) -> str:
    """Names one after another as the visitor's language writes a list ("A, B, C"; in Chinese "A、B、C")."""
    return say("list.separator", lang).join(items)


def unavailable_line(catalog: Catalog, unavailable: dict[str, str], session: str | None = None,
                     lang: str = ENGLISH) -> str:
    """One line naming the models that cannot be used here, with why ("" when there are none): for a picker of
    boxes, where each of them took a box of its own (offline, five GPT-2 boxes pushed a phone's Compare button
    320 px down, and ticked they could only fail)."""
    by_why: dict[str, list[str]] = {}
    for e in catalog.visible(session) if session else catalog:  # a visitor's own models too, as model_choices
        if e.name in unavailable:
            by_why.setdefault(words_of(unavailable[e.name], lang), []).append(model_words(e, lang)[0])
    lines = (say("choice.left_out", lang, why=why, titles=listed(titles, lang)) for why, titles in by_why.items())
    return " ".join(lines)


# -- scores -------------------------------------------------------------------------------------------------

SCORE_FIELDS = ("title", "nats_per_char", "bits_per_char", "ppl_per_token", "tokens", "unknown_chars", "error")


def score_columns(lang: str = ENGLISH) -> dict[str, str]:
    """The Perplexity table's column names in `lang`, by field."""
    return {field: say(f"ppl.col.{field}", lang) for field in SCORE_FIELDS}


SCORE_COLUMNS = score_columns()  # in English: the chart's columns, and the table for the API


def listed_chars(chars: str, most: int = 12) -> str:
    """Characters one by one, each in quotes: "é9—10%" run together reads as a number, “é” “9” “—” … does not."""
    listed = " ".join(f"“{shown(c)}”" for c in chars[:most])
    return listed + (" …" if len(chars) > most else "")


def score_records(rows: list[ScoreRow], lang: str = ENGLISH) -> list[dict]:
    """One dict per model, keyed by the table's column names in `lang`, rounded for reading."""
    columns, records = score_columns(lang), []
    for row in rows:
        record = {
            columns["title"]: row.title,
            columns["nats_per_char"]: None if row.nats_per_char is None else round(row.nats_per_char, 3),
            columns["bits_per_char"]: None if row.bits_per_char is None else round(row.bits_per_char, 3),
            columns["ppl_per_token"]: None if row.ppl_per_token is None else round(row.ppl_per_token, 2),
            columns["tokens"]: row.tokens,
            # "none" rather than an empty cell, which reads as a missing number; a failed row stays empty
            columns["unknown_chars"]: (listed_chars(row.unknown_chars) if row.unknown_chars
                                       else say("ppl.none", lang) if row.error is None else ""),
        }
        if any(r.error for r in rows):
            record[columns["error"]] = words_of(row.error, lang) if row.error else ""
        records.append(record)
    return records
