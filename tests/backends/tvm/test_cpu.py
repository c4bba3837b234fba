"""The CPU schedule's grouped convs: whole-vector output rows requantized where they were
summed, shorter rows summed on a flat grid (x86)."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.backends.targets import load_target
from qcompile.ir import Conv2d, QType, TensorInfo
from qcompile.passes import run_pipeline
from tests.backends.helpers import conv_stack, grouped_geometries
from tests.backends.tvm.test_compute import recomputed_convs
from tests.backends.tvm.test_tvm_vector import TARGETS, _run


def _schedule(graph, target: str, narrow: bool = True):
    import tvm
    from tvm import te

    from qcompile.backends.tvm.avx512_dense import target_features
    from qcompile.backends.tvm.compute import build_program
    from qcompile.backends.tvm.cpu import schedule_cpu
    from qcompile.backends.tvm.isa import isa_of

    t = load_target(target).tvm_target()
    prog = build_program(graph, target_features(t), isa_of(t), batch=1, narrow=narrow)
    func = schedule_cpu(te.create_prim_func(prog.params), prog.kernels, threads=False)
    return tvm.s_tir.Schedule(func)


def _shares_row_loop(sch, consumer: str, producer: str) -> bool:
    """Whether block ``consumer`` runs inside the output-row loop of ``producer``'s sums."""
    outer = sch.get_loops(sch.get_sblock(producer))[:3]  # image, channel, output row
    mine = sch.get_loops(sch.get_sblock(consumer))
    return len(mine) > 3 and all(
        sch.get(a).same_as(sch.get(b)) for a, b in zip(outer, mine[:3], strict=True)
    )


def _whole_rows(kind: str):
    """Depthwise convs whose output rows are whole AVX-512 vectors of int16 sums (32)."""
    rng = np.random.default_rng(29)
    x = TensorInfo("x", (16, 5, 32), QType(8, True), 0.05)
    specs = [
        ("dw1", Conv2d((1, 1), (1, 1), groups=16), (16, 3, 3), (16, 5, 32), 4),
        ("dw2", Conv2d((1, 1), (0, 1), groups=16), (16, 3, 3), (16, 3, 32), 2),
    ]
    return conv_stack("whole_rows", x, specs, kind, rng)


@pytest.mark.parametrize("target", ["x86-64-v3", "x86-64-v4", "rpi5"])
def test_whole_row_convs_requantize_each_row_inside_its_loop(target):
    sch = _schedule(run_pipeline(_whole_rows("uniform")), target, not target.startswith("rpi"))
    for conv in ("dw1", "dw2"):
        assert _shares_row_loop(sch, conv, f"{conv}_acc_update"), conv


@pytest.mark.parametrize("target", TARGETS)
def test_whole_row_convs_equal_the_simulator(tmp_path, target):
    _run(run_pipeline(_whole_rows("nonuniform")), target, tmp_path / "w", (2, 3))


@pytest.mark.parametrize(("target", "flat"), [("x86-64-v3", True), ("rpi5", False)])
def test_short_rows_sum_on_a_flat_grid_on_x86(target, flat):
    # aarch64 keeps its rows (its exports are not narrow): the grid is an x86 schedule
    sch = _schedule(run_pipeline(grouped_geometries("uniform")), target, narrow=flat)
    for conv in ("dw1", "dw2", "dw3", "g2"):
        iters = sch.get(sch.get_sblock(f"{conv}_acc_update")).iter_vars
        assert len(iters) == (6 if flat else 7), conv  # [n, f, q] or [n, f, i, j], 3 taps
        assert _shares_row_loop(sch, conv, f"{conv}_acc_update") is not flat, conv


def test_a_shared_accumulator_keeps_its_requantizations_apart():
    # two requantizations read one depthwise sum: both stay passes of their own
    sch = _schedule(run_pipeline(recomputed_convs("uniform")), "x86-64-v3")
    for conv in ("dw", "dw_again"):
        assert not _shares_row_loop(sch, conv, "dw_acc_update"), conv
