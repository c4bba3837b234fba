"""`qcompile train` from the command line: JSON contract and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli


def assert_one_line_error(proc, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_train_json_contract(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("train", "--model", "mlp", "--data", "digits", "--wbits", "2", "--abits", "4",
                   "--epochs", "2", "--out", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = last_json(proc.stdout)
    assert 0.0 <= result["test_acc"] <= 1.0
    assert result["bits"] == {"1": 8, "4": 2, "7": 8}
    assert result["out"] == str(out)
    assert (out / "checkpoint.pt").is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["test_acc"] == result["test_acc"]


def test_recipe_file_with_flag_override(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        '[model]\nname = "mlp"\nhidden = [32]\n[stage]\nwbits = 3\n[train]\nepochs = 1\n'
    )
    proc = run_cli("train", str(recipe), "--abits", "32", "--out", str(tmp_path / "o"), "--json")
    assert proc.returncode == 0, proc.stderr
    r = last_json(proc.stdout)
    assert r["bits"] == {"1": 8, "4": 8} and r["act_bits"] == {"input": 8}


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--model", "lenett"], ["unknown model 'lenett'", "did you mean 'lenet'", "resnet20"]),
        (["--data", "mnist"], ["unknown dataset 'mnist'", "digits", "mnist5k"]),
        (["--method", "magic"], ["unknown method 'magic'", "uniform"]),
        (["--wbits", "12"], ["wbits must be 1..8 or 32"]),
        (["--data", "cifar10", "--data-dir", "/nonexistent"], ["data_batch_1", "test_batch"]),
        (["--model", "nofile.py:make"], ["no such file nofile.py"]),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    proc = run_cli("train", *args, "--epochs", "1", "--out", str(tmp_path / "o"))
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "o").exists()


def test_mistyped_recipe_key_is_named(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text("[train]\nepochz = 3\n")
    # named relative to its directory: messages clip long paths, and a pytest-xdist worker's
    # tmp_path is long enough to clip the name away
    assert_one_line_error(
        run_cli("train", recipe.name, cwd=tmp_path), "unknown key 'epochz'", "epochs", "bad.toml"
    )


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--model", "mlp", "--epochs", "1", "--out", str(out)]
    assert run_cli(*args).returncode == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert_one_line_error(run_cli(*args), "already holds a run", "--resume")
    assert (out / "checkpoint.pt").read_bytes() == before
    # Resuming with another recipe is refused and says what differs.
    assert_one_line_error(run_cli(*args[:-2], "--wbits", "2", "--out", str(out), "--resume"),
                          "stage.wbits: 4 (checkpoint) vs 2 (now)")  # fmt: skip


def test_user_model_factory(tmp_path: Path) -> None:
    f = tmp_path / "mynet.py"
    f.write_text(
        "import math, torch\n"
        "def make(in_shape, num_classes):\n"
        "    n = math.prod(in_shape)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n, 16),\n"
        "                               torch.nn.ReLU(), torch.nn.Linear(16, num_classes))\n"
    )
    proc = run_cli(
        "train", "--model", f"{f}:make", "--epochs", "1", "--out", str(tmp_path / "o"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout)["bits"] == {"1": 8, "3": 8}


def test_help_lists_the_contract_flags() -> None:
    proc = run_cli("train", "--help")
    for flag in ("--model", "--data", "--method", "--wbits", "--abits", "--epochs", "--seed",
                 "--out", "--resume", "--json"):  # fmt: skip
        assert flag in proc.stdout


def test_cli_method_names_are_the_stages() -> None:
    """The CLI lists the methods without importing torch; they are the stages' names."""
    from qcompile.methods import METHODS
    from qcompile.stages import STAGES

    assert list(METHODS) == sorted(STAGES)
