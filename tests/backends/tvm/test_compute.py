"""The TE program's shared accumulators: convs with one input and the same weights sum once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from qcompile.backends.tvm.compute import acc_dtype, grouped_acc, shared_key
from qcompile.ir import Conv2d, Graph, InputQuant, Node, QType, Requant, TensorInfo, Weights, ops
from qcompile.ir.graph import Add
from qcompile.passes import run_pipeline
from tests.backends.helpers import levels, requantized
from tests.backends.tvm.test_tvm_vector import TARGETS, _run


def _add(name: str, srcs: list[TensorInfo], mults: tuple[int, ...], bits: int) -> Node:
    """An add of ``srcs`` requantized to a signed ``bits``-wide output, clipped to it."""
    probe = Node(name, Add(mults), tuple(s.name for s in srcs), srcs[0], None, Requant(0, 0, 0, 64))
    ranges = [s.qtype.range for s in srcs]
    lo, hi = ops.acc_range(probe, ranges)
    shift = max(0, ops.signed_bits(lo, hi) - bits + 1)
    half = 1 << (bits - 1)
    out = TensorInfo(name, srcs[0].shape, QType(bits, True), 0.1)
    acc = ops.acc_bits_needed(probe, ranges)
    return Node(name, Add(mults), probe.inputs, out, None, Requant(shift, -half, half - 1, acc))


def recomputed_convs(kind: str) -> Graph:
    """Three pairs of convs with one input and the same weights, each conv requantized to its
    own scale, as a frozen residual block recomputes a projection for each sum it feeds: a
    depthwise 3x3 (the TE path), a 1x1 on a byte input and a 1x1 on a 13-bit sum (the GEMM,
    the latter by byte digits)."""
    rng = np.random.default_rng(17)
    x = TensorInfo("x", (6, 8, 8), QType(8, True), 0.05)

    def weights(shape: tuple[int, ...], bits: int) -> Weights:
        codes = rng.integers(0, 1 << bits, shape).astype(np.uint8)
        return Weights(bits, shape, codes, False, levels(rng, kind, bits, shape[0]))

    dw_w, q_w, pw_w = weights((6, 1, 3, 3), 4), weights((7, 6, 1, 1), 2), weights((7, 6, 1, 1), 2)
    dw_op = Conv2d((1, 1), (1, 1), groups=6)
    dw = requantized("dw", dw_op, x, dw_w, (6, 8, 8), rng)
    dw2 = requantized("dw_again", dw_op, x, dw_w, (6, 8, 8), rng, (-512, 511), 10)
    wide = _add("wide", [dw.output, dw2.output], (3, -5), 13)
    q = requantized("q", Conv2d(), dw.output, q_w, (7, 8, 8), rng)
    q2 = requantized("q_again", Conv2d(), dw.output, q_w, (7, 8, 8), rng, (-512, 511), 10)
    pw = requantized("pw", Conv2d(), wide.output, pw_w, (7, 8, 8), rng)
    pw2 = requantized("pw_again", Conv2d(), wide.output, pw_w, (7, 8, 8), rng, (-512, 511), 10)
    srcs = [q.output, q2.output, pw.output, pw2.output]
    out = _add("out", srcs, (2, 1, -3, 1), 12)
    nodes = (dw, dw2, wide, q, q2, pw, pw2, out)
    iq = InputQuant(8, -6.4, 0.05, -128)
    return Graph("recomputed", x, iq, nodes, ("out",))


def test_only_convs_with_one_input_geometry_and_weights_share_a_key():
    graph = recomputed_convs("uniform")
    keys = {n.name: shared_key(n, acc_dtype(n)) for n in graph.nodes}
    for a, b in (("dw", "dw_again"), ("q", "q_again"), ("pw", "pw_again")):
        assert keys[a] is not None and keys[a] == keys[b], a
    assert len({keys[n] for n in ("dw", "q", "pw")}) == 3
    assert keys["wide"] is None and keys["out"] is None  # adds have no accumulator to share


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", ["uniform", "nonuniform"])
def test_recomputed_convs_sum_once_and_each_requantizes_exactly(tmp_path, target, kind):
    graph = run_pipeline(recomputed_convs(kind))
    params = _run(graph, target, tmp_path / "r", (2, 3))
    owners = {p.split(".")[0] for p in params if p.endswith((".rows", ".codes"))}
    assert owners == {"dw", "q", "pw"}  # the second of each pair passes no weights
    scaled = {p.split(".")[0] for p in params if p.endswith(".mult")}
    assert scaled == {"dw", "dw_again", "q", "q_again", "pw", "pw_again"}  # its own requant


def test_depthwise_sums_proven_to_fit_16_bits_accumulate_in_int16():
    graph = recomputed_convs("uniform")
    nodes = {n.name: n for n in graph.nodes}
    assert nodes["dw"].requant.acc_bits <= 16  # the pair test above runs it in int16 on x86
    assert grouped_acc(nodes["dw"], "int32") == "int16"
    wider = replace(nodes["dw"], requant=replace(nodes["dw"].requant, acc_bits=17))
    assert grouped_acc(wider, "int32") == "int32"
    assert grouped_acc(nodes["q"], "int32") == "int32"  # dense convs run the GEMM in int32
