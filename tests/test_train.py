"""The training loop: accuracy, determinism, resume after a kill, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qcompile.checkpoint import load_checkpoint
from qcompile.errors import QCompileError
from qcompile.recipe import load_recipe
from qcompile.train import train
from tests.conftest import ROOT, last_json

QUIET = {"progress": False, "log": lambda msg: None}


def recipe(**over):
    base = {"model.name": "mlp", "data.name": "digits", "train.epochs": 3, "stage.wbits": 2}
    return load_recipe(None, {**base, **over})


def states_equal(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    a = train(recipe(), tmp_path / "a", **QUIET)
    b = train(recipe(), tmp_path / "b", **QUIET)
    train(recipe(**{"train.seed": 1}), tmp_path / "c", **QUIET)
    assert a["test_acc"] == b["test_acc"]
    assert states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "b/checkpoint.pt")
    assert not states_equal(tmp_path / "a/checkpoint.pt", tmp_path / "c/checkpoint.pt")


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    train(recipe(**{"train.epochs": 1}), tmp_path / "r", **QUIET)
    ckpt = torch.load(tmp_path / "r/checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["recipe"]["stage"]["wbits"] == 2


def _spawn(out: Path, epochs: int) -> subprocess.Popen:
    args = ["train", "--model", "lenet", "--data", "mnist5k", "--wbits", "2", "--abits", "2",
            "--epochs", str(epochs), "--out", str(out), "--json"]  # fmt: skip
    # Two runs go side by side: one thread each keeps them from fighting over the cores.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "qcompile", *args, "--resume"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path) -> None:
    epochs = 5
    full = _spawn(tmp_path / "full", epochs)
    killed = _spawn(tmp_path / "killed", epochs)
    metrics = tmp_path / "killed/metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    done = len(metrics.read_text().splitlines())
    assert 2 <= done < epochs, "the run must be killed part-way"
    resumed = _spawn(tmp_path / "killed", epochs)
    out_resumed, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    out_full, err = full.communicate(timeout=600)
    assert full.returncode == 0, err
    assert states_equal(tmp_path / "full/checkpoint.pt", tmp_path / "killed/checkpoint.pt")
    assert last_json(out_resumed)["test_acc"] == last_json(out_full)["test_acc"]
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))


@pytest.mark.slow
def test_lenet_digits_w4a4_accuracy(tmp_path: Path) -> None:
    r = load_recipe(ROOT / "models/lenet_digits_w4a4.toml", {})
    summary = train(r, tmp_path / "r", **QUIET)
    assert summary["test_acc"] >= 0.95
    assert summary["bits"] == {"features.0.0": 8, "features.2.0": 4, "classifier.0": 4,
                               "classifier.3": 4, "classifier.6": 8}  # fmt: skip


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_processes_match_single_process_quality(tmp_path: Path) -> None:
    args = ["train", "--model", "lenet", "--data", "digits", "--wbits", "4", "--abits", "4",
            "--epochs", "10", "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "qcompile", *args, "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    multi = last_json(ddp.stdout)
    single = train(
        load_recipe(None, {"model.name": "lenet", "train.epochs": 10}), tmp_path / "one", **QUIET
    )
    assert multi["world_size"] == 2 and single["world_size"] == 1
    assert multi["test_acc"] >= 0.93 and single["test_acc"] >= 0.93
    assert abs(multi["test_acc"] - single["test_acc"]) <= 0.03
    ckpt = load_checkpoint(tmp_path / "ddp/checkpoint.pt")
    assert ckpt["epoch"] == 10


def test_diverging_loss_stops_the_run(tmp_path: Path) -> None:
    """A finite but absurd rate drives the loss to NaN: the run stops with a clear error
    instead of writing a checkpoint and summary of NaN weights."""
    with pytest.raises(QCompileError, match=r"training diverged: the loss became nan at epoch 1"):
        train(recipe(**{"train.lr": 1e30}), tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()


def test_unwritable_run_directory_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(QCompileError, match="is a file, not a directory"):
        train(recipe(), tmp_path / "file" / "run", **QUIET)
