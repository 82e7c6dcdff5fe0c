"""`python -m textgen generate`: JSON lines or plain text, and clean errors."""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from textgen.cli import build_parser, main
from textgen.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TEXTGEN_MODELS", raising=False)
    monkeypatch.delenv("TEXTGEN_CATALOG", raising=False)


def generate_args(model_dir, *extra) -> list[str]:
    return ["generate", "--model", str(model_dir), "--prompt", "First", "--max-new-tokens", "20", "--seed", "1",
            *extra]


def test_generate_json_prints_one_event_per_line_and_the_summary_last(model_dirs, capsys):
    assert main(generate_args(model_dirs["lstm"], "--json")) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = events[-1]
    assert summary["event"] == "summary"
    assert summary["tokens"] == [20]
    assert summary["stop_reasons"] == ["length"]
    assert summary["seed"] == 1
    texts = [e for e in events[:-1] if e["event"] == "text"]
    assert len(texts) == 20
    assert "".join(e["text"] for e in texts) == summary["texts"][0]
    assert {"id", "text", "prob", "alternatives"} <= set(texts[0]["token"])


def test_generate_plain_prints_text_to_stdout_and_a_summary_to_stderr(model_dirs, capsys):
    assert main(generate_args(model_dirs["transformer"], "--json")) == 0
    expected = json.loads(capsys.readouterr().out.splitlines()[-1])["texts"][0]
    assert main(generate_args(model_dirs["transformer"])) == 0
    captured = capsys.readouterr()
    assert captured.out == expected + "\n"
    assert captured.err.startswith("[20 tokens, ")
    assert "seed 1" in captured.err and "reached the maximum number of new tokens" in captured.err


def test_generate_plain_prints_further_samples_after_the_first(model_dirs, capsys):
    assert main(generate_args(model_dirs["gru"], "--num-samples", "2", "--temperature", "1.0")) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample 2 ---") == 1
    assert "--- sample 1 ---" not in out


def test_generate_reports_warnings_as_notes(model_dirs, capsys):
    assert main(["generate", "--model", str(model_dirs["rnn"]), "--prompt", "你好", "--max-new-tokens", "3"]) == 0
    assert "[note: 2 character(s) are not in this model's vocabulary" in capsys.readouterr().err


def test_generate_stops_at_a_stop_sequence(model_dirs, capsys):
    assert main(generate_args(model_dirs["lstm"], "--json")) == 0
    full = json.loads(capsys.readouterr().out.splitlines()[-1])["texts"][0]
    stop = full[5:7]
    assert main(generate_args(model_dirs["lstm"], "--json", "--stop", stop)) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["texts"] == [full[: full.index(stop)]]
    assert summary["stop_reasons"] == ["stop_sequence"]


def test_generate_with_a_bpe_model_writes_unicode_json(model_dirs, capsys):
    argv = ["generate", "--model", str(model_dirs["tiny-gpt2"]), "--prompt", "héllo 😀", "--max-new-tokens", "5",
            "--json"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[-1])["prompt_tokens"] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--temperature", "-1"], "error: temperature must be between 0 and 2"),
        (["--max-new-tokens", "0"], "error: max_new_tokens must be between 1"),
        (["--top-p", "0"], "error: top_p must be between"),
        (["--num-samples", "99"], "error: num_samples must be between 1 and 4"),
    ],
)
def test_bad_values_exit_2_with_an_error_and_no_traceback(model_dirs, capsys, extra, message):
    assert main(generate_args(model_dirs["lstm"], *extra)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message)
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_unknown_model_exits_2_with_an_error(capsys):
    assert main(["generate", "--model", "nope", "--prompt", "First"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "nope" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_corrupt_model_directory_exits_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json")
    assert main(["generate", "--model", str(tmp_path), "--prompt", "First"]) == 2
    assert f"error: the checkpoint of {tmp_path.name} at {tmp_path.name} is missing" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "eval"])
@pytest.mark.parametrize("name", ["lstmm", "openai-community/gpt2", "./no-such-dir"])
def test_a_name_outside_the_catalog_is_refused_and_never_tried_on_the_hub(tmp_path, capsys, monkeypatch, command,
                                                                       name):
    monkeypatch.setattr("textgen.service.loading.load_model", lambda *a, **k: pytest.fail("something was loaded"))
    (tmp_path / "t.txt").write_text("First Citizen:")
    extra = ["--prompt", "First"] if command == "generate" else ["--data", str(tmp_path / "t.txt")]
    assert main([command, "--model", name, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model") and "--add-model" in err


def test_eval_takes_the_catalog_flags_like_generate(model_dirs, tmp_path, capsys):
    shutil.copytree(model_dirs["gru"], tmp_path / "mine")
    (tmp_path / "t.txt").write_text("First Citizen:\nSpeak.")
    assert main(["eval", "--model", "mine", "--data", str(tmp_path / "t.txt")]) == 2
    assert "unknown model 'mine'" in capsys.readouterr().err
    assert main(["eval", "--model", "mine", "--add-model", str(tmp_path / "mine"), "--data", str(tmp_path / "t.txt"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["chars"] == 21
    assert main(["eval", "--model", "mine", "--add-model", str(tmp_path / "mine"),
                 "--data", str(tmp_path / "t.txt")]) == 0
    assert "unknown_chars: none" in capsys.readouterr().out  # every character is in the GRU's alphabet


def test_a_reader_that_goes_away_ends_generate_quietly(model_dirs):
    command = [sys.executable, "-m", "textgen", "generate", "--model", str(model_dirs["rnn"]), "--prompt", "First",
               "--max-new-tokens", "1000", "--seed", "1", "--json"]  # more than a pipe holds
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.read(5)
    proc.stdout.close()  # as `| head -c 5` does
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err
    assert proc.returncode == 141


def test_argument_errors_exit_2_from_argparse(model_dirs, capsys):
    with pytest.raises(SystemExit) as exc:
        main(generate_args(model_dirs["lstm"], "--temperature", "warm"))
    assert exc.value.code == 2
    assert "invalid float value: 'warm'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "eval", "models", "train", "explain", "decode", "prepare"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: python -m textgen " + command in capsys.readouterr().out



@pytest.mark.parametrize("argv", [["--help"], ["models"], ["train", "--help"]])
def test_help_and_models_never_import_torch(argv):
    # `python -m textgen models` must answer at once: torch and transformers take seconds to import.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "textgen", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "textgen" in imported  # the -X importtime report is there, so an absence means something
    assert not imported & {"torch", "transformers", "accelerate", "tokenizers"}
    if argv == ["models"]:
        assert "lstm" in proc.stdout and "available offline" in proc.stdout


def train_options() -> list:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices["train"]._actions if a.option_strings and a.dest != "help"]


def test_every_train_option_has_help_words_and_a_default_in_words(capsys):
    options = train_options()
    assert len(options) == len(fields(TrainConfig))
    for action in options:
        assert action.help and not action.help.startswith("("), action.dest
        assert "default None" not in action.help, action.dest
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default None)" not in text
    # A value that comes from the recipe says so, with the recipe's numbers.
    assert "--lr LR peak learning rate, reached at the end of the warmup (default: the architecture's recipe: " \
           "0.002 for rnn, transformer; 0.003 for lstm, gru)" in text
    assert "--hidden-size HIDDEN_SIZE" in text and "256 for rnn, lstm, gru)" in text
    assert "--max-steps MAX_STEPS stop after this many optimizer steps (default: no step limit" in text


def test_tensorboard_is_an_on_off_switch():
    parse = build_parser().parse_args
    base = ["train", "--data", "x.txt"]
    assert parse(base).tensorboard is None
    assert parse([*base, "--tensorboard"]).tensorboard is True
    assert parse([*base, "--no-tensorboard"]).tensorboard is False


def test_eval_prints_four_decimals_for_people_and_full_precision_as_json(model_dirs, tmp_path, capsys):
    text = "First Citizen:\nSpeak, speak."
    (tmp_path / "t.txt").write_text(text)
    assert main(["eval", "--model", str(model_dirs["lstm"]), "--data", str(tmp_path / "t.txt")]) == 0
    human = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    assert main(["eval", "--model", str(model_dirs["lstm"]), "--data", str(tmp_path / "t.txt"), "--json"]) == 0
    exact = json.loads(capsys.readouterr().out.splitlines()[-1])
    for key in ("nats_per_char", "bits_per_char", "ppl"):
        shown = human[f"{key:>14}"].strip()
        assert re.fullmatch(r"\d+\.\d{4}", shown), shown
        assert float(shown) == pytest.approx(exact[key], abs=5e-5)
        assert exact[key] != float(shown)  # JSON keeps every digit
    assert human[f"{'chars':>14}"].strip() == str(len(text))


def test_decode_prints_the_texts_best_first_and_the_tree_of_choices(model_dirs, capsys):
    assert main(["decode", "--model", str(model_dirs["gru"]), "--prompt", "First", "--method", "beam", "--width",
                 "3", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "1. " in out and "2. " in out and "3. " in out and "log-probability" in out
    assert "├─ " in out or "└─ " in out  # the outline of kept paths
    assert main(["decode", "--model", str(model_dirs["gru"]), "--prompt", "First", "--method", "sample",
                 "--width", "2", "--seed", "3", "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["seed"] == 3 and len(tree["sequences"]) == 2


def test_decode_refuses_a_bad_width_before_loading_anything(capsys):
    assert main(["decode", "--model", "no-such-model", "--prompt", "x", "--width", "12"]) == 2
    assert "from 1 to 8" in capsys.readouterr().err
