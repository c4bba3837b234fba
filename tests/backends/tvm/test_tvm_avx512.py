"""The cpu backend's dense layers on AVX-512 targets: byte-range inputs on the vector GEMV of
issue 16, int16-range inputs on the AVX-512 LUT kernel (vpermw); chosen from the target's
features, bit-exact against the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.backends.artifact import read_manifest
from qcompile.backends.cpu_features import running_features, target_isa
from qcompile.backends.registry import deploy
from qcompile.backends.targets import CpuTarget, load_target
from qcompile.backends.tvm import TvmRunner
from qcompile.backends.tvm.avx512_dense import Avx512, plan, target_features
from qcompile.backends.tvm.compute import acc_dtype
from qcompile.backends.tvm.export import compile_graph
from qcompile.ir import ops
from qcompile.ir.graph import Dense, Graph, InputQuant, Node, Requant, Table, Weights
from qcompile.ir.types import QType, TensorInfo
from qcompile.sim import Simulator
from tests.conftest import NEEDS_GXX

HOST = load_target("cpu")
# The host profile's target is built from the features this CPU really has (/proc/cpuinfo and
# LLVM's host detection; $QCOMPILE_CPU_FEATURES can only take features away for a test run).
FEATS = target_features(HOST.tvm_target())
needs_bw = pytest.mark.skipif(
    FEATS is None, reason="this CPU lacks AVX512BW (as /proc/cpuinfo or $QCOMPILE_CPU_FEATURES say)"
)
SKX = CpuTarget("skx", mtriple="x86_64-linux-gnu", mcpu="skylake-avx512")
ROWS, K = 64, 512
INT8, INT16 = QType(8, True), QType(16, True)


def dense_graph(bits: int, x_type: QType = INT8, per_channel: bool = True, seed: int = 0) -> Graph:
    """One dense layer on inputs of ``x_type``, int8 table levels, a bias and a
    requantization that rounds and saturates (shift 3 into 12 bits)."""
    rng = np.random.default_rng(seed)
    x = TensorInfo("x", (K,), x_type, 1.0)
    lut = rng.integers(-127, 128, (ROWS if per_channel else 1, 1 << bits))
    lut[0, 0], lut[-1, -1] = -127, 127  # the level range's extremes
    bias = tuple(int(b) for b in rng.integers(-8000, 8000, ROWS))
    codes = rng.integers(0, 1 << bits, (ROWS, K)).astype(np.uint8)
    w = Weights(bits, (ROWS, K), codes, False, Table(lut.astype(np.int64)))
    probe = Node("y", Dense(), ("x",), x, w, Requant(0, 0, 0, 64))
    acc = ops.acc_bits_needed(probe, [x.qtype.range])
    y = TensorInfo("y", (ROWS,), QType(12, True), 8.0)
    shift = 3 if x_type.bits == 8 else 10
    node = Node("y", Dense(), ("x",), y, w, Requant(shift, -2048, 2047, acc, bias=bias))
    zero = x_type.range[0]
    return Graph("dense", x, InputQuant(x_type.bits, zero, 1.0, zero), (node,), ("y",))


def inputs(x_type: QType = INT8, n: int = 16) -> np.ndarray:
    lo, hi = x_type.range
    x = np.random.default_rng(1).integers(lo, hi + 1, (n, K))
    x[0], x[1], x[2, ::2] = lo, hi, lo  # the input range's extremes
    return x


def asm(graph: Graph, target: CpuTarget) -> tuple[str, list[str]]:
    ex, weights = compile_graph(graph, target)
    return ex.mod.inspect_source("asm"), [kind for _, kind, _ in weights]


@needs_bw
@NEEDS_GXX
@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("x_type", [INT8, INT16], ids=["int8_inputs", "int16_inputs"])
def test_dense_takes_a_vector_kernel_and_is_exact(tmp_path, bits, x_type):
    """Byte-range inputs take the vector GEMV (issue 16: as fast on one row, and it decodes
    once for batches); int16 inputs the AVX-512 vpermw LUT kernel."""
    graph = dense_graph(bits, x_type, per_channel=bits != 4)
    assert acc_dtype(graph.nodes[0]) == "int32"
    text, kinds = asm(graph, HOST)
    if x_type == INT8:
        # 1-bit: codes times the signed input bytes (binary mode), no offset to correct
        assert kinds == ["rows", "levels", *(["comp"] if bits > 1 else []), "bias"]
        assert ("vpdpbusd" if FEATS.vnni else "vpmaddubsw") in text
    else:
        assert kinds == ["codes", "table", "bias"] and "vpermw" in text
    info = deploy(graph, HOST, tmp_path / "a")
    assert info["params"] == ["input", *[f"y.{k}" for k in kinds], "output"]
    x = inputs(x_type)
    got = TvmRunner(tmp_path / "a", graph, read_manifest(tmp_path / "a"))(x)
    want = Simulator(graph).run(x)["y"]
    assert np.array_equal(got, want)
    assert want.min() == -2048 and want.max() == 2047  # saturation was exercised


@pytest.mark.skipif(
    not target_isa(SKX.tvm_target()) <= running_features(),
    reason="this CPU lacks skylake-avx512's features (AVX-512 F/BW/CD/DQ/VL)",
)
@NEEDS_GXX
def test_avx512bw_without_vnni_uses_vpmaddwd(tmp_path):
    # skylake-avx512: BW but neither VNNI nor VBMI; runs on any CPU that has AVX-512 BW.
    assert target_features(SKX.tvm_target()) == Avx512(vnni=False, vbmi=False)
    graph = dense_graph(2, INT16)  # int16 inputs: the LUT kernel (byte inputs: the GEMV)
    text, kinds = asm(graph, SKX)
    assert "table" in kinds and "vpermw" in text and "vpmaddwd" in text and "vpermb" not in text
    info = deploy(graph, SKX, tmp_path / "skx")
    assert {"avx512bw", "avx512f"} <= set(info["isa_features"])
    assert "avx512vnni" not in info["isa_features"]
    x = inputs(INT16)
    got = TvmRunner(tmp_path / "skx", graph, info)(x)
    assert np.array_equal(got, Simulator(graph).run(x)["y"])


def test_arm_and_plain_x86_targets_take_the_vector_gemv():
    """No AVX-512 kernel where the target lacks AVX-512 BW: the dense layer runs the vector
    GEMV of issue 16 instead (tbl/sdot on a dotprod ARM core, vpshufb on AVX2)."""
    graph = dense_graph(2)
    arm = load_target("arm")
    assert target_features(arm.tvm_target()) is None
    assert target_features(CpuTarget("hsw", mcpu="haswell").tvm_target()) is None
    assert target_features({"kind": "cuda", "arch": "sm_90"}) is None
    text, kinds = asm(graph, arm)
    assert kinds == ["rows", "levels", "bias"] and "vperm" not in text
    assert "tbl\t" in text or "tbl " in text


def test_portable_levels_and_a_host_without_avx512(monkeypatch):
    """x86-64-v3 and a host whose CPU lacks AVX-512 (simulated: an AVX2 cloud VM) never get
    AVX-512 code (their dense layers take the AVX2 vector GEMV); x86-64-v4 gets the vpermw
    kernel without VNNI or VBMI."""
    graph = dense_graph(2)
    v3, v4 = load_target("x86-64-v3"), load_target("x86-64-v4")
    assert target_features(v3.tvm_target()) is None
    assert target_features(v4.tvm_target()) == Avx512(vnni=False, vbmi=False)
    text, _ = asm(dense_graph(2, INT16), v4)
    assert "vpermw" in text and "vpermb" not in text and "vpdpwssd" not in text
    monkeypatch.setenv("QCOMPILE_CPU_FEATURES", "x86-64-v3,aes,pclmul,vaes,vpclmulqdq,gfni")
    host = HOST.tvm_target()
    assert host["mcpu"] == "x86-64-v3" and target_features(host) is None
    for target in (v3, HOST):
        text, kinds = asm(graph, target)
        assert kinds == ["rows", "levels", "comp", "bias"] and "zmm" not in text
        assert "vpshufb" in text and "vpmaddubsw" in text


def test_plan_refuses_layers_outside_the_kernel():
    feats = Avx512(vnni=True, vbmi=True)
    node = dense_graph(2).nodes[0]
    assert plan(node, (-128, 127), "int32", feats).byte
    assert not plan(node, (0, 255), "int32", feats).byte  # uint8 x: the int16 kernel
    assert not plan(node, (-128, 127), "int32", Avx512(vnni=True, vbmi=False)).byte
    assert plan(node, (-(1 << 16), 0), "int32", feats) is None  # x beyond int16
    assert plan(node, (-128, 127), "int64", feats) is None  # wide accumulator
    assert plan(node, (-128, 127), "int32", None) is None
    assert plan(_zeros(2, K - 16), (-128, 127), "int32", feats) is None  # K % 32 != 0
    assert plan(_zeros(8, K), (-128, 127), "int32", feats) is None  # 8-bit codes
    assert plan(_zeros(2, K), (-128, 127), "int32", feats) is not None


def _zeros(bits: int, k: int) -> Node:
    w = Weights(bits, (ROWS, k), np.zeros((ROWS, k), np.uint8), False,
                Table(np.zeros((1, 1 << bits), np.int64)))  # fmt: skip
    x = TensorInfo("x", (k,), QType(8, True), 1.0)
    return Node("y", Dense(), ("x",), x, w, Requant(0, -128, 127, 32))
