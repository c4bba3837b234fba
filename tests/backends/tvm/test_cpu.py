"""The CPU schedule's grouped convs: each output row requantized where it was summed, the
weights decoded in vectors of 16."""

from __future__ import annotations

import pytest

from qcompile.backends.targets import load_target
from qcompile.passes import run_pipeline
from tests.backends.helpers import grouped_geometries
from tests.backends.tvm.test_compute import recomputed_convs


def _schedule(graph, target: str):
    import tvm
    from tvm import te

    from qcompile.backends.tvm.avx512_dense import target_features
    from qcompile.backends.tvm.compute import build_program
    from qcompile.backends.tvm.cpu import schedule_cpu
    from qcompile.backends.tvm.isa import isa_of

    t = load_target(target).tvm_target()
    prog = build_program(graph, target_features(t), isa_of(t), batch=1, narrow=True)
    func = schedule_cpu(te.create_prim_func(prog.params), prog.kernels, threads=False)
    return tvm.s_tir.Schedule(func)


def _shares_row_loop(sch, consumer: str, producer: str) -> bool:
    """Whether block ``consumer`` runs inside the output-row loop of ``producer``'s sums."""
    outer = sch.get_loops(sch.get_sblock(producer))[:3]  # image, channel, output row
    mine = sch.get_loops(sch.get_sblock(consumer))
    return len(mine) > 3 and all(
        sch.get(a).same_as(sch.get(b)) for a, b in zip(outer, mine[:3], strict=True)
    )


@pytest.mark.parametrize("target", ["x86-64-v3", "x86-64-v4", "rpi5"])
def test_grouped_convs_requantize_each_row_inside_its_loop(target):
    sch = _schedule(run_pipeline(grouped_geometries("uniform")), target)
    for conv in ("dw1", "dw2", "dw3", "g2"):
        assert _shares_row_loop(sch, conv, f"{conv}_acc_update"), conv


def test_a_shared_accumulator_keeps_its_requantizations_apart():
    # two requantizations read one depthwise sum: both stay passes of their own
    sch = _schedule(run_pipeline(recomputed_convs("uniform")), "x86-64-v3")
    for conv in ("dw", "dw_again"):
        assert not _shares_row_loop(sch, conv, "dw_acc_update"), conv


def test_grouped_weights_decode_in_vectors_of_16():
    from tvm.tirx import ForKind

    sch = _schedule(run_pipeline(grouped_geometries("uniform")), "x86-64-v3")
    for conv in ("dw1", "dw2", "dw3", "g2"):
        loops = [sch.get(v) for v in sch.get_loops(sch.get_sblock(f"{conv}_levels"))]
        assert len(loops) == 2 and int(loops[1].extent) == 16, conv
        assert loops[1].kind == ForKind.VECTORIZED, conv
