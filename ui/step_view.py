"""The "Step by step" tab's page side: what a person sees while a model chooses its next token.

Plain functions of plain data (the dicts `textgen.service.explain` returns), as HTML strings; what each browser
session has open is kept by textgen.service.step_sessions. Free of torch and Gradio, like ui/render.py, so the
page builds before either loads.

    bars_html(session.stages(controls))          # one card per stage, one clickable bar per candidate token
    text_html(prompt, written)                   # the text so far, shaded as in the Write tab
    attention_html(attention(...), layer, head)  # which earlier tokens one token looks at
    heat_html(tokens, values, unit)              # one unit's value over the text, as colour
"""

from __future__ import annotations

import html

from textgen.core.events import shown
from ui.render import token_span

# -- words for the reader ------------------------------------------------------------------------------------

INTRO = (
    "A language model writes one small piece of text at a time, called a **token**: a letter for our RNN, LSTM "
    "and GRU, a word or part of one for our Transformer and GPT-2. This view shows which tokens it could write next "
    "after your prompt and how likely each is; then move the sliders, or write a token, and look again."
)
BARS_HELP = (
    "Each box is one step of the choosing, in the order it happens: what the model itself wants, then what each "
    "setting does to that (a greyed-out token is ruled out; the rest share 100% again). **Click a bar** (or Tab to "
    "it and press Enter) to write that token yourself."
)
TEXT_HELP = (
    "The text so far: your prompt, then each token written here, shaded by how likely it was (red unlikely, green "
    "likely). Hover over, tap or Tab to one to see what else it could have been."
)
ATTENTION_HELP = (
    "A Transformer picks its next token by looking back at the tokens before it: click a token (or use the "
    "slider) to see which earlier tokens it looks at most, darker orange meaning more. Each layer, and each "
    "\"head\" in a layer, looks in its own way; \"all\" averages them."
)
UNITS_HELP = (
    "A recurrent model (RNN, LSTM, GRU) reads one token at a time and keeps a memory of a few hundred numbers, "
    "called units: pick one to see its value along the text, red where it is highest and blue where lowest. The "
    "list holds units that seem to follow something you can see in the text, with a guess at what (a guess, not "
    "a proof)."
)
NO_SESSION = "Press **Start** to see what the model wants to write after your prompt."
NO_BARS = "The model's choices for its next token will appear here."

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


def text_html(prompt: str, written: list) -> str:
    """The prompt, plain, then every written token shaded by its probability (hover for its alternatives)."""
    spans = "".join(token_span(w) for w in written)
    prompt_html = f"<span class=sg-prompt>{html.escape(prompt)}</span>" if prompt else ""
    empty = "" if prompt or written else "<em>(an empty text: the model starts from scratch)</em>"
    return f"<div class=sg-text>{prompt_html}{spans}{empty}</div>"


# -- the bars --------------------------------------------------------------------------------------------------


def _pct(p: float) -> str:
    if p <= 0:
        return "0%"
    return f"{100 * p:.1f}%" if p >= 0.001 else "<0.1%"


def bars_html(stages: list[dict], counts: dict | None = None) -> str:
    """One card per stage (as StepSession.stages gives them), one bar per listed token; a token the stage removed
    is greyed out and struck through. `counts` (StepSession.sample_many's result) adds, beside the last
    stage's bars, how often each token came up in that many draws."""
    if not stages:
        return f"<p class=sg-note>{NO_BARS}</p>"  # (the line above says to press Start: once is enough)
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
                             focusable=s == last))
        foot = f"all others: {_pct(stage['other'])} · {stage['kept']:,} token{'s' * (stage['kept'] != 1)} possible"
        if stage["blocked"]:
            foot = "⚠️ this step left no token at all: the model cannot write anything with these settings"
        cls = "sg-stage sg-counted" if counted else "sg-stage"
        cards.append(
            f"<section class='{cls}' data-stage='{html.escape(stage['name'])}'>"
            f"<h4>{s + 1}. {html.escape(stage['label'])}</h4><p>{html.escape(stage['help'])}</p>"
            f"<ol>{''.join(rows)}</ol><p class=sg-foot>{foot}</p></section>")
    note = ""
    if draws:
        listed = sum(drawn.get(t["id"], 0) for t in stages[-1]["tokens"])
        rest = f"; {draws - listed} went to tokens not listed" if draws > listed else ""
        note = (f"<p class=sg-note><b>{draws} draws</b> with these settings (seed {counts['seed']}): the number "
                f"beside each bar of the last box, and its thin orange line, show how often that token came "
                f"up{rest}. The more draws, the closer they get to the bars.</p>")
    return f"<div class=sg-stages>{''.join(cards)}</div>{note}"


def _bar(tok: dict, removed_before: bool, count: int | None, draws: int, focusable: bool) -> str:
    label = tok.get("shown") or shown(tok["text"])
    if tok["removed"]:
        pct, width, cls = "removed", 100 * 0, "sg-bar sg-cut"
        said = "ruled out by an earlier step" if removed_before else "ruled out by this step"
    else:
        pct, width, cls = _pct(tok["prob"]), 100 * tok["prob"], "sg-bar"
        said = f"{_pct(tok['prob'])} likely"
    extra, line = "", ""
    if count is not None and tok["removed"] and not count:
        extra = "<span class=sg-count></span>"  # it cannot come up: no count to show
    elif count is not None:
        extra = f"<span class=sg-count>{count}×</span>"
        line = f"<span class=sg-drawn style='width:{100 * count / draws:.1f}%'></span>"
        said += f", came up {count} times in {draws}"
    aria = html.escape(f"{label}: {said}. Write this token.", quote=True)
    return (f"<li><button type=button class='{cls}' data-id='{int(tok['id'])}' tabindex={0 if focusable else -1} "
            f"aria-label='{aria}' title='{aria}'><span class=sg-tok>{html.escape(label)}</span>"
            f"<span class=sg-track><span class=sg-fill style='width:{width:.1f}%'></span>{line}</span>"
            f"<span class=sg-pct>{pct}</span>{extra}</button></li>")


# -- inside the model ---------------------------------------------------------------------------------------


def _token_html(text: str) -> str:
    if text.endswith("\n"):
        return html.escape(text[:-1]) + "↵\n"
    return html.escape(text) if text else "∅"


def attention_html(result: dict, layer: int = -1, head: int = -1) -> str:
    """The text with each token shaded by how much the query token looks at it, for one head of one layer,
    the average of a layer's heads (head -1), or of every head of every layer (layer -1). The query is outlined;
    the tokens after it, which it cannot see, are faded. Every token can be clicked to look from it instead."""
    q = result["query"]
    if layer < 0:
        weights, where = result["average"], "averaged over every head of every layer"
    elif head < 0:
        weights, where = result["layer_average"][layer], f"in layer {layer + 1}, averaged over its heads"
    else:
        weights, where = result["weights"][layer][head], f"in layer {layer + 1}, head {head + 1}"
    top = max(weights[: q + 1]) or 1.0
    spans = []
    for i, tok in enumerate(result["tokens"]):
        w = weights[i] if i <= q else 0.0
        cls = "sg-key sg-query" if i == q else "sg-key sg-later" if i > q else "sg-key"
        alpha = 0.85 * w / top
        tip = "the token it looks from" if i == q else "after it: not seen" if i > q else f"{_pct(w)} of its attention"
        tip = html.escape(f"token {i}, {tok['shown']}: {tip}", quote=True)
        spans.append(f"<span class='{cls}' data-i={i} tabindex=-1 role=button title='{tip}' aria-label='{tip}' "
                     f"style='background:rgba(234,88,12,{alpha:.2f})'>{_token_html(tok['text'])}</span>")
    ranked = sorted(range(q + 1), key=lambda i: -weights[i])[:5]
    most = ", ".join(f"“{html.escape(result['tokens'][i]['shown'])}” (token {i}) {_pct(weights[i])}" for i in ranked)
    head_line = (f"<p class=sg-legend>Looking from token {q}, “{html.escape(result['tokens'][q]['shown'])}”, "
                 f"{where}. It looks most at: {most}.</p>")
    return f"{head_line}<div class=sg-text>{''.join(spans)}</div>"


def layer_choices(layers: int) -> list[tuple[str, int]]:
    return [("All layers (average)", -1)] + [(f"Layer {i + 1}", i) for i in range(layers)]


def head_choices(heads: int) -> list[tuple[str, int]]:
    return [("All heads (average)", -1)] + [(f"Head {i + 1}", i) for i in range(heads)]


HEAT_LEGEND = ("<p class=sg-legend><span style='background:hsla(215,80%,50%,.6)'>lowest in this text</span> "
               "<span style='border:1px solid #ccc'>in between</span> "
               "<span style='background:hsla(0,80%,50%,.6)'>highest in this text</span></p>")


def heat_html(tokens: list[dict], values: list[float], unit: int, guess: str | None = None) -> str:
    """One unit's value after each token, as colour over the text, on the unit's own range here: red where it is
    highest, blue where lowest, white half-way. Its own range, not zero: a unit that runs from -7.6 to -0.06 and
    rises at speaker names shows the names red, where a scale around zero painted everything blue and them white."""
    low, high = min(values, default=0.0), max(values, default=0.0)
    middle, half = (low + high) / 2, (high - low) / 2 or 1.0
    spans = []
    for i, (tok, v) in enumerate(zip(tokens, values)):
        where = (v - middle) / half  # -1 at the lowest, +1 at the highest
        hue = 0 if where >= 0 else 215
        tip = html.escape(f"token {i}, {tok['shown']}: {v:+.3f}", quote=True)
        spans.append(f"<span title='{tip}' style='background:hsla({hue},80%,50%,{0.8 * abs(where):.2f})'>"
                     f"{_token_html(tok['text'])}</span>")
    about = f" It {html.escape(guess)}." if guess else ""
    head = (f"<p class=sg-legend><b>Unit {unit}</b> goes from {low:+.2f} to {high:+.2f} over this text.{about}</p>")
    return f"{head}{HEAT_LEGEND}<div class=sg-text>{''.join(spans)}</div>"


def unit_choices(found: list[dict]) -> list[tuple[str, int]]:
    """The units `interesting_units` found, as radio choices: "Unit 264: seems to track …"."""
    return [(f"Unit {u['unit']}: {u['guess']} (how closely: {abs(u['correlation']):.2f} out of 1)", u["unit"])
            for u in found]
