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
from textgen.models import architectures
from textgen.service import training
from textgen.service.training import MIN_CHARS, SIZES, TrainingRuns, read_visitor_text
from ui.render import model_choices
from ui.widgets import fail, lenient, session

INTRO = ("Teach a small model **your own text**: song lyrics, recipes, your poems, a novel in any language. Paste it "
         "or upload a .txt file, pick a kind of model and how long to train, and press **Train**. Watch the curve "
         "fall and the sample below it change from random letters into something that sounds like your text; "
         "then write with your model in every tab.")
LOSS_HELP = ("**The loss** is how surprised the model is by the next character of your text, on average: it starts "
             "at pure guessing and falls as the model learns. The second line is measured on a part of your text the "
             "model never trains on; when only the first keeps falling, it is memorising instead of learning.")
SIZE_HELP = {"small": "small (fastest to learn)", "medium": "medium (twice as wide: slower, better with time)"}
CURVE_NAMES = {"train_loss": "on the training text", "val_loss": "on the part held back"}


class TrainTab:
    """The Train tab's handlers, over the server's training runs."""

    def __init__(self, runs: TrainingRuns):
        self.runs = runs

    def train(self, request: gr.Request, text="", file=None, architecture="lstm", seconds=60, name="", size="small"):
        """Train on the pasted text or the uploaded .txt file, streaming (status, loss curve, sample, record,
        download). The API's /train: `record` is {"step", "seconds", "train_loss", "val_loss", "sample", "model",
        "done"}, with "model" the name to use with /generate and the other endpoints once it exists (null before)."""
        try:
            visitor_text = read_visitor_text(text, file, self.runs.limits)
            for update in self.runs.train(session(request), visitor_text, architecture, size, seconds, name):
                yield (update.status, curve(update.records), sample_of(update.records, update.prompt), update.record,
                       update.download)
        except RequestError as err:
            raise fail(err) from None

    def stop(self, request: gr.Request = None) -> None:
        self.runs.stop(session(request))


def curve(records: list[dict]):
    """The loss curve's data: one row per record and line, seconds against loss."""
    import pandas as pd  # only once a training runs: the page builds without pandas imported

    rows = [{"seconds": r["seconds"], "loss": r[key], "curve": label}
            for r in records for key, label in CURVE_NAMES.items() if r.get(key) is not None]
    # Numbers typed as numbers even with no row yet: a plot first handed an empty (untyped) table drew its axes
    # as categories from then on (seen on a phone: one tick per loss value and no line).
    return pd.DataFrame(rows, columns=["seconds", "loss", "curve"]).astype({"seconds": float, "loss": float})


def sample_of(records: list[dict], prompt: str) -> str:
    """The latest sample after its prompt, and when it was written."""
    if not records:
        return ""
    last = records[-1]
    return f"(after {last['seconds']:.0f} s of training, step {last['step']:,})\n{prompt}{last['sample']}"


def build(playground, runs: TrainingRuns, pickers: list) -> list:
    """Lay out the Train tab inside the open gr.Blocks and wire its events; a finished model joins `pickers`."""
    tab = TrainTab(runs)
    limits = runs.limits
    gr.Markdown(INTRO)
    gr.Markdown(f"Up to {limits.max_chars:,} characters (a .txt file up to {limits.max_upload_mb} MB), at least "
                f"{MIN_CHARS:,}; {training.MIN_SECONDS} to {limits.max_seconds} seconds of training; "
                f"{limits.at_once} training at a time on this server. Your text and your model are yours alone"
                + ("" if not limits.shared else " (this server shares trained models with every visitor)")
                + f"; models are kept {limits.keep_hours:g} hours.", elem_classes="tg-legend")
    with gr.Row():
        with gr.Column(scale=3, min_width=280):
            # value= given, even empty: the API then lists the input as optional (text or file, either may be left out)
            text = gr.Textbox("", label="Your text", lines=8, max_lines=14, elem_id="train-text",
                              placeholder="Paste a few pages of text here, or upload a .txt file beside it.")
        with gr.Column(scale=2, min_width=240):
            # Not lenient: Gradio's own check that the file is one uploaded to it comes first.
            file = gr.File(None, label="…or a .txt file", file_types=[".txt"], type="filepath", elem_id="train-file")
    with gr.Row():
        archs = [(f"{a.title}: {a.description}", a.name) for a in architectures.all_architectures()]
        architecture = lenient(gr.Dropdown(archs, value="lstm" if "lstm" in architectures.names() else archs[0][1],
                                           label="Kind of model", elem_id="train-arch"))
        size = lenient(gr.Radio([(SIZE_HELP.get(s, s), s) for s in SIZES], value="small", label="Size",
                                elem_id="train-size"))
        seconds = lenient(gr.Slider(training.MIN_SECONDS, limits.max_seconds, value=min(60, limits.max_seconds),
                                    step=1, label="Seconds of training", elem_id="train-seconds"))
        name = gr.Textbox("", label="Name for your model", placeholder="my-lstm", max_lines=1, elem_id="train-name")
    with gr.Row():
        go = gr.Button("Train", variant="primary", elem_id="train-run")
        stop = gr.Button("Stop", elem_id="train-stop")
    status = gr.Markdown(elem_id="train-status")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            plot = gr.LinePlot(x="seconds", y="loss", color="curve", title="Loss (lower: less surprised)",
                               x_title="seconds of training", y_title="loss (nats per character)",
                               elem_id="train-plot", y_lim=[0, None])
            gr.Markdown(LOSS_HELP, elem_classes="tg-legend")
        with gr.Column(min_width=300):
            sample = gr.Textbox(label="What it writes now", lines=8, interactive=False, elem_id="train-sample")
            download = gr.File(label="Your model (a zip of its folder: python app.py --model FOLDER loads it)",
                               interactive=False, elem_id="train-download")
    record = gr.JSON(visible=False, label="Progress record")
    event = go.click(tab.train, [text, file, architecture, seconds, name, size],
                     [status, plot, sample, record, download], api_name="train", concurrency_id="training",
                     concurrency_limit=limits.max_waiting + limits.at_once, show_progress="minimal")

    def refresh(request: gr.Request):
        """The finished model joins every picker of this browser session."""
        key = session(request)
        unavailable = playground.unavailable(key)
        return [gr.update(choices=model_choices(playground.catalog, unavailable, key)) for _ in pickers]

    event.then(refresh, None, pickers, api_visibility="private", queue=False)
    stop.click(tab.stop, None, None, queue=False, api_name="stop_training")
    return []
