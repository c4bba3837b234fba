"""TVM backend (cpu): compile the IR with Apache TVM for the host and compare the compiled
library with the integer simulator bit for bit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from qcompile.backends.artifact import read_manifest
from qcompile.backends.registry import deploy
from qcompile.backends.targets import load_target
from qcompile.backends.tvm import TvmRunner, load_weights
from qcompile.backends.tvm.arm import ArmRunner
from qcompile.backends.tvm.compute import acc_dtype, storage_dtype
from qcompile.backends.tvm.row_layout import RowLayout
from qcompile.backends.tvm.vector_conv import DECODE_BYTES, tap_order
from qcompile.errors import QCompileError
from qcompile.ir import ops
from qcompile.ir.graph import Clip, Dense, Graph, InputQuant, Node, Requant, Table, Weights
from qcompile.ir.packing import packed_words
from qcompile.ir.types import QType, TensorInfo
from qcompile.passes import run_pipeline
from qcompile.report import summary
from qcompile.sim import Simulator
from tests.backends.helpers import ZOO, chain, mixed_chain, random_inputs, zoo_graph
from tests.conftest import NEEDS_ARM, NEEDS_GXX

HOST = load_target("cpu")
ARM = load_target("arm")
KINDS = [pytest.param("cpu", marks=NEEDS_GXX), pytest.param("arm", marks=NEEDS_ARM)]


def runner(kind: str, out_dir, graph: Graph):
    info = read_manifest(out_dir)
    if kind == "cpu":
        return TvmRunner(out_dir, graph, info)
    return ArmRunner(out_dir, graph, load_weights(out_dir, info))


def tvm_vs_sim(graph: Graph, out_dir, kind: str, n: int = 256) -> tuple[np.ndarray, ...]:
    deploy(graph, HOST if kind == "cpu" else ARM, out_dir)
    x = random_inputs(graph, n)
    return runner(kind, out_dir, graph)(x), Simulator(graph).run(x)[graph.outputs[0]]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "shape", "opts"), ZOO, ids=[z[0] for z in ZOO])
def test_zoo_model_is_bit_exact(tmp_path, name, shape, opts, kind):
    got, want = tvm_vs_sim(zoo_graph(name, shape, opts), tmp_path / kind, kind)
    assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_every_weight_bitwidth_and_lut_kind_is_exact(tmp_path, levels, kind):
    graph = run_pipeline(chain(levels))
    got, want = tvm_vs_sim(graph, tmp_path / levels, kind)
    assert np.array_equal(got, want)


@NEEDS_GXX
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_per_channel_widths_are_exact_and_stored_at_their_own_widths(tmp_path, levels, kind):
    graph = run_pipeline(mixed_chain(levels))
    assert all(n.weights.channel_bits is not None for n in graph.weighted())
    got, want = tvm_vs_sim(graph, tmp_path / "mixed", kind, n=300)
    assert np.array_equal(got, want)
    info = read_manifest(tmp_path / "mixed")
    weights = dict(zip(info["params"][1:-1], load_weights(tmp_path / "mixed", info), strict=True))
    conv = next(n for n in graph.nodes if n.name == "conv").weights
    assert conv.words < packed_words(4 * 27, 4)  # fewer than every row at the widest 4 bits
    if "conv.rows" in weights:  # the vector GEMM's layout: rows grouped by their own width
        # the implicit GEMM's rows: 3 input channels padded to 4, times 9 taps
        own = RowLayout.plan(tap_order(3, 3, 3).size, conv.row_bits(), DECODE_BYTES)
        assert weights["conv.rows"].size == own.nbytes
        # each row at its own width (padded to whole 16-byte chunks of its finest plane)
        stored_bits = [g.row_bytes * 8 // g.kr for g in own.groups for _ in g.rows]
        assert sorted(stored_bits) == sorted(conv.row_bits())
    else:
        assert np.array_equal(weights["conv.codes"], conv.data)  # the row-wise words
    assert info["weight_mem_bits"] == summary(graph)["weight_mem_bits"]


@NEEDS_ARM
def test_arm_artifact_holds_an_aarch64_elf_and_sources(tmp_path):
    graph = zoo_graph("mlp", (1, 8, 8), {})
    info = deploy(graph, ARM, tmp_path / "arm")
    assert info["target"] == "arm"
    names = {p.name for p in (tmp_path / "arm").iterdir()}
    assert {"model.o", "model_runner", "main.c", "model.h", "Makefile", "include"} <= names
    elf = (tmp_path / "arm" / "model_runner").read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    obj = (tmp_path / "arm" / "model.o").read_bytes()[:20]
    assert int.from_bytes(obj[18:20], "little") == 183


@NEEDS_GXX
def test_cpu_artifact_contents_and_errors(tmp_path):
    graph = zoo_graph("mlp", (1, 8, 8), {})
    info = deploy(graph, HOST, tmp_path / "a")
    assert {p.name for p in (tmp_path / "a").iterdir()} == {
        "model.so",
        "weights.npz",
        "model.qir",
        "manifest.json",
    }
    assert info["target"] == "cpu" and info["params"][0] == "input"
    with pytest.raises(QCompileError, match="--force"):
        deploy(graph, HOST, tmp_path / "a")
    (tmp_path / "a" / "weights.npz").write_bytes(b"junk")
    with pytest.raises(QCompileError, match="cannot load"):
        TvmRunner(tmp_path / "a", graph, read_manifest(tmp_path / "a"))


NVCC = shutil.which("nvcc")


@NEEDS_GXX
@pytest.mark.skipif(not NVCC, reason="the gpu target needs nvcc to emit PTX")
def test_gpu_artifact_holds_cuda_source_and_ptx(tmp_path):
    graph = zoo_graph("lenet", (1, 8, 8), {})
    info = deploy(graph, load_target("gpu"), tmp_path / "gpu")
    assert info["target"] == "gpu" and info["profile"]["tvm_target"]["arch"] == "sm_90"
    src = (tmp_path / "gpu" / "model.cu").read_text()
    ptx = (tmp_path / "gpu" / "model.ptx").read_text()
    assert "__global__" in src and "blockIdx.x" in src
    assert ".target sm_90" in ptx and ".entry" in ptx


def _cuda_present() -> bool:
    from qcompile.backends.tvm.cuda import cuda_device_present

    return cuda_device_present()


@NEEDS_GXX
@pytest.mark.skipif(
    not NVCC or not _cuda_present(),
    reason="no CUDA device on this machine: the GPU kernels are emitted but cannot run here",
)
def test_gpu_kernels_are_bit_exact_on_a_gpu(tmp_path):
    graphs = {name: zoo_graph(name, shape, opts) for name, shape, opts in ZOO[:3]}
    graphs["mixed"] = run_pipeline(mixed_chain("nonuniform"))  # per-channel widths
    for name, graph in graphs.items():
        deploy(graph, load_target("gpu"), tmp_path / name)
        x = random_inputs(graph, 256)
        got = TvmRunner(tmp_path / name, graph, read_manifest(tmp_path / name), "cuda")(x)
        assert np.array_equal(got, Simulator(graph).run(x)[graph.outputs[0]])


@pytest.mark.parametrize("kind", KINDS)
def test_parallel_schedule_is_exact_on_two_threads(tmp_path, kind, monkeypatch):
    # A model that convolves runs image by image in one parallel loop over the batch
    # (tvm/batch.py): lenet's 8 images split over 2 threads, on the ARM side by the runner's
    # own thread launcher (templates/harness.c). (resnet18's 72x72 stem, used before that
    # schedule for its large parallel layers, built for 20 s to prove the same.)
    monkeypatch.setenv("TVM_NUM_THREADS", "2")
    name, shape, opts = ZOO[1]
    got, want = tvm_vs_sim(zoo_graph(name, shape, opts), tmp_path / kind, kind, n=8)
    assert np.array_equal(got, want)


def _wide_dense() -> Graph:
    """One dense layer whose accumulator needs ~46 bits: an 8-bit input scaled by 2^24 into
    a 32-bit tensor, int8 weights, fan-in 512."""
    rng = np.random.default_rng(5)
    x = TensorInfo("x", (512,), QType(8, True), 1.0)
    w32 = QType(32, True)
    widen = Node("w", Clip(), ("x",), TensorInfo("w", (512,), w32, 1.0), None,
                 Requant(0, *w32.range, 9, 1 << 24))  # fmt: skip
    levels = Table(rng.integers(-127, 128, (16, 4)).astype(np.int64))
    w = Weights(2, (16, 512), rng.integers(0, 4, (16, 512)).astype(np.uint8), False, levels)
    probe = Node("y", Dense(), ("w",), widen.output, w, Requant(0, 0, 0, 64))
    acc = ops.acc_bits_needed(probe, [w32.range])
    y = TensorInfo("y", (16,), QType(acc, True), 1.0)
    node = Node(
        "y", Dense(), ("w",), y, w, Requant(0, -(1 << (acc - 1)), (1 << (acc - 1)) - 1, acc)
    )
    return Graph("wide", x, InputQuant(8, -128.0, 1.0, -128), (widen, node), ("y",))


@NEEDS_GXX
def test_wide_accumulators_compute_in_int64_and_narrow_ones_in_int32(tmp_path):
    wide = _wide_dense()
    assert acc_dtype(wide.nodes[1]) == "int64" and storage_dtype(wide.nodes[1]) == "int64"
    got, want = tvm_vs_sim(wide, tmp_path / "wide", "cpu")
    assert np.abs(want).max() > 1 << 32  # the case int32 would get wrong
    assert np.array_equal(got, want)
    lenet = zoo_graph("lenet", (1, 8, 8), {})
    assert {acc_dtype(n) for n in lenet.nodes if n.requant is not None} == {"int32"}
