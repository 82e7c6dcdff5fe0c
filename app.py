"""textgen playground: type a prompt, pick a model, watch it write.

    python app.py                      # http://127.0.0.1:7860, our shipped models + the GPT-2 family
    python app.py --model ./my-model   # add a local model directory or Hub id (repeatable)

All the work is done by `textgen`, and `ui.render` turns its data into what a person reads; this file builds
the page, one function per tab, and wires its events.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from textgen.catalog import ASSETS, Catalog
from textgen.settings import CONTROLS, PRESETS, SLIDERS, Control, Limits, RequestError, matching_preset, preset_values
from textgen.startup import LazyPlayground
from ui.render import (
    LEGEND,
    SCORE_COLUMNS,
    TOKEN_CSS,
    TOKEN_JS,
    TokenView,
    model_choices,
    model_note,
    score_records,
    stats_markdown,
)

if TYPE_CHECKING:
    from textgen.playground import Playground

try:  # On a ZeroGPU Space the decorated functions run on a GPU; elsewhere spaces.GPU changes nothing.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - spaces is in requirements.txt, but the page works without it

    def gpu(fn):
        return fn


PACE = 0.04  # seconds between updates sent to the browser while a text streams (the model does not wait)
ZERO_GPU = bool(os.environ.get("SPACES_ZERO_GPU"))
# On a narrow screen the output sits below the controls: bring it into view when the writing starts.
SHOW_OUTPUT_JS = ("() => { if (window.innerWidth < 768) "
                  "document.getElementById('output')?.scrollIntoView({behavior: 'smooth', block: 'start'}); }")


def lenient(component):
    """Leave checking this input's value to textgen.settings rather than Gradio.

    The API lets anyone send anything; textgen checks every value with a message that names the control.
    Gradio's own checks answer too, but log a server traceback for each bad request. (Not a subclass:
    Gradio writes a .pyi stub file next to the source of any component subclass.)
    """
    component.preprocess = lambda payload: payload
    return component


def slider(control: Control, elem_id: str | None = None, info: bool = True) -> gr.Slider:
    """A slider for one control of the table (its range already capped by the operator's limits)."""
    return lenient(gr.Slider(control.low, max(control.high, control.low + 1), value=control.start, step=control.step,
                             label=control.label, info=control.help if info else None, elem_id=elem_id or control.name))


def named(*names: str):
    """Give a handler written as `(request, *values)` the parameter names of its inputs, so that the API page
    and its clients read `temperature`, `top_k`, … (the names come from the control table, written once)."""
    def wrap(fn):
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter("request", kind, annotation=gr.Request)]
        fn.__signature__ = inspect.Signature(params + [inspect.Parameter(n, kind) for n in names])
        return fn

    return wrap


def _fail(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _examples() -> list[dict]:
    path = ASSETS / "examples.json"
    return json.loads(path.read_text()) if path.exists() else []


def default_model(catalog: Catalog) -> str | None:
    """The best of our shipped models (lowest held-out surprise on its card), else the first model."""
    def surprise(entry) -> float:
        try:
            return float(json.loads((Path(entry.source) / "training_summary.json").read_text())["val_nats_per_char"])
        except (OSError, ValueError, KeyError, TypeError):
            return float("inf")

    ours = [e for e in catalog if e.origin == "shipped"]
    return min(ours, key=surprise).name if ours else next(iter(catalog.names()), None)


# -- the Write tab --------------------------------------------------------------------------------------------


def write_tab(playground: Playground | LazyPlayground) -> list:
    """Prompt, model, style and sliders; the text streams in with its numbers and its token view."""
    catalog, limits = playground.catalog, playground.limits
    controls = {name: CONTROLS[name].bounded(limits) for name in SLIDERS}
    first = default_model(catalog)
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=4, value="ROMEO:\n", elem_id="prompt",
                                placeholder="Type the beginning of a text…")
            model = gr.Dropdown(model_choices(catalog), value=first, label="Model", elem_id="model",
                                allow_custom_value=True)  # textgen's catalog refuses unknown names
            entry = catalog.get(first) if first else None
            note = gr.Markdown(model_note(entry.title, entry.description) if entry else "", elem_id="model-note")
            style = gr.Radio(list(PRESETS), value="Balanced", label="Style", elem_id="preset",
                             info="Presets for the sliders below; moving a slider by hand clears it")
            with gr.Accordion("Sampling controls", open=False, elem_id="controls"):
                sliders = [slider(controls[name]) for name in SLIDERS]
                seed = lenient(gr.Number(-1, precision=0, label="Seed", elem_id="seed",
                                         info="The same seed gives the same text again. -1 picks one at random."))
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                halt = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Column(scale=3):
            output = gr.Textbox(label="Output", lines=14, elem_id="output", buttons=["copy"], autoscroll=True)
            stats = gr.Markdown("", elem_id="stats")
            with gr.Accordion("Token probabilities", open=True):
                gr.HTML(LEGEND, padding=False)
                probs = gr.HTML("", elem_id="tokens", js_on_load=TOKEN_JS, padding=False)
    examples = _examples()
    if examples:
        gr.Examples([[e["prompt"]] for e in examples], inputs=[prompt], label="Examples")

    @gpu
    @named("prompt", "model", *SLIDERS, "seed")
    def generate(request: gr.Request, prompt, model, *values):
        values, seed = values[:-1], values[-1]
        try:
            settings = playground.parse(prompt, seed=seed, **dict(zip(SLIDERS, values, strict=True)))
            view = TokenView()
            for live in playground.generate(model, settings, _session(request), every=PACE):
                yield live.text, stats_markdown(live), view.render(live.tokens)
        except RequestError as err:
            yield gr.skip(), f"⚠️ {err}", gr.skip()  # no stale "Loading…" line under the error
            raise _fail(err) from None

    def describe(name: str) -> str:
        if name not in catalog:
            return ""
        entry = catalog.get(name)
        why = playground.unavailable().get(name)
        return model_note(entry.title, entry.description, None if why else playground.model_info(name), why)

    def pick_style(style: str):
        values = preset_values(style)
        return [values.get(name, gr.skip()) for name in SLIDERS]

    def moved(*values):
        return matching_preset(dict(zip(SLIDERS, values, strict=True)))

    inputs = [prompt, model, *sliders, seed]
    outputs = [output, stats, probs]
    # Each page request is announced the moment it is clicked (queue=False), so that Stop also ends a
    # request still waiting in the queue: it ends as soon as it starts, before computing anything.
    run = {"fn": generate, "inputs": inputs, "outputs": outputs, "concurrency_id": "generation",
           "concurrency_limit": limits.concurrency, "show_progress": "hidden"}
    gen = go.click(**_announce(playground), js=SHOW_OUTPUT_JS).then(**run, api_name="generate")
    gen.then(describe, model, note, queue=False, api_visibility="private")
    submitted = prompt.submit(**_announce(playground)).then(**run, api_visibility="private")
    _stop_button(playground, halt, [gen, submitted], api_name="stop")
    model.change(describe, model, note, queue=False, api_visibility="private")
    style.change(pick_style, style, sliders, queue=False, api_visibility="private")
    for s in sliders:
        s.input(moved, sliders, style, queue=False, api_visibility="private")
    return [model]


# -- the Compare tab ------------------------------------------------------------------------------------------


def compare_tab(playground: Playground | LazyPlayground) -> list:
    """One prompt and seed, several models writing side by side at the same time."""
    catalog, limits = playground.catalog, playground.limits
    ours = [e.name for e in catalog if e.origin == "shipped"][: limits.max_compare]
    gr.Markdown("One prompt, one seed, several models writing at the same time.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO:\n", elem_id="cmp-prompt", scale=3)
        with gr.Column(scale=2):
            models = lenient(gr.CheckboxGroup(model_choices(catalog), value=ours, elem_id="cmp-models",
                                              label=f"Models (2 to {limits.max_compare})"))
            with gr.Row():
                temperature = slider(CONTROLS["temperature"], "cmp-temperature", info=False)
                length = slider(CONTROLS["max_new_tokens"].bounded(limits), "cmp-max", info=False)
                seed = lenient(gr.Number(1, precision=0, label="Seed", elem_id="cmp-seed"))
    with gr.Row():
        go = gr.Button("Compare", variant="primary", elem_id="cmp-run")
        halt = gr.Button("Stop", variant="stop", elem_id="cmp-stop")
    boxes, numbers = [], []
    with gr.Row():
        for i in range(limits.max_compare):
            with gr.Column(min_width=200):
                boxes.append(gr.Textbox(label=f"Model {i + 1}", lines=12, elem_id=f"cmp-out-{i}",
                                        visible=i < len(ours)))
                numbers.append(gr.Markdown("", elem_id=f"cmp-stats-{i}"))

    @gpu
    def compare(request: gr.Request, prompt, models, temperature, max_new_tokens, seed):
        try:
            settings = playground.parse(prompt, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                                        alternatives=0)
            first = True
            for lives in playground.compare(models, settings, _session(request), every=PACE):
                texts = [gr.update(visible=False, value="") for _ in range(limits.max_compare)]
                stats = [gr.update(value="") for _ in range(limits.max_compare)]
                for i, live in enumerate(lives):
                    if first or live.error:  # set up the box; later updates send only the text
                        label = live.title + (" · could not write" if live.error else "")
                        texts[i] = gr.update(visible=True, label=label, value=live.text)
                    else:
                        texts[i] = live.text
                    stats[i] = stats_markdown(live)
                first = False
                yield *texts, *stats
        except RequestError as err:
            raise _fail(err) from None

    run = {"fn": compare, "inputs": [prompt, models, temperature, length, seed], "outputs": [*boxes, *numbers],
           "concurrency_id": "generation", "concurrency_limit": limits.concurrency, "show_progress": "hidden"}
    compared = go.click(**_announce(playground)).then(**run, api_name="compare")
    _stop_button(playground, halt, [compared], api_visibility="private")
    examples = _examples()
    if examples:  # after the button's event, which so keeps the API name /compare
        gr.Examples([[e["prompt"], e.get("models") or models.value, 0.8, length.value, 1] for e in examples],
                    inputs=run["inputs"], outputs=run["outputs"], fn=compare, run_on_click=True,
                    cache_examples=False, label="Examples (click one to start)", api_visibility="private")
    return [models]


# -- the Perplexity tab ---------------------------------------------------------------------------------------


def perplexity_tab(playground: Playground | LazyPlayground) -> list:
    """How surprised each model is by a text, per character: a chart and a table."""
    catalog, limits = playground.catalog, playground.limits
    gr.Markdown("Paste a text and see how surprised each model is by it: lower is less surprised. "
                "Surprise is measured per character, so models that split text differently compare fairly.")
    text = gr.Textbox(label="Text", lines=6, elem_id="ppl-text",
                      value="Now is the winter of our discontent\nMade glorious summer by this sun of York;")
    ours = [e.name for e in catalog if e.origin == "shipped"][: limits.max_compare]
    models = lenient(gr.CheckboxGroup(model_choices(catalog), value=ours, elem_id="ppl-models",
                                      label=f"Models (1 to {limits.max_compare})"))
    go = gr.Button("Score", variant="primary", elem_id="ppl-run")
    nats = SCORE_COLUMNS["nats_per_char"]
    chart = gr.BarPlot(x=SCORE_COLUMNS["title"], y=nats, title="Surprise per character (lower is better)",
                       x_title="Model", y_title="nats per character", y_lim=[0, None], sort=None,
                       elem_id="ppl-plot")
    table = gr.Dataframe(elem_id="ppl-table", wrap=True)

    @gpu
    def score(text, names, progress=gr.Progress()):  # noqa: B008 (Gradio's way to ask for a progress bar)
        try:
            rows = playground.score(names, text, lambda done, what: progress(done, desc=what))
        except RequestError as err:
            raise _fail(err) from None
        import pandas as pd

        records = score_records(rows)
        scored = pd.DataFrame([r for r in records if r[nats] is not None])
        return pd.DataFrame(records), scored

    go.click(score, [text, models], [table, chart], api_name="score", concurrency_id="scoring",
             concurrency_limit=1)
    return [models]


# -- the page -------------------------------------------------------------------------------------------------


def _announce(playground) -> dict:
    """The first step of every page request: say, before it queues, that this session has one coming."""
    def queued(request: gr.Request = None):
        playground.queued(_session(request))

    return {"fn": queued, "inputs": None, "outputs": None, "queue": False, "api_visibility": "private"}


def _stop_button(playground, button: gr.Button, events: list, **api) -> None:
    """Stop signals the session's running requests, which then end normally: the model stops within a token
    and the page says so (`cancels=` alone sometimes leaves a red Error badge). On ZeroGPU the request runs in a
    worker process the signal cannot reach, so there Stop also cancels the events themselves."""
    def stop(request: gr.Request = None):
        playground.stop(_session(request))

    button.click(stop, None, None, queue=False, cancels=events if ZERO_GPU else None, **api)


def build_demo(playground: Playground | LazyPlayground) -> gr.Blocks:
    with gr.Blocks(title="textgen playground") as demo:
        gr.Markdown("# textgen playground\nType a beginning, pick a model, and watch it write, one token at a "
                    "time. Our own small models learned only Shakespeare; GPT-2 learned from the web.")
        pickers = []
        with gr.Tab("Write"):
            pickers += write_tab(playground)
        with gr.Tab("Compare"):
            pickers += compare_tab(playground)
        with gr.Tab("Perplexity"):
            pickers += perplexity_tab(playground)

        def mark_unavailable():
            """Every picker says which models cannot be used here, and why (checked when the page opens)."""
            unavailable = playground.unavailable()
            return [gr.update(choices=model_choices(playground.catalog, unavailable)) for _ in pickers]

        demo.load(mark_unavailable, None, pickers, queue=False, api_visibility="private")
    demo.queue(max_size=playground.limits.queue_size, default_concurrency_limit=playground.limits.concurrency)
    return demo


LAUNCH_KWARGS = {"css": TOKEN_CSS, "show_error": True, "footer_links": ["api"]}


def serve(playground: Playground | LazyPlayground, port: int, **launch) -> tuple[gr.Blocks, str]:
    """Build the page and serve it in the background on 127.0.0.1:port; returns the page and its URL.
    The one way tests and benchmarks start the app (close it with `demo.close()`)."""
    demo = build_demo(playground)
    demo.launch(server_port=port, prevent_thread_lock=True, **{"quiet": True, **LAUNCH_KWARGS, **launch})
    return demo, f"http://127.0.0.1:{port}/"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="SOURCE",
                        help="add a model: a Hugging Face Hub id or a local directory (repeatable)")
    parser.add_argument("--catalog", help="JSON file listing extra models")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    try:  # the operator's mistakes (a bad --model, catalog file or TEXTGEN_* value) in one line, not a traceback
        catalog, limits = Catalog.default(args.model, args.catalog), Limits.from_env()
    except ValueError as err:
        parser.error(str(err))
    # The page is served first; torch, transformers and the models load right after, in the background.
    playground = LazyPlayground(catalog, limits, device=args.device)
    demo, _ = serve(playground, args.port, quiet=False)
    playground.start()
    demo.block_thread()


if __name__ == "__main__":
    main()
