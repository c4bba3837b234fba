"""A batch of one on every thread: the graph's nests in one parallel region, a barrier
after each, every nest split between the threads or run on thread 0."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from qcompile.backends.targets import load_target
from qcompile.backends.tvm import batch, export, spmd
from qcompile.passes import run_pipeline
from tests.backends.helpers import ZOO, conv_geometries, zoo_graph
from tests.backends.tvm.test_tvm_vector import TARGETS, _run

NM = shutil.which("nm")
MOBILENET = next(z for z in ZOO if z[0] == "mobilenetv2")
# an AVX-512 VNNI CPU (no profile of ours names one: the host's depends on the machine)
TVM_TARGETS = {
    "sapphirerapids": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "sapphirerapids"}
}


def _threaded(graph, target: str, kernels: bool = False):
    """The batch-of-one graph ``compile_graph`` builds for ``target``, scheduled (and its
    kernels)."""
    from qcompile.backends.tvm.avx512_dense import target_features
    from qcompile.backends.tvm.isa import isa_of

    t = TVM_TARGETS.get(target) or load_target(target).tvm_target()
    func, found = export.threaded_graph(graph, target_features(t), isa_of(t))
    return (func, found) if kernels else func


def _always(monkeypatch) -> None:
    """Every conv model gets the threaded graph, and two threads share it whatever the
    machine has (the static split then always has two shares)."""
    monkeypatch.setenv("TVM_NUM_THREADS", "2")
    monkeypatch.setattr(export, "SPMD_MACS", 0)
    monkeypatch.setattr(spmd, "STEPS_PER_NEST", 0)


def test_every_nest_of_a_mobilenet_is_split_but_the_classifier_and_the_output():
    from tvm import tirx

    graph = run_pipeline(zoo_graph(*MOBILENET))
    func = _threaded(graph, "x86-64-v3")
    nests = list(func.body.block.body.seq)
    serial = [batch.first_block(s).name_hint for s in nests if spmd.split_loop(s) is None]
    # the classifier's GEMV and the output's cast are a few hundred values
    assert serial == ["classifier_acc_vec", "classifier", "output_i64"]
    body = spmd.spmd_body(func, {})
    region = body.block.body
    assert region.attr_key == spmd.LAUNCH
    phases = list(region.body.seq)
    assert all(p.attr_key == spmd.BARRIER for p in phases)
    # the depthwise convs' weight decodes first, together; the serial nests together
    decodes = [s for s in nests if batch.writes_levels(s)]
    assert len(decodes) == 17  # one per depthwise conv
    assert len(phases) == len(nests) - (len(decodes) - 1) - (len(serial) - 1)
    assert len(phases[0].body.seq) == len(decodes)
    # nests without a split loop run on thread 0: two iterations, the first does the work
    head = phases[-1].body
    assert head.kind == tirx.ForKind.PARALLEL and head.extent.value == 2
    assert isinstance(head.body, tirx.IfThenElse) and len(head.body.then_case.seq) == 3


def test_the_threaded_convs_prefetch_their_next_tile_and_the_image_graph_does_not():
    from qcompile.backends.tvm.compute import build_program
    from qcompile.backends.tvm.isa import isa_of
    from qcompile.backends.tvm.vector_conv import ConvPlan

    graph = run_pipeline(zoo_graph(*MOBILENET))
    func, kernels = _threaded(graph, "x86-64-v3", kernels=True)
    convs = [p for p in kernels.values() if isinstance(p, ConvPlan)]
    assert convs and all(p.gemm.prefetch for p in convs)
    # in each GEMM's channel-group loop, one prefetch per plane of the multiply mode (the
    # byte digits of a wide input run the same loop body in a loop of their own)
    planes = sum(p.gemm.mac.planes for p in convs)
    assert any(p.gemm.digits for p in convs)
    nests = func.body.block.body.seq
    gemms = [s for s in nests if batch.first_block(s).name_hint.endswith("_acc_gemm")]
    assert len(gemms) == len(convs)
    assert sum(s.script().count("prefetch(") for s in gemms) == planes
    isa = isa_of(load_target("x86-64-v3").tvm_target())
    image = build_program(graph, None, isa, narrow=True)
    assert not any(p.gemm.prefetch for p in image.kernels.values() if isinstance(p, ConvPlan))


@pytest.mark.skipif(NM is None, reason="needs nm (binutils)")
@pytest.mark.parametrize("target", TARGETS[:2])
def test_a_threaded_batch_of_one_equals_the_simulator(tmp_path, monkeypatch, target):
    _always(monkeypatch)
    graph = run_pipeline(conv_geometries("uniform"))
    _run(graph, target, tmp_path / "g", (1, 2))
    text = subprocess.run([NM, str(tmp_path / "g" / "model.so")], capture_output=True, text=True)
    assert re.search(r"\bspmd\d+_s2_acc_gemm_compute_\b", text.stdout)


@pytest.mark.skipif(NM is None, reason="needs nm (binutils)")
def test_a_threaded_mobilenet_equals_the_simulator(tmp_path, monkeypatch):
    # depthwise convs, residual sums in byte digits, shared accumulators: all split
    _always(monkeypatch)
    graph = run_pipeline(zoo_graph(*MOBILENET))
    _run(graph, "x86-64-v3", tmp_path / "m", (1, 3))


def test_only_models_large_enough_get_the_threaded_graph():
    small = run_pipeline(conv_geometries("uniform"))
    assert small.macs() < export.SPMD_MACS and not export.threaded_image(small)
    resnet = run_pipeline(zoo_graph("resnet20", (3, 32, 32), {}))
    assert resnet.macs() >= export.SPMD_MACS and export.threaded_image(resnet)


def test_the_threaded_graph_is_built_where_its_nests_have_the_work():
    # resnet20 at 32x32: each nest's GEMMs take a quarter the instructions with VNNI (four
    # bytes a lane, 512 bits) as with vpmaddubsw (two, 256 bits): too few to pay a barrier
    graph = run_pipeline(zoo_graph("resnet20", (3, 32, 32), {}))
    steps, pays = {}, {}
    for target in ("x86-64-v3", "sapphirerapids"):
        func, kernels = _threaded(graph, target, kernels=True)
        steps[target] = spmd.dot_steps(graph, kernels)
        pays[target] = spmd.pays(graph, kernels, func)
    assert steps["x86-64-v3"] > 3 * steps["sapphirerapids"] > 0
    assert pays == {"x86-64-v3": True, "sapphirerapids": False}
