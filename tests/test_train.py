"""Training from the page (textgen/service/training.py, ui/train.py), as a visitor and an operator meet it: a text in,
progress records out, a model only its own browser session can use, Stop, the queue, the limits, bad uploads.

Each training here is real (a child process running textgen.training.worker) with a budget of a few seconds.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from helpers import live_app, rest_result, wait_until

import textgen.service.training as training
from textgen.core.settings import RequestError
from textgen.core.words import words_of
from textgen.service.catalog import Catalog, ModelEntry, owner_key
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground
from textgen.service.training import TrainingLimits, TrainingRuns, read_visitor_text

LIMITS = TrainingLimits(max_seconds=60, max_upload_mb=1)
CHINESE = ("床前明月光疑是地上霜举头望山低思故乡春眠不觉晓处闻啼鸟"
           "夜来风雨声花落知多少白日依尽黄河入海流欲穷千里目更上一层楼")


@pytest.fixture(autouse=True)
def seconds_for_tests(monkeypatch):
    """Budgets of a few seconds (the page's minimum is 20 s: less shows nothing worth watching)."""
    monkeypatch.setattr(training, "MIN_SECONDS", 2)
    monkeypatch.setattr(training, "REPORT_EVERY", 0.5)


@pytest.fixture
def runs(tmp_path):
    forgotten = []
    runs = TrainingRuns(Catalog([]), LIMITS, root=tmp_path / "trained", forget=forgotten.append)
    runs.forgotten = forgotten
    return runs


def shakespeare(chars: int = 6_000) -> str:
    lines = ["First Citizen:", "Before we proceed any further, hear me speak.", "", "All:", "Speak, speak.", ""]
    text = "\n".join(lines) + "\n"
    return (text * (chars // len(text) + 1))[:chars]


def chinese(chars: int = 4_000) -> str:
    # A poem's characters in a fixed order with punctuation: enough for a few seconds of learning.
    lines = [CHINESE[i:i + 5] + ("，" if i % 10 == 0 else "。\n") for i in range(0, len(CHINESE) - 4, 5)]
    text = "".join(lines)
    return (text * (chars // len(text) + 1))[:chars]


def train_all(runs, session="s1", text=None, arch="lstm", seconds=3, name="mine", lang="en"):
    """Every update of one training, each as it was when handed on (the service updates one object in place)."""
    return [copy.deepcopy(update) for update in runs.train(
        session, read_visitor_text(text or shakespeare(), None, runs.limits), arch, "small", seconds, name, lang)]


# -- the visitor's text ------------------------------------------------------------------------------------------


def test_a_pasted_text_is_read_as_it_is_with_its_alphabet():
    text = read_visitor_text("ab\r\nc" * 400, None, LIMITS)
    assert text.text == "ab\nc" * 400 and text.alphabet == 4 and text.source == "pasted text"


@pytest.mark.parametrize(("content", "words"), [
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20, "not plain text"),
    ("Ünïcödé\x00".encode() * 500, "does not look like text"),
    (b"short text", "at least 1,000"),
])
def test_a_bad_upload_is_refused_in_words(tmp_path, content, words):
    path = tmp_path / "upload.txt"
    path.write_bytes(content)
    with pytest.raises(RequestError, match=words):
        read_visitor_text("", str(path), LIMITS)


def test_an_upload_over_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.txt"
    with path.open("wb") as f:  # 50 MB, sparse: the size is what is checked
        f.truncate(50 * 2**20)
    with pytest.raises(RequestError, match=r"50\.0 MB; files up to 1 MB"):
        read_visitor_text("", str(path), LIMITS)


def test_nothing_to_train_on_and_a_text_too_long():
    with pytest.raises(RequestError, match="paste a text or upload"):
        read_visitor_text("  \n", None, LIMITS)
    cut = read_visitor_text("x" * 3_000, None, TrainingLimits(max_chars=2_000))
    assert len(cut.text) == 2_000 and "only the first 2,000 characters" in cut.notes[0]


def test_a_visitor_reads_refusals_progress_and_the_curve_in_their_language():
    from ui.train import curve, sample_of

    with pytest.raises(RequestError) as refused:
        read_visitor_text("short text", None, LIMITS)
    assert str(refused.value) == ("pasted text has 10 characters; a model needs at least 1,000 (a few paragraphs) to "
                                  "learn anything. Give it more text.")
    assert words_of(refused.value, "zh-CN") == ("粘贴的文字只有 10 个字符；模型至少要 1,000 个字符（几段话）"
                                                "才能学到东西。请多给它一些文字。")
    record = {"step": 1_200, "seconds": 23.4, "tokens_per_second": 9_800, "train_loss": 2.314, "val_loss": 2.4,
              "sample": "Speak"}
    assert training.progress_words(record, 45, False) == (
        "Step 1,200 · 23 s of 45 · 9,800 characters a second · about 22 s left · loss 2.31 on the training text, "
        "2.40 on the part held back")
    chinese = training.progress_words(record, 45, False, "zh-CN")
    assert chinese.startswith("第 1,200 步 · ") and "大约还剩 22 秒" in chinese and "留出的验证文字上 2.40" in chinese
    assert training.progress_words(record, 45, True, "zh-CN").startswith("正在第 1,200 步停下")
    assert set(curve([record], "zh-CN")["curve"]) == {"训练文字上", "留出的验证文字上"}
    assert set(curve([record])["curve"]) == {"on the training text", "on the part held back"}
    assert sample_of([record], "All:", "zh-CN") == "（训练了 23 秒，第 1,200 步）\nAll:Speak"
    assert sample_of([record], "All:") == "(after 23 s of training, step 1,200)\nAll:Speak"


def test_a_file_wins_over_pasted_text_and_its_name_is_only_shown(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_text(shakespeare(), encoding="utf-8")
    text = read_visitor_text("pasted", str(path), LIMITS)
    assert text.source == "“poems.txt”" and "set aside" in text.notes[0]
    assert training._shown_name("../../../../x.txt") == "x.txt"


def test_bad_settings_are_refused_before_anything_starts(runs):
    text = read_visitor_text(shakespeare(), None, LIMITS)
    for arch, size, seconds, words in [("bigram?", "small", 5, "architecture must be one of"),
                                       ("lstm", "huge", 5, "size must be one of"),
                                       ("lstm", "small", 1, "between 2 and 60 seconds"),
                                       ("lstm", "small", "soon", "seconds must be a number")]:
        with pytest.raises(RequestError, match=words):
            next(runs.train("s1", text, arch, size, seconds))
    assert not runs.root.exists()


# -- a training ----------------------------------------------------------------------------------------------------


def test_a_training_reports_as_it_learns_and_ends_with_a_private_model(runs):
    updates = train_all(runs, seconds=5)
    records = updates[-1].records
    assert len(records) >= 2 and records[0]["step"] == 1  # the first step and the last, more on an idle machine
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert all(isinstance(r["sample"], str) for r in records)
    last = updates[-1].record
    assert last["done"] and last["model"] == "mine"
    assert all(u.record is None or u.record["model"] is None for u in updates[:-1])  # the name only once it exists
    entry = runs.catalog.get("mine")
    assert entry.owner == owner_key("s1")
    assert [e.name for e in runs.catalog.visible("s1")] == ["mine"]
    assert runs.catalog.names() == [] and runs.catalog.visible("s2") == []  # no other session lists it
    with zipfile.ZipFile(updates[-1].download) as z:
        names = set(z.namelist())
    assert {"mine/config.json", "mine/model.safetensors", "mine/tokenizer.json", "mine/README.md",
            "mine/loss.csv"} <= names
    assert not any("training_state" in n for n in names)


def test_the_trained_model_writes_for_its_session_and_is_refused_to_another(runs):
    train_all(runs, seconds=3)
    playground = Playground(ModelManager(runs.catalog, device="cpu"))
    settings = playground.parse("First", max_new_tokens=20, seed=1)
    text = list(playground.generate("mine", settings, session="s1"))[-1].text
    assert len(text) > 0
    with pytest.raises(RequestError, match="trained by another visitor"):
        list(playground.generate("mine", settings, session="s2"))
    with pytest.raises(RequestError, match="trained by another visitor"):
        playground.score(["mine"], "First Citizen", session="s2")


def test_a_trainer_that_cannot_start_is_said_in_words(tmp_path):
    runs = TrainingRuns(Catalog([]), LIMITS, root=tmp_path, python=str(tmp_path / "no-python"))
    with pytest.raises(RequestError, match="the trainer could not be started"):
        list(runs.train("s1", read_visitor_text(shakespeare(), None, LIMITS), "lstm", "small", 3))
    assert not any(tmp_path.iterdir())


def test_stop_ends_the_training_and_keeps_its_best_weights(runs):
    updates = []
    for update in runs.train("s1", read_visitor_text(shakespeare(), None, LIMITS), "gru", "small", 60):
        updates.append(update)
        if update.records:
            runs.stop("s1")
    # Read on the training's own clock (its last record), not the wall clock around the call: that one also counts
    # the trainer's start, which took most of a minute on a busy machine and failed a bound of 45 s.
    assert updates[-1].records[-1]["seconds"] < 30, "Stop should end a 60 s training long before its time"
    assert updates[-1].done and updates[-1].model == "my-gru"  # the name when none is given
    assert "Stopped" in updates[-1].status
    assert (Path(runs.catalog.get("my-gru").source) / "model.safetensors").is_file()


def test_one_training_at_a_time_and_the_next_is_told_its_place(runs):
    import threading

    first = runs.train("s1", read_visitor_text(shakespeare(), None, LIMITS), "lstm", "small", 3, "first")
    next(first)  # s1 holds the training place
    waited = []

    def second():
        for update in runs.train("s2", read_visitor_text(shakespeare(), None, LIMITS), "lstm", "small", 3, "second"):
            waited.append(update)

    thread = threading.Thread(target=second)
    thread.start()
    wait_until(lambda: waited, 60, "the second visitor's first word")  # seconds on a busy machine
    assert "Waiting for your turn (you are next)" in waited[0].status
    with pytest.raises(RequestError, match="training a model already"):
        next(runs.train("s1", read_visitor_text(shakespeare(), None, LIMITS), "lstm", "small", 3))
    list(first)
    thread.join(timeout=120)
    assert waited[-1].done and waited[-1].model == "second"


def test_a_closed_tab_ends_its_training_and_leaves_no_folder(runs):
    run = runs.train("s1", read_visitor_text(shakespeare(), None, LIMITS), "lstm", "small", 60)
    for update in run:
        if update.records:
            break
    run.close()  # what Gradio does when the browser tab goes away
    assert runs.stop("s1") is False  # nothing is left running for that session
    deadline = time.monotonic() + 60
    while any(runs.root.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(runs.root.iterdir()), "the unfinished training's folder should go once its process ends"
    assert runs.catalog.visible("s1") == []


def test_old_models_and_models_over_the_disk_budget_leave_with_their_folders(runs, monkeypatch):
    train_all(runs, name="old", seconds=2)
    train_all(runs, name="new", seconds=2)
    folder = Path(runs.catalog.get("old").source).parent
    meta = json.loads((folder / training.RUN_FILE).read_text())
    (folder / training.RUN_FILE).write_text(json.dumps({**meta, "created": time.time() - 25 * 3600}))
    assert runs.sweep() == ["old"]
    assert "old" not in runs.catalog and not folder.exists() and runs.forgotten == ["old"]
    runs.limits = TrainingLimits(disk_mb=1)  # the other one is bigger than 1 MB
    assert runs.sweep() == ["new"] and not any(runs.root.iterdir())


def test_models_past_their_time_go_even_when_nobody_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "SWEEP_EVERY", 0.5)
    runs = TrainingRuns(Catalog([]), TrainingLimits(keep_hours=1), root=tmp_path)
    train_all(runs, seconds=2)
    folder = Path(runs.catalog.get("mine").source).parent
    meta = json.loads((folder / training.RUN_FILE).read_text())
    (folder / training.RUN_FILE).write_text(json.dumps({**meta, "created": time.time() - 2 * 3600}))
    deadline = time.monotonic() + 60  # a sweep every 0.5 s: generous, for a busy machine
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folder.exists() and "mine" not in runs.catalog


def test_a_server_restart_brings_back_shared_models_and_not_private_ones(tmp_path):
    shared = TrainingRuns(Catalog([]), TrainingLimits(shared=True), root=tmp_path)
    train_all(shared, name="ours", seconds=2)
    train_all(shared, session="s2", name="mine", seconds=2)
    mine = Path(shared.catalog.get("mine").source).parent
    meta = json.loads((mine / training.RUN_FILE).read_text())
    (mine / training.RUN_FILE).write_text(json.dumps({**meta, "owner": owner_key("s2")}))  # as if private
    again = TrainingRuns(Catalog([]), TrainingLimits(), root=tmp_path)
    assert again.catalog.names() == ["ours"] and again.catalog.visible("s2") == [again.catalog.get("ours")]
    assert mine.exists()  # left to the sweeps by age: another server may share the folder


def test_a_chinese_text_trains_a_character_model_that_writes_chinese(runs):
    updates = train_all(runs, text=chinese(), arch="gru", seconds=4, name="poems", lang="zh-CN")  # a Chinese visitor
    playground = Playground(ModelManager(runs.catalog, device="cpu"))
    text = list(playground.generate("poems", playground.parse("床前", max_new_tokens=30, seed=1), "s1"))[-1].text
    han = [ch for ch in text if "\u4e00" <= ch <= "\u9fff"]
    assert len(han) >= len(text.replace("\n", "")) // 2, text
    status = updates[-1].status  # in the visitor's language; the record and the model's files stay English
    assert status.startswith("GRU，小号，训练文字：粘贴的文字，共 4,000 个字符，其中有 ") and "种不同的字符" in status
    assert "✔ 训练完成" in status and "**poems**" in status and "Step" not in status and "alphabet" not in status


def test_the_operator_sets_the_limits_and_can_turn_training_off(clean_env, tmp_path):
    import app

    for name, value in {"TEXTGEN_TRAINING": "0", "TEXTGEN_TRAIN_MAX_SECONDS": "90", "TEXTGEN_TRAINING_SHARED": "1",
                        "TEXTGEN_TRAINED_KEEP_HOURS": "2.5"}.items():
        clean_env.setenv(name, value)
    limits = TrainingLimits.from_env()
    assert (limits.enabled, limits.max_seconds, limits.shared, limits.keep_hours) == (False, 90, True, 2.5)
    text = read_visitor_text(shakespeare(), None, limits)
    with pytest.raises(RequestError, match="training is turned off"):
        next(TrainingRuns(Catalog([]), limits, root=tmp_path).train("s1", text, "lstm", "small", 5))
    page = app.build_demo(Playground(ModelManager(Catalog([]), device="cpu")), limits)
    assert "train" not in {fn.api_name for fn in page.fns.values()}
    clean_env.setenv("TEXTGEN_TRAIN_MAX_SECONDS", "soon")
    with pytest.raises(ValueError, match="TEXTGEN_TRAIN_MAX_SECONDS must be a number"):
        TrainingLimits.from_env()


# -- through the page's API ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory, model_dirs):
    root = tmp_path_factory.mktemp("cache")
    entries = [ModelEntry("lstm-tiny", "LSTM (tiny)", "a tiny LSTM", str(model_dirs["lstm"]), "local")]
    playground = Playground(ModelManager(Catalog(entries), device="cpu"))
    mp = pytest.MonkeyPatch()
    mp.setenv("TEXTGEN_CACHE", str(root))
    mp.setenv("TEXTGEN_TRAIN_MAX_UPLOAD_MB", "1")
    mp.setattr(training, "MIN_SECONDS", 2)
    mp.setattr(training, "REPORT_EVERY", 0.5)
    with live_app(playground) as url:
        yield url, root
    mp.undo()


def test_the_loss_plot_is_hidden_until_the_first_record_then_drawn():
    """A plot first handed an empty table drew its lines in no colour; and a second training showed the first's
    curve until its own began. So the tab hides the plot until there is a record to draw."""
    from ui.train import TrainTab

    record = {"step": 10, "seconds": 3.0, "train_loss": 3.1, "val_loss": 3.2, "sample": "Speak"}

    class Runs:  # a training that starts, then reports once
        limits = LIMITS

        def train(self, *args):
            yield training.TrainUpdate("starting")
            yield training.TrainUpdate("step 10", records=[record])

    class Request:
        headers, query_params, session_hash = {}, {}, "visitor"

    first, second = list(TrainTab(Runs()).train(Request(), "some text " * 200))
    assert first[1] == {"__type__": "update", "visible": False} and first[3] is None
    assert second[1]["visible"] is True and list(second[1]["value"]["curve"]) == ["on the training text",
                                                                                   "on the part held back"]


def test_train_through_the_api_then_write_with_the_model_in_that_session_only(api):
    url, _ = api
    mine, other = Client(url, verbose=False), Client(url, verbose=False)
    job = mine.submit(shakespeare(), None, "lstm", 3, "api-model", "small", api_name="/train")
    records = [out[3] for out in job if out[3]]
    final = job.outputs()[-1][3]
    assert final["done"] and final["model"] == "api-model"
    assert records[0]["train_loss"] > final["train_loss"]
    assert set(final) >= {"step", "seconds", "train_loss", "val_loss", "sample", "model", "done"}
    text = mine.predict("First", "api-model", api_name="/generate")[0]
    assert text.strip()
    with pytest.raises(Exception, match="trained by another visitor"):
        other.predict("First", "api-model", api_name="/generate")


def test_hostile_uploads_through_the_api_get_words_and_the_app_keeps_serving(api, tmp_path):
    url, root = api
    client = Client(url, verbose=False)
    empty, binary, big = tmp_path / "empty.txt", tmp_path / "photo.txt", tmp_path / "big.txt"
    empty.write_bytes(b"")
    binary.write_bytes(bytes(range(256)) * 40)
    big.write_bytes(b"a" * (2 * 2**20))
    for path, words in [(empty, "empty"), (binary, "not plain text"), (big, "files up to 1 MB")]:
        with pytest.raises(Exception, match=words):
            client.predict("", handle_file(str(path)), "lstm", 3, "", "small", api_name="/train")
    with pytest.raises(Exception, match="paste a text or upload"):
        client.predict("", None, "lstm", 3, "", "small", api_name="/train")
    assert client.predict("First", "lstm-tiny", api_name="/generate")[0]


def test_an_upload_named_to_climb_out_of_its_folder_writes_nothing_outside(api):
    url, root = api
    hostile = "../../../../x.txt"
    sent = httpx.post(f"{url}gradio_api/upload", files=[("files", (hostile, shakespeare().encode(), "text/plain"))])
    path = Path(sent.json()[0])
    assert path.name == "x.txt" and Path(tempfile.gettempdir()).resolve() in path.resolve().parents
    final = rest_result(url, "train", ["", {"path": str(path), "meta": {"_type": "gradio.FileData"}}, "lstm", 3, "",
                                       "small"])
    assert final[3]["done"] and "on “x.txt”" in final[0]  # the name is shown, never used as a path
    assert not [p for p in (Path.cwd(), *Path.cwd().parents[:4]) if (p / "x.txt").exists()]
    assert {p.name for p in root.rglob("*.txt")} == {"text.txt"}  # only the app's own copies, in its own folder
