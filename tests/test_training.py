"""Training: the loss goes down, limits are kept, the output directory is complete, runs resume."""

import csv
import json
import math
import re
import shlex
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from textgen.cli import build_parser, main
from textgen.training.config import TrainConfig, lr_at
from textgen.training.trainer import STATE_DIR, Trainer, train

TINY_SIZES = {"hidden_size": 32, "embedding_size": 16, "num_layers": 1, "n_layer": 1, "n_embd": 32, "n_head": 2}


@pytest.fixture
def config(tmp_path, tiny_text) -> TrainConfig:
    data = tmp_path / "tiny.txt"
    data.write_text(tiny_text, encoding="utf-8")
    return TrainConfig(arch="gru", data=str(data), out=str(tmp_path / "run"), block_size=32, batch_size=8, lr=1e-2,
                       warmup_steps=5, max_steps=20, eval_interval=10, eval_batches=2, val_fraction=0.2, **TINY_SIZES)


def loss_rows(out) -> list[dict]:
    with (out / "loss.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("arch", ["rnn", "lstm", "gru", "transformer"])
def test_a_few_dozen_steps_lower_the_validation_loss(config, arch):
    trainer = Trainer(replace(config, arch=arch, max_steps=40))
    before = trainer.validate()
    summary = trainer.train()
    assert before == pytest.approx(math.log(len(trainer.tokenizer)), abs=0.2)
    assert summary["steps"] == 40
    assert summary["best_val_loss_per_token"] < before - 0.3
    val = [float(r["val_loss"]) for r in loss_rows(trainer.out)]
    assert val[-1] < val[0]


def test_output_directory_is_a_complete_safe_checkpoint(config):
    train(config)
    out = Path(config.out)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "loss.csv", "loss.png", "README.md",
            "training_summary.json", STATE_DIR} <= names
    # No pickle anywhere, not even in the state that --resume reads (optimizer and random state included).
    assert not [p for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pth")]
    assert not [p for p in out.rglob("*") if p.is_file() and p.read_bytes()[:2] in (b"\x80\x02", b"\x80\x04", b"PK")]
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert [int(r["step"]) for r in loss_rows(out)] == [10, 20]


def test_model_card_holds_the_exact_command_that_reproduces_the_config(config):
    train(config)
    card = (Path(config.out) / "README.md").read_text()
    command = re.search(r"Training command:\n\n```\n(.*)\n```", card).group(1)
    assert command.startswith("python -m textgen train ")
    args = build_parser().parse_args(shlex.split(command)[3:])
    parsed = TrainConfig(**{k: getattr(args, k) for k in asdict(config)})
    assert parsed.resolved() == config.resolved()  # the card spells out the recipe values too
    assert "| steps | 20 |" in card


def test_time_budget_stops_training_after_about_that_time(config):
    budget = 1.5
    start = time.perf_counter()
    summary = train(replace(config, max_steps=None, time_budget=budget, eval_interval=10_000))
    wall = time.perf_counter() - start
    assert budget <= summary["train_seconds"] < budget + 1.0
    assert summary["steps"] > 1
    assert wall < budget + 15  # final validation, plot and model card included


def test_resume_continues_from_the_saved_step(config, capsys):
    out = Path(config.out)
    first = train(config)
    assert first["steps"] == 20
    rows_before = loss_rows(out)
    progress = json.loads((out / STATE_DIR / "progress.json").read_text())
    assert progress["step"] == 20

    second = train(replace(config, max_steps=40, resume=True))
    assert "resuming" in capsys.readouterr().out
    assert second["steps"] == 40
    rows = loss_rows(out)
    assert rows[: len(rows_before)] == rows_before
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert json.loads((out / STATE_DIR / "progress.json").read_text())["step"] == 40


def test_resume_restores_the_optimizer_and_random_state_exactly(config):
    first = Trainer(config)
    first.train()
    again = Trainer(replace(config, resume=True))
    saved, restored = first.optimizer.state_dict(), again.optimizer.state_dict()
    assert restored["param_groups"] == saved["param_groups"]
    assert saved["state"].keys() == restored["state"].keys()
    for index, values in saved["state"].items():
        for name, value in values.items():
            assert torch.equal(restored["state"][index][name], value), (index, name)
    assert torch.equal(again.generator.get_state(), first.generator.get_state())


def test_resume_without_saved_state_starts_from_scratch(config):
    summary = train(replace(config, resume=True))
    assert summary["steps"] == 20


def test_training_needs_a_step_or_time_limit(config):
    with pytest.raises(ValueError, match="--max-steps or --time-budget"):
        Trainer(replace(config, max_steps=None, time_budget=None))


def test_unknown_architecture_is_refused(config):
    with pytest.raises(ValueError, match="unknown architecture"):
        Trainer(replace(config, arch="mamba"))


def test_learning_rate_warms_up_then_follows_a_cosine_to_a_tenth():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 4, 0.0) == pytest.approx(5e-4)
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1e-3)
    assert lr_at(cfg, 10, 0.0) == pytest.approx(1e-3)
    assert lr_at(cfg, 500, 0.5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(cfg, 1000, 1.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 2000, 1.7) == pytest.approx(1e-4)  # past the end it stays at the floor


def test_cli_train_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--arch", "--data", "--time-budget", "--max-steps", "--resume"):
        assert flag in help_text


def test_cli_train_prints_a_json_summary(config, capsys):
    argv = ["train", "--arch", "rnn", "--data", config.data, "--out", config.out, "--hidden-size", "32",
            "--embedding-size", "16", "--num-layers", "1", "--block-size", "32", "--batch-size", "8",
            "--max-steps", "10", "--eval-interval", "5", "--eval-batches", "1", "--val-fraction", "0.2"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 10
    assert summary["val_chars"] > 0


def test_cli_train_reports_a_missing_data_file(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"), "--max-steps", "1"])
    assert code == 2
    assert "error: no such text file" in capsys.readouterr().err


def test_model_card_of_a_bpe_model_is_not_tagged_character_level(config):
    train(replace(config, tokenizer="bpe", bpe_vocab_size=300, max_steps=2, eval_interval=2))
    card = (Path(config.out) / "README.md").read_text()
    assert "(bpe tokenizer)" in card
    assert "character-level" not in card


def test_init_from_continues_a_finished_checkpoint(config, tmp_path):
    first = train(replace(config, max_steps=40))
    again = Trainer(replace(config, out=str(tmp_path / "more"), init_from=config.out))
    assert again.model.config.hidden_size == 32
    assert again.validate() == pytest.approx(first["best_val_loss_per_token"], abs=1e-4)
    card_run = again.train()
    assert card_run["steps"] == 20
    card = (tmp_path / "more" / "README.md").read_text()
    # The card keeps the run it continued, so the model can be reproduced from the two commands.
    assert "Trained in 2 runs" in card and "| 40 + 20 |" in card
    first_command, second_command = re.findall(r"^ *(python -m textgen train .*)$", card, flags=re.M)
    assert "--hidden-size 32" in first_command and f"--out {config.out}" in first_command
    assert f"--init-from {config.out}" in second_command


def test_init_from_refuses_a_size_flag_that_would_change_the_checkpoint(config, tmp_path):
    train(config)
    with pytest.raises(ValueError, match="--hidden-size 999 cannot change the shape of .*it has 32"):
        Trainer(replace(config, out=str(tmp_path / "more"), init_from=config.out, hidden_size=999))


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_init_from_takes_a_new_dropout_for_the_next_stage(config, tmp_path, arch):
    train(replace(config, arch=arch, dropout=0.1))

    train(replace(config, arch=arch, out=str(tmp_path / "more"), init_from=config.out, dropout=0.4))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "more")
    assert model.config.dropout == 0.4
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.4}
    assert json.loads((tmp_path / "more" / "training_summary.json").read_text())["config"]["dropout"] == 0.4
    second_command = re.findall(r"^ *(python -m textgen train .*)$", (tmp_path / "more" / "README.md").read_text(),
                                flags=re.M)[-1]
    assert "--dropout 0.4" in second_command

    same = Trainer(replace(config, arch=arch, out=str(tmp_path / "same"), init_from=config.out))
    assert same.model.config.dropout == 0.1  # no flag: the checkpoint's own


def test_a_third_run_keeps_both_earlier_ones(config, tmp_path):
    train(config)
    train(replace(config, out=str(tmp_path / "second"), init_from=config.out))
    third = train(replace(config, out=str(tmp_path / "third"), init_from=str(tmp_path / "second")))
    assert [s["steps"] for s in third["earlier_stages"]] == [20, 20]
    saved = json.loads((tmp_path / "third" / "training_summary.json").read_text())
    assert saved["earlier_stages"] == third["earlier_stages"]


def test_the_card_lists_the_stages_the_weights_came_from_even_if_that_folder_changes(config, tmp_path):
    train(config)
    second = Trainer(replace(config, out=str(tmp_path / "second"), init_from=config.out))
    train(replace(config, max_steps=30))  # while it trains, a newer run is saved where it started from
    summary = second.train()
    assert [s["steps"] for s in summary["earlier_stages"]] == [20]
    assert "| 20 + 20 |" in (tmp_path / "second" / "README.md").read_text()


def test_a_resumed_stage_keeps_the_stages_it_started_from(config, tmp_path):
    train(config)
    more = replace(config, out=str(tmp_path / "more"), init_from=config.out)
    train(replace(more, max_steps=10))
    train(replace(config, max_steps=30))  # replaced between the two sessions of the second stage
    resumed = train(replace(more, resume=True))
    assert resumed["steps"] == 20
    assert [s["steps"] for s in resumed["earlier_stages"]] == [20]


def test_a_continued_run_saves_the_tokenizer_as_it_found_it(config, tmp_path):
    train(config)
    train(replace(config, out=str(tmp_path / "more"), init_from=config.out))
    found = json.loads((Path(config.out) / "tokenizer_config.json").read_text())
    for saved in (tmp_path / "more", tmp_path / "more" / STATE_DIR):
        # Not "is_local" or "local_files_only": facts of one loading, not settings of the tokenizer.
        assert json.loads((saved / "tokenizer_config.json").read_text()) == found


def test_init_from_trains_in_float32_from_a_half_precision_checkpoint(config, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train(config)
    half = tmp_path / "half"  # a stage kept in float16, half the size, to commit between sessions
    AutoModelForCausalLM.from_pretrained(config.out).half().save_pretrained(half)
    AutoTokenizer.from_pretrained(config.out).save_pretrained(half)
    again = Trainer(replace(config, out=str(tmp_path / "more"), init_from=str(half)))
    assert {p.dtype for p in again.model.parameters()} == {torch.float32}


def test_init_from_refuses_a_checkpoint_of_another_architecture(config):
    train(config)
    with pytest.raises(ValueError, match="not a LSTMForCausalLM"):
        Trainer(replace(config, arch="lstm", init_from=config.out))


def test_validation_chunks_are_spread_over_the_file_and_never_trained_on():
    from textgen.training.data import split_text

    lines = [f"line {i:04d} of the play\n" for i in range(2000)]
    text = "".join(lines)
    split = split_text(text, val_fraction=0.05, chunks=10)
    assert len(split.val) == 10
    assert "".join(p for pair in zip(split.train, split.val) for p in pair) == text  # every char, once, in order
    assert abs(sum(map(len, split.val)) - 0.05 * len(text)) < 0.01 * len(text)
    assert split.tail == split.val[-1] and text.endswith(split.tail)
    starts = [text.index(chunk) for chunk in split.val]
    assert starts[0] < 0.15 * len(text) and starts[4] < 0.55 * len(text) < starts[5]  # spread, not bunched
    assert all(chunk.startswith("line ") for chunk in split.val)  # each starts at a line start
    assert split_text(text, 0.05, chunks=1).val == [text[-len(split_text(text, 0.05, 1).val[0]):]]


def test_card_reports_the_held_out_stretches_and_the_tail_apart(config):
    summary = train(replace(config, val_chunks=4))
    assert summary["val_chunks"] == 4 and summary["tail_chars"] < summary["val_chars"]
    card = (Path(config.out) / "README.md").read_text()
    assert f"{summary['val_nats_per_char']:.4f} nats/char" in card
    assert f"{summary['tail_nats_per_char']:.4f} nats/char" in card and "4 stretches spread" in card


def test_card_of_a_run_validated_on_the_file_s_tail_alone_says_so_once(config):
    # A last stage that trains on all but the file's end (a fold-in of held-out stretches) validates on one piece:
    # the card names that share exactly and does not repeat the same number as a "tail" row.
    summary = train(replace(config, val_fraction=0.015, val_chunks=1))
    card = (Path(config.out) / "README.md").read_text()
    assert "its last 1.5% held out for validation" in card and "stretches spread" not in card
    assert "of which the file's tail" not in card and f"{summary['val_nats_per_char']:.4f} nats/char" in card


def test_tensorboard_logs_losses_through_accelerate(config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(replace(config, tensorboard=True))
    events = list((Path(config.out) / "tensorboard").rglob("events.out.tfevents.*"))
    tags = set()
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/validation", "learning_rate", "tokens_per_second"} <= tags


def test_progress_bar_reads_as_a_plain_percentage_with_step_loss_and_rate():
    from tqdm import tqdm

    from textgen.training.trainer import BAR_FORMAT

    line = tqdm.format_meter(22, 100, 7.0, bar_format=BAR_FORMAT, postfix="step 40, loss 2.314, 9,120 tok/s")
    assert line.startswith(" 22%|") and "/100" not in line
    assert line.endswith("00:07 elapsed, 00:24 left, step 40, loss 2.314, 9,120 tok/s")


def test_training_draws_the_bar_to_stderr_as_percentages(config, capsys):
    train(replace(config, max_steps=10, eval_interval=5))
    err = capsys.readouterr().err
    assert "100%|" in err and "/100" not in err


def test_loss_chart_of_a_short_run_marks_every_point(config):
    from textgen.training.model_card import loss_figure, read_loss_rows

    train(replace(config, max_steps=10, eval_interval=10))  # one evaluation: one point per curve
    rows = read_loss_rows(Path(config.out) / "loss.csv")
    assert len(rows) == 1
    fig = loss_figure(rows, "run")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 2
    for line in lines:
        assert line.get_marker() not in (None, "", "None", " ") and line.get_markersize() >= 3
        assert list(line.get_xdata()) == [10]
    low, high = ax.get_xlim()
    assert low == 0 and high > 10  # the point is inside the chart, and the run is seen from its start
    values = [float(rows[0]["train_loss"]), float(rows[0]["val_loss"])]
    bottom, top = ax.get_ylim()
    margin = 0.05 * (top - bottom)
    assert bottom + margin < min(values) and max(values) < top - margin  # off the frame, where markers show whole
    assert "1 evaluation" in ax.get_title()
    assert any("last" in t.get_text() for t in ax.get_legend().get_texts())


def test_the_best_validation_checkpoint_is_the_one_kept(config, monkeypatch):
    # Validation at steps 10, 20 and 30 scores 2.0, 1.0, then worse again (1.5): the step-20 weights are kept.
    from safetensors.torch import load_file

    trainer = Trainer(replace(config, max_steps=30, eval_interval=10))
    scores, weights = iter([2.0, 1.0, 1.5]), {}

    def validate():
        weights[trainer.step] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        return next(scores)

    monkeypatch.setattr(trainer, "validate", validate)
    summary = trainer.train()
    assert sorted(weights) == [10, 20, 30] and summary["best_val_loss_per_token"] == 1.0
    kept = load_file(trainer.out / "model.safetensors")
    assert kept and all(torch.equal(kept[k], weights[20][k]) for k in kept)
    assert not all(torch.equal(kept[k], weights[30][k]) for k in kept)  # the last weights differ: not kept
