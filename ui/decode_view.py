"""The Decoding tab's rendering: each method's texts with how likely the model finds them, and the tree of choices.

    html = method_html("Beam search", "keeps the 4 likeliest texts at every step", tree, "zh-CN")  # /decode's JSON

The tree is plain HTML: every stretch of text where the method had no choice is one line; where it kept several
continuations, the line opens (<details>, so a click, Enter or Space folds it) onto them. The candidates it dropped
along a stretch are listed greyed under it; the path of the best text is marked. Hovering a line shows the whole
text up to it. No script: it reads the same on a phone and with a keyboard.
"""

from __future__ import annotations

import html
import math

from textgen.core.words import ENGLISH, say, words_of

SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
DROPPED_SHOWN = 6  # dropped candidates listed under a stretch (the rest are counted)

CSS = """
.dc-texts { margin: 0 0 8px; padding-left: 1.4em; }
.dc-texts li { margin: 4px 0; }
.dc-texts .dc-text { white-space: pre-wrap; font-family: ui-monospace, monospace; background: rgba(59,130,246,.08);
  border-radius: 3px; padding: 0 3px; }
.dc-texts .dc-odds { display: block; font-size: .85em; opacity: .8; }
.dc-tree, .dc-tree ul { list-style: none; margin: 0; padding-left: 1.1em; border-left: 1px dashed #bbb; }
.dc-tree { padding-left: .4em; border: none; max-height: 32em; overflow: auto; }
/* Sizes in rem: nested lists would otherwise shrink at every level (the page's own list styles). */
.dc-tree li, .dc-tree details, .dc-tree ul { font-size: 0.9rem; }
.dc-tree summary, .dc-tree .dc-leaf { cursor: pointer; white-space: pre-wrap; font-family: ui-monospace, monospace;
  font-size: 0.9rem; padding: 1px 2px; border-radius: 3px; }
.dc-tree .dc-leaf { cursor: default; list-style: none; }
.dc-tree .dc-best > summary, .dc-tree .dc-best.dc-leaf { background: rgba(34,197,94,.18); font-weight: 600; }
.dc-tree .dc-lp { opacity: .65; font-size: 0.75rem; margin-left: .5em; }
.dc-tree .dc-dropped { opacity: .55; font-size: 0.75rem; margin: 0 0 2px .6em; font-weight: normal; }
.dc-tree .dc-dropped span { text-decoration: line-through; margin-right: .6em; }
"""


def odds(logprob: float, lang: str = ENGLISH) -> str:
    """How likely a whole text is, in words: "about 1 in 2,400" or "about 1 in 10¹⁵" ("约为 2,400 分之一")."""
    exponent = -logprob / math.log(10)
    if exponent < 6:
        return say("decode.odds", lang, count=f"{max(1, round(math.exp(-logprob))):,}")
    return say("decode.odds", lang, count=f"10{str(round(exponent)).translate(SUPERSCRIPT)}")


def shown(text: str) -> str:
    """A token's text readable in a line: a new line as ↵, a tab as ⇥ (spaces stay spaces)."""
    return html.escape(text.replace("\n", "↵").replace("\t", "⇥"))


def sentence(note: object, lang: str = ENGLISH) -> str:
    """A note of the tree (a Phrase or plain text) as a sentence in `lang`: a capital first letter and a full stop
    (a Chinese one ends in 。)."""
    text = words_of(note, lang)
    if not text:
        return text
    chinese = any("\u4e00" <= ch <= "\u9fff" for ch in text)
    end = "" if text[-1] in ".。!！?？" else ("。" if chinese else ".")
    return text[0].upper() + text[1:] + end


def texts_html(tree: dict, lang: str = ENGLISH) -> str:
    """The method's texts, best first, each with its chance under the model."""
    items = []
    for sequence in tree["sequences"]:
        chance = say("decode.chance", lang, odds=odds(sequence["logprob"], lang), logprob=f"{sequence['logprob']:.2f}")
        items.append(f"<li><span class=dc-text>{html.escape(sequence['text'])}</span>"
                     f"<span class=dc-odds>{html.escape(chance)}</span></li>")
    notes = "".join(f"<p class=tg-legend>ℹ️ {html.escape(sentence(n, lang))}</p>"
                    for n in [*tree.get("warnings", []), *tree.get("notes", [])])
    return f"<ol class=dc-texts>{''.join(items)}</ol>{notes}"


def tree_html(tree: dict, lang: str = ENGLISH) -> str:
    """The tree of choices as nested, foldable lines (see the module's docstring)."""
    nodes = {n["id"]: n for n in tree["nodes"]}
    kids: dict[int | None, list[dict]] = {}
    for node in tree["nodes"]:
        kids.setdefault(node["parent"], []).append(node)
    best = set()
    if tree["sequences"]:  # the likeliest text's path, marked (samples come in drawing order, not best first)
        node = max(tree["sequences"], key=lambda s: s["logprob"])["node"]
        while node is not None and node in nodes:
            best.add(node)
            node = nodes[node]["parent"]

    def before(node: dict) -> str:
        parts = []
        while node is not None:
            parts.append(node["text"])
            node = nodes.get(node["parent"]) if node["parent"] is not None else None
        return "".join(reversed(parts))

    def branch(node: dict) -> str:
        text, logprob, dropped, start = node["text"], node["logprob"], [], node
        while True:
            below = kids.get(node["id"], [])
            kept = [n for n in below if n["kept"]]
            dropped += [n for n in below if not n["kept"]]
            if len(kept) != 1:
                break
            node = kept[0]
            text, logprob = text + node["text"], logprob + node["logprob"]
        mark = " dc-best" if start["id"] in best else ""
        title = html.escape(say("decode.up_to_here", lang, text=before(node)), quote=True)
        line = f"{shown(text)}<span class=dc-lp>{logprob:+.2f}</span>"
        gone = sorted(dropped, key=lambda n: -n["logprob"])
        more = say("decode.and_more", lang, count=len(gone) - DROPPED_SHOWN) if len(gone) > DROPPED_SHOWN else ""
        dropped_html = (f"<div class=dc-dropped>{say('decode.dropped', lang)}" + "".join(
            f"<span>{shown(n['text'])} {n['logprob']:+.1f}</span>" for n in gone[:DROPPED_SHOWN]) + more + "</div>"
            if gone else "")
        if not kept:
            return f"<li class='dc-leaf{mark}' title='{title}'>{line}{dropped_html}</li>"
        inner = "".join(branch(n) for n in kept)
        return (f"<li><details open class='{mark.strip()}'><summary title='{title}'>{line}</summary>{dropped_html}"
                f"<ul>{inner}</ul></details></li>")

    roots = [n for n in kids.get(None, []) if n["kept"]]
    if not roots:
        return f"<p class=tg-legend>{say('decode.nothing', lang)}</p>"
    return f"<ul class=dc-tree>{''.join(branch(n) for n in roots)}</ul>"


TREE_HELP = "decode.tree_help"  # the key of the line above the three columns (textgen/locales)


def method_html(title: str, how: str, tree: dict, lang: str = ENGLISH) -> str:
    """One method's column: what it does, its texts, and its tree of choices, in `lang`."""
    return (f"<h4>{html.escape(title)}</h4><p class=tg-legend>{html.escape(how)}</p>{texts_html(tree, lang)}"
            f"{tree_html(tree, lang)}")
