"""The architecture registry: one entry per architecture, read by training, the CLI, the catalog and loading.

    python -m pytest -q tests/test_architectures.py

The proof that an entry is all a new architecture needs: a bigram model (tests/bigram_model.py, its "model
file") registered with one `Architecture(...)` trains through the CLI, shows in the catalog with its title,
loads through `textgen.service.loading.load_model` and streams through `textgen.local.generation.stream`.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny

from textgen.cli import build_parser, main
from textgen.core.events import Summary, TextEvent
from textgen.core.settings import GenerationSettings
from textgen.local.generation import stream
from textgen.models import architectures
from textgen.models.architectures import Architecture
from textgen.service.catalog import Catalog
from textgen.service.loading import load_model
from textgen.training.config import RECIPES, TrainConfig

ROOT = Path(__file__).resolve().parents[1]

BIGRAM = Architecture(
    name="bigram", model_type="textgen_test_bigram", title="Bigram",
    description="Guesses each character from the one before it, and nothing else.",
    recipe={"block_size": 32, "batch_size": 8, "lr": 0.05, "warmup_steps": 2},
    size_fields=(), tiny_sizes={},
    config_class="bigram_model:BigramConfig", model_class="bigram_model:BigramForCausalLM",
)


@pytest.fixture
def bigram():
    before = architectures.get(BIGRAM.name) if BIGRAM.name in architectures.names() else None
    architectures.register(BIGRAM)
    yield BIGRAM
    architectures.unregister(BIGRAM.name)  # the registry as it was: an entry of that name comes back
    if before is not None:
        architectures.register(before)


@pytest.fixture
def trained_bigram(bigram, tmp_path, tiny_text):
    """A bigram model trained through the CLI into tmp_path/shipped/bigram, and its data file."""
    data = tmp_path / "tiny.txt"
    data.write_text(tiny_text, encoding="utf-8")
    out = tmp_path / "shipped" / "bigram"
    code = main(["train", "--arch", "bigram", "--data", str(data), "--out", str(out), "--max-steps", "30",
                 "--eval-interval", "10", "--eval-batches", "1", "--val-fraction", "0.2", "--val-chunks", "2"])
    assert code == 0
    return out, data


def test_a_fifth_architecture_needs_one_entry_to_train_load_and_generate(bigram, tmp_path, tiny_text, capsys):
    data = tmp_path / "tiny.txt"
    data.write_text(tiny_text, encoding="utf-8")
    out = tmp_path / "shipped" / "bigram"
    assert build_parser().parse_args(["train", "--arch", "bigram", "--data", "x"]).arch == "bigram"
    code = main(["train", "--arch", "bigram", "--data", str(data), "--out", str(out), "--max-steps", "30",
                 "--eval-interval", "10", "--eval-batches", "1", "--val-fraction", "0.2", "--val-chunks", "2"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 30
    vocab = len(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"])
    assert summary["best_val_loss_per_token"] < torch.log(torch.tensor(float(vocab))).item() - 0.5  # it learned
    assert json.loads((out / "config.json").read_text())["model_type"] == "textgen_test_bigram"
    assert "--arch bigram" in (out / "README.md").read_text()

    catalog = Catalog.default(shipped_dir=tmp_path / "shipped", include_gpt2=False)
    entry = catalog.get("bigram")
    assert entry.title == "Bigram (ours, Shakespeare)" and entry.description == BIGRAM.description

    loaded = load_model(entry, torch.device("cpu"))
    assert type(loaded.model).__name__ == "BigramForCausalLM"
    events = list(stream(loaded, GenerationSettings.parse("First", max_new_tokens=12, seed=1)))
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.tokens == [12]
    assert "".join(e.text for e in events if isinstance(e, TextEvent)) == summary.texts[0]
    assert make_tiny("bigram", 10)(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 10)


def test_the_four_shipped_architectures_and_their_recipes_are_unchanged():
    # Checkpoints carry model_type in config.json: renaming one would orphan every saved model. (More
    # architectures may be registered beside them: this pins the four, not the count.)
    shipped = {"rnn": "textgen_rnn", "lstm": "textgen_lstm", "gru": "textgen_gru", "transformer": "textgen_transformer"}
    assert {a.name: a.model_type for a in architectures.all_architectures() if a.name in shipped} == shipped
    recurrent = {"hidden_size": 256, "embedding_size": 64, "num_layers": 2, "dropout": 0.0, "block_size": 128,
                 "batch_size": 16, "warmup_steps": 50}
    assert {name: RECIPES[name] for name in shipped} == {
        "transformer": {"n_layer": 4, "n_embd": 128, "n_head": 4, "position_embedding": "rotary", "dropout": 0.0,
                        "block_size": 64, "batch_size": 12, "lr": 2e-3, "warmup_steps": 100},
        "lstm": {**recurrent, "lr": 3e-3}, "gru": {**recurrent, "lr": 3e-3}, "rnn": {**recurrent, "lr": 2e-3}}
    assert TrainConfig(arch="gru").resolved().lr == 3e-3


def test_every_entry_names_classes_that_carry_its_model_type():
    for arch in architectures.all_architectures():
        config_cls, model_cls = arch.classes()
        assert config_cls.model_type == arch.model_type
        assert model_cls.config_class is config_cls
        assert set(arch.size_fields) <= set(config_cls().to_dict()) | {"dropout"}


def test_every_shipped_checkpoint_belongs_to_a_registered_architecture():
    shipped = sorted((ROOT / "assets" / "models").glob("*/config.json"))
    assert shipped
    for config in shipped:
        model_type = json.loads(config.read_text())["model_type"]
        assert architectures.by_model_type(model_type) is not None, config


def test_a_bad_entry_is_refused_when_written():
    base = {"name": "x", "model_type": "textgen_x", "title": "X", "description": "d", "tiny_sizes": {},
            "config_class": "m:C", "model_class": "m:M"}
    with pytest.raises(ValueError, match="not train flags"):
        Architecture(**base, recipe={"block_size": 8, "batch_size": 2, "lr": 0.1, "warmup_steps": 1},
                     size_fields=("width",))
    with pytest.raises(ValueError, match="must give lr"):
        Architecture(**base, recipe={"block_size": 8, "batch_size": 2, "warmup_steps": 1}, size_fields=())
    with pytest.raises(ValueError, match="already belongs to 'lstm'"):
        architectures.register(Architecture(**{**base, "model_type": "textgen_lstm"}, size_fields=(),
                                            recipe={"block_size": 8, "batch_size": 2, "lr": 0.1, "warmup_steps": 1}))
    names = ", ".join(architectures.names())  # every registered one, however many there are
    with pytest.raises(ValueError, match=f"unknown architecture 'mamba'; choose from {names}"):
        architectures.get("mamba")


def test_a_model_of_a_new_kind_works_everywhere_a_shipped_one_does(trained_bigram, capsys):
    """Neither recurrent nor attention: the bigram follows the written contract (memory "none") and is then
    evaluated and written with by the CLI, the page, the step-by-step view and Compare."""
    from helpers import live_app

    from textgen.service.loading import ModelManager
    from textgen.service.playground import Playground

    out, data = trained_bigram
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["nats_per_char"] > 0
    assert main(["generate", "--model", str(out), "--prompt", "First", "--max-new-tokens", "15", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out) > len("First")

    catalog = Catalog.default(shipped_dir=out.parent, include_gpt2=False)
    playground = Playground(ModelManager(catalog, device="cpu"))
    inside = playground.look_inside(playground.manager.get("bigram"), "First Citizen:\nBefore we proceed")
    assert "has no attention to show" in inside["attention_note"]  # each view says it does not apply
    assert "has no memory units" in inside["units_note"]
    from gradio_client import Client

    catalog.add(Catalog.default(include_gpt2=False).get("gru"))  # a shipped model to compare it with
    with live_app(playground) as url:
        client = Client(url, verbose=False)
        text, stats, _ = client.predict("First", "bigram", 0.8, 0, 1.0, 0.0, 1.0, 0, 12, 1, False,
                                        api_name="/generate")
        assert text and "**12** tokens" in stats
        stages = client.predict("First", "bigram", 0.8, 0, 1.0, 0.0, 1.0, 0, 5, api_name="/next_token")["stages"]
        assert stages[0]["name"] == "model" and len(stages[0]["tokens"]) == 5
        compared = client.predict("First", ["bigram", "gru"], 0.8, 12, 1, api_name="/compare")
        assert compared[0] and compared[1]


def test_a_training_that_fails_leaves_no_half_written_model(bigram, tmp_path, tiny_text, monkeypatch, capsys):
    from textgen.training.trainer import Trainer

    data = tmp_path / "tiny.txt"
    data.write_text(tiny_text, encoding="utf-8")
    out = tmp_path / "bigram"

    def broken(self):
        raise RuntimeError("the final evaluation failed (staged by the test)")

    monkeypatch.setattr(Trainer, "final_validation", broken)
    code = main(["train", "--arch", "bigram", "--data", str(data), "--out", str(out), "--max-steps", "10",
                 "--eval-interval", "5", "--eval-batches", "1", "--val-fraction", "0.2", "--val-chunks", "2"])
    assert code != 0 and "staged by the test" in capsys.readouterr().err  # said, in one line
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    assert (out / "training_state" / "progress.json").is_file()  # what --resume needs is kept
