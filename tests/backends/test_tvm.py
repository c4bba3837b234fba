"""TVM backend (cpu): compile the IR with Apache TVM for the host and compare the compiled
library with the integer simulator bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.backends.artifact import read_manifest
from qcompile.backends.targets import load_target
from qcompile.backends.tvm import TvmRunner, export_tvm
from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph
from qcompile.passes import run_pipeline
from qcompile.sim import Simulator
from tests.backends.helpers import ZOO, chain, random_inputs, zoo_graph

HOST = load_target("cpu")


def tvm_vs_sim(graph: Graph, out_dir, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    export_tvm(graph, out_dir, HOST)
    run = TvmRunner(out_dir, graph, read_manifest(out_dir))
    x = random_inputs(graph, n)
    return run(x), Simulator(graph).run(x)[graph.outputs[0]]


@pytest.mark.parametrize(("name", "shape", "opts"), ZOO, ids=[z[0] for z in ZOO])
def test_zoo_model_tvm_cpu_is_bit_exact(tmp_path, name, shape, opts):
    got, want = tvm_vs_sim(zoo_graph(name, shape, opts), tmp_path / "cpu")
    assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_every_weight_bitwidth_and_lut_kind_is_exact(tmp_path, levels):
    graph = run_pipeline(chain(levels))
    got, want = tvm_vs_sim(graph, tmp_path / levels)
    assert np.array_equal(got, want)


def test_cpu_artifact_contents_and_errors(tmp_path):
    graph = zoo_graph("mlp", (1, 8, 8), {})
    info = export_tvm(graph, tmp_path / "a", HOST)
    assert {p.name for p in (tmp_path / "a").iterdir()} == {
        "model.so",
        "weights.npz",
        "model.qir",
        "manifest.json",
    }
    assert info["target"] == "cpu" and info["params"][0] == "input"
    with pytest.raises(QCompileError, match="--force"):
        export_tvm(graph, tmp_path / "a", HOST)
    (tmp_path / "a" / "weights.npz").write_bytes(b"junk")
    with pytest.raises(QCompileError, match="cannot load"):
        TvmRunner(tmp_path / "a", graph, read_manifest(tmp_path / "a"))
