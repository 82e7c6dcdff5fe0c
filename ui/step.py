"""The Step by step tab: watch a model choose its next token. The candidates stage by stage as the sliders move
(no forward pass), one token sampled, picked by hand, taken back or written N at a time, and a look inside.

    tab = StepTab(playground)
    text, status, bars = tab.sample_step(None, "ROMEO:\\n", "lstm", *control_values, seed)
    tab.next_token("ROMEO:\\n", "lstm", temperature=0.8)     # the API's /next_token: the stages as data
    build(playground)   # inside gr.Blocks: the components, wired to tab's handlers

Each browser session's open text is kept by the service (textgen.service.step_sessions); the handlers are plain
methods of `StepTab` and ui/step_view.py draws what they return.
"""

from __future__ import annotations

import logging
import time

import gradio as gr

from textgen.core.settings import CONTROLS, SLIDERS, RequestError
from textgen.service.step_sessions import StepBook, StepState, Written
from ui import step_view as view
from ui.render import STOPPED, model_choices, token_js
from ui.widgets import default_model, fail, gpu, lenient, session, show_on_phone, slider

STEP_CONTROLS = tuple(name for name in SLIDERS if name != "max_new_tokens")  # the Write tab's sampling sliders
STEP_DRAWS = 200  # draws of "Sample many"


def quote(token: dict | None) -> str:
    return "“" + (token or {}).get("shown", "") + "”"


def attempt(work):
    """Run one request: a bad value or model is a clear message, never a traceback."""
    try:
        return work()
    except RequestError as err:
        raise fail(err) from None
    except Exception as err:
        logging.getLogger("textgen").exception("the Step by step tab failed")
        raise fail(RequestError(f"the step view failed: {type(err).__name__}: {str(err)[:200]}")) from None


def chosen(values) -> dict:
    """The step sliders' values by control name."""
    return dict(zip(STEP_CONTROLS, values, strict=True))


def checked_layer(value, count: int) -> int:
    """A layer or head number from the page: -1 (all of them) unless it is one of `count`."""
    return int(value) if value is not None and -1 <= int(value) < count else -1


def no_attention() -> tuple:
    """The attention controls and view with nothing to show."""
    return (gr.update(choices=view.layer_choices(0), value=-1), gr.update(choices=view.head_choices(0), value=-1),
            gr.update(minimum=0, maximum=1, value=0), "")


def forget_inside():
    """Another model: what was seen inside the last one goes (its layers, heads and units are not this one's)."""
    return "", *no_attention(), gr.update(choices=[], value=None), None, ""


def shown_state(state: StepState, values, note: str = "") -> tuple[str, str, str]:
    """The text so far, the line under the buttons and the bars, for this state and these controls."""
    stages = state.session.stages(chosen(values))  # no forward pass
    key = (len(state.written), tuple(values))
    counts = state.counts if state.counts_key == key else None
    session_ = state.session
    lines = [note] if note else []
    lines.append(f"**{len(state.written)}** token{'s' * (len(state.written) != 1)} written after the prompt · "
                 f"the model has run **{session_.forward_passes}** time{'s' * (session_.forward_passes != 1)} "
                 "so far (moving a slider only redraws the bars)")
    lines += [f"⚠️ {w}" for w in session_.warnings]
    return view.text_html(session_.prompt, state.written), "  \n".join(lines), view.bars_html(stages, counts)


class StepTab:
    """The Step by step tab's handlers, over one playground and its book of open step sessions."""

    def __init__(self, playground):
        self.playground = playground
        # (a lambda: the playground may still be starting when the page is built)
        self.book = StepBook(lambda model, prompt, key: playground.open_step(model, prompt, key))

    # -- the text and its next token --

    def start_step(self, request: gr.Request, prompt, model, *values):
        """Read the prompt afresh and show what the model wants next (after saying so while the server starts)."""
        while (waiting := self.playground.starting()) is not None:  # the first seconds after the server started
            yield gr.skip(), f"⏳ {waiting}", gr.skip()
            time.sleep(1)

        def work():
            self.playground.step_controls(chosen(values))  # a bad control is reported before the model runs
            state = self.book.get(session(request), model, prompt, fresh=True)
            with state.lock:
                title = state.session.loaded.entry.title
                return shown_state(state, values, f"{title} has read your prompt. Here is what it wants next.")
        yield attempt(work)

    def redraw(self, request: gr.Request, prompt, model, *values):
        """A slider moved: the bars again from the kept logits, with no forward pass (none if nothing is open)."""
        def work():
            state = self.book.find(session(request))
            if state is None or not state.lock.acquire(timeout=2):
                return gr.skip(), gr.skip(), gr.skip()
            try:
                return shown_state(state, values)
            finally:
                state.lock.release()
        return attempt(work)

    def opened(self, request: gr.Request, model, prompt, act):
        """act(state) on this browser session's step state (opened on `model` and `prompt`), under its lock."""
        def work():
            state = self.book.get(session(request), model, prompt)
            with state.lock:
                return act(state)
        return attempt(work)

    def sample_step(self, request: gr.Request, prompt, model, *values):
        controls, seed = chosen(values[:-1]), values[-1]

        def act(state):
            last = state.session.stages(controls, top_n=5)[-1]
            result = state.session.sample(controls, seed=seed)
            token = result["token"]
            if result["stop_reason"] == "end_of_text":
                note = f"The model drew {quote(token)}, its sign for the end of a text: nothing more to write."
            elif result["stop_reason"]:
                note = "⚠️ These settings leave no token the model may write (try a larger no-repeat size)."
            else:
                alts = [(t["text"], t["prob"]) for t in last["tokens"] if not t["removed"]]
                state.written.append(Written(result["piece"], token["prob"], alts))
                note = (f"The model drew {quote(token)}, which had {100 * token['prob']:.1f}% after all the "
                        f"controls (seed {result['seed']}).")
            return shown_state(state, values[:-1], note)
        return self.opened(request, model, prompt, act)

    def pick_step(self, request: gr.Request, evt: gr.EventData, prompt, model, *values):
        data = getattr(evt, "_data", None) or {}

        def work():
            state = self.book.find(session(request))
            if state is None:
                raise RequestError("press Start first, then click a bar to write its token")
            with state.lock:
                model_stage = state.session.stages(None, top_n=5)[0]
                result = state.session.pick(data.get("token"))  # checked there: a whole number in the vocabulary
                token = result["token"]
                if result["stop_reason"] == "end_of_text":
                    note = f"You picked {quote(token)}, the model's sign for the end of a text: nothing was added."
                else:
                    alts = [(t["text"], t["prob"]) for t in model_stage["tokens"]]
                    state.written.append(Written(result["piece"], token["prob"], alts))
                    note = (f"You picked {quote(token)}; the model itself gave it {100 * token['prob']:.1f}%.")
                return shown_state(state, values, note)
        return attempt(work)

    def back_step(self, request: gr.Request, prompt, model, *values):
        def work():
            state = self.book.find(session(request))
            if state is None:
                return gr.skip(), view.NO_SESSION, gr.skip()
            with state.lock:
                token = state.session.back()
                if token is None:
                    return shown_state(state, values, "Nothing to take back: only your prompt is left.")
                state.written.pop()
                return shown_state(state, values, f"Took back {quote(token)}.")
        return attempt(work)

    def run_step(self, request: gr.Request, prompt, model, *values):
        controls, seed, n = chosen(values[:-2]), values[-2], values[-1]

        def act(state):
            result = state.session.run(n, controls, seed=seed)
            tokens = result["tokens"][:-1] if result["stop_reason"] == "end_of_text" else result["tokens"]
            state.written += [Written(t["text"], t["prob"]) for t in tokens]
            why = STOPPED[result["stop_reason"]]
            note = f"Wrote {len(tokens)} token{'s' * (len(tokens) != 1)} (seed {result['seed']}); stopped: {why}."
            return shown_state(state, values[:-2], note)
        return self.opened(request, model, prompt, act)

    def many_step(self, request: gr.Request, prompt, model, *values):
        controls, seed = chosen(values[:-1]), values[-1]

        def act(state):
            state.counts = state.session.sample_many(controls, n=STEP_DRAWS, seed=seed)
            state.counts_key = (len(state.written), tuple(values[:-1]))
            note = (f"Drew the next token {STEP_DRAWS} times with these settings, without writing any: see the "
                    "counts beside the last box.")
            return shown_state(state, values[:-1], note)
        return self.opened(request, model, prompt, act)

    # -- inside the model --

    def look_inside(self, request: gr.Request, prompt, model):
        def work():
            state = self.book.get(session(request), model, prompt)
            with state.lock:
                inside = self.playground.look_inside(state.session.loaded, state.text)
                title, text_now = state.session.loaded.entry.title, state.text
            self.book.keep_look(session(request), inside)
            chars = len(text_now)
            note = f"Looked inside **{title}**, at the text so far ({chars:,} character{'s' * (chars != 1)})."
            return note, *self.attention_part(inside), *self.units_part(inside)
        return attempt(work)

    @staticmethod
    def attention_part(inside: dict) -> tuple:
        """The layer and head pickers, the look-from slider and the attention view for one look inside."""
        if "attention" not in inside:  # no attention to show: the controls go back to nothing
            return (*no_attention()[:3], f"<p class=sg-legend>{inside['attention_note']}.</p>")
        a = inside["attention"]
        return (gr.update(choices=view.layer_choices(a["layers"]), value=-1),
                gr.update(choices=view.head_choices(a["heads"]), value=-1),
                gr.update(minimum=0, maximum=max(len(a["tokens"]) - 1, 1), value=a["query"]),
                view.attention_html(a))

    @staticmethod
    def units_part(inside: dict) -> tuple:
        """The units picker, the unit number and its heat map for one look inside."""
        if "units" not in inside:
            return gr.update(choices=[], value=None), None, f"<p class=sg-legend>{inside['units_note']}.</p>"
        first = inside["units"][0] if inside["units"] else None
        number = first["unit"] if first else None
        return (gr.update(choices=view.unit_choices(inside["units"]), value=number), number,
                view.heat_html(inside["tokens"], first["values"], number, first["guess"]) if first else "")

    def inside_of(self, request) -> dict:
        look = self.book.look(session(request))
        if look is None:
            raise RequestError("press Look inside first")
        return look

    def attention_again(self, request: gr.Request, layer, head):
        """Another layer or head: drawn from the weights already read (no forward pass)."""
        def work():
            found = self.inside_of(request).get("attention")
            if found is None:
                return gr.skip()
            return view.attention_html(found, checked_layer(layer, found["layers"]),
                                       checked_layer(head, found["heads"]))
        return attempt(work)

    def look_from(self, request: gr.Request, query, layer, head):
        """Attention from another token of the text (one forward pass over the text up to it)."""
        def work():
            inside = self.inside_of(request)
            if "attention" not in inside:
                return gr.skip(), gr.skip()
            # The model the look was taken with (the text may have started again since, with another model).
            found = self.playground.attention_from(inside["loaded"], inside["text"], query)
            inside["attention"] = found
            return found["query"], view.attention_html(found, checked_layer(layer, found["layers"]),
                                                       checked_layer(head, found["heads"]))
        return attempt(work)

    def look_from_click(self, request: gr.Request, evt: gr.EventData, layer, head):
        data = getattr(evt, "_data", None) or {}
        return self.look_from(request, data.get("index", -1), layer, head)

    def show_unit(self, request: gr.Request, number):
        """One unit's heat map, from the values already read (no forward pass)."""
        def work():
            inside = self.inside_of(request)
            if "values" not in inside:
                return gr.skip(), gr.skip()
            total = len(inside["values"])
            try:
                n = int(number)
            except (TypeError, ValueError):
                raise RequestError(f"the unit must be a whole number from 0 to {total - 1}") from None
            if not 0 <= n < total or n != number:
                raise RequestError(f"the unit must be a whole number from 0 to {total - 1}, got {number}")
            guess = next((u["guess"] for u in inside["units"] if u["unit"] == n), None)
            return n, view.heat_html(inside["tokens"], inside["values"][n], n, guess)
        return attempt(work)

    # -- the API: what the model wants next, stage by stage --

    @gpu
    def next_token(self, prompt: str, model: str, temperature: float = CONTROLS["temperature"].default,
                   top_k: int = CONTROLS["top_k"].default, top_p: float = CONTROLS["top_p"].default,
                   min_p: float = CONTROLS["min_p"].default,
                   repetition_penalty: float = CONTROLS["repetition_penalty"].default,
                   no_repeat_ngram_size: int = CONTROLS["no_repeat_ngram_size"].default, top_n: int = 10,
                   request: gr.Request = None) -> dict:
        """The next-token candidates after `prompt`: {"stages": [{"name", "label", "tokens": [{"id", "text",
        "prob", "removed"}], "kept", "other", ...}]}, one stage per sampling step in the order the sampler
        applies them ("model" first, then each control that is on; "greedy" closes when temperature is 0). Each
        stage lists the same tokens (the model's top_n) with their probability in that stage (0 when removed)."""
        def work():
            values = (temperature, top_k, top_p, min_p, repetition_penalty, no_repeat_ngram_size)
            result = self.playground.next_token(model, prompt, chosen(values), top_n, session(request))
            return {k: result[k] for k in ("model", "prompt", "prompt_tokens", "prompt_tokens_cut", "stages",
                                           "warnings")}
        return attempt(work)


def build(playground) -> list:
    """Lay out the Step by step tab inside the open gr.Blocks and wire its events; returns its model picker."""
    tab = StepTab(playground)
    catalog, limits = playground.catalog, playground.limits
    controls = {name: CONTROLS[name].bounded(limits) for name in STEP_CONTROLS}

    gr.Markdown(view.INTRO)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            prompt = gr.Textbox(label="Prompt", lines=3, value="ROMEO:\n", elem_id="step-prompt",
                                placeholder="Type the beginning of a text…")
            model = gr.Dropdown(model_choices(catalog), value=default_model(catalog), label="Model",
                                elem_id="step-model", allow_custom_value=True)  # the catalog refuses unknown names
            with gr.Accordion("Sampling controls", open=True, elem_id="step-controls"):
                sliders = [slider(controls[name], f"step-{name}") for name in STEP_CONTROLS]
                seed = lenient(gr.Number(-1, precision=0, label="Seed", elem_id="step-seed",
                                         info="The same seed draws the same tokens again. -1 picks one at random."))
                count = lenient(gr.Slider(1, max(limits.max_new_tokens, 2), value=min(20, limits.max_new_tokens),
                                          step=1, label="Tokens for Run", elem_id="step-n",
                                          info="How many tokens Run writes before it stops for a look."))
        with gr.Column(scale=3, min_width=280):
            with gr.Row(elem_id="step-buttons"):
                start = gr.Button("Start", variant="primary", elem_id="step-start", min_width=90)
                sample = gr.Button("Sample", elem_id="step-sample", min_width=90)
                back = gr.Button("Back", elem_id="step-back", min_width=90)
                run = gr.Button("Run", elem_id="step-run", min_width=90)
                many = gr.Button(f"Sample {STEP_DRAWS}×", elem_id="step-many", min_width=90)
            status = gr.Markdown(view.NO_SESSION, elem_id="step-status")
            gr.Markdown(view.TEXT_HELP)
            text = gr.HTML("", elem_id="step-text", js_on_load=token_js("step", heading="pop.one_of"),
                           css_template=view.TEXT_CSS)
            gr.Markdown(view.BARS_HELP)
            bars = gr.HTML(view.bars_html([]), elem_id="step-bars", js_on_load=view.BARS_JS,
                           css_template=view.BARS_CSS)
    with gr.Accordion("Inside the model", open=False, elem_id="step-inside"):
        gr.Markdown("What the model does with the text so far, for the curious. **Look inside** reads the text "
                    "again and shows what fits the model: where a Transformer looks, or what a recurrent model "
                    "remembers.")
        look = gr.Button("Look inside", elem_id="step-look")
        inside_note = gr.Markdown("", elem_id="step-inside-note")
        gr.Markdown("#### Where a Transformer looks\n" + view.ATTENTION_HELP)
        with gr.Row():
            att_layer = gr.Dropdown(view.layer_choices(0), value=-1, label="Layer", elem_id="step-att-layer",
                                    min_width=140)
            att_head = gr.Dropdown(view.head_choices(0), value=-1, label="Head", elem_id="step-att-head",
                                   min_width=140)
            att_query = lenient(gr.Slider(0, 1, value=0, step=1, label="Look from token number",
                                          elem_id="step-att-query", min_width=200))
        attention_view = gr.HTML("", elem_id="step-attention", js_on_load=view.KEYS_JS,
                                 css_template=view.INSIDE_CSS)
        gr.Markdown("#### What a recurrent model remembers\n" + view.UNITS_HELP)
        with gr.Row():
            units = gr.Radio([], label="Units worth a look", elem_id="step-units", scale=3)
            unit = lenient(gr.Number(None, precision=0, label="Or any unit, by number", elem_id="step-unit",
                                     min_width=140, scale=1))
        heat = gr.HTML("", elem_id="step-heat", css_template=view.INSIDE_CSS)

    gr.api(tab.next_token, api_name="next_token", concurrency_id="step", concurrency_limit=limits.concurrency)

    inputs = [prompt, model, *sliders]
    outputs = [text, status, bars]
    private_js = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    step = {"outputs": outputs, "concurrency_id": "step", "concurrency_limit": limits.concurrency,
            "api_visibility": "private", "show_progress": "minimal"}
    # On a phone the text and its bars are laid out far below Start: once they are drawn, bring them up.
    start.click(tab.start_step, inputs, **step).then(None, js=show_on_phone("step-text"), **private_js)
    prompt.submit(tab.start_step, inputs, **step)
    model.input(tab.start_step, inputs, **step)
    sample.click(tab.sample_step, [*inputs, seed], **step)
    bars.click(tab.pick_step, inputs, **step)
    back.click(tab.back_step, inputs, **step)
    run.click(tab.run_step, [*inputs, seed, count], **step)
    many.click(tab.many_step, [*inputs, seed], **step)
    for s in sliders:
        s.input(tab.redraw, inputs, outputs, queue=False, trigger_mode="always_last", api_visibility="private",
                show_progress="hidden")
    look_outputs = [inside_note, att_layer, att_head, att_query, attention_view, units, unit, heat]
    look.click(tab.look_inside, [prompt, model], **{**step, "outputs": look_outputs})
    private = {"api_visibility": "private", "show_progress": "hidden"}
    model.input(forget_inside, None, look_outputs, queue=False, **private)
    for picker in (att_layer, att_head):
        picker.input(tab.attention_again, [att_layer, att_head], attention_view, queue=False, **private)
    att_query.input(tab.look_from, [att_query, att_layer, att_head], [att_query, attention_view],
                    trigger_mode="always_last", concurrency_id="step", **private)
    attention_view.click(tab.look_from_click, [att_layer, att_head], [att_query, attention_view],
                         concurrency_id="step", **private)
    units.input(tab.show_unit, units, [unit, heat], queue=False, **private)
    unit.input(tab.show_unit, unit, [unit, heat], trigger_mode="always_last", queue=False, **private)
    return [model]
