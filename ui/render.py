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
/* Perplexity's table on a phone: the model's name wraps in a narrow first column, so that the numbers show. */
@media (max-width: 700px) {
  #ppl-table td:first-child, #ppl-table th:first-child { max-width: 7em; min-width: 6em; white-space: normal; }
  #ppl-table th { min-width: 5em; }
}
.tg-legend span { padding: 0 6px; border-radius: 3px; }
"""

# Runs once when a token view mounts (gr.HTML's js_on_load); listens on the component, so it keeps working
# however often the text inside is replaced. One pop-up per view (class tg-pop-VIEW), placed inside the window
# (phones included). With branching (the Write tab), a click pins the pop-up and its other words become buttons
# that trigger the view's "branch" event.
_TOKEN_JS = """
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
  head.textContent = pinned && BRANCHING ? 'HEADING (pick one to write on from there):' : 'HEADING:';
  pop.appendChild(head);
  for (const [chosen, text, pct] of JSON.parse(tok.dataset.a || '[]')) {
    const pickable = pinned && BRANCHING && !chosen && !special(text);
    const line = document.createElement(pickable ? 'button' : (chosen ? 'b' : 'div'));
    line.textContent = text + '  ' + pct; line.style.display = 'block';
    if (line.tagName === 'BUTTON') {
      line.className = 'tg-branch'; line.title = 'Write on from here with this token instead';
      line.addEventListener('click', e => { e.stopPropagation(); branchFrom(tok, text); });
    }
    pop.appendChild(line);
  }
  if (pinned && BRANCHING && !pop.querySelector('button')) {  // say why there is nothing to pick
    const none = document.createElement('div'); none.className = 'tg-none';
    none.textContent = 'No other token was allowed here (the sampling controls left only this one).';
    pop.appendChild(none);
  }
  pop.style.display = 'block';
  const r = tok.getBoundingClientRect(), w = pop.offsetWidth, h = pop.offsetHeight;
  const left = Math.max(4, Math.min(r.left, window.innerWidth - w - 4));
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


def token_js(view: str, branching: bool = False, heading: str = "The model weighed") -> str:
    """The script of one token view: `view` names its pop-up (`.tg-pop-<view>`), `branching` offers "write on
    from here with this token instead"."""
    return (_TOKEN_JS.replace("VIEW", view).replace("BRANCHING", "true" if branching else "false")
            .replace("HEADING", heading))


TOKEN_JS = token_js("write", branching=True)  # the Write tab's view


def legend(branching: bool = False) -> str:
    """The line above a token view that says how to read it."""
    more = ("; click one and pick another word to see how the text would have gone on from there" if branching
            else "")
    return ('<div class="tg-legend">Each token is shaded by the probability the model gave it: '
            '<span style="background:hsla(0,75%,50%,.35)">unlikely</span> '
            '<span style="background:hsla(60,75%,50%,.35)">so-so</span> '
            '<span style="background:hsla(120,75%,50%,.35)">likely</span>. '
            f"Hover over, tap or tab to a token to see what else the model considered{more}.</div>")

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

STOPPED = {  # why a text ended, finishing the sentence "Stopped: …"
    "length": "it reached the length you set",
    "end_of_text": "the model ended the text",
    "stop_sequence": "a stop sequence appeared",
    "cancelled": "you pressed Stop",
    "no_allowed_token": "the settings left no token it may write (try a larger no-repeat n-gram size)",
}


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def stats_markdown(live: Live) -> str:
    """The numbers under a text, the same while it streams and at the end (one clock, see Live)."""
    if live.error:
        return f"⚠️ {live.error}"
    if live.first_token_at is None and live.summary is None:
        return live.status or "Waiting for the first token…"
    parts = [f"**{len(live.tokens)}** token{'' if len(live.tokens) == 1 else 's'}"]
    if live.first_token_at is not None:
        waits = [f"{_ms(seconds)} of it waiting {what}" for seconds, what in
                 ((live.start_wait, "for the server to start"), (live.waited, "for a free place")) if seconds]
        waited = f" ({'; '.join(waits)})" if waits else ""
        parts.append(f"first token after **{_ms(live.first_token_at)}**{waited}")
    if len(live.tokens) > 1:
        parts.append(f"**{live.tokens_per_second:.0f}** tokens/s")
    if live.summary is None:
        return " · ".join([*parts, "writing…"])
    summary = live.summary
    reasons = list(dict.fromkeys(summary.stop_reasons))
    parts.append("stopped: " + "; ".join(STOPPED.get(r, r) for r in reasons))
    parts.append(f"seed {summary.seed}")
    lines = [" · ".join(parts)]
    if live.load_seconds is not None:
        lines.append(f"(loading the model first took {_ms(live.load_seconds)}, included in the first token's wait)")
    lines += [f"⚠️ {w}" for w in summary.warnings] + [f"ℹ️ {n[0].upper()}{n[1:]}." for n in summary.notes]
    return "  \n".join(lines)


# -- models -------------------------------------------------------------------------------------------------


def model_note(title: str, description: str, info: dict | None = None, unavailable: str | None = None) -> str:
    """What the model picker says about the picked model."""
    note = f"**{html.escape(title)}**: {html.escape(description)}"
    if unavailable:
        return note + f"  \n⚠️ Not available on this server: {html.escape(unavailable)}. Pick another model."
    if info:
        ctx = "no limit (recurrent)" if info.get("context") is None else f"{info['context']:,} tokens"
        tokens = f" · its tokens are {info['tokens']}" if info.get("tokens") else ""
        note += f"  \n{info['parameters'] / 1e6:.2f}M parameters · context {ctx}{tokens} · on {info['device']}"
    return note


def model_choices(catalog: Catalog, unavailable: dict[str, str] | None = None,
                  session: str | None = None) -> list[tuple[str, str]]:
    """(label, name) for every picker: everyone's models and those `session` trained (textgen.service.training); a
    model that cannot be used here says so, briefly, in its label."""
    unavailable = unavailable or {}
    return [(f"{e.title} · unavailable: {unavailable[e.name]}" if e.name in unavailable else e.title, e.name)
            for e in (catalog.visible(session) if session else catalog)]


# -- scores -------------------------------------------------------------------------------------------------

SCORE_COLUMNS = {
    "title": "Model",
    "nats_per_char": "Surprise per character (nats)",
    "bits_per_char": "Bits per character",
    "ppl_per_token": "Perplexity per token",
    "tokens": "Tokens",
    "unknown_chars": "Unknown characters",
    "error": "Problem",
}


def score_records(rows: list[ScoreRow]) -> list[dict]:
    """One dict per model, keyed by the table's column names, rounded for reading."""
    records = []
    for row in rows:
        record = {
            SCORE_COLUMNS["title"]: row.title,
            SCORE_COLUMNS["nats_per_char"]: None if row.nats_per_char is None else round(row.nats_per_char, 3),
            SCORE_COLUMNS["bits_per_char"]: None if row.bits_per_char is None else round(row.bits_per_char, 3),
            SCORE_COLUMNS["ppl_per_token"]: None if row.ppl_per_token is None else round(row.ppl_per_token, 2),
            SCORE_COLUMNS["tokens"]: row.tokens,
            # "none" rather than an empty cell, which reads as a missing number; a failed row stays empty
            SCORE_COLUMNS["unknown_chars"]: row.unknown_chars or ("none" if row.error is None else ""),
        }
        if any(r.error for r in rows):
            record[SCORE_COLUMNS["error"]] = row.error or ""
        records.append(record)
    return records
