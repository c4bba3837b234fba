"""`qcompile freeze | inspect | simulate` end to end on trained models, as a user runs them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from qcompile.data import load_dataset
from qcompile.freeze import freeze_model
from qcompile.ir import qir
from qcompile.stages import quantize
from qcompile.zoo import build_model
from tests.conftest import NEEDS_GXX, last_json, run_cli


@pytest.fixture(scope="module", params=["uniform", "dqa"])
def trained(request, tmp_path_factory):
    """lenet on digits, W2A4 uniform or DQA (--wbits 2), 15 epochs; then frozen."""
    out = tmp_path_factory.mktemp(request.param)
    r = run_cli(
        "train",
        "--model",
        "lenet",
        "--data",
        "digits",
        "--method",
        request.param,
        "--wbits",
        "2",
        "--abits",
        "4",
        "--epochs",
        "15",
        "--seed",
        "0",
        "--out",
        str(out / "run"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    summary = last_json(r.stdout)
    qir = out / "lenet.qir"
    r = run_cli("freeze", str(out / "run" / "checkpoint.pt"), "-o", str(qir), "--json")
    assert r.returncode == 0, r.stderr
    return {"dir": out, "qir": qir, "summary": summary, "freeze": last_json(r.stdout)}


@pytest.mark.slow
def test_simulate_trained_is_exact_and_accurate(trained):
    ckpt = str(trained["dir"] / "run" / "checkpoint.pt")
    r = run_cli("simulate", str(trained["qir"]), "--checkpoint", ckpt, "--json")
    assert r.returncode == 0, r.stderr
    res = last_json(r.stdout)
    assert res["n"] == 359 and res["exact"] == 1.0 and res["max_abs_diff"] == 0.0
    assert res["acc_frozen"] == res["acc_sim"]
    assert res["acc_fakequant"] == pytest.approx(trained["summary"]["test_acc"])
    assert abs(res["acc_frozen"] - res["acc_fakequant"]) <= 0.003  # within 0.3 pp
    assert res["acc_sim"] >= 0.9


@pytest.mark.slow
def test_simulate_thousand_user_inputs(trained):
    data = load_dataset("digits")
    x = np.concatenate([data.train_x.numpy(), data.test_x.numpy()])[:1000]
    path = trained["dir"] / "inputs.npy"
    np.save(path, x)
    r = run_cli("simulate", str(trained["qir"]), "--inputs", str(path), "--n", "1000", "--json")
    assert r.returncode == 0, r.stderr
    res = last_json(r.stdout)
    assert res["n"] == 1000 and res["exact"] == 1.0
    assert res["acc_sim"] is None  # no labels for the user's own inputs


@pytest.mark.slow
def test_inspect_reports_layers_and_average_bits(trained):
    r = run_cli("inspect", str(trained["qir"]), "--json")
    assert r.returncode == 0, r.stderr
    s = last_json(r.stdout)
    weighted = [x for x in s["layers"] if "weight_bits" in x]
    bits = [x["weight_bits"] for x in weighted]
    assert bits[0] == 8 and bits[-1] == 8 and set(bits[1:-1]) == {2}  # first/last at 8
    n = sum(x["weights"] for x in weighted)
    assert s["avg_weight_bits"] == pytest.approx(
        sum(x["weights"] * x["weight_bits"] for x in weighted) / n, abs=1e-4
    )
    assert trained["freeze"]["avg_weight_bits"] == s["avg_weight_bits"]
    assert all(x["levels"] == "uniform" for x in weighted)
    human = run_cli("inspect", str(trained["qir"]))
    assert "average weight bits" in human.stdout and "features_0_0" in human.stdout


@pytest.fixture(scope="module")
def small_qir(tmp_path_factory):
    """A frozen lenet for 8x8 digits (random weights): enough to exercise argument errors."""
    torch.manual_seed(0)
    q = quantize(build_model("lenet", (1, 8, 8), 10), wbits=2, abits=4)
    q.train()
    q(torch.randn(8, 1, 8, 8))
    path = tmp_path_factory.mktemp("small") / "lenet.qir"
    qir.save(freeze_model(q.eval(), (1, 8, 8), "lenet", {"data": "digits"}), path)
    return path


def test_user_mistakes_are_one_line(small_qir, tmp_path):
    bad = tmp_path / "bad.qir"
    bad.write_bytes(small_qir.read_bytes()[:500])
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 2, 2), dtype=np.float32))
    cases = [
        (("freeze", str(tmp_path / "none.pt")), "no such file"),
        (("inspect", str(bad)), "truncated or corrupt"),
        (("simulate", str(bad)), "truncated or corrupt"),
        (("simulate", str(small_qir), "--inputs", str(wrong)), "the model takes"),
        (("simulate", str(small_qir), "--data", "mnist5k"), "the model takes"),
        (("simulate", str(small_qir), "--data", "digits", "--inputs", str(wrong)), "not both"),
        (("simulate", str(small_qir), "--data", "nosuch"), "nosuch"),
        (("simulate", str(tmp_path)), "not a qcompile artifact"),
    ]
    for args, msg in cases:
        r = run_cli(*args)
        assert r.returncode != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], (args, r.stderr)


def test_freeze_refuses_a_float_model(tmp_path):
    r = run_cli(
        "train",
        "--model",
        "mlp",
        "--data",
        "digits",
        "--wbits",
        "32",
        "--abits",
        "32",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    assert r.returncode == 0, r.stderr
    r = run_cli("freeze", str(tmp_path / "run" / "checkpoint.pt"))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "not quantized" in r.stderr
    assert not (tmp_path / "run" / "model.qir").exists()
    assert "Traceback" not in r.stderr


def test_freeze_default_output_beside_checkpoint(tmp_path):
    r = run_cli(
        "train",
        "--model",
        "mlp",
        "--data",
        "digits",
        "--wbits",
        "4",
        "--abits",
        "4",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    assert r.returncode == 0, r.stderr
    r = run_cli("freeze", str(tmp_path / "run" / "checkpoint.pt"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "model.qir").is_file()
    assert "average weight bits" in r.stdout


@pytest.mark.slow
@NEEDS_GXX
def test_fpga_export_csim_is_exact_on_trained_model(trained):
    art = trained["dir"] / "fpga"
    r = run_cli("export", str(trained["qir"]), "--target", "fpga", "-o", str(art), "--json")
    assert r.returncode == 0, r.stderr
    manifest = last_json(r.stdout)
    assert manifest["target"] == "fpga" and manifest["profile"]["name"] == "pynq-z2"
    assert manifest["weight_mem_bits"] < manifest["estimates"]["hls4ml_default_bits"]
    data = load_dataset("digits")
    x = np.concatenate([data.train_x.numpy(), data.test_x.numpy()])[:1000]
    np.save(trained["dir"] / "x1000.npy", x)
    r = run_cli("simulate", str(art), "--inputs", str(trained["dir"] / "x1000.npy"), "--json")
    assert r.returncode == 0, r.stderr
    res = last_json(r.stdout)
    assert res["compared"] == ["fpga_csim", "frozen", "sim"]
    assert res["n"] == 1000 and res["exact"] == 1.0 and res["max_abs_diff"] == 0.0
    # (the artifact on its own dataset's test split, with accuracies: the learned-bitwidth
    # test below; a second `simulate` here was a second g++ build of the same project)


def test_export_mistakes_are_one_line(small_qir, tmp_path):
    bad = tmp_path / "bad.qir"
    bad.write_bytes(small_qir.read_bytes()[:300])
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    locked = tmp_path / "a-file"  # a file where a parent directory should be (root ignores
    locked.write_text("x")  # permission bits, so no chmod trick)
    cases = [
        (("export", str(bad), "--target", "fpga", "-o", str(tmp_path / "a")), "corrupt"),
        (("export", str(small_qir), "--target", "fpga", "-o", str(existing)), "--force"),
        (
            ("export", str(small_qir), "--target", "missing.toml", "-o", str(tmp_path / "b")),
            "no such file",
        ),
        (("export", str(small_qir), "--target", "zcu105", "-o", str(tmp_path / "c")), "zcu10"),
        (("export", str(small_qir), "--target", "fpga", "-o", str(locked / "d")), "cannot write"),
        (("simulate", str(existing)), "not a qcompile artifact"),
    ]
    for args, msg in cases:
        r = run_cli(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and msg in lines[0], (args, r.stderr)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "bad.qir", "exists"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sdq", "ddq", "dmbq"])
def test_learned_bitwidths_meet_the_budget_and_deploy_exactly(method, tmp_path):
    """Issue 7's acceptance, shortened to 6 epochs: train under --target-bits 2.0, inspect
    shows the budget met, and the fpga C simulation and the arm runner (under qemu) agree
    with the simulator bit for bit."""
    run = tmp_path / "run"
    r = run_cli("train", "--model", "lenet", "--data", "digits", "--method", method,
                "--target-bits", "2.0", "--epochs", "6", "--seed", "0", "--out", str(run),
                "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = tmp_path / "m.qir"
    assert run_cli("freeze", str(run / "checkpoint.pt"), "-o", str(model)).returncode == 0
    s = last_json(run_cli("inspect", str(model), "--json").stdout)
    assert s["avg_weight_bits"] <= 2.0
    assert any(x.get("levels") == "non-uniform" for x in s["layers"]) or method == "sdq"
    targets = (["fpga"] if shutil.which("g++") else []) + (
        ["arm"] if shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-gcc") else []
    )
    for target in targets:
        art = tmp_path / target
        r = run_cli("export", str(model), "--target", target, "-o", str(art))
        assert r.returncode == 0, r.stderr
        res = last_json(run_cli("simulate", str(art), "--json").stdout)
        assert res["n"] == 359 and res["exact"] == 1.0 and res["max_abs_diff"] == 0.0
        # the test split's labels: every implementation's accuracy, the artifact's included
        accs = {k: v for k, v in res.items() if k.startswith("acc_") and v is not None}
        assert len(accs) >= 3 and len(set(accs.values())) == 1 and res["acc_sim"] > 0.5, accs
