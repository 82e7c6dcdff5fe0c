"""The "Step by step" tab's page side: what a person sees while a model chooses its next token.

Plain functions of plain data (the dicts `textgen.service.explain` returns), as HTML strings; what each browser
session has open is kept by textgen.service.step_sessions. Free of torch and Gradio, like ui/render.py, so the
page builds before either loads. Each takes the visitor's language (`lang`, English unless told): its words are
the catalogs' "step.*" texts (textgen/locales), and the page's fixed texts are those same keys, by `tr`.

    bars_html(session.stages(controls, lang=lang), lang=lang)  # one card per stage, one clickable bar per token
    text_html(prompt, written, lang)                           # the text so far, shaded as in the Write tab
    attention_html(attention(...), layer, head, lang)          # which earlier tokens one token looks at
    heat_html(tokens, values, unit, guess, lang)               # one unit's value over the text, as colour
"""

from __future__ import annotations

import html

from textgen.core.events import shown
from textgen.core.words import ENGLISH, say, words_of
from ui.render import token_span

# -- CSS, scoped to each component by gr.HTML's css_template -------------------------------------------------

BARS_CSS = """
.sg-stages { display: grid; gap: 10px; grid-template-columns: repeat(auto-fill, minmax(min(100%, 240px), 1fr)); }
.sg-stage { border: 1px solid var(--border-color-primary, #ddd); border-radius: 8px; padding: 6px 8px;
  min-width: 0; }
.sg-stage h4 { margin: 0 0 2px; font-size: 0.95em; }
.sg-stage p { margin: 0 0 4px; font-size: 0.8em; opacity: 0.8; line-height: 1.3; }
.sg-stage ol { list-style: none; margin: 0; padding: 0; }
.sg-bar { appearance: none; display: grid; grid-template-columns: 4.2em minmax(0, 1fr) 3.6em; gap: 6px;
  align-items: center; width: 100%; padding: 2px 4px; margin: 0; border: 0; border-radius: 4px;
  background: none; color: inherit; font: inherit; font-size: 0.9em; text-align: left; cursor: pointer; }
.sg-counted .sg-bar { grid-template-columns: 4.2em minmax(0, 1fr) 3.6em 2.8em; }
.sg-bar:hover { background: var(--background-fill-secondary, #f3f4f6); }
.sg-bar:focus-visible { outline: 2px solid #2563eb; outline-offset: 1px; }
.sg-tok { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre; overflow: hidden;
  text-overflow: ellipsis; }
.sg-track { position: relative; height: 0.9em; border-radius: 3px; background: var(--border-color-primary, #e5e7eb);
  overflow: hidden; }
.sg-fill { position: absolute; left: 0; top: 0; bottom: 0; background: #6366f1; border-radius: 3px; }
.sg-drawn { position: absolute; left: 0; bottom: 0; height: 3px; background: #f59e0b; }
.sg-pct, .sg-count { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.sg-count { color: #b45309; }
.sg-cut .sg-tok { text-decoration: line-through; opacity: 0.45; }
.sg-cut .sg-pct { opacity: 0.55; font-size: 0.85em; }
.sg-cut .sg-fill { background: #9ca3af; }
.sg-foot { margin-top: 4px !important; }
.sg-note { font-size: 0.85em; margin: 6px 0 0; }
/* On a phone, two steps side by side with narrower columns: one a line made the page 2,900 px tall after Start. */
@media (max-width: 700px) {
  .sg-stages { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 6px; }
  .sg-stage { padding: 4px 5px; }
  .sg-bar, .sg-counted .sg-bar { grid-template-columns: 3.4em minmax(0, 1fr) 3.1em; gap: 3px; padding: 1px 2px;
    font-size: 0.8em; }
  .sg-counted .sg-bar { grid-template-columns: 3.4em minmax(0, 1fr) 3.1em 2.2em; }
}
"""

TEXT_CSS = """
.sg-text { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap; line-height: 1.9;
  font-size: 0.95em; overflow-wrap: anywhere; }
.sg-prompt { opacity: 0.75; }
"""

INSIDE_CSS = TEXT_CSS + """
.sg-key { border-radius: 3px; padding: 1px 0; cursor: pointer; }
.sg-key:focus-visible { outline: 2px solid #2563eb; }
.sg-query { box-shadow: 0 0 0 2px #2563eb; }
.sg-later { opacity: 0.35; }
.sg-legend { font-size: 0.85em; opacity: 0.85; margin: 4px 0; }
.sg-legend span { padding: 0 6px; border-radius: 3px; }
.sg-why { margin: 4px 0; }
"""

# Clicking (or pressing Enter on) a bar writes its token: the page's Python gets the token id in the event data.
BARS_JS = """
element.addEventListener('click', e => {
  const bar = e.target.closest('button.sg-bar');
  if (bar && element.contains(bar)) trigger('click', {token: Number(bar.dataset.id)});
});
"""

# Clicking or tapping a token of the attention view looks from that token. The tokens are not Tab stops (a
# long text would be hundreds): the keyboard's way is the "Look from token number" slider.
KEYS_JS = """
function pick(e) {
  const key = e.target.closest('.sg-key');
  if (key && element.contains(key)) { e.preventDefault(); trigger('click', {index: Number(key.dataset.i)}); }
}
element.addEventListener('click', pick);
element.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') pick(e); });
"""

# The text so far uses the Write tab's token view script without its branching: ui.render.token_js("step").


# -- the text so far -----------------------------------------------------------------------------------------


def text_html(prompt: str, written: list, lang: str = ENGLISH) -> str:
    """The prompt, plain, then every written token shaded by its probability (hover for its alternatives)."""
    spans = "".join(token_span(w) for w in written)
    prompt_html = f"<span class=sg-prompt>{html.escape(prompt)}</span>" if prompt else ""
    empty = "" if prompt or written else f"<em>{say('step.empty_text', lang)}</em>"
    return f"<div class=sg-text>{prompt_html}{spans}{empty}</div>"


# -- the bars --------------------------------------------------------------------------------------------------


def _pct(p: float) -> str:
    if p <= 0:
        return "0%"
    return f"{100 * p:.1f}%" if p >= 0.001 else "<0.1%"


def bars_html(stages: list[dict], counts: dict | None = None, lang: str = ENGLISH) -> str:
    """One card per stage (as StepSession.stages gives them, named in `lang`), one bar per listed token; a token the
    stage removed is greyed out and struck through. `counts` (StepSession.sample_many's result) adds, beside the
    last stage's bars, how often each token came up in that many draws."""
    if not stages:
        return say("step.no_bars", lang)  # (the line above says to press Start: once is enough)
    drawn = {c["id"]: c["count"] for c in counts["counts"]} if counts and counts.get("draws") else {}
    draws = counts["draws"] if drawn else 0
    cards = []
    last = len(stages) - 1
    for s, stage in enumerate(stages):
        counted = s == last and draws > 0
        rows = []
        for t, tok in enumerate(stage["tokens"]):
            before = stages[s - 1]["tokens"][t]["removed"] if s else False
            rows.append(_bar(tok, before, drawn.get(tok["id"], 0) if counted else None, draws,
                             focusable=s == last, lang=lang))
        foot = say("step.bars.others.one" if stage["kept"] == 1 else "step.bars.others.many", lang,
                   pct=_pct(stage["other"]), kept=stage["kept"])
        if stage["blocked"]:
            foot = say("step.bars.blocked", lang)
        cls = "sg-stage sg-counted" if counted else "sg-stage"
        cards.append(
            f"<section class='{cls}' data-stage='{html.escape(stage['name'])}'>"
            f"<h4>{s + 1}. {html.escape(stage['label'])}</h4><p>{html.escape(stage['help'])}</p>"
            f"<ol>{''.join(rows)}</ol><p class=sg-foot>{foot}</p></section>")
    note = ""
    if draws:
        listed = sum(drawn.get(t["id"], 0) for t in stages[-1]["tokens"])
        rest = say("step.bars.rest", lang, count=draws - listed) if draws > listed else ""
        note = f"<p class=sg-note>{say('step.bars.draws', lang, draws=draws, seed=counts['seed'], rest=rest)}</p>"
    return f"<div class=sg-stages>{''.join(cards)}</div>{note}"


def _bar(tok: dict, removed_before: bool, count: int | None, draws: int, focusable: bool,
         lang: str = ENGLISH) -> str:
    label = tok.get("shown") or shown(tok["text"])
    if tok["removed"]:
        pct, width, cls = say("step.bar.removed", lang), 100 * 0, "sg-bar sg-cut"
        said = say("step.bar.cut_before" if removed_before else "step.bar.cut_here", lang)
    else:
        pct, width, cls = _pct(tok["prob"]), 100 * tok["prob"], "sg-bar"
        said = say("step.bar.likely", lang, pct=_pct(tok["prob"]))
    extra, line = "", ""
    if count is not None and tok["removed"] and not count:
        extra = "<span class=sg-count></span>"  # it cannot come up: no count to show
    elif count is not None:
        extra = f"<span class=sg-count>{count}×</span>"
        line = f"<span class=sg-drawn style='width:{100 * count / draws:.1f}%'></span>"
        said += say("step.bar.came_up", lang, count=count, draws=draws)
    aria = html.escape(say("step.bar.aria", lang, label=label, said=said), quote=True)
    return (f"<li><button type=button class='{cls}' data-id='{int(tok['id'])}' tabindex={0 if focusable else -1} "
            f"aria-label='{aria}' title='{aria}'><span class=sg-tok>{html.escape(label)}</span>"
            f"<span class=sg-track><span class=sg-fill style='width:{width:.1f}%'></span>{line}</span>"
            f"<span class=sg-pct>{pct}</span>{extra}</button></li>")


# -- inside the model ---------------------------------------------------------------------------------------


def _token_html(text: str) -> str:
    if text.endswith("\n"):
        return html.escape(text[:-1]) + "↵\n"
    return html.escape(text) if text else "∅"


def attention_html(result: dict, layer: int = -1, head: int = -1, lang: str = ENGLISH) -> str:
    """The text with each token shaded by how much the query token looks at it, for one head of one layer,
    the average of a layer's heads (head -1), or of every head of every layer (layer -1). The query is outlined;
    the tokens after it, which it cannot see, are faded. Every token can be clicked to look from it instead."""
    q = result["query"]
    if layer < 0:
        weights, where = result["average"], say("step.att.all", lang)
    elif head < 0:
        weights, where = result["layer_average"][layer], say("step.att.layer", lang, layer=layer + 1)
    else:
        weights, where = result["weights"][layer][head], say("step.att.head", lang, layer=layer + 1, head=head + 1)
    top = max(weights[: q + 1]) or 1.0
    spans = []
    for i, tok in enumerate(result["tokens"]):
        w = weights[i] if i <= q else 0.0
        cls = "sg-key sg-query" if i == q else "sg-key sg-later" if i > q else "sg-key"
        alpha = 0.85 * w / top
        tip = (say("step.att.query_tip", lang) if i == q else say("step.att.later_tip", lang) if i > q
               else say("step.att.share_tip", lang, pct=_pct(w)))
        tip = html.escape(say("step.token_tip", lang, i=i, shown=tok["shown"], tip=tip), quote=True)
        spans.append(f"<span class='{cls}' data-i={i} tabindex=-1 role=button title='{tip}' aria-label='{tip}' "
                     f"style='background:rgba(234,88,12,{alpha:.2f})'>{_token_html(tok['text'])}</span>")
    ranked = sorted(range(q + 1), key=lambda i: -weights[i])[:5]
    most = say("step.att.list", lang).join(
        say("step.att.most_item", lang, shown=html.escape(result["tokens"][i]["shown"]), i=i, pct=_pct(weights[i]))
        for i in ranked)
    line = say("step.att.head_line", lang, q=q, shown=html.escape(result["tokens"][q]["shown"]), where=where,
               most=most)
    head_line = f"<p class=sg-legend>{line}</p>"
    return f"{head_line}<div class=sg-text>{''.join(spans)}</div>"


def layer_choices(layers: int, lang: str = ENGLISH) -> list[tuple[str, int]]:
    return [(say("step.all_layers", lang), -1)] + [(say("step.layer_n", lang, n=i + 1), i) for i in range(layers)]


def head_choices(heads: int, lang: str = ENGLISH) -> list[tuple[str, int]]:
    return [(say("step.all_heads", lang), -1)] + [(say("step.head_n", lang, n=i + 1), i) for i in range(heads)]


def heat_legend(lang: str = ENGLISH) -> str:
    """The line under a unit's heading that says how to read its colours."""
    return (f"<p class=sg-legend><span style='background:hsla(215,80%,50%,.6)'>{say('step.heat.low', lang)}</span> "
            f"<span style='border:1px solid #ccc'>{say('step.heat.mid', lang)}</span> "
            f"<span style='background:hsla(0,80%,50%,.6)'>{say('step.heat.high', lang)}</span></p>")


def heat_html(tokens: list[dict], values: list[float], unit: int, guess: str | None = None,
              lang: str = ENGLISH) -> str:
    """One unit's value after each token, as colour over the text, on the unit's own range here: red where it is
    highest, blue where lowest, white half-way. Its own range, not zero: a unit that runs from -7.6 to -0.06 and
    rises at speaker names shows the names red, where a scale around zero painted everything blue and them white.
    `guess` (explain's Phrase, or text) is said in `lang`."""
    low, high = min(values, default=0.0), max(values, default=0.0)
    middle, half = (low + high) / 2, (high - low) / 2 or 1.0
    spans = []
    for i, (tok, v) in enumerate(zip(tokens, values)):
        where = (v - middle) / half  # -1 at the lowest, +1 at the highest
        hue = 0 if where >= 0 else 215
        tip = html.escape(say("step.token_tip", lang, i=i, shown=tok["shown"], tip=signed(v, 3)), quote=True)
        spans.append(f"<span title='{tip}' style='background:hsla({hue},80%,50%,{0.8 * abs(where):.2f})'>"
                     f"{_token_html(tok['text'])}</span>")
    about = say("step.heat.guess", lang, guess=html.escape(words_of(guess, lang))) if guess else ""
    head = say("step.heat.range", lang, unit=unit, low=signed(low), high=signed(high))
    return f"<p class=sg-legend>{head}{about}</p>{heat_legend(lang)}<div class=sg-text>{''.join(spans)}</div>"


def signed(value: float, places: int = 2) -> str:
    """A value with its sign, "+1.73" or "-0.42", and zero as plain "0.00": a value that rounds to zero is not shown
    as "-0.00"."""
    text = f"{value:+.{places}f}"
    return text[1:] if float(text) == 0 else text


def unit_choices(found: list[dict], lang: str = ENGLISH) -> list[tuple[str, int]]:
    """The units `interesting_units` found, as radio choices: "Unit 264: seems to track …"."""
    return [(say("step.unit_choice", lang, unit=u["unit"], guess=words_of(u["guess"], lang),
                 r=f"{abs(u['correlation']):.2f}"), u["unit"]) for u in found]
