"""What the page shows, as HTML and Markdown strings: shaded tokens, live numbers, model notes.

Kept apart from app.py so that it is plain functions of plain data, tested without a browser.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: the page imports this module before torch is loaded
    from textgen.generation import Summary, TokenInfo

TOKEN_CSS = """
.tg-tokens { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: pre-wrap;
  line-height: 1.9; font-size: 0.95em; }
.tg-tok { position: relative; border-radius: 3px; padding: 1px 0; cursor: help; outline: none;
  background: hsla(calc(var(--p) * 120), 75%, 50%, 0.35); }
.tg-tok:hover, .tg-tok:focus { box-shadow: 0 0 0 2px #3b82f6; }
.tg-alts { display: none; position: absolute; left: 0; top: 1.6em; z-index: 20; min-width: 11em;
  background: var(--background-fill-primary, #fff); color: var(--body-text-color, #111);
  border: 1px solid var(--border-color-primary, #ccc); border-radius: 6px; padding: 4px 6px;
  white-space: nowrap; font-size: 0.85em; line-height: 1.4; box-shadow: 0 4px 12px rgba(0,0,0,.15); }
.tg-tok:hover .tg-alts, .tg-tok:focus .tg-alts { display: block; }
.tg-alt-chosen { font-weight: 700; }
.tg-legend { font-size: 0.85em; opacity: 0.8; margin-bottom: 6px; }
.tg-legend span { padding: 0 6px; border-radius: 3px; }
"""

LEGEND = (
    '<div class="tg-legend">Each token is shaded by the probability the model gave it: '
    '<span style="background:hsla(0,75%,50%,.35)">unlikely</span> '
    '<span style="background:hsla(60,75%,50%,.35)">so-so</span> '
    '<span style="background:hsla(120,75%,50%,.35)">likely</span>. '
    "Hover over or tap a token to see what else the model considered.</div>"
)


def _visible(text: str) -> str:
    return text.replace("\n", "↵").replace("\t", "⇥") if text.strip() == "" else text


def tokens_html(tokens: list[TokenInfo], limit: int = 2000) -> str:
    """The generated tokens as shaded spans, each with a pop-up of the alternatives."""
    if not tokens:
        return ""
    shown = tokens[-limit:]
    parts = [LEGEND, '<div class="tg-tokens">']
    if len(tokens) > limit:
        parts.append(f"<em>… {len(tokens) - limit} earlier tokens not shown …</em>")
    for tok in shown:
        rows = "".join(
            f'<div class="{"tg-alt-chosen" if alt == tok.text else ""}">{html.escape(repr(alt)[1:-1])}'
            f" &nbsp; {p:.1%}</div>"
            for alt, p in tok.alternatives
        )
        if not any(alt == tok.text for alt, _ in tok.alternatives):
            rows += f'<div class="tg-alt-chosen">{html.escape(repr(tok.text)[1:-1])} &nbsp; {tok.prob:.1%}</div>'
        text = html.escape(tok.text)
        if tok.text.endswith("\n"):
            text = html.escape(tok.text[:-1]) + "↵\n"
        parts.append(
            f'<span class="tg-tok" tabindex="0" style="--p:{tok.prob:.3f}">{text}'
            f'<span class="tg-alts">{rows}</span></span>'
        )
    parts.append("</div>")
    return "".join(parts)


def live_stats(tokens: int, elapsed: float, first_token: float | None, status: str = "") -> str:
    """The numbers under the output while text streams."""
    if first_token is None:
        return status or "Waiting for the first token…"
    rate = (tokens - 1) / (elapsed - first_token) if tokens > 1 and elapsed > first_token else 0.0
    return (f"**{tokens}** tokens · first token after **{first_token * 1000:.0f} ms** · "
            f"**{rate:.1f}** tokens/s · writing…")


def summary_stats(summary: Summary, title: str = "") -> str:
    reason = summary.stop_description()
    head = f"{title}: " if title else ""
    lines = [
        f"{head}**{sum(summary.tokens)}** tokens · first token after "
        f"**{summary.time_to_first_token * 1000:.0f} ms** · **{summary.tokens_per_second:.1f}** tokens/s · "
        f"stopped because {reason} · seed {summary.seed}"
    ]
    lines += [f"⚠️ {w}" for w in summary.warnings]
    return "  \n".join(lines)


def model_note(title: str, description: str, info: dict | None = None) -> str:
    note = f"**{html.escape(title)}**: {html.escape(description)}"
    if info:
        ctx = "no limit (recurrent)" if info.get("context") is None else f"{info['context']:,} tokens"
        note += f"  \n{info['parameters'] / 1e6:.2f}M parameters · context {ctx} · on {info['device']}"
    return note
