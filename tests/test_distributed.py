"""Data-parallel training on CPU: `python -m torch.distributed.run --nproc_per_node 2 -m textgen train ...`.

    python -m pytest -q tests/test_distributed.py

Two processes (gloo) train one model: they agree on the weights, draw different windows, and only process 0
writes the checkpoint, loss log, card and state; the summary reports the effective batch (batch x processes).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def torchrun(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # --standalone: a rendezvous on a free local port, so parallel test runs cannot collide on 29500.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # Its own process group, so that a run past the deadline is ended with its worker processes (a plain
    # timeout kills only torchrun and leaves the workers training).
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


@pytest.fixture
def data(tmp_path, tiny_text) -> Path:
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text * 3, encoding="utf-8")
    return path


def test_two_processes_train_one_model_and_write_one_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    proc = torchrun("-m", "textgen", "train", "--arch", "gru", "--data", str(data), "--out", str(out),
                    "--hidden-size", "32", "--embedding-size", "16", "--num-layers", "1", "--block-size", "32",
                    "--batch-size", "8", "--max-steps", "6", "--eval-interval", "3", "--eval-batches", "1",
                    "--val-fraction", "0.2", "--no-tensorboard")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # one summary, from process 0
    summary = json.loads(lines[0])
    assert summary["processes"] == 2 and summary["effective_batch_size"] == 16 and summary["steps"] == 6
    assert "effective batch 8 x 2 processes = 16 windows" in proc.stdout
    assert [p.name for p in out.glob("loss.csv")] == ["loss.csv"] and len(list(out.rglob("config.json"))) == 1
    rows = (out / "loss.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["step", "3", "6"]  # one log, not two interleaved
    state = out / "training_state"
    assert {"model.safetensors", "optimizer.safetensors", "progress.json", "process_rng.safetensors"} <= {
        p.name for p in state.iterdir()}
    card = (out / "README.md").read_text()
    assert "16 windows a step (8 in each of 2 data-parallel processes)" in card
    assert "python -m torch.distributed.run --nproc_per_node 2 -m textgen train --arch gru" in card

    # One process continues the run from the state two processes wrote (process 0's windows carry on).
    from textgen.cli import main

    assert main(["train", "--arch", "gru", "--data", str(data), "--out", str(out), "--hidden-size", "32",
                 "--embedding-size", "16", "--num-layers", "1", "--block-size", "32", "--batch-size", "8",
                 "--max-steps", "9", "--eval-interval", "3", "--eval-batches", "1", "--val-fraction", "0.2",
                 "--no-tensorboard", "--resume"]) == 0
    assert [row.split(",")[0] for row in (out / "loss.csv").read_text().splitlines()] == ["step", "3", "6", "9"]


def test_the_processes_agree_on_the_weights_and_draw_different_windows(data, tmp_path):
    proc = torchrun(str(ROOT / "tests" / "ddp_probe.py"), str(data), str(tmp_path / "probe"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    reports = sorted((json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"process"')),
                     key=lambda r: r["process"])
    assert [r["process"] for r in reports] == [0, 1]
    assert reports[0]["checksum"] == pytest.approx(reports[1]["checksum"], rel=1e-9)
    assert reports[0]["first_window"] != reports[1]["first_window"]
    assert reports[0]["val"] == reports[1]["val"]  # the same validation number in both
