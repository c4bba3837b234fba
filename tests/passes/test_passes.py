"""Each pass as Before -> Expected on small hand-made graphs."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.ir import (
    Affine,
    Clip,
    Dense,
    Flatten,
    Graph,
    InputQuant,
    Node,
    QType,
    Requant,
    TensorInfo,
    VerifyError,
    Weights,
    verify,
)
from qcompile.passes import PIPELINE, eliminate_dead, fuse_activation, pack_codes, run_pipeline
from qcompile.sim import Simulator

X = TensorInfo("x", (2, 2), QType(4, True))
IQ = InputQuant(4, -0.8, 0.1, -8)


def weights(packed: bool = False) -> Weights:
    codes = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 2, 2]], dtype=np.uint8)
    levels = Affine(2, np.array([-3], dtype=np.int64))  # -3, -1, 1, 3
    w = Weights(2, (3, 4), codes, False, levels)
    return w.pack() if packed else w


def dense(out: str, lo: int, hi: int, qtype: QType, w: Weights | None = None) -> Node:
    return Node(
        out,
        Dense(),
        ("flat",),
        TensorInfo(out, (3,), qtype),
        w or weights(),
        Requant(1, lo, hi, 10, bias=(10, -10, 0)),
    )


def clip(src: str, out: str, lo: int, hi: int) -> Node:
    return Node(
        out, Clip(), (src,), TensorInfo(out, (3,), QType(6, True)), None, Requant(0, lo, hi, 8)
    )


FLAT = Node("flat", Flatten(), ("x",), TensorInfo("flat", (4,), QType(4, True)))


def graph(*nodes: Node, outputs: tuple[str, ...]) -> Graph:
    return Graph("g", X, IQ, (FLAT, *nodes), outputs)


def inputs() -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(-8, 8, 5)] * 4, indexing="ij"), -1).reshape(-1, 2, 2)


def test_fuse_activation_merges_relu_into_producer():
    before = graph(dense("d", -20, 20, QType(6, True)), clip("d", "r", 0, 31), outputs=("r",))
    after = verify(fuse_activation(verify(before)))
    # Expected: the dense node keeps its name, takes the clip's output tensor and bounds.
    fused = after.nodes[-1]
    assert [n.kind for n in after.nodes] == ["flatten", "dense"]
    assert (fused.name, fused.output.name) == ("d", "r")
    assert fused.requant == Requant(1, 0, 20, 10, bias=(10, -10, 0))
    x = inputs()
    assert np.array_equal(Simulator(before).run(x)["r"], Simulator(after).run(x)["r"])


def test_fuse_activation_leaves_shared_or_rescaling_clips():
    shared = graph(dense("d", -20, 20, QType(6, True)), clip("d", "r", 0, 31), outputs=("r", "d"))
    assert [n.kind for n in fuse_activation(verify(shared)).nodes] == ["flatten", "dense", "clip"]
    rescale = Node(
        "r", Clip(), ("d",), TensorInfo("r", (3,), QType(6, True)), None, Requant(1, 0, 31, 8)
    )
    g = graph(dense("d", -20, 20, QType(6, True)), rescale, outputs=("r",))
    assert len(fuse_activation(verify(g)).nodes) == 3


def test_eliminate_dead_drops_unreachable_nodes():
    before = graph(dense("d", -20, 20, QType(6, True)), clip("d", "unused", 0, 5), outputs=("d",))
    after = eliminate_dead(verify(before))
    assert [n.name for n in after.nodes] == ["flat", "d"]


def test_pack_codes_packs_without_changing_values():
    before = graph(dense("d", -20, 20, QType(6, True)), outputs=("d",))
    after = verify(pack_codes(verify(before)))
    w0, w1 = before.nodes[1].weights, after.nodes[1].weights
    assert not w0.packed and w1.packed and w1.data.dtype == np.uint32
    assert w1.data.shape == (1,)  # 12 two-bit codes fit one word
    assert int(w1.data[0]) == 0b10_10_01_01_00_01_10_11_11_10_01_00
    assert np.array_equal(w0.decoded(), w1.decoded())


def test_pipeline_verifies_between_passes():
    assert (fuse_activation, eliminate_dead, pack_codes) == PIPELINE
    bad = graph(dense("d", -20, 20, QType(6, True)), outputs=("nowhere",))
    with pytest.raises(VerifyError, match="graph output nowhere"):
        run_pipeline(bad)
    good = run_pipeline(
        graph(dense("d", -20, 20, QType(6, True)), clip("d", "r", 0, 31), outputs=("r",))
    )
    assert [n.kind for n in good.nodes] == ["flatten", "dense"] and good.nodes[1].weights.packed
