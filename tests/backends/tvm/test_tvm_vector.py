"""Exported artifacts on the vector kernels of issue 16: every conv and dense layer of the
1-8-bit chains takes the GEMM or GEMV on AVX2, AVX-512 and NEON (with and without dotprod),
and the artifact equals the simulator bit for bit (ARM under qemu); the aarch64 object's
hot loops are NEON table lookups and dot products."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qcompile.backends.artifact import read_manifest
from qcompile.backends.cpu_features import running_features, target_isa
from qcompile.backends.registry import deploy
from qcompile.backends.targets import load_target
from qcompile.backends.tvm import TvmRunner, vector_conv, vector_dense
from qcompile.backends.tvm.arm import ArmRunner
from qcompile.backends.tvm.isa import isa_of
from qcompile.backends.tvm.runner import load_weights
from qcompile.ir import Graph, Node
from qcompile.passes import run_pipeline
from qcompile.sim import Simulator
from tests.backends.helpers import (
    ZOO,
    chain,
    conv_geometries,
    mixed_chain,
    one_channel_convs,
    random_inputs,
    row_tiled_convs,
    wide_inputs,
    wide_one_channel_conv,
    zoo_graph,
)
from tests.conftest import NEEDS_ARM, NEEDS_GXX

OBJDUMP = shutil.which("aarch64-linux-gnu-objdump")


def _x86(name: str) -> object:
    ok = target_isa(load_target(name).tvm_target()) <= running_features()
    marks = [NEEDS_GXX, pytest.mark.skipif(not ok, reason=f"this CPU cannot run {name} code")]
    return pytest.param(name, marks=marks)


TARGETS = [
    _x86("x86-64-v3"),
    _x86("x86-64-v4"),
    pytest.param("rpi4", marks=NEEDS_ARM),  # cortex-a72: tbl + smull
    pytest.param("rpi5", marks=NEEDS_ARM),  # cortex-a76: tbl + sdot
]


def _run(graph, target: str, out, batches: tuple[int, ...]) -> list[str]:
    """Export ``graph`` for ``target``, assert it equals the simulator on each batch size,
    and return the artifact's parameter names."""
    return _check(graph, target, out, deploy(graph, load_target(target), out), batches)


def _check(graph, target: str, out, info, batches: tuple[int, ...]) -> list[str]:
    """Assert the artifact in ``out`` equals the simulator on each batch size, and return
    its parameter names."""
    if info["target"] == "arm":
        run = ArmRunner(out, graph, load_weights(out, info))
    else:
        run = TvmRunner(out, graph, read_manifest(out))
    for n in batches:
        x = random_inputs(graph, n, seed=n)
        assert np.array_equal(run(x), Simulator(graph).run(x)[graph.outputs[0]]), n
    return info["params"]


@pytest.fixture(scope="module")
def chain_on(tmp_path_factory) -> Callable[[str, str], tuple[Graph, Path, dict]]:
    """``chain_on(target, levels)``: the 1-8-bit chain exported for ``target``, once per
    module: the exactness sweep and the aarch64 disassembly read the same objects (two TVM
    builds less)."""
    built: dict[tuple[str, str], tuple[Graph, Path, dict]] = {}
    root = tmp_path_factory.mktemp("chain")

    def get(target: str, levels: str) -> tuple[Graph, Path, dict]:
        if (target, levels) not in built:
            graph = run_pipeline(chain(levels))
            out = root / f"{levels}-{target}"
            built[target, levels] = graph, out, deploy(graph, load_target(target), out)
        return built[target, levels]

    return get


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_every_width_takes_the_vector_kernels_and_is_exact(chain_on, target, levels):
    graph, out, info = chain_on(target, levels)
    # two input rows (the dense layers' GEMV), five (their GEMM; conv pixels end mid-tile)
    # and a larger batch
    params = _check(graph, target, out, info, (2, 5, 64))
    weighted = [node.name for node in graph.weighted()]
    on_kernel = {p.split(".")[0] for p in params if p.endswith((".rows", ".table"))}
    assert on_kernel == set(weighted)  # no layer fell back to the TE path


@pytest.mark.parametrize("target", TARGETS)
def test_per_channel_widths_on_the_vector_kernels_are_exact(tmp_path, target):
    graph = run_pipeline(mixed_chain("nonuniform"))
    params = _run(graph, target, tmp_path / "mixed", (2, 40))
    assert {"conv.rows", "conv.order"} <= set(params)  # rows grouped by width, then reordered


def _conv_plans(graph: Graph, target: str) -> list[tuple[Node, object]]:
    """Each conv of ``graph`` with the implicit-GEMM plan ``target`` gives it (None: none)."""
    isa = isa_of(load_target(target).tvm_target())
    tensors = graph.tensors()
    shapes = [tensors[node.inputs[0]] for node in graph.nodes]
    return [
        (node, vector_conv.plan(node, x.qtype.range, "int32", isa, x.shape))
        for node, x in zip(graph.nodes, shapes, strict=True)
    ]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_strided_dilated_and_odd_convs_on_the_implicit_gemm_are_exact(tmp_path, target, levels):
    graph = run_pipeline(conv_geometries(levels))
    for node, p in _conv_plans(graph, target):  # taps read from the packed stride phases
        assert p is not None and p.phases.offsets, node.name
    params = _run(graph, target, tmp_path / "g", (2, 3))
    assert {p.split(".")[0] for p in params if p.endswith(".rows")} == {"s2", "d2", "k53", "pw"}


@pytest.mark.parametrize("target", TARGETS)
def test_x86_gemm_tiles_skip_the_columns_past_the_output_and_are_exact(tmp_path, target):
    # x86: pixel tiles of whole output-row vectors only (the phase planes' padding columns
    # are not computed); aarch64 keeps its contiguous tiles
    graph = run_pipeline(row_tiled_convs("uniform"))
    lanes = isa_of(load_target(target).tvm_target()).lanes
    for node, p in _conv_plans(graph, target):
        ow = node.output.shape[2]
        rows = ow // lanes if not target.startswith("rpi") and ow % lanes == 0 else 0
        assert p.gemm.geometry.row_vecs == rows, node.name
    _run(graph, target, tmp_path / "rows", (2, 3))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_one_channel_convs_pack_neighbouring_columns_and_are_exact(tmp_path, target, levels):
    graph = run_pipeline(one_channel_convs(levels))
    for node, p in _conv_plans(graph, target):  # four columns per pixel, not one channel
        kh, kw = node.weights.shape[2:]
        assert p is not None and p.columns, node.name
        assert p.gemm.kd == -(-kw // 4) * 4 * kh  # bytes per output: 40 for 5x5, 12 for 3x3
    params = _run(graph, target, tmp_path / "c", (2, 3))
    assert {p.split(".")[0] for p in params if p.endswith(".rows")} == {"k55", "s21"}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_wide_inputs_run_the_gemm_per_byte_digit_and_are_exact(tmp_path, target, levels):
    graph = run_pipeline(wide_inputs(levels))
    digits = {}
    for node, p in _conv_plans(graph, target):  # every conv on the GEMM, wide ones by digit
        assert p is not None, node.name
        digits[node.name] = p.gemm.digits and p.gemm.digits.count
    # aarch64's balanced digits put a full int16 range's top digit at +-128: three digits
    signed = isa_of(load_target(target).tvm_target()).signed_acts
    assert digits == {"s2": 3 if signed else 2, "pw": 3, "k3": 2}
    params = _run(graph, target, tmp_path / "w", (2, 5))
    assert {p.split(".")[0] for p in params if p.endswith(".rows")} == set(digits)


@pytest.mark.parametrize("target", TARGETS)
def test_a_one_channel_conv_on_a_wide_input_packs_columns_per_digit(tmp_path, target):
    # both packings at once: each byte digit's plane holds four neighbouring columns
    graph = run_pipeline(wide_one_channel_conv("nonuniform"))
    node, p = _conv_plans(graph, target)[0]
    assert p is not None and p.columns and p.gemm.digits is not None, node.name
    params = _run(graph, target, tmp_path / "wc", (2, 3))
    assert {p.split(".")[0] for p in params if p.endswith(".rows")} == {"k55", "k3"}


@pytest.mark.parametrize("target", TARGETS[:1])
def test_resnet20_is_exact_with_tvm_reusing_dead_buffers(tmp_path, target):
    # TVM's StorageRewrite gives a dead buffer's memory to later ones, and sees accesses
    # only through the buffer they name: when the GEMM's weight scratch was int8, read
    # through an int32 view, it looked dead once decoded and resnet20's second conv wrote
    # its outputs over it (every output wrong on AVX2 and AVX-512; the chains above passed)
    z = next(z for z in ZOO if z[0] == "resnet20")
    _run(zoo_graph(*z), target, tmp_path / "r", (3,))


def test_neon_gemv_folds_affine_zero_points_and_x86_does_not():
    # aarch64 multiplies the scaled codes (int8 when step * (2^b - 1) <= 127) and adds
    # zero * sum(a) per row; exactness: the chains above, on rpi4 and rpi5
    graph = run_pipeline(chain("uniform"))
    tensors = graph.tensors()
    dense = [n for n in graph.nodes if n.kind == "dense"]
    for target in ("rpi4", "rpi5", "x86-64-v3"):
        isa = isa_of(load_target(target).tvm_target())
        folded = set()
        for node in dense:
            p = vector_dense.plan(node, tensors[node.inputs[0]].qtype.range, "int32", isa)
            assert p is not None, node.name
            if p.gemv.fold:
                folded.add(node.name)
        w = {n.name: n.weights for n in dense}
        small = {k for k, v in w.items() if v.levels.step * ((1 << v.bits) - 1) <= 127}
        assert folded == (small if isa.arch == "arm" else set()), target
        assert target.startswith("x86") or {"dense1", "dense4"} <= folded


def test_neon_gemv_finishes_four_rows_per_vector():
    # aarch64: each four rows' sums are addp(addp(r0, r1), addp(r2, r3)), folded, corrected
    # and stored as one vector; x86 keeps its per-row horizontal sums
    from tvm import tirx

    from qcompile.backends.tvm.gemv_lut import gemv_stmt

    graph = run_pipeline(chain("uniform"))
    node = next(n for n in graph.nodes if n.name == "dense4")  # 24 rows
    x = graph.tensors()[node.inputs[0]]
    for target in ("rpi4", "rpi5", "x86-64-v3"):
        p = vector_dense.plan(
            node, x.qtype.range, "int32", isa_of(load_target(target).tvm_target())
        )
        arrs = vector_dense.arrays(p, node)
        bufs = {
            ("stored" if k == "rows" else k): tirx.decl_buffer(a.shape, str(a.dtype), name=k)
            for k, a in arrs.items()
        }
        xp = (1, p.gemv.mac.planes, p.gemv.layout.max_kr)
        bufs["xp"] = tirx.decl_buffer(xp, "uint8", name="xp")
        bufs["acc"] = tirx.decl_buffer((p.acc_rows, 1), "int32", name="acc")
        text = gemv_stmt(p.gemv, bufs, tirx.const(1, "int32")).script()
        # one block of rows (8 on rpi5, 12 on rpi4) in the loop body: three addp per four
        per_block = 3 * p.gemv.rows // 4 if target.startswith("rpi") else 0
        assert text.count("llvm.aarch64.neon.addp") == per_block, target


def _hot_loop_insns(chain_on, target: str) -> list[str]:
    """The instructions (mnemonic and operands) of the chain's aarch64 object."""
    _, out, _ = chain_on(target, "nonuniform")
    text = subprocess.run(
        [OBJDUMP, "-d", str(out / "model.o")], capture_output=True, text=True
    ).stdout
    return [line.split("\t", 2)[2] for line in text.splitlines() if line.count("\t") >= 2]


def _ops(insns: list[str]) -> set[str]:
    return {i.split()[0] for i in insns}


@NEEDS_ARM
@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils)")
def test_aarch64_objects_use_neon_table_lookups_and_dot_products(chain_on):
    a76 = _hot_loop_insns(chain_on, "rpi5")
    assert {"tbl", "sdot"} <= _ops(a76)
    # the GEMM takes each weight word from a 16-byte load by a lane broadcast (dup, or
    # sdot's own lane index), not by a load-and-broadcast per word (ld1r)
    assert any(re.match(r"(dup\s+v\d+\.4s, v\d+\.s|sdot\s.*\.4b)\[", i) for i in a76)
    a72 = _ops(_hot_loop_insns(chain_on, "rpi4"))
    # narrow layers add products into int16 lanes (smlal, smlal2); 8-bit x 8-bit ones
    # widen each product pair to int32 (smull, smull2 + saddlp)
    assert {"tbl", "smlal", "smlal2", "smull", "smull2"} <= a72 and "sdot" not in a72
