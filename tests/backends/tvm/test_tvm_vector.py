"""Exported artifacts on the vector kernels of issue 16: every conv and dense layer of the
1-8-bit chains takes the GEMM or GEMV on AVX2, AVX-512 and NEON (with and without dotprod),
and the artifact equals the simulator bit for bit (ARM under qemu); the aarch64 object's
hot loops are NEON table lookups and dot products."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from qcompile.backends.artifact import read_manifest
from qcompile.backends.cpu_features import running_features, target_isa
from qcompile.backends.registry import deploy
from qcompile.backends.targets import load_target
from qcompile.backends.tvm import TvmRunner, vector_conv
from qcompile.backends.tvm.arm import ArmRunner
from qcompile.backends.tvm.isa import isa_of
from qcompile.backends.tvm.runner import load_weights
from qcompile.passes import run_pipeline
from qcompile.sim import Simulator
from tests.backends.helpers import chain, conv_geometries, mixed_chain, random_inputs, wide_inputs
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
    info = deploy(graph, load_target(target), out)
    if info["target"] == "arm":
        run = ArmRunner(out, graph, load_weights(out, info))
    else:
        run = TvmRunner(out, graph, read_manifest(out))
    for n in batches:
        x = random_inputs(graph, n, seed=n)
        assert np.array_equal(run(x), Simulator(graph).run(x)[graph.outputs[0]]), n
    return info["params"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_every_width_takes_the_vector_kernels_and_is_exact(tmp_path, target, levels):
    graph = run_pipeline(chain(levels))
    # two input rows (the dense layers' GEMV), five (their GEMM; conv pixels end mid-tile)
    # and a larger batch
    params = _run(graph, target, tmp_path / "a", (2, 5, 64))
    weighted = [node.name for node in graph.weighted()]
    on_kernel = {p.split(".")[0] for p in params if p.endswith((".rows", ".table"))}
    assert on_kernel == set(weighted)  # no layer fell back to the TE path


@pytest.mark.parametrize("target", TARGETS)
def test_per_channel_widths_on_the_vector_kernels_are_exact(tmp_path, target):
    graph = run_pipeline(mixed_chain("nonuniform"))
    params = _run(graph, target, tmp_path / "mixed", (2, 40))
    assert {"conv.rows", "conv.order"} <= set(params)  # rows grouped by width, then reordered


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_strided_dilated_and_odd_convs_on_the_implicit_gemm_are_exact(tmp_path, target, levels):
    graph = run_pipeline(conv_geometries(levels))
    isa = isa_of(load_target(target).tvm_target())
    tensors = graph.tensors()
    for node in graph.nodes:  # every conv reads its taps from the packed stride phases
        x = tensors[node.inputs[0]]
        p = vector_conv.plan(node, x.qtype.range, "int32", isa, x.shape)
        assert p is not None and p.phases.offsets, node.name
    params = _run(graph, target, tmp_path / "g", (2, 3))
    assert {p.split(".")[0] for p in params if p.endswith(".rows")} == {"s2", "d2", "k53", "pw"}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_wide_inputs_run_the_gemm_per_byte_digit_and_are_exact(tmp_path, target, levels):
    graph = run_pipeline(wide_inputs(levels))
    isa = isa_of(load_target(target).tvm_target())
    tensors = graph.tensors()
    digits = {}
    for node in graph.nodes:  # every conv on the GEMM, the wide ones digit by digit
        x = tensors[node.inputs[0]]
        p = vector_conv.plan(node, x.qtype.range, "int32", isa, x.shape)
        assert p is not None, node.name
        digits[node.name] = p.gemm.digits and p.gemm.digits.count
    # aarch64's balanced digits put a full int16 range's top digit at +-128: three digits
    assert digits == {"s2": 3 if isa.signed_acts else 2, "pw": 3, "k3": 2}
    params = _run(graph, target, tmp_path / "w", (2, 5))
    assert {p.split(".")[0] for p in params if p.endswith(".rows")} == set(digits)


def _hot_loop_ops(tmp_path, target: str) -> set[str]:
    graph = run_pipeline(chain("nonuniform"))
    deploy(graph, load_target(target), tmp_path / target)
    text = subprocess.run(
        [OBJDUMP, "-d", str(tmp_path / target / "model.o")], capture_output=True, text=True
    ).stdout
    return {line.split("\t")[2].split()[0] for line in text.splitlines() if line.count("\t") >= 2}


@NEEDS_ARM
@pytest.mark.skipif(OBJDUMP is None, reason="needs aarch64-linux-gnu-objdump (binutils)")
def test_aarch64_objects_use_neon_table_lookups_and_dot_products(tmp_path):
    a76 = _hot_loop_ops(tmp_path, "rpi5")
    assert {"tbl", "sdot"} <= a76
    a72 = _hot_loop_ops(tmp_path, "rpi4")
    assert {"tbl", "smull", "smull2"} <= a72 and "sdot" not in a72
