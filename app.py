"""textgen playground: type a prompt, pick a model, watch it write.

    python app.py                      # http://127.0.0.1:7860, our shipped models + the GPT-2 family
    python app.py --model ./my-model   # add a local model directory or Hub id (repeatable)

All the work is done by `textgen`; each tab is a module of `ui/` (its handlers, plain methods, and its layout),
and this file puts the tabs on one page, serves it and reads the command line.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

import gradio as gr
from starlette.middleware import Middleware

from textgen.core.settings import Limits
from textgen.service.catalog import Catalog
from textgen.service.startup import LazyPlayground, for_page
from textgen.service.training import TrainingLimits, TrainingRuns
from ui import chat, compare, decode, perplexity, step, train, write
from ui.language import I18N, EarlyScript, language, toast_css, tr
from ui.polling import calm_queue
from ui.render import TOKEN_CSS
from ui.sessions import lazy_session_configs
from ui.widgets import PHONE_CSS, picker_updates, session

if TYPE_CHECKING:
    from textgen.service.playground import Playground

# The page's tabs, in order (by their names' keys in textgen/locales): each module lays itself out and returns its
# model pickers.
TABS = (("tab.write", write), ("tab.step", step), ("tab.decode", decode), ("tab.chat", chat),
        ("tab.compare", compare), ("tab.perplexity", perplexity))


def build_demo(playground: Playground | LazyPlayground, training: TrainingLimits | None = None) -> gr.Blocks:
    """The whole page over one playground (the tabs of TABS, then Train unless the operator turned it off), with its
    queue."""
    training = training or TrainingLimits.from_env()
    lazy_session_configs()  # a new visitor costs the server 45 ms less (ui/sessions.py)
    with gr.Blocks(title="textgen playground") as demo:
        # The language switch, top right: a link that reloads the page in the other language (ui/language.py).
        gr.HTML(tr("app.switch"), elem_id="language-switch", padding=False)
        gr.Markdown(tr("app.intro"), elem_id="intro")
        pickers = []
        # "wrap": on a phone the tabs that do not fit go to a second row, not behind a "⋯" menu nobody opens.
        with gr.Tabs(overflow_behavior="wrap", elem_id="tabs"):
            for key, tab in TABS:
                with gr.Tab(tr(key), id=key.split(".")[1]):
                    pickers += tab.build(playground)
            if training.enabled:  # last: a model trained there joins the pickers of all the others
                with gr.Tab(tr("tab.train"), id="train"):
                    runs = TrainingRuns(playground.catalog, training, forget=playground.forget)
                    train.build(playground, runs, pickers)

        def mark_unavailable(request: gr.Request):
            """Every picker says which models cannot be used here, and why (checked when the page opens)."""
            return picker_updates(playground, pickers, session(request), language(request), opening=True)

        demo.load(mark_unavailable, None, pickers, queue=False, api_visibility="private")
    demo.queue(max_size=playground.limits.queue_size, default_concurrency_limit=playground.limits.concurrency)
    calm_queue(demo)  # it looks for new work every 10 ms, not every 1 (ui/polling.py)
    return demo


# On a phone the step view's sliders fold away until asked for, so that Start is on the first screen with the
# prompt (on a laptop they stay open: moving them is the point). The tab is drawn when first opened, hence the watch.
PHONE_JS = """() => {
  if (window.innerWidth >= 700) return;
  const watch = new MutationObserver(() => {
    const head = document.querySelector('#step-controls > .label-wrap');
    if (!head) return;
    watch.disconnect();
    // After the tab has finished drawing: a click while it is still being built is undone by it.
    setTimeout(() => { if (head.classList.contains('open')) head.click(); }, 400);
  });
  watch.observe(document.body, {childList: true, subtree: true});
}"""
# max_file_size: Gradio refuses bigger uploads before they reach a handler; up to it, the Train tab's own limit
# (TEXTGEN_TRAIN_MAX_UPLOAD_MB, 10 by default) answers in words.
# i18n: the page's fixed words in every language (textgen/locales); EarlyScript tells Gradio's front end the
# language a visitor chose with the switch or ?lang= before it starts.
LAUNCH_KWARGS = {"css": TOKEN_CSS + PHONE_CSS + toast_css(), "js": PHONE_JS, "show_error": True,
                 "footer_links": ["api"], "max_file_size": "100mb", "i18n": I18N,
                 "app_kwargs": {"middleware": [Middleware(EarlyScript)]}}


def serve(playground: Playground | LazyPlayground, port: int, training: TrainingLimits | None = None,
          **launch) -> tuple[gr.Blocks, str]:
    """Build the page and serve it in the background on 127.0.0.1:port; returns the page and its URL.
    The one way tests and benchmarks start the app (close it with `demo.close()`)."""
    demo = build_demo(playground, training)
    # A worker thread for every page request that may be in progress (Gradio's default is 40): a request waiting
    # for its place in a model's scheduler holds one while it waits.
    threads = {"max_threads": max(40, playground.limits.writers + 8)}
    demo.launch(server_port=port, prevent_thread_lock=True,
                **{"quiet": True, **LAUNCH_KWARGS, **threads, **launch})
    return demo, f"http://127.0.0.1:{port}/"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="SOURCE",
                        help="add a model: a Hugging Face Hub id or a local directory (repeatable)")
    parser.add_argument("--catalog", help="JSON file listing extra models")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--engine", action="append", default=[], metavar="URL",
                        help="an OpenAI-compatible inference engine (vLLM) whose models join the catalog, e.g. "
                             "http://127.0.0.1:8000/v1 (repeatable; also $TEXTGEN_ENGINES, comma-separated)")
    args = parser.parse_args(argv)
    try:  # the operator's mistakes (a bad --model, catalog file or TEXTGEN_* value) in one line, not a traceback
        catalog = Catalog.default(args.model, args.catalog, engines=args.engine)  # an engine that is down waits
        limits, training = Limits.from_env(), TrainingLimits.from_env()
    except ValueError as err:
        parser.error(str(err))
    # The page is served first; torch, transformers and the models load right after, in the background.
    playground = LazyPlayground(catalog, limits, device=args.device)
    # With engines, the page's queue also has room for their requests (textgen/service/startup.py: for_page).
    demo, _ = serve(for_page(playground, catalog), args.port, training, quiet=False)
    playground.start()
    if os.environ.get("TEXTGEN_PREPARE", "1") != "0":  # SmolLM2's one-time conversion, before a visitor asks
        playground.prepare_when_ready()
    demo.block_thread()


if __name__ == "__main__":
    main()
