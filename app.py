"""textgen playground: type a prompt, pick a model, watch it write.

    python app.py                      # http://127.0.0.1:7860, our shipped models + the GPT-2 family
    python app.py --model ./my-model   # add a local model directory or Hub id (repeatable)

All the work is done by `textgen`; this file builds the page and wires its events.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING

import gradio as gr

from textgen.catalog import ASSETS, Catalog
from textgen.render import TOKEN_CSS, model_note, tokens_html
from textgen.settings import CONTROLS, Limits, RequestError
from textgen.startup import LazyPlayground

if TYPE_CHECKING:
    from textgen.playground import Playground

try:  # On a ZeroGPU Space the decorated functions run on a GPU; elsewhere spaces.GPU changes nothing.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - spaces is in requirements.txt, but the page works without it

    def gpu(fn):
        return fn


def lenient(component):
    """Leave checking this input's value to textgen.settings rather than Gradio.

    The API lets anyone send anything; textgen checks every value with a message that names the control.
    Gradio's own checks answer too, but log a server traceback for each bad request. (Not a subclass:
    Gradio writes a .pyi stub file next to the source of any component subclass.)
    """
    component.preprocess = lambda payload: payload
    return component


def _fail(err: Exception) -> gr.Error:
    return gr.Error(str(err), print_exception=False)


PRESETS = {  # temperature, top_k, top_p, min_p, repetition_penalty
    "Precise": (0.3, 20, 0.9, 0.0, 1.1),
    "Balanced": (0.8, 0, 0.95, 0.0, 1.05),
    "Creative": (1.1, 0, 1.0, 0.05, 1.0),
}
HELP = {
    "temperature": "How adventurous the model is. 0 always picks its top choice; higher takes more risks.",
    "top_k": "Only consider the k most likely next tokens. 0 = no limit.",
    "top_p": "Only consider the most likely tokens that together make up this much probability.",
    "min_p": "Drop tokens much less likely than the top choice (this fraction of its probability).",
    "repetition_penalty": "Above 1 discourages repeating what is already there.",
    "no_repeat_ngram_size": "Never repeat a sequence of this many tokens. 0 = off.",
    "max_new_tokens": "How much to write at most (a token is a character for our models, ~¾ word for GPT-2).",
}
HTML_EVERY = 0.4  # seconds between redraws of the probability view while streaming (it grows with the text)


def _examples() -> list[dict]:
    path = ASSETS / "examples.json"
    return json.loads(path.read_text()) if path.exists() else []


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def build_demo(playground: Playground | LazyPlayground) -> gr.Blocks:
    catalog, limits = playground.catalog, playground.limits
    choices = [(e.title, e.name) for e in catalog]
    ours = [e.name for e in catalog if e.origin == "shipped"]
    default_model = ours[0] if ours else (choices[0][1] if choices else None)
    examples = _examples()

    def describe(name: str) -> str:
        if name not in catalog:
            return ""
        entry = catalog.get(name)
        info = playground.manager.get(name).info() if playground.manager.is_loaded(name) else None
        return model_note(entry.title, entry.description, info)

    @gpu
    def generate(
        prompt,
        model,
        temperature,
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        no_repeat_ngram_size,
        max_new_tokens,
        seed,
        request: gr.Request = None,
    ):
        try:
            settings = playground.parse(
                prompt,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                min_p=min_p,
                repetition_penalty=repetition_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
                max_new_tokens=max_new_tokens,
                seed=seed,
            )
            drawn = 0.0
            for live in playground.generate(model, settings, _session(request)):
                now = time.monotonic()
                if live.summary is not None or now - drawn > HTML_EVERY:
                    drawn = now
                    yield live.text, live.stats(), tokens_html(live.tokens)
                else:
                    yield live.text, live.stats(), gr.skip()
        except RequestError as err:
            raise _fail(err) from None

    @gpu
    def compare(prompt, models, temperature, max_new_tokens, seed, request: gr.Request = None):
        try:
            settings = playground.parse(
                prompt, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, alternatives=0
            )
            first = True
            for lives in playground.compare(models, settings, _session(request)):
                boxes = [gr.update(visible=False, value="") for _ in range(limits.max_compare)]
                stats = [gr.update(visible=False, value="") for _ in range(limits.max_compare)]
                for i, live in enumerate(lives):
                    boxes[i] = gr.update(visible=True, label=live.title, value=live.text) if first else live.text
                    stats[i] = gr.update(visible=True, value=live.stats()) if first else live.stats()
                first = False
                yield *boxes, *stats
        except RequestError as err:
            raise _fail(err) from None

    @gpu
    def score(text, models, progress=gr.Progress()):  # noqa: B008 (Gradio's way to ask for a progress bar)
        try:
            rows = playground.score(models, text, lambda done, what: progress(done, desc=what))
        except RequestError as err:
            raise _fail(err) from None
        import pandas as pd

        return pd.DataFrame(rows), pd.DataFrame(rows)

    def stop(request: gr.Request = None):
        playground.stop(_session(request))

    def queued(request: gr.Request = None):
        playground.queued(_session(request))

    def apply_preset(name: str):
        return PRESETS.get(name, PRESETS["Balanced"])

    def slider(name: str, value, step, label, elem_id=None, info=True):
        low, high, _, _ = CONTROLS[name]
        if name == "max_new_tokens":
            # The operator's cap; a slider needs two distinct ends, and its start must lie between them.
            high = max(limits.max_new_tokens, low + 1)
            value = min(value, limits.max_new_tokens)
        return lenient(gr.Slider(low, high, value=value, step=step, label=label, info=HELP[name] if info else None,
                                 elem_id=elem_id or name))

    with gr.Blocks(title="textgen playground") as demo:
        gr.Markdown(
            "# textgen playground\nType a beginning, pick a model, and watch it write, one token at a "
            "time. Our own small models learned only Shakespeare; GPT-2 learned from the web."
        )
        with gr.Tab("Write"):
            with gr.Row():
                with gr.Column(scale=2):
                    prompt = gr.Textbox(
                        label="Prompt",
                        lines=4,
                        value="ROMEO:\n",
                        elem_id="prompt",
                        placeholder="Type the beginning of a text…",
                    )
                    model = gr.Dropdown(
                        choices, value=default_model, label="Model", elem_id="model", allow_custom_value=True
                    )  # textgen's catalog refuses unknown names
                    first = catalog.get(default_model) if default_model else None
                    note = gr.Markdown(
                        model_note(first.title, first.description) if first else "", elem_id="model-note"
                    )
                    preset = gr.Radio(
                        list(PRESETS),
                        value="Balanced",
                        label="Style",
                        info="Presets for the sliders below",
                        elem_id="preset",
                    )
                    with gr.Accordion("Sampling controls", open=False, elem_id="controls"):
                        temperature = slider("temperature", 0.8, 0.05, "Temperature")
                        top_k = slider("top_k", 0, 1, "Top-k")
                        top_p = slider("top_p", 0.95, 0.01, "Top-p")
                        min_p = slider("min_p", 0.0, 0.01, "Min-p")
                        repetition_penalty = slider("repetition_penalty", 1.05, 0.01, "Repetition penalty")
                        no_repeat = slider("no_repeat_ngram_size", 0, 1, "No-repeat n-gram size")
                        max_new_tokens = slider("max_new_tokens", 300, 1, "Max new tokens")
                        seed = lenient(
                            gr.Number(
                                -1,
                                precision=0,
                                label="Seed",
                                elem_id="seed",
                                info="The same seed gives the same text again. -1 picks one at random.",
                            )
                        )
                    with gr.Row():
                        go = gr.Button("Generate", variant="primary", elem_id="generate")
                        halt = gr.Button("Stop", variant="stop", elem_id="stop")
                with gr.Column(scale=3):
                    output = gr.Textbox(label="Output", lines=14, elem_id="output", buttons=["copy"], autoscroll=True)
                    stats = gr.Markdown("", elem_id="stats")
                    with gr.Accordion("Token probabilities", open=True):
                        probs = gr.HTML("", elem_id="tokens")
            if examples:
                gr.Examples([[e["prompt"]] for e in examples], inputs=[prompt], label="Examples")

        with gr.Tab("Compare"):
            gr.Markdown("One prompt, one seed, several models writing at the same time.")
            with gr.Row():
                cmp_prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO:\n", elem_id="cmp-prompt", scale=3)
                with gr.Column(scale=2):
                    cmp_models = lenient(
                        gr.CheckboxGroup(
                            choices,
                            value=ours[: limits.max_compare],
                            label=f"Models (2 to {limits.max_compare})",
                            elem_id="cmp-models",
                        )
                    )
                    with gr.Row():
                        cmp_temperature = slider("temperature", 0.8, 0.05, "Temperature", "cmp-temperature", False)
                        cmp_max = slider("max_new_tokens", 200, 1, "Max new tokens", "cmp-max", False)
                        cmp_seed = lenient(gr.Number(1, precision=0, label="Seed", elem_id="cmp-seed"))
            with gr.Row():
                cmp_go = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                cmp_halt = gr.Button("Stop", variant="stop", elem_id="cmp-stop")
            with gr.Row():
                cmp_boxes, cmp_stats = [], []
                for i in range(limits.max_compare):
                    with gr.Column(min_width=200):
                        cmp_boxes.append(
                            gr.Textbox(
                                label=f"Model {i + 1}",
                                lines=12,
                                elem_id=f"cmp-out-{i}",
                                visible=i < len(ours[: limits.max_compare]),
                            )
                        )
                        cmp_stats.append(gr.Markdown("", elem_id=f"cmp-stats-{i}"))
            if examples:
                # One click on an example fills the form and starts every model writing.
                gr.Examples(
                    [[e["prompt"], e.get("models") or cmp_models.value, 0.8, cmp_max.value, 1] for e in examples],
                    inputs=[cmp_prompt, cmp_models, cmp_temperature, cmp_max, cmp_seed],
                    outputs=[*cmp_boxes, *cmp_stats],
                    fn=compare,
                    run_on_click=True,
                    cache_examples=False,
                    label="Examples (click one to start)",
                    api_visibility="private",
                )

        with gr.Tab("Perplexity"):
            gr.Markdown(
                "Paste a text and see how surprised each model is by it: lower is less surprised. "
                "Nats per character compare models with different tokenizers fairly."
            )
            ppl_text = gr.Textbox(
                label="Text",
                lines=6,
                elem_id="ppl-text",
                value="Now is the winter of our discontent\nMade glorious summer by this sun of York;",
            )
            ppl_models = lenient(gr.CheckboxGroup(choices, value=ours, label="Models", elem_id="ppl-models"))
            ppl_go = gr.Button("Score", variant="primary", elem_id="ppl-run")
            ppl_plot = gr.BarPlot(
                x="model", y="nats_per_char", title="Surprise per character (nats)", elem_id="ppl-plot"
            )
            ppl_table = gr.Dataframe(elem_id="ppl-table")

        model.change(describe, model, note, queue=False, api_visibility="private")
        preset.change(
            apply_preset,
            preset,
            [temperature, top_k, top_p, min_p, repetition_penalty],
            queue=False,
            api_visibility="private",
        )
        gen_inputs = [
            prompt,
            model,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            no_repeat,
            max_new_tokens,
            seed,
        ]
        # Each page request is announced the moment it is clicked (queue=False), so that Stop also ends a
        # request still waiting in the queue: it ends as soon as it starts, before computing anything.
        announce = {"fn": queued, "inputs": None, "outputs": None, "queue": False, "api_visibility": "private"}
        gen = go.click(**announce).then(
            generate,
            gen_inputs,
            [output, stats, probs],
            api_name="generate",
            concurrency_id="generation",
            concurrency_limit=limits.concurrency,
        )
        gen.then(describe, model, note, queue=False, api_visibility="private")
        submitted = prompt.submit(**announce).then(
            generate,
            gen_inputs,
            [output, stats, probs],
            api_visibility="private",
            concurrency_id="generation",
            concurrency_limit=limits.concurrency,
        )
        compared = cmp_go.click(**announce).then(
            compare,
            [cmp_prompt, cmp_models, cmp_temperature, cmp_max, cmp_seed],
            [*cmp_boxes, *cmp_stats],
            api_name="compare",
            concurrency_id="generation",
            concurrency_limit=limits.concurrency,
        )
        # Stop signals the running request and lets it end normally: the model stops within a token, and the
        # page shows no error (`cancels=` alone sometimes leaves a red Error badge). On ZeroGPU the request runs
        # in a worker process the signal cannot reach, so there Stop also cancels the event itself.
        zero_gpu = bool(os.environ.get("SPACES_ZERO_GPU"))
        halt.click(stop, None, None, queue=False, api_name="stop", cancels=[gen, submitted] if zero_gpu else None)
        cmp_halt.click(
            stop, None, None, queue=False, api_visibility="private", cancels=[compared] if zero_gpu else None
        )
        ppl_go.click(
            score,
            [ppl_text, ppl_models],
            [ppl_table, ppl_plot],
            api_name="score",
            concurrency_id="scoring",
            concurrency_limit=1,
        )
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency)
    return demo


LAUNCH_KWARGS = {"css": TOKEN_CSS, "show_error": True, "footer_links": ["api"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="SOURCE",
        help="add a model: a Hugging Face Hub id or a local directory (repeatable)",
    )
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
    demo = build_demo(playground)
    demo.launch(server_port=args.port, prevent_thread_lock=True, **LAUNCH_KWARGS)
    playground.start()
    demo.block_thread()


if __name__ == "__main__":
    main()
