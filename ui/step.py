"""The Step by step tab: watch a model choose its next token. The candidates stage by stage as the sliders move
(no forward pass), one token sampled, picked by hand, taken back or written N at a time, and a look inside.

    tab = StepTab(playground)
    text, status, bars = tab.sample_step(None, "ROMEO:\\n", "lstm", *control_values, seed)
    tab.next_token("ROMEO:\\n", "lstm", temperature=0.8)     # the API's /next_token: the stages as data
    build(playground)   # inside gr.Blocks: the components, wired to tab's handlers

Each browser session's open text is kept by the service (textgen.service.step_sessions); the handlers are plain
methods of `StepTab` and ui/step_view.py draws what they return. The layout's fixed texts are catalog keys (`tr`,
translated in the browser); what a handler writes is said in the visitor's language (`say`, `words_of`), while
the API's values stay English.
"""

from __future__ import annotations

import html
import logging
import time

import gradio as gr

from textgen.core.settings import CONTROLS, SLIDERS, RequestError
from textgen.core.words import ENGLISH, Phrase, say, words_of
from textgen.service.step_sessions import StepBook, StepState, Written
from ui import step_view as view
from ui.language import language, tr
from ui.render import model_choices, model_words, stopped, token_js
from ui.widgets import default_model, fail, gpu, lenient, session, show_on_phone, slider

STEP_CONTROLS = tuple(name for name in SLIDERS if name != "max_new_tokens")  # the Write tab's sampling sliders
STEP_DRAWS = 200  # draws of "Sample many"


def quote(token: dict | None) -> str:
    return "“" + (token or {}).get("shown", "") + "”"


def note_html(note: str, lang: str = ENGLISH) -> str:
    """A look inside's one-line "not for this model" (explain's Phrase, said in `lang`), as a sentence: the
    phrase is a clause (an API error embeds it), so its first letter is made a capital here."""
    clause = words_of(note, lang)
    # At the text's own size: a sentence to read (why the view is empty, what to do), not a small legend.
    return f"<p class=sg-why>{html.escape(say('step.note', lang, note=clause[:1].upper() + clause[1:]))}</p>"


def step_words(note: str) -> str:
    """Too short a text for the units, said as what to press here: explain's own words ("write some more first")
    serve any caller, the CLI and the API too."""
    if isinstance(note, Phrase) and note.key == "explain.too_short":
        return Phrase("step.units_too_short", **note.fields)
    return note


def attempt(work, lang: str = ENGLISH):
    """Run one request: a bad value or model is a clear message in the visitor's language, never a traceback."""
    try:
        return work()
    except RequestError as err:
        raise fail(err, lang) from None
    except Exception as err:
        logging.getLogger("textgen").exception("the Step by step tab failed")
        failed = Phrase("step.failed", kind=type(err).__name__, detail=str(err)[:200])
        raise fail(RequestError(failed), lang) from None


def chosen(values) -> dict:
    """The step sliders' values by control name."""
    return dict(zip(STEP_CONTROLS, values, strict=True))


def checked_layer(value, count: int) -> int:
    """A layer or head number from the page: -1 (all of them) unless it is one of `count`."""
    return int(value) if value is not None and -1 <= int(value) < count else -1


def no_attention(lang: str = ENGLISH, shown: bool = True) -> tuple:
    """The attention controls and view with nothing to show; the controls hidden where the model has none."""
    return (gr.update(choices=view.layer_choices(0, lang), value=-1, visible=shown),
            gr.update(choices=view.head_choices(0, lang), value=-1, visible=shown),
            gr.update(minimum=0, maximum=1, value=0, visible=shown), "")


def no_units(shown: bool = True) -> tuple:
    """The units picker and number with nothing in them; hidden where the model has no units."""
    return gr.update(choices=[], value=None, visible=shown), gr.update(value=None, visible=shown)


def forget_inside(request: gr.Request = None):
    """Another model: what was seen inside the last one goes (its layers, heads and units are not this one's), and
    so do the pickers, until the next look shows those that fit this model (a Transformer's layers and heads, a
    recurrent model's units): an LSTM picked after the Transformer must not offer the Transformer's heads."""
    return "", *no_attention(language(request), shown=False), *no_units(shown=False), "", *intros(True, True)


def intros(attention: bool, units: bool) -> tuple:
    """The two views' headings and help: both before a look (they say what a look can show), after one only those
    that fit the model (an LSTM's look read "Where a Transformer looks" above its note that it has no attention)."""
    return gr.update(visible=attention), gr.update(visible=units)


def numbered(key: str, count: int, lang: str, **fields) -> str:
    """The text `key`.one or `key`.many, as English's plural asks (the Chinese ones are the same)."""
    return say(f"{key}.{'one' if count == 1 else 'many'}", lang, count=count, **fields)


def shown_state(state: StepState, values, note: str = "", lang: str = ENGLISH) -> tuple[str, str, str]:
    """The text so far, the line under the buttons and the bars, for this state and these controls."""
    stages = state.session.stages(chosen(values), lang=lang)  # no forward pass
    key = (len(state.written), tuple(values))
    counts = state.counts if state.counts_key == key else None
    session_ = state.session
    lines = [note] if note else []
    lines.append(numbered("step.written", len(state.written), lang) + say("stats.join", lang)
                 + numbered("step.passes", session_.forward_passes, lang))
    lines += [f"⚠️ {words_of(w, lang)}" for w in session_.warnings]
    return (view.text_html(session_.prompt, state.written, lang), "  \n".join(lines),
            view.bars_html(stages, counts, lang))


class StepTab:
    """The Step by step tab's handlers, over one playground and its book of open step sessions."""

    def __init__(self, playground):
        self.playground = playground
        # (a lambda: the playground may still be starting when the page is built)
        self.book = StepBook(lambda model, prompt, key: playground.open_step(model, prompt, key))

    # -- the text and its next token --

    def start_step(self, request: gr.Request, prompt, model, *values):
        """Read the prompt afresh and show what the model wants next (after saying so while the server starts)."""
        lang = language(request)
        while (waiting := self.playground.starting()) is not None:  # the first seconds after the server started
            yield gr.skip(), f"⏳ {words_of(waiting, lang)}", gr.skip()
            time.sleep(1)

        def work():
            self.playground.step_controls(chosen(values))  # a bad control is reported before the model runs
            state = self.book.get(session(request), model, prompt, fresh=True)
            with state.lock:
                title = model_words(state.session.loaded.entry, lang)[0]
                return shown_state(state, values, say("step.read_prompt", lang, title=title), lang)
        yield attempt(work, lang)

    def redraw(self, request: gr.Request, prompt, model, *values):
        """A slider moved: the bars again from the kept logits, with no forward pass (none if nothing is open)."""
        def work():
            state = self.book.find(session(request))
            if state is None or not state.lock.acquire(timeout=2):
                return gr.skip(), gr.skip(), gr.skip()
            try:
                return shown_state(state, values, lang=lang)
            finally:
                state.lock.release()
        lang = language(request)
        return attempt(work, lang)

    def opened(self, request: gr.Request, model, prompt, act):
        """act(state, lang) on this browser session's step state (opened on `model` and `prompt`), under its lock,
        in the visitor's language."""
        lang = language(request)

        def work():
            state = self.book.get(session(request), model, prompt)
            with state.lock:
                return act(state, lang)
        return attempt(work, lang)

    def sample_step(self, request: gr.Request, prompt, model, *values):
        controls, seed = chosen(values[:-1]), values[-1]

        def act(state, lang):
            last = state.session.stages(controls, top_n=5)[-1]
            result = state.session.sample(controls, seed=seed)
            token = result["token"]
            if result["stop_reason"] == "end_of_text":
                note = say("step.drew_end", lang, token=quote(token))
            elif result["stop_reason"]:
                note = say("step.no_token", lang)
            else:
                alts = [(t["text"], t["prob"]) for t in last["tokens"] if not t["removed"]]
                state.written.append(Written(result["piece"], token["prob"], alts))
                note = say("step.drew", lang, token=quote(token), pct=f"{100 * token['prob']:.1f}",
                           seed=result["seed"])
            return shown_state(state, values[:-1], note, lang)
        return self.opened(request, model, prompt, act)

    def pick_step(self, request: gr.Request, evt: gr.EventData, prompt, model, *values):
        data = getattr(evt, "_data", None) or {}
        lang = language(request)

        def work():
            state = self.book.find(session(request))
            if state is None:
                raise RequestError(Phrase("step.press_start"))
            with state.lock:
                model_stage = state.session.stages(None, top_n=5)[0]
                result = state.session.pick(data.get("token"))  # checked there: a whole number in the vocabulary
                token = result["token"]
                if result["stop_reason"] == "end_of_text":
                    note = say("step.picked_end", lang, token=quote(token))
                else:
                    alts = [(t["text"], t["prob"]) for t in model_stage["tokens"]]
                    state.written.append(Written(result["piece"], token["prob"], alts))
                    note = say("step.picked", lang, token=quote(token), pct=f"{100 * token['prob']:.1f}")
                return shown_state(state, values, note, lang)
        return attempt(work, lang)

    def back_step(self, request: gr.Request, prompt, model, *values):
        lang = language(request)

        def work():
            state = self.book.find(session(request))
            if state is None:
                return gr.skip(), say("step.no_session", lang), gr.skip()
            with state.lock:
                token = state.session.back()
                if token is None:
                    return shown_state(state, values, say("step.nothing_back", lang), lang)
                state.written.pop()
                return shown_state(state, values, say("step.took_back", lang, token=quote(token)), lang)
        return attempt(work, lang)

    def run_step(self, request: gr.Request, prompt, model, *values):
        controls, seed, n = chosen(values[:-2]), values[-2], values[-1]

        def act(state, lang):
            result = state.session.run(n, controls, seed=seed)
            tokens = result["tokens"][:-1] if result["stop_reason"] == "end_of_text" else result["tokens"]
            state.written += [Written(t["text"], t["prob"], [(a["text"], a["prob"]) for a in t["alternatives"]])
                              for t in tokens]
            note = numbered("step.wrote", len(tokens), lang, seed=result["seed"],
                            why=stopped(result["stop_reason"], lang))
            return shown_state(state, values[:-2], note, lang)
        return self.opened(request, model, prompt, act)

    def many_step(self, request: gr.Request, prompt, model, *values):
        controls, seed = chosen(values[:-1]), values[-1]

        def act(state, lang):
            state.counts = state.session.sample_many(controls, n=STEP_DRAWS, seed=seed)
            state.counts_key = (len(state.written), tuple(values[:-1]))
            return shown_state(state, values[:-1], say("step.drew_many", lang, count=STEP_DRAWS), lang)
        return self.opened(request, model, prompt, act)

    # -- inside the model --

    def look_inside(self, request: gr.Request, prompt, model):
        lang = language(request)

        def work():
            state = self.book.get(session(request), model, prompt)
            with state.lock:
                inside = self.playground.look_inside(state.session.loaded, state.text)
                title, text_now = model_words(state.session.loaded.entry, lang)[0], state.text
                can = state.session.loaded.capabilities
            self.book.keep_look(session(request), inside)
            note = numbered("step.looked", len(text_now), lang, title=title, chars=len(text_now))
            return (note, *self.attention_part(inside, lang), *self.units_part(inside, lang),
                    *intros(can.attention, can.units))
        return attempt(work, lang)

    @staticmethod
    def attention_part(inside: dict, lang: str = ENGLISH) -> tuple:
        """The layer and head pickers, the look-from slider and the attention view for one look inside."""
        if "attention" not in inside:  # no attention to show: its controls go, the note says why
            return (*no_attention(lang, shown=False)[:3], note_html(inside["attention_note"], lang))
        a = inside["attention"]
        return (gr.update(choices=view.layer_choices(a["layers"], lang), value=-1, visible=True),
                gr.update(choices=view.head_choices(a["heads"], lang), value=-1, visible=True),
                gr.update(minimum=0, maximum=max(len(a["tokens"]) - 1, 1), value=a["query"], visible=True),
                view.attention_html(a, lang=lang))

    @staticmethod
    def units_part(inside: dict, lang: str = ENGLISH) -> tuple:
        """The units picker, the unit number and its heat map for one look inside."""
        if "units" not in inside:  # no units to show (a Transformer's, or too short a text): the note says why
            return *no_units(shown=False), note_html(step_words(inside["units_note"]), lang)
        first = inside["units"][0] if inside["units"] else None
        number = first["unit"] if first else None
        return (gr.update(choices=view.unit_choices(inside["units"], lang), value=number, visible=True),
                gr.update(value=number, visible=True),
                view.heat_html(inside["tokens"], first["values"], number, first["guess"], lang) if first else "")

    def inside_of(self, request) -> dict:
        look = self.book.look(session(request))
        if look is None:
            raise RequestError(Phrase("step.look_first"))
        return look

    def attention_again(self, request: gr.Request, layer, head):
        """Another layer or head: drawn from the weights already read (no forward pass)."""
        lang = language(request)

        def work():
            found = self.inside_of(request).get("attention")
            if found is None:
                return gr.skip()
            return view.attention_html(found, checked_layer(layer, found["layers"]),
                                       checked_layer(head, found["heads"]), lang)
        return attempt(work, lang)

    def look_from(self, request: gr.Request, query, layer, head):
        """Attention from another token of the text (one forward pass over the text up to it)."""
        lang = language(request)

        def work():
            inside = self.inside_of(request)
            if "attention" not in inside:
                return gr.skip(), gr.skip()
            # The model the look was taken with (the text may have started again since, with another model).
            found = self.playground.attention_from(inside["loaded"], inside["text"], query)
            inside["attention"] = found
            return found["query"], view.attention_html(found, checked_layer(layer, found["layers"]),
                                                       checked_layer(head, found["heads"]), lang)
        return attempt(work, lang)

    def look_from_click(self, request: gr.Request, evt: gr.EventData, layer, head):
        data = getattr(evt, "_data", None) or {}
        return self.look_from(request, data.get("index", -1), layer, head)

    def show_unit(self, request: gr.Request, number):
        """One unit's heat map, from the values already read (no forward pass)."""
        lang = language(request)

        def work():
            inside = self.inside_of(request)
            if "values" not in inside:
                return gr.skip(), gr.skip()
            total = len(inside["values"])
            try:
                n = int(number)
            except (TypeError, ValueError):
                raise RequestError(Phrase("step.unit_range", top=total - 1)) from None
            if not 0 <= n < total or n != number:
                raise RequestError(Phrase("step.unit_range_got", top=total - 1, got=number))
            guess = next((u["guess"] for u in inside["units"] if u["unit"] == n), None)
            return n, view.heat_html(inside["tokens"], inside["values"][n], n, guess, lang)
        return attempt(work, lang)

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
        return attempt(work, language(request))  # (its values stay English: only a refusal is said in words)


def build(playground) -> list:
    """Lay out the Step by step tab inside the open gr.Blocks and wire its events; returns its model picker."""
    tab = StepTab(playground)
    catalog, limits = playground.catalog, playground.limits
    controls = {name: CONTROLS[name].bounded(limits) for name in STEP_CONTROLS}

    gr.Markdown(tr("step.intro"))
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            prompt = gr.Textbox(label=tr("write.prompt"), lines=3, value="ROMEO:\n", elem_id="step-prompt",
                                placeholder=tr("write.prompt_placeholder"))
            model = gr.Dropdown(model_choices(catalog), value=default_model(catalog), label=tr("common.model"),
                                elem_id="step-model", allow_custom_value=True)  # the catalog refuses unknown names
            with gr.Accordion(tr("common.sampling_controls"), open=True, elem_id="step-controls"):
                sliders = [slider(controls[name], f"step-{name}") for name in STEP_CONTROLS]
                seed = lenient(gr.Number(-1, precision=0, label=tr("common.seed"), elem_id="step-seed",
                                         info=tr("step.seed_info")))
                count = lenient(gr.Slider(1, max(limits.max_new_tokens, 2), value=min(20, limits.max_new_tokens),
                                          step=1, label=tr("step.run_count"), elem_id="step-n",
                                          info=tr("step.run_count_info")))
        with gr.Column(scale=3, min_width=280):
            with gr.Row(elem_id="step-buttons"):
                start = gr.Button(tr("step.start"), variant="primary", elem_id="step-start", min_width=90)
                sample = gr.Button(tr("step.sample"), elem_id="step-sample", min_width=90)
                back = gr.Button(tr("step.back"), elem_id="step-back", min_width=90)
                run = gr.Button(tr("step.run"), elem_id="step-run", min_width=90)
                many = gr.Button(tr("step.many", count=STEP_DRAWS), elem_id="step-many", min_width=90)
            status = gr.Markdown(tr("step.no_session"), elem_id="step-status")
            gr.Markdown(tr("step.text_help"))
            text = gr.HTML("", elem_id="step-text", js_on_load=token_js("step", heading="pop.one_of"),
                           css_template=view.TEXT_CSS)
            gr.Markdown(tr("step.bars_help"))
            bars = gr.HTML(tr("step.no_bars"), elem_id="step-bars", js_on_load=view.BARS_JS,
                           css_template=view.BARS_CSS)
    with gr.Accordion(tr("step.inside"), open=False, elem_id="step-inside"):
        gr.Markdown(tr("step.inside_intro"))
        look = gr.Button(tr("step.look"), elem_id="step-look")
        inside_note = gr.Markdown("", elem_id="step-inside-note")
        attention_intro = gr.Markdown(tr("step.attention_intro"), elem_id="step-attention-intro")
        with gr.Row():
            # Hidden before a look, which shows those that fit the model and fills in its layers and heads (in
            # the visitor's language); until then there is nothing to pick from.
            att_layer = gr.Dropdown([(tr("step.all_layers"), -1)], value=-1, label=tr("step.layer"),
                                    elem_id="step-att-layer", min_width=140, visible=False)
            att_head = gr.Dropdown([(tr("step.all_heads"), -1)], value=-1, label=tr("step.head"),
                                   elem_id="step-att-head", min_width=140, visible=False)
            att_query = lenient(gr.Slider(0, 1, value=0, step=1, label=tr("step.look_from"),
                                          elem_id="step-att-query", min_width=200, visible=False))
        attention_view = gr.HTML("", elem_id="step-attention", js_on_load=view.KEYS_JS,
                                 css_template=view.INSIDE_CSS)
        units_intro = gr.Markdown(tr("step.units_intro"), elem_id="step-units-intro")
        with gr.Row():
            units = gr.Radio([], label=tr("step.units"), elem_id="step-units", scale=3, visible=False)
            unit = lenient(gr.Number(None, precision=0, label=tr("step.unit_number"), elem_id="step-unit",
                                     min_width=140, scale=1, visible=False))
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
    look_outputs = [inside_note, att_layer, att_head, att_query, attention_view, units, unit, heat, attention_intro,
                    units_intro]
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
