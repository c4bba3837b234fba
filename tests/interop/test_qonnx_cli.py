"""The command line around QONNX, run as a user runs it: ``qcompile import``, ``qcompile export
--target qonnx`` and ``qcompile simulate --save-outputs``, whose saved integers equal qonnx's
execution of the exported file."""

from __future__ import annotations

import numpy as np
import onnx

from qcompile.interop.qonnx_run import integers, output_units, run_qonnx
from tests.conftest import last_json, run_cli
from tests.interop.test_qonnx_import import mlp


def test_import_export_simulate_round_trip(tmp_path) -> None:
    src = mlp(tmp_path / "m.onnx")
    r = run_cli("import", str(src), "--json")
    assert r.returncode == 0, r.stderr
    info = last_json(r.stdout)
    qir = tmp_path / "m.qir"  # beside the model by default
    assert info["qir"] == str(qir) and qir.is_file() and info["notes"] == []

    out = tmp_path / "m_qonnx.onnx"
    r = run_cli("export", str(qir), "--target", "qonnx", "-o", str(out), "--batch", "4")
    assert r.returncode == 0, r.stderr
    again = run_cli("export", str(qir), "--target", "qonnx", "-o", str(out))
    assert again.returncode == 2 and again.stderr.strip().startswith("error:")
    assert "--force" in again.stderr and "Traceback" not in again.stderr

    x = np.random.default_rng(0).normal(0, 4, (10, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    saved = tmp_path / "outs"
    r = run_cli("simulate", str(qir), "--inputs", str(tmp_path / "x.npy"), "--save-outputs",
                str(saved), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert last_json(r.stdout)["exact"] == 1.0
    assert sorted(p.name for p in saved.iterdir()) == ["frozen.npy", "inputs.npy", "sim.npy"]
    model = onnx.load(out)
    qonnx = integers(run_qonnx(model, np.load(saved / "inputs.npy"))[0], output_units(model)[0])
    assert np.array_equal(qonnx, np.load(saved / "sim.npy"))
    assert np.array_equal(np.load(saved / "frozen.npy"), np.load(saved / "sim.npy"))


def test_import_refusal_is_one_line_without_traceback(tmp_path) -> None:
    src = mlp(tmp_path / "m.onnx", act={"mode": "ROUND"})
    r = run_cli("import", str(src), "-o", str(tmp_path / "x.qir"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: node act_q (Quant)")
    assert not (tmp_path / "x.qir").exists()
