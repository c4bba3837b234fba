"""FPGA backend: export to an hls4ml project, build its C simulation with g++, and compare
it bit for bit with the integer simulator."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from qcompile.backends.hls4ml import CSim
from qcompile.backends.hls4ml.context import kernel_context, table_type
from qcompile.backends.hls4ml.project import HlsOptions, build, hls_config
from qcompile.backends.registry import deploy
from qcompile.backends.targets import FpgaTarget, load_target
from qcompile.errors import QCompileError
from qcompile.freeze import freeze_model
from qcompile.ir import (
    Graph,
)
from qcompile.ir.packing import packed_words
from qcompile.passes import run_pipeline
from qcompile.report import summary
from qcompile.sim import Simulator
from qcompile.stages import quantize
from qcompile.zoo import build_model
from tests.backends.helpers import ZOO, chain, mixed_chain, random_inputs, zoo_graph
from tests.conftest import NEEDS_GXX

TARGET = load_target("zcu104")


def csim_vs_sim(
    graph: Graph, out_dir, x_int: np.ndarray, target: FpgaTarget = TARGET
) -> tuple[np.ndarray, np.ndarray]:
    """The C simulation's and the simulator's outputs on ``x_int``; on the way, the C
    simulation refuses inputs off the input grid (a float the C code would truncate, an
    integer beyond the input's type) with one error."""
    deploy(graph, target, out_dir)
    csim = CSim(out_dir, graph)
    try:
        got = csim(x_int)
        hi = graph.input.qtype.range[1]
        for off_grid in (x_int[:1] + 0.5, np.full_like(x_int[:1], hi + 1)):
            with pytest.raises(QCompileError, match="integers in"):
                csim(off_grid)
        return got, Simulator(graph).run(x_int)[graph.outputs[0]]
    finally:
        csim.close()


FPGA_ZOO = [(*z, 1000) for z in ZOO if z[0] in ("mlp", "lenet", "resnet20", "mobilenetv2")]
# Every zoo model: the two largest C simulations take minutes on two cores (slow tier).
SLOW_ZOO = ("resnet18", "vgg_small")
# The convolutional nets' C simulations take 50-70 ms an image: 300 random images (every
# layer's every channel hundreds of times) instead of the small models' 1000.
CONV_ZOO = ("resnet18", "vgg_small", "resnet20", "mobilenetv2")
ALL_ZOO = [
    pytest.param(*z, 300 if z[0] in CONV_ZOO else 1000, id=z[0],
                 marks=[pytest.mark.slow] if z[0] in SLOW_ZOO else [])
    for z in ZOO
]  # fmt: skip


@NEEDS_GXX
@pytest.mark.parametrize(("name", "shape", "opts", "n"), ALL_ZOO)
def test_zoo_model_csim_is_bit_exact(tmp_path, name, shape, opts, n):
    graph = zoo_graph(name, shape, opts)
    got, want = csim_vs_sim(graph, tmp_path / "fpga", random_inputs(graph, n))
    assert got.shape == want.shape and np.array_equal(got, want)


@NEEDS_GXX
@pytest.mark.parametrize(("name", "shape", "opts", "n"), FPGA_ZOO[1:3], ids=["lenet", "resnet20"])
def test_io_stream_csim_is_bit_exact(tmp_path, name, shape, opts, n):
    """io_stream: every layer drains its streams into buffers; residual inputs are cloned
    by hls4ml's own pass. The layers' arithmetic is the io_parallel kernels' (the zoo test
    above runs 300 images through them); 100 images prove the streams' plumbing."""
    graph = zoo_graph(name, shape, opts)
    target = replace(TARGET, io_type="io_stream", strategy="Resource", reuse_factor=2)
    got, want = csim_vs_sim(graph, tmp_path / "stream", random_inputs(graph, 100), target)
    assert np.array_equal(got, want)
    text = (tmp_path / "stream" / "firmware" / "myproject.cpp").read_text()
    assert "hls::stream" in text and "from_stream" in text


@NEEDS_GXX
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_every_weight_bitwidth_and_lut_kind_is_exact(tmp_path, levels):
    graph = run_pipeline(chain(levels))
    assert sorted({n.weights.bits for n in graph.weighted()}) == list(range(1, 9))
    x = random_inputs(graph, 400)
    got, want = csim_vs_sim(graph, tmp_path / levels, x)
    assert np.array_equal(got, want)


@NEEDS_GXX
@pytest.mark.parametrize("levels", ["uniform", "nonuniform"])
def test_per_channel_widths_are_exact_and_stored_at_their_own_widths(tmp_path, levels):
    graph = run_pipeline(mixed_chain(levels))
    assert all(n.weights.channel_bits is not None for n in graph.weighted())
    x = random_inputs(graph, 400)
    got, want = csim_vs_sim(graph, tmp_path / "mixed", x)
    assert np.array_equal(got, want)
    # the project stores each channel at its own width; the manifest counts what it stores
    info = json.loads((tmp_path / "mixed" / "manifest.json").read_text())
    layers = {r["name"]: r for r in info["layers"]}
    assert layers["conv"]["weight_bits"] == pytest.approx(2.5)
    assert info["weight_mem_bits"] == summary(graph)["weight_mem_bits"]
    # the conv's code words in the project are the row-wise packing, not a flat one at 4 bits
    arrays = [
        [int(v) for v in m.group(1).split(",")]
        for f in (tmp_path / "mixed" / "firmware" / "weights").glob("*.h")
        if (m := re.search(r"\] = \{([^}]*)\};", f.read_text()))
    ]
    conv = next(n for n in graph.nodes if n.name == "conv").weights
    assert conv.words < packed_words(4 * 27, 4)
    assert conv.data.tolist() in arrays


@pytest.fixture(scope="module")
def small_graph() -> Graph:
    torch.manual_seed(0)
    q = quantize(build_model("mlp", (1, 8, 8), 10, hidden=(16,)), wbits=2, abits=3)
    q.train()
    with torch.no_grad():
        q(torch.randn(16, 1, 8, 8))
    return freeze_model(q.eval(), (1, 8, 8), "mlp", {"data": "digits"})


def test_lut_types_are_never_read_as_ternary():
    """hls4ml treats a signed 2-bit integer weight type as ternary {-1, 0, 1}: level, bias
    and multiplier tables get at least 3 bits, which its product selection reads as plain
    multiplies."""
    from hls4ml.backends import get_backend
    from hls4ml.model.types import IntegerPrecisionType

    vitis = get_backend("Vitis")
    for values in ([-1, 1], [-1, 0, 1], [0, 1], [0], [-2, 1]):
        t = table_type(np.array(values))
        bits = int(t[t.index("<") + 1 : -1])
        assert bits >= 3, t
        lut_t = IntegerPrecisionType(width=bits, signed=True)
        assert vitis.product_type(IntegerPrecisionType(8, True), lut_t) == "mult"


def test_hand_built_config_sets_channels_last_conversion(tmp_path, small_graph):
    """Our kernels index channels-first tensors, as the IR lays them out: hls4ml must not
    insert its channels-last transposes (it would with "full" or "internal")."""
    cfg = hls_config(small_graph, tmp_path, HlsOptions())
    assert cfg["HLSConfig"]["Model"]["ChannelsLastConversion"] == "off"
    model = build(small_graph, tmp_path / "ok", HlsOptions())
    kinds = {layer.class_name for layer in model.get_layers()}
    assert kinds == {"Input", "QcompileLayer"}


def test_accumulators_are_the_verified_widths(small_graph):
    tensors = small_graph.tensors()
    for node in small_graph.nodes:
        ctx = kernel_context(node, [tensors[t] for t in node.inputs], 1)
        if node.requant is not None:  # never hls4ml's default accum_t, which wraps (AP_WRAP)
            assert ctx.accum_t == f"ap_int<{node.requant.acc_bits}>"
            assert (ctx.lo, ctx.hi, ctx.shift) == (
                node.requant.lo,
                node.requant.hi,
                node.requant.shift,
            )


@NEEDS_GXX
def test_export_is_atomic_and_refuses_to_overwrite(tmp_path, small_graph, monkeypatch):
    out = tmp_path / "art"
    info = deploy(small_graph, TARGET, out)
    assert {"model.qir", "manifest.json", "README.md", "build_prj.tcl", "firmware"} <= {
        p.name for p in out.iterdir()
    }
    assert info["profile"]["part"] == "xczu7ev-ffvc1156-2-e"
    stamp = (out / "manifest.json").read_text()
    with pytest.raises(QCompileError, match="already exists; pass --force"):
        deploy(small_graph, TARGET, out)
    assert (out / "manifest.json").read_text() == stamp

    import qcompile.backends.hls4ml.export as ex

    def boom(*a, **k):
        raise QCompileError("simulated failure while writing")

    monkeypatch.setattr(ex, "build", boom)
    with pytest.raises(QCompileError, match="simulated failure"):
        deploy(small_graph, TARGET, out, force=True)
    assert (out / "manifest.json").read_text() == stamp  # the old artifact is intact
    with pytest.raises(QCompileError):
        deploy(small_graph, TARGET, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no partial, no temp dirs
    monkeypatch.undo()
    deploy(small_graph, TARGET, out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_targets(tmp_path):
    assert load_target("fpga").name == "pynq-z2"
    assert load_target("alveo-u250").part == "xcu250-figd2104-2L-e"
    assert (load_target("arm").name, load_target("arm").mcpu) == ("rpi4", "cortex-a72")
    assert load_target("gpu").arch == "sm_90" and load_target("cpu").name == "host"
    npu = tmp_path / "npu.toml"
    npu.write_text('kind = "npu"\n')
    typo = tmp_path / "typo.toml"
    typo.write_text('kind = "fpga"\npart = "x"\nclock = 5\n')
    for spec, msg in [
        (str(npu), "kind 'npu' is not supported"),
        (str(typo), "unknown key 'clock'"),
        ("nosuch", "nosuch"),
        ("missing.toml", "no such file"),
    ]:
        with pytest.raises(QCompileError, match=msg):
            load_target(spec)
