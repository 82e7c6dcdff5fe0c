"""The Train tab: a visitor's own text, a live loss curve, samples that turn from noise into their text's style, and
the model in every picker when it is done (textgen/service/training.py does the work).

    tab = TrainTab(runs)
    for status, curve, sample, record, download in tab.train(request, "some text…", None, "lstm", 45, "mine", "small"):
        ...                                       # what the page shows at each moment; record is the API's JSON
    build(playground, runs, pickers)   # inside gr.Blocks: the components, wired; the pickers get the new model
"""

from __future__ import annotations

import gradio as gr

from textgen.core.settings import RequestError
from textgen.core.words import ENGLISH, catalog, say
from textgen.models import architectures
from textgen.service import training
from textgen.service.training import MIN_CHARS, SIZES, TrainingRuns, read_visitor_text
from ui.language import language, tr
from ui.widgets import SLIDER_WIDTH, fail, lenient, picker_updates, session

# The keys of the tab's fixed texts (textgen/locales): its first lines, the loss explained, each size's choice.
INTRO, LOSS_HELP = "train.intro", "train.loss_help"
SIZE_HELP = {size: f"train.size.{size}" for size in SIZES}
CURVE_NAMES = {"train_loss": "train.curve.train_loss", "val_loss": "train.curve.val_loss"}  # the plot's two lines


class TrainTab:
    """The Train tab's handlers, over the server's training runs."""

    def __init__(self, runs: TrainingRuns):
        self.runs = runs

    def train(self, request: gr.Request, text="", file=None, architecture="lstm", seconds=60, name="", size="small"):
        """Train on the pasted text or the uploaded .txt file, streaming (status, loss curve, sample, record,
        download), the words in the visitor's language. The API's /train: `record` is {"step", "seconds",
        "train_loss", "val_loss", "sample", "model", "done"}, with "model" the name to use with /generate and the
        other endpoints once it exists (null before)."""
        lang = language(request)
        try:
            visitor_text = read_visitor_text(text, file, self.runs.limits)
            for update in self.runs.train(session(request), visitor_text, architecture, size, seconds, name, lang):
                yield (update.status, plotted(update.records, lang), sample_of(update.records, update.prompt, lang),
                       update.record, update.download)
        except RequestError as err:
            raise fail(err, lang) from None

    def stop(self, request: gr.Request = None) -> None:
        self.runs.stop(session(request))


def plotted(records: list[dict], lang: str = ENGLISH) -> dict:
    """The loss plot at one moment: hidden until the first record, then its curve. A plot first handed an empty
    table kept an empty colour scale for good and drew both lines in no colour (axes, no lines, no legend); and a
    second training showed the first one's curve until its own began."""
    if not records:
        return gr.update(visible=False)
    return gr.update(value=curve(records, lang), visible=True)


def curve(records: list[dict], lang: str = ENGLISH):
    """The loss curve's data: one row per record and line, seconds against loss (the lines named in `lang`)."""
    import pandas as pd  # only once a training runs: the page builds without pandas imported

    names = {key: say(name, lang) for key, name in CURVE_NAMES.items()}
    rows = [{"seconds": r["seconds"], "loss": r[key], "curve": label}
            for r in records for key, label in names.items() if r.get(key) is not None]
    # Numbers typed as numbers, whatever the rows: a plot handed an untyped table drew its axes as categories from
    # then on (seen on a phone: one tick per loss value and no line).
    return pd.DataFrame(rows, columns=["seconds", "loss", "curve"]).astype({"seconds": float, "loss": float})


def sample_of(records: list[dict], prompt: str, lang: str = ENGLISH) -> str:
    """The latest sample after its prompt, and when it was written (in `lang`)."""
    if not records:
        return ""
    last = records[-1]
    return f"{say('train.sample_after', lang, seconds=last['seconds'], step=last['step'])}\n{prompt}{last['sample']}"


def arch_choice(arch) -> tuple:
    """An architecture's choice in the picker: "LSTM: gated memory…" in the visitor's language where the catalogs
    have its words, short enough for the closed picker at a laptop's width (an architecture added later has its
    own English description until they do)."""
    key = f"train.arch.{arch.name}"
    return (tr(key) if key in catalog(ENGLISH) else f"{arch.title}: {arch.description}"), arch.name


def build(playground, runs: TrainingRuns, pickers: list) -> list:
    """Lay out the Train tab inside the open gr.Blocks and wire its events; a finished model joins `pickers`."""
    tab = TrainTab(runs)
    limits = runs.limits
    gr.Markdown(tr(INTRO))
    gr.Markdown(tr("train.limits_shared" if limits.shared else "train.limits", max_chars=limits.max_chars,
                   max_upload_mb=limits.max_upload_mb, min_chars=MIN_CHARS, min_seconds=training.MIN_SECONDS,
                   max_seconds=limits.max_seconds, at_once=limits.at_once, keep_hours=limits.keep_hours),
                elem_classes="tg-legend")
    with gr.Row():
        with gr.Column(scale=3, min_width=280):
            # value= given, even empty: the API then lists the input as optional (text or file, either may be left out)
            # 6 lines, and the file box as tall: at 8 the Train button was under the fold of a 1366x768 laptop.
            text = gr.Textbox("", label=tr("train.text"), lines=6, max_lines=14, elem_id="train-text",
                              placeholder=tr("train.text_placeholder"))
        with gr.Column(scale=2, min_width=240):
            # Not lenient: Gradio's own check that the file is one uploaded to it comes first.
            file = gr.File(None, label=tr("train.file"), file_types=[".txt"], type="filepath",
                           elem_id="train-file", height=190)
    # Widths under which each goes to a line of its own: on a phone two shared a line, and the picker showed
    # "LSTM: gated mem" under its arrow; on a laptop the four still share one row.
    with gr.Row():
        archs = [arch_choice(a) for a in architectures.all_architectures()]
        architecture = lenient(gr.Dropdown(archs, value="lstm" if "lstm" in architectures.names() else archs[0][1],
                                           label=tr("train.arch"), elem_id="train-arch", scale=2, min_width=300))
        size = lenient(gr.Radio([(tr(SIZE_HELP[s]), s) for s in SIZES], value="small", label=tr("train.size"),
                                elem_id="train-size", min_width=SLIDER_WIDTH))
        seconds = lenient(gr.Slider(training.MIN_SECONDS, limits.max_seconds, value=min(60, limits.max_seconds),
                                    step=1, label=tr("train.seconds"), elem_id="train-seconds",
                                    min_width=SLIDER_WIDTH))
        name = gr.Textbox("", label=tr("train.name"), placeholder="my-lstm", max_lines=1, elem_id="train-name")
    with gr.Row():
        go = gr.Button(tr("train.start"), variant="primary", elem_id="train-run")
        stop = gr.Button(tr("common.stop"), variant="stop", elem_id="train-stop")  # red, as every tab's Stop
    status = gr.Markdown(elem_id="train-status")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            plot = gr.LinePlot(x="seconds", y="loss", color="curve", title=tr("train.plot_title"),
                               x_title=tr("train.x_title"), y_title=tr("train.y_title"),
                               color_title=tr("train.curve_title"),
                               elem_id="train-plot", y_lim=[0, None])
            gr.Markdown(tr(LOSS_HELP), elem_classes="tg-legend")
        with gr.Column(min_width=300):
            sample = gr.Textbox(label=tr("train.sample"), lines=8, interactive=False, elem_id="train-sample")
            download = gr.File(label=tr("train.download"), interactive=False, elem_id="train-download")
    record = gr.JSON(visible=False, label=tr("train.record"))
    event = go.click(tab.train, [text, file, architecture, seconds, name, size],
                     [status, plot, sample, record, download], api_name="train", concurrency_id="training",
                     concurrency_limit=limits.max_waiting + limits.at_once, show_progress="minimal")

    def refresh(request: gr.Request):
        """The finished model joins every picker of this browser session."""
        return picker_updates(playground, pickers, session(request), language(request))

    event.then(refresh, None, pickers, api_visibility="private", queue=False)
    stop.click(tab.stop, None, None, queue=False, api_name="stop_training")
    return []
