"""Shared checks of the QONNX tests: run a model under qonnx's executor and compare with the
integer simulator, np.array_equal on the integers."""

from __future__ import annotations

import numpy as np
import onnx

from qcompile.interop.qonnx_export import to_qonnx
from qcompile.interop.qonnx_run import integers, output_units, run_qonnx
from qcompile.ir import Graph, Node, QType, Requant, TensorInfo, ops
from qcompile.sim import Simulator, quantize_input


def float_inputs(shape: tuple[int, ...], n: int, seed: int = 0, spread: float = 1.5) -> np.ndarray:
    """Normal inputs, a few far outside any input quantizer's range, and exact zeros."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, spread, (n, *shape)).astype(np.float32)
    x[: max(1, n // 8)] *= 1000  # saturate the input quantizer
    x[-1] = 0.0
    return x


def simulated(graph: Graph, x: np.ndarray) -> list[np.ndarray]:
    out = Simulator(graph).run(quantize_input(graph, x))
    return [out[t] for t in graph.outputs]


def exported_ints(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """qonnx's execution of a qcompile export, read back as integers."""
    reals = run_qonnx(model, x)
    return [integers(r, u) for r, u in zip(reals, output_units(model), strict=True)]


def assert_export_exact(graph: Graph, x: np.ndarray, batch: int | None = None) -> onnx.ModelProto:
    """Export ``graph``, check it with onnx.checker, run it under qonnx: the integers equal the
    simulator's, and the real outputs are exactly those integers times their units."""
    model = to_qonnx(graph, batch or len(x))
    onnx.checker.check_model(model)
    reals = run_qonnx(model, x)
    for real, unit, ref in zip(reals, output_units(model), simulated(graph, x), strict=True):
        assert np.array_equal(integers(real, unit), ref)
        assert np.array_equal(real, (ref * unit).astype(real.dtype))
    return model


def sized(
    name: str,
    op: ops.Op,
    srcs: list[TensorInfo],
    weights: object = None,
    shift: int = 0,
    mult: int | tuple[int, ...] = 1,
    out: QType | None = None,
    clip: tuple[int, int] | None = None,
    scale: float = 1.0,
    bias: tuple[int, ...] | None = None,
) -> Node:
    """A node sized as freeze sizes it: accumulator width from its inputs' ranges; the output
    type ``out`` clipped to ``clip`` (default its range), or (``out`` None) the type that
    holds every shifted value."""
    ranges = [s.qtype.range for s in srcs]
    ins = tuple(s.name for s in srcs)
    probe = Node(name, op, ins, srcs[0], weights, Requant(shift, 0, 0, 64, mult, bias))  # type: ignore[arg-type]
    shape = ops.infer_shape(probe, [s.shape for s in srcs])
    acc_bits = ops.acc_bits_needed(probe, ranges)
    if out is None:
        lo, hi = ops.shifted_range(probe, ranges)
        out = QType.fitting(lo, hi)
    lo, hi = clip or out.range
    info = TensorInfo(name, shape, out, scale)
    return Node(name, op, ins, info, weights, Requant(shift, lo, hi, acc_bits, mult, bias))  # type: ignore[arg-type]


def passthrough(name: str, op: ops.Op, src: TensorInfo) -> Node:
    """A max pool or flatten node: its input's type and scale."""
    shape = ops.infer_shape(Node(name, op, (src.name,), src), [src.shape])
    return Node(name, op, (src.name,), TensorInfo(name, shape, src.qtype, src.scale))
