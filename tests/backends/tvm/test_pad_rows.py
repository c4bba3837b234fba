"""Grouped convs' zero-padded input copies as whole-row shuffles (``pad_rows``)."""

from __future__ import annotations

import re

import pytest

from qcompile.backends.targets import load_target
from qcompile.passes import run_pipeline
from tests.backends.helpers import grouped_geometries
from tests.backends.tvm.test_tvm_vector import TARGETS, _run


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", ["uniform", "nonuniform"])
def test_grouped_convs_on_padded_rows_equal_the_simulator(tmp_path, target, kind):
    _run(run_pipeline(grouped_geometries(kind)), target, tmp_path / "g", (2, 3))


@pytest.mark.parametrize("target", ["x86-64-v3", "rpi5"])
def test_every_padded_copy_is_stored_as_whole_rows(target):
    from tvm import te

    from qcompile.backends.tvm.avx512_dense import target_features
    from qcompile.backends.tvm.compute import build_program
    from qcompile.backends.tvm.cpu import schedule_cpu
    from qcompile.backends.tvm.isa import isa_of

    tvm_target = load_target(target).tvm_target()
    graph = run_pipeline(grouped_geometries("uniform"))
    prog = build_program(graph, target_features(tvm_target), isa_of(tvm_target), batch=1)
    text = schedule_cpu(te.create_prim_func(prog.params), prog.kernels).script()
    stores = [line for line in text.splitlines() if re.search(r"\b\w+_pad\[.*\] =", line)]
    # a strided phase's columns by one shuffle (dw2: 4 phases, dw3: 2, g2: 4), each row one
    # vector; stride-1 rows (dw1) stored over a row of zeros, no shuffle
    assert sum("T.Shuffle(" in line for line in stores) == 10
    assert not any("if_then_else" in line for line in stores)  # no per-byte bounds checks
    dw1 = [line for line in stores if "dw1_pad[" in line]
    assert all("T.Shuffle(" not in line for line in dw1)
    assert any(re.search(r", 1:12\] = input_i32\[.*T\.Ramp\(0, 1, 11\)\]", x) for x in dw1)
    assert all(re.search(r", (0:13|1:12)\] = ", line) for line in dw1)  # whole rows
