"""Training from the page: a visitor's text in, a model of theirs in the pickers minutes later (the Train tab, /train).

    runs = TrainingRuns(catalog, TrainingLimits.from_env())
    text = read_visitor_text("", "poems.txt", runs.limits)            # VisitorText, or RequestError in words
    for update in runs.train("session-key", text, "lstm", "small", 45, "poems"):
        print(update.status, update.record)     # the page's words; the API's record (step, losses, sample, model)
    runs.stop("session-key")                    # from any thread: ends it at the next step, keeping the best weights

A visitor reads it in their language: `train(..., lang="zh-CN")` writes the status lines in Chinese, and a refusal
is a RequestError whose message is a Phrase (English as a str; textgen.core.words.words_of says it in any language).
The record, the model's files and the trainer's own log stay English.

Each training runs in a process of its own (textgen/training/worker.py: one thread, a lower priority), so the
server keeps writing for everyone else; one at a time by default, the others wait and are told their place. What a
visitor sends is written only into this module's folder (`$TEXTGEN_CACHE/trained/<random id>/`), never under a
name they chose. The model it makes belongs to the visitor's browser session (ModelEntry.owner) unless the operator
shares trained models; models are kept `keep_hours` and within `disk_mb`, the oldest removed first, and leave the
pickers with their folder.

Operator settings (environment): TEXTGEN_TRAINING=0 turns the tab off; TEXTGEN_TRAIN_MAX_SECONDS,
TEXTGEN_TRAIN_MAX_CHARS, TEXTGEN_TRAIN_MAX_UPLOAD_MB, TEXTGEN_TRAINING_AT_ONCE, TEXTGEN_TRAINING_WAITING,
TEXTGEN_TRAINED_KEEP_HOURS, TEXTGEN_TRAINED_DISK_MB, TEXTGEN_TRAINING_SHARED=1 (every visitor sees every model).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from textgen.core.settings import RequestError, data_root
from textgen.core.words import ENGLISH, Phrase, say, words_of
from textgen.models import architectures
from textgen.service.catalog import Catalog, ModelEntry, owner_key

log = logging.getLogger("textgen")

MIN_SECONDS = 20  # less than this shows nothing worth watching
MIN_CHARS = 1_000  # a few paragraphs: below it a model only learns the alphabet
SIZES = ("small", "medium")
REPORT_EVERY = 3.0  # seconds of training between progress records: a curve point and a sample each
SWEEP_EVERY = 600.0  # seconds between sweeps of old trained models
RUN_FILE = "run.json"  # what the server knows of a run, beside its text and model folder
MODEL_DIR = "model"
ZIP_LEAVES_OUT = ("training_state",)  # the --resume state (optimizer, random streams) is no part of a model


@dataclass(frozen=True)
class TrainingLimits:
    """The operator's settings for training from the page (see the module's docstring for the variables)."""

    enabled: bool = True
    max_seconds: int = 300
    max_chars: int = 2_000_000
    max_upload_mb: int = 10
    at_once: int = 1
    max_waiting: int = 8
    keep_hours: float = 24.0
    disk_mb: int = 2_048
    shared: bool = False

    ENV = {"enabled": "TEXTGEN_TRAINING", "max_seconds": "TEXTGEN_TRAIN_MAX_SECONDS",
           "max_chars": "TEXTGEN_TRAIN_MAX_CHARS", "max_upload_mb": "TEXTGEN_TRAIN_MAX_UPLOAD_MB",
           "at_once": "TEXTGEN_TRAINING_AT_ONCE", "max_waiting": "TEXTGEN_TRAINING_WAITING",
           "keep_hours": "TEXTGEN_TRAINED_KEEP_HOURS", "disk_mb": "TEXTGEN_TRAINED_DISK_MB",
           "shared": "TEXTGEN_TRAINING_SHARED"}

    @classmethod
    def from_env(cls) -> TrainingLimits:
        values: dict = {}
        for f in fields(cls):
            raw = os.environ.get(cls.ENV[f.name])
            if raw is None:
                continue
            kind = type(f.default)
            try:
                if kind is bool:
                    values[f.name] = raw.strip().lower() not in ("0", "false", "no", "off", "")
                else:
                    values[f.name] = max(kind(1), kind(raw))
            except ValueError:
                raise ValueError(f"{cls.ENV[f.name]} must be a number, got {raw!r}") from None
        limits = cls(**values)
        if limits.max_seconds < MIN_SECONDS:
            raise ValueError(f"TEXTGEN_TRAIN_MAX_SECONDS must be at least {MIN_SECONDS}")
        return limits


# -- the visitor's text ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitorText:
    text: str
    source: str  # "pasted text" (a Phrase) or the uploaded file's own name (for words only, never a path)
    notes: tuple[str, ...] = ()  # what was done to it (cut to the limit, the pasted text set aside): Phrases

    @property
    def alphabet(self) -> int:
        return len(set(self.text))


def read_visitor_text(text: object, file: object, limits: TrainingLimits) -> VisitorText:
    """The text to train on: the uploaded file if there is one, else the pasted text; RequestError in words for an
    empty, binary, oversized or too short one. `file` is a path (Gradio's copy of the upload) or None."""
    notes = []
    if file:
        path = Path(str(file))
        shown = _shown_name(path.name)
        try:
            size = path.stat().st_size
        except OSError:
            raise RequestError(Phrase("train.unreadable")) from None
        if size > limits.max_upload_mb * 2**20:
            raise RequestError(Phrase("train.too_big", name=shown, mb=size / 2**20, limit=limits.max_upload_mb))
        raw = path.read_bytes()
        if not raw.strip():
            raise RequestError(Phrase("train.empty_file", name=shown))
        try:
            body = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise RequestError(Phrase("train.not_utf8", name=shown)) from None
        if isinstance(text, str) and text.strip():
            notes.append(Phrase("train.note_file_wins"))
        source = f"“{shown}”"
    else:
        if text is not None and not isinstance(text, str):
            raise RequestError(Phrase("train.text_type"))
        body, source = text or "", Phrase("train.pasted_text")
        if not body.strip():
            raise RequestError(Phrase("train.nothing"))
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    if len(body) > limits.max_chars:  # cut first: a huge text sent through the API is not scanned whole
        notes.append(Phrase("train.note_cut", limit=limits.max_chars))
        body = body[: limits.max_chars]
    odd = sum(1 for ch in body if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in "\n\t")
    if "\x00" in body or odd > len(body) * 0.01:
        raise RequestError(Phrase("train.not_text", source=source))
    if len(body.strip()) < MIN_CHARS:
        raise RequestError(Phrase("train.too_short", source=source, chars=len(body.strip()), least=MIN_CHARS))
    return VisitorText(body, source, tuple(notes))


def _shown_name(name: str) -> str:
    """A file's name fit to show: its last part only, printable, at most 60 characters."""
    name = "".join(ch for ch in name.replace("\\", "/").rsplit("/", 1)[-1] if ch.isprintable())
    return (name[:57] + "…") if len(name) > 60 else (name or "the file")


def model_name(asked: object, architecture: str) -> str:
    """A catalog name from the visitor's: letters, digits, '.', '_' and '-' (others become '-'); "my-<arch>"
    when none is given. The catalog adds -2, -3… if the name is taken."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(asked or "")).strip("-._")[:40]
    return name or f"my-{architecture}"


def size_config(architecture: str, size: str) -> dict:
    """The TrainConfig sizes of `size`: "small" is the architecture's recipe (a few CPU minutes), "medium" doubles
    its widths (for an LSTM, the shipped model's 512 units)."""
    arch = architectures.get(architecture)
    if size not in SIZES:
        raise RequestError(Phrase("train.bad_size", sizes=", ".join(SIZES)))
    if size == "small":
        return {}
    return {k: arch.recipe[k] * 2 for k in ("hidden_size", "embedding_size", "n_embd") if k in arch.recipe}


# -- updates -------------------------------------------------------------------------------------------------------


@dataclass
class TrainUpdate:
    """What the page and the API show at one moment of a training."""

    status: str  # in words, in the visitor's language: waiting, starting, step and time left, done
    records: list[dict] = field(default_factory=list)  # every progress record so far (the loss curve)
    model: str | None = None  # the catalog name, once the model exists
    done: bool = False
    download: str | None = None  # a zip of the model's folder, once done
    prompt: str = ""  # what each sample is written after (the start of the visitor's text)

    @property
    def record(self) -> dict | None:
        """The API's record of this moment: {"step", "seconds", "train_loss", "val_loss", "sample", "model",
        "done"} (and "tokens_per_second", "progress"); None before the first step."""
        if not self.records:
            return None
        return {**self.records[-1], "model": self.model, "done": self.done}


# -- the runs -------------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    session: str
    stop: threading.Event = field(default_factory=threading.Event)


class TrainingRuns:
    """Every training of this server: the queue, the child processes, the trained models' folders and entries."""

    def __init__(self, catalog: Catalog, limits: TrainingLimits | None = None, root: Path | None = None,
                 forget: Callable[[str], None] | None = None, python: str = sys.executable):
        """`forget(name)` drops a loaded model whose folder is removed (Playground.forget)."""
        self.catalog = catalog
        self.limits = limits or TrainingLimits.from_env()
        self.root = Path(root) if root else data_root() / "trained"
        self.forget = forget or (lambda name: None)
        self.python = python
        self._lock = threading.Condition()
        self._waiting: list[_Job] = []
        self._running: list[_Job] = []
        self._sessions: dict[str, _Job] = {}
        self._names: dict[str, Path] = {}  # catalog name -> its run folder
        self._active: set[Path] = set()  # folders of trainings under way: no sweep touches them
        self._restore()
        # Models past their time go even when nobody trains (each training also sweeps before it starts).
        threading.Thread(target=self._sweep_every, args=(SWEEP_EVERY,), daemon=True).start()

    # -- asking --

    def train(self, session: str, text: VisitorText, architecture: object, size: object, seconds: object,
              name: object = "", lang: str = ENGLISH) -> Iterator[TrainUpdate]:
        """Train a model on `text` for `seconds`, handing on what it looks like as it learns (its status in
        `lang`); the last update is done, with the model's catalog name and a zip of its folder. RequestError in
        words (a Phrase) for a bad request."""
        if not self.limits.enabled:
            raise RequestError(Phrase("train.off"))
        arch, size, seconds = self._check(architecture, size, seconds)
        job = self._enqueue(session)
        try:
            yield from self._wait_turn(job, lang)
            if job.stop.is_set():
                yield TrainUpdate(say("train.stopped_early", lang), done=True)
                return
            yield from self._run(job, text, arch, str(size), seconds, model_name(name, arch), lang)
        finally:
            job.stop.set()  # a closed tab ends the training too (the generator is closed at its next yield)
            self._leave(job)

    def stop(self, session: str) -> bool:
        """End this session's training at its next step (its best weights are kept) or take it out of the queue."""
        with self._lock:
            job = self._sessions.get(session)
        if job is None:
            return False
        job.stop.set()
        return True

    # -- the queue --

    def _check(self, architecture: object, size: object, seconds: object) -> tuple[str, str, int]:
        if not isinstance(architecture, str) or architecture not in architectures.names():
            raise RequestError(Phrase("train.bad_arch", names=", ".join(architectures.names())))
        if size not in SIZES:
            raise RequestError(Phrase("train.bad_size", sizes=", ".join(SIZES)))
        try:
            seconds = int(float(seconds))
        except (TypeError, ValueError):
            raise RequestError(Phrase("train.seconds_type")) from None
        if not MIN_SECONDS <= seconds <= self.limits.max_seconds:
            raise RequestError(Phrase("train.seconds_range", least=MIN_SECONDS, most=self.limits.max_seconds))
        return architecture, str(size), seconds

    def _enqueue(self, session: str) -> _Job:
        with self._lock:
            if session in self._sessions:
                raise RequestError(Phrase("train.busy"))
            if len(self._waiting) >= self.limits.max_waiting:
                raise RequestError(Phrase("train.queue_full", count=len(self._waiting)))
            job = _Job(session)
            self._waiting.append(job)
            self._sessions[session] = job
            return job

    def _wait_turn(self, job: _Job, lang: str = ENGLISH) -> Iterator[TrainUpdate]:
        while True:
            with self._lock:
                place = self._waiting.index(job)
                if (place == 0 and len(self._running) < self.limits.at_once) or job.stop.is_set():
                    self._waiting.remove(job)
                    if not job.stop.is_set():
                        self._running.append(job)
                    return
            ahead = say("train.next", lang) if place == 0 else say("train.ahead", lang, count=place)
            yield TrainUpdate(say("train.waiting", lang, at_once=self.limits.at_once, ahead=ahead))
            with self._lock:
                self._lock.wait(timeout=1.0)

    def _leave(self, job: _Job) -> None:
        with self._lock:
            if job in self._waiting:
                self._waiting.remove(job)
            if job in self._running:
                self._running.remove(job)
            if self._sessions.get(job.session) is job:
                del self._sessions[job.session]
            self._lock.notify_all()

    # -- one run --

    def _run(self, job: _Job, text: VisitorText, arch: str, size: str, seconds: int, name: str,
             lang: str = ENGLISH) -> Iterator[TrainUpdate]:
        self.sweep()
        folder = self.root / secrets.token_hex(8)
        with self._lock:
            self._active.add(folder)
        try:
            yield from self._train_in(folder, job, text, arch, size, seconds, name, lang)
        finally:
            with self._lock:
                self._active.discard(folder)

    def _train_in(self, folder: Path, job: _Job, text: VisitorText, arch: str, size: str, seconds: int, name: str,
                  lang: str = ENGLISH) -> Iterator[TrainUpdate]:
        try:
            folder.mkdir(parents=True)
            (folder / "text.txt").write_text(text.text, encoding="utf-8")
        except OSError as err:
            log.error("cannot write a training folder under %s: %s", self.root, err)
            raise RequestError(Phrase("train.no_room")) from None
        about = about_words(arch, size, text, lang) + "  \n"
        update = TrainUpdate(about + say("train.starting", lang), prompt=sample_prompt(text.text))
        yield update
        child = self._start(folder, text, arch, size, seconds, update.prompt)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pipe_lines, args=(child.stdout, lines), daemon=True).start()
        summary, error, started, told = None, None, time.monotonic(), False
        try:
            while summary is None and error is None:
                if job.stop.is_set() and not told:
                    _tell(child, "stop")
                    told = True
                try:
                    line = lines.get(timeout=1.0)
                except queue.Empty:
                    if not update.records:
                        waited = time.monotonic() - started
                        update.status = about + say("train.starting_wait", lang, seconds=waited)
                        yield update
                    continue
                if line is None:  # the child ended without a last word
                    error = Phrase("train.died")
                    break
                if "record" in line:
                    update.records.append(line["record"])
                    update.status = about + progress_words(line["record"], seconds, job.stop.is_set(), lang)
                    yield update
                summary, error = line.get("done"), line.get("error", error)
        finally:
            # Ended by an error or a closed tab (nobody is left to use the model): the child must not outlive the
            # request, and its folder goes once it has ended.
            if summary is None:
                _tell(child, "stop")
            threading.Thread(target=_reap, args=(child, folder if summary is None else None), daemon=True).start()
        if error is not None:
            log.warning("training in %s failed: %s (its log: %s)", folder, error, folder / "train.log")
            raise RequestError(Phrase("train.failed", error=error))  # the trainer's own error stays English
        entry = self._register(folder, job.session, name, arch, size, text, summary)
        update.model, update.done = entry.name, True
        update.download = self._zip(folder, entry.name)
        update.status = about + finished_words(entry, summary, job.stop.is_set(), lang)
        yield update

    def _start(self, folder: Path, text: VisitorText, arch: str, size: str, seconds: int, prompt: str
               ) -> subprocess.Popen:
        config = {"arch": arch, "data": str(folder / "text.txt"), "out": str(folder / MODEL_DIR),
                  "time_budget": seconds, "tokenizer": "char", "tensorboard": False, "threads": 1,
                  # validation: a few windows every record; the full --resume state only at the end
                  "eval_batches": 2, "eval_interval": 10**9,
                  # three stretches when the text is long enough for them to be whole passages, else its tail
                  "val_chunks": 3 if len(text.text) >= 60_000 else 1,
                  # A run of seconds, not minutes: a short warmup (the recipes' 50-100 steps would be most of a
                  # 45 s run) and windows of 64 characters, so twice the steps in the time.
                  "warmup_steps": 10, "block_size": 64, **size_config(arch, size)}
        request = {"config": config, "report_every": REPORT_EVERY, "sample_prompt": prompt}
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TEXTGEN_THREADS": "1", "OMP_NUM_THREADS": "1"}
        try:
            with (folder / "train.log").open("w") as log_file:
                child = subprocess.Popen([self.python, "-m", "textgen.training.worker"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log_file, text=True, env=env,
                                         cwd=Path(__file__).resolve().parents[2])
        except OSError as err:
            log.error("cannot start a training process (%s): %s", self.python, err)
            shutil.rmtree(folder, ignore_errors=True)
            raise RequestError(Phrase("train.cannot_start")) from None
        _tell(child, json.dumps(request))
        return child

    def _register(self, folder: Path, session: str, name: str, arch: str, size: str, text: VisitorText,
                  summary: dict) -> ModelEntry:
        title = arch_title(arch)
        entry = ModelEntry(
            name, f"{name} (yours: {title}, {size})",
            f"A {title} trained on this page for {summary.get('train_seconds', 0):.0f} s on {text.source} "
            f"({len(text.text):,} characters).", str(folder / MODEL_DIR), "local",
            owner="" if self.limits.shared else owner_key(session))
        entry = self.catalog.add(entry) or entry
        meta = {"name": entry.name, "title": entry.title, "description": entry.description, "owner": entry.owner,
                "created": time.time()}
        (folder / RUN_FILE).write_text(json.dumps(meta))
        with self._lock:
            self._names[entry.name] = folder
        return entry

    def _zip(self, folder: Path, name: str) -> str:
        """The model's Hugging Face folder (config, safetensors, tokenizer, card, loss curve) as NAME.zip, in a
        temporary folder of its own (Gradio serves files from there)."""
        target = Path(tempfile.mkdtemp(prefix="textgen-model-")) / f"{name}.zip"
        model = folder / MODEL_DIR
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
            for path in sorted(model.rglob("*")):
                inside = path.relative_to(model)
                if path.is_file() and inside.parts[0] not in ZIP_LEAVES_OUT:
                    z.write(path, Path(name) / inside)
        return str(target)

    # -- the folders --

    def sweep(self) -> list[str]:
        """Remove trained models older than keep_hours, then the oldest until the folder fits in disk_mb; each
        leaves the catalog and memory with its folder. Returns the names removed."""
        if not self.root.is_dir():
            return []
        runs = []
        with self._lock:
            active = set(self._active)
        for folder in self.root.iterdir():
            if folder in active:
                continue
            meta = _read_meta(folder)
            if meta is not None:
                runs.append((meta.get("created", 0.0), folder, meta.get("name")))
        runs.sort(key=lambda run: run[0])
        removed, now = [], time.time()
        total = sum(_folder_bytes(folder) for _, folder, _ in runs)
        for created, folder, name in runs:
            if now - created <= self.limits.keep_hours * 3600 and total <= self.limits.disk_mb * 2**20:
                continue
            total -= _folder_bytes(folder)
            self._remove(folder, name)
            removed.append(name)
        return removed

    def _sweep_every(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            try:
                self.sweep()
            except OSError as err:  # a folder going away under it, a full disk: try again next time
                log.warning("sweeping trained models failed: %s", err)

    def _remove(self, folder: Path, name: str | None) -> None:
        if name and self._names.get(name) == folder:
            self.catalog.remove(name)
            self.forget(name)
            with self._lock:
                self._names.pop(name, None)
        shutil.rmtree(folder, ignore_errors=True)

    def _restore(self) -> None:
        """At start: shared models of an earlier run of the server rejoin the catalog. Private ones belonged to
        browser sessions that no longer exist and stay out; they, and folders of trainings that never finished, go
        with the sweeps by age and size (not at once: another server may share this folder, mid-training)."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            meta = _read_meta(folder)
            if meta is None or meta.get("owner") or "name" not in meta or \
                    not (folder / MODEL_DIR / "config.json").is_file():
                continue
            entry = self.catalog.add(ModelEntry(meta["name"], meta["title"], meta["description"],
                                                str(folder / MODEL_DIR), "local"))
            if entry is not None:
                self._names[entry.name] = folder
        self.sweep()


def sample_prompt(text: str) -> str:
    """What the samples start from: the text's first line, at most 24 characters of it ("First Citizen:")."""
    start = text.lstrip()
    return start[:24].split("\n")[0] or start[:1]


def arch_title(arch: str) -> str:
    return architectures.get(arch).title


def about_words(arch: str, size: str, text: VisitorText, lang: str = ENGLISH) -> str:
    """"LSTM, small, on pasted text: 6,000 characters, an alphabet of 31 different characters." (and what was done
    to the text), in `lang`."""
    notes = "".join(say("train.note", lang, note=words_of(n, lang)) for n in text.notes)
    size_word = say(f"train.size_word.{size}", lang) if size in SIZES else size
    return say("train.about", lang, title=arch_title(arch), size=size_word, source=words_of(text.source, lang),
               chars=len(text.text), alphabet=text.alphabet, notes=notes)


def progress_words(record: dict, seconds: int, stopping: bool, lang: str = ENGLISH) -> str:
    """"Step 120 · 23 s of 45 · 9,800 characters a second · about 22 s left · loss 2.31 on the training text, 2.40
    on the part held back", in `lang`."""
    if stopping:
        return say("train.stopping", lang, step=record["step"])
    left = max(0.0, seconds - record["seconds"])
    return say("train.progress", lang, step=record["step"], seconds=record["seconds"], total=seconds,
               rate=record.get("tokens_per_second", 0), left=left, train=record["train_loss"],
               val=record["val_loss"])


def finished_words(entry: ModelEntry, summary: dict, stopped: bool, lang: str = ENGLISH) -> str:
    who = "train.for_everyone" if not entry.owner else "train.for_you_here"
    return say("train.stopped" if stopped else "train.done", lang, steps=summary.get("steps", 0),
               seconds=summary.get("train_seconds", 0), name=entry.name, who=say(who, lang))


# -- the child process ----------------------------------------------------------------------------------------------


def _tell(child: subprocess.Popen, line: str) -> None:
    try:
        child.stdin.write(line + "\n")
        child.stdin.flush()
    except (OSError, ValueError):  # it has ended already
        pass


def _pipe_lines(stream, lines: queue.Queue) -> None:
    """The child's JSON lines into `lines`, then None at its end (other lines are not ours and are skipped)."""
    for raw in stream:
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if isinstance(message, dict):
            lines.put(message)
    lines.put(None)


def _reap(child: subprocess.Popen, remove: Path | None = None) -> None:
    """Wait for a child that was told to stop (its best weights and card take a moment), kill one that hangs, then
    remove the folder of a training that did not finish."""
    try:
        child.wait(timeout=120)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    for stream in (child.stdin, child.stdout):
        try:
            stream.close()
        except OSError:
            pass
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / RUN_FILE).read_text())
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None if not folder.is_dir() else {"created": folder.stat().st_mtime}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
