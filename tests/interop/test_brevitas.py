"""Brevitas -> QONNX (Brevitas's own export_qonnx) -> qcompile import: the imported model's
simulator equals qonnx's execution of the Brevitas file, the frozen PyTorch model, the FPGA
C simulation and the TVM cpu (and, once, ARM) artifacts, bit for bit; exporting it again
gives a QONNX model qonnx executes identically to the original.

The fast tier uses calibrated, untrained models; the slow tier trains an MLP and a CNN with a
residual add at 2, 4 and 8 bits for a few seconds each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from qcompile.backends.artifact import read_manifest
from qcompile.backends.hls4ml import CSim
from qcompile.backends.registry import deploy
from qcompile.backends.targets import load_target
from qcompile.backends.tvm import TvmRunner
from qcompile.interop.qonnx_export import to_qonnx
from qcompile.interop.qonnx_import import import_qonnx
from qcompile.interop.qonnx_run import integers, run_qonnx
from qcompile.ir import Graph
from qcompile.sim import quantize_input
from qcompile.sim.reference import FrozenTorch
from tests.interop import brevitas_models as bm
from tests.interop.helpers import float_inputs, simulated

ARM_TOOLS = bool(shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-gcc"))


def deploys_exactly(graph: Graph, x: np.ndarray, out: Path, every: bool = False) -> None:
    """The FPGA C simulation and the TVM cpu artifact compute the simulator's integers; with
    ``every``, so does the ARM one under qemu, and the GPU one builds (CUDA source and PTX;
    running it needs a GPU)."""
    xi = quantize_input(graph, x)
    want = simulated(graph, x)[0]
    deploy(graph, load_target("zcu104"), out / "fpga")
    csim = CSim(out / "fpga", graph)
    try:
        assert np.array_equal(csim(xi), want)
    finally:
        csim.close()
    deploy(graph, load_target("cpu"), out / "cpu")
    assert np.array_equal(TvmRunner(out / "cpu", graph, read_manifest(out / "cpu"))(xi), want)
    if every:
        deploy(graph, load_target("gpu"), out / "gpu")
        assert (out / "gpu" / "model.ptx").stat().st_size > 0
    if every and ARM_TOOLS:
        from qcompile.backends.tvm.arm import ArmRunner
        from qcompile.backends.tvm.runner import load_weights

        deploy(graph, load_target("arm"), out / "arm")
        info = read_manifest(out / "arm")
        assert np.array_equal(
            ArmRunner(out / "arm", graph, load_weights(out / "arm", info))(xi), want
        )


def check_import(src: Path, n: int = 64) -> Graph:
    """Import ``src`` and check it against qonnx's execution of ``src``; returns the graph."""
    graph, notes = import_qonnx(src)
    assert notes == []  # small models: the source's float32 sums are exact too
    x = float_inputs(graph.input.shape, n, spread=2.0)
    source = run_qonnx(onnx.load(src), x)[0]
    sim = simulated(graph, x)[0]
    unit = graph.tensors()[graph.outputs[0]].unit
    assert np.array_equal(integers(source, unit), sim)
    assert np.array_equal(source, (sim * unit).astype(np.float32))  # the very same floats
    frozen = FrozenTorch(graph)(quantize_input(graph, x))[graph.outputs[0]]
    assert np.array_equal(frozen, sim)
    again = to_qonnx(graph, batch=64)
    assert np.array_equal(run_qonnx(again, x)[0], source)  # the round trip
    return graph


def _calibrated(kind: str, bits: int) -> torch.nn.Module:
    torch.manual_seed(1)
    net = bm.MLP(bits) if kind == "mlp" else bm.ResCNN(bits)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 1, 8, 8))
    return net.eval()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_brevitas_calibrated_model_imports_exactly(kind, tmp_path) -> None:
    graph = check_import(bm.export(_calibrated(kind, 4), tmp_path / "m.onnx", batch=64))
    kinds = [n.kind for n in graph.nodes]
    if kind == "cnn":  # the residual is one add, the Trunc average pool a window sum
        assert {"conv2d", "maxpool", "add", "avgpool", "flatten", "dense"} <= set(kinds)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_brevitas_trained_model_imports_exactly(kind, bits, tmp_path) -> None:
    net = bm.trained(kind, bits, epochs=3)
    acc = bm.accuracy(net)
    assert acc > (0.5 if bits > 2 else 0.3)  # it learned something
    graph = check_import(bm.export(net, tmp_path / "m.onnx", batch=64), n=256)
    x = float_inputs(graph.input.shape, 256, seed=1, spread=2.0)
    deploys_exactly(graph, x, tmp_path, every=(kind, bits) == ("cnn", 4))
    # Brevitas's layers keep their widths; a 1-bit identity layer may carry a floor's offset
    assert {n.weights.bits for n in graph.weighted()} - {1} == {bits}
