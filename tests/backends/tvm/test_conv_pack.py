"""The vector packing of a stride-1 conv's activations (``conv_pack``), compiled alone and run
in process: byte for byte the layout the GEMM reads (``vector_conv``), for channel counts on
and off groups of four, widths on and off whole vectors, paddings, dilations and offsets;
and which convs take it."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.backends.cpu_features import running_features, target_isa
from qcompile.backends.tvm import conv_pack
from qcompile.backends.tvm import digits as D
from qcompile.backends.tvm.gemm_dot import GemmPlan, Geometry
from qcompile.backends.tvm.isa import isa_of
from qcompile.backends.tvm.lut_decode import LevelsPlan
from qcompile.backends.tvm.mac import Mac
from qcompile.backends.tvm.row_layout import RowLayout
from qcompile.backends.tvm.vector_conv import ConvPlan, Phases
from qcompile.ir.ops import Conv2d

TARGET = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"}
RUNNABLE = target_isa(TARGET) <= running_features()


def _plan(
    cg: int, hw: tuple[int, int], pad: int, dil: int, off: int, target: dict = TARGET, **kw
) -> ConvPlan:
    isa = isa_of(target)
    op = Conv2d(kw.get("stride", (1, 1)), (pad, pad), (dil, dil))
    phases = Phases.of(op, (cg, *hw), (3, 3), 2 * isa.lanes)
    geo = Geometry(-(-cg // 4), phases.offsets, phases.group_pixels)
    layout = RowLayout.plan(-(-cg // 4) * 36, (2,) * 4, 16)
    mac = Mac(kw.get("mode", "maddubs"), off, 100)
    digits = kw.get("digits")
    gemm = GemmPlan(isa, mac, layout, LevelsPlan(True), geo, 4, 2, False, 1, 1, digits)
    return ConvPlan(gemm, cg * 9, phases, kw.get("columns", False))


def _reference(x: np.ndarray, p: ConvPlan) -> np.ndarray:
    """The packed bytes as ``vector_conv.lower`` defines them: ``x + offset`` per pixel (or
    per plane its byte digit, the top one plus its offset), a padding pixel the integer 0's
    byte, channels past the input's and pixels past the plane 0."""
    n, cg, h, w = x.shape
    ph, off, digits = p.phases, p.gemm.mac.offset, p.gemm.digits

    def byte(v: np.ndarray, q: int) -> np.ndarray:
        if digits is None:
            return (v + off) % 256
        return (digits.value(v, q) + (q == 0) * digits.top_offset) % 256

    pt, pl = (ph.rows - h) // 2, (ph.cols - w) // 2
    planes = 1 if digits is None else digits.count
    out = np.zeros((n, planes, p.gemm.geometry.groups, ph.group_pixels, 4), np.uint8)
    for q in range(planes):
        for c in range(cg):
            plane = np.full((n, ph.rows, ph.cols), byte(np.int64(0), q), np.int64)
            plane[:, pt : pt + h, pl : pl + w] = byte(x[:, c], q)
            out[:, q, c // 4, : ph.plane, c % 4] = plane.reshape(n, -1)
    return out.reshape(n, planes, -1)


@pytest.mark.skipif(not RUNNABLE, reason="this CPU cannot run x86-64-v3 code")
@pytest.mark.parametrize(
    ("cg", "hw", "pad", "dil", "off", "dtype"),
    [
        (16, (32, 32), 1, 1, 0, "uint8"),  # resnet20's first stage
        (3, (32, 32), 1, 1, 128, "int32"),  # a first conv on the int32 input: 3 of 4 lanes
        (6, (10, 10), 0, 1, 0, "uint8"),  # lenet's second conv: no padding, 2 of 4 lanes
        (8, (7, 17), 2, 2, 3, "int8"),  # dilated, widths off whole vectors of 8
        (4, (4, 4), 1, 1, 0, "uint8"),  # mobilenetv2's 4x4 layers: a tail only
        (5, (1, 9), 1, 1, 255, "int16"),  # one row, a one-column tail
    ],
)
def test_vector_packing_is_the_gemm_layout_byte_for_byte(cg, hw, pad, dil, off, dtype):
    p = _plan(cg, hw, pad, dil, off)
    lo = -off if off else 0  # every x + offset a byte, as the GEMM's mode proves
    x = np.random.default_rng(cg).integers(lo, lo + 256, (2, cg, *hw)).astype(dtype)
    _check_packing(p, x)


@pytest.mark.skipif(not RUNNABLE, reason="this CPU cannot run x86-64-v3 code")
@pytest.mark.parametrize(("x_range", "count"), [((-(1 << 20), (1 << 20) - 1), 3), ((0, 65535), 2)])
def test_wide_inputs_pack_a_plane_per_byte_digit(x_range, count):
    # a residual sum under a 1x1 or 3x3 conv: each byte digit a plane, top first
    digits = D.plan(isa_of(TARGET), x_range, (-2, 1), 64)
    assert digits is not None and digits.count == count
    p = _plan(6, (5, 19), 1, 1, 0, digits=digits)
    assert p.gemm.act_planes == count
    rng = np.random.default_rng(count)
    x = rng.integers(x_range[0], x_range[1] + 1, (2, 6, 5, 19)).astype("int32")
    x[0, 0, 0, :4] = [x_range[0], x_range[1], 0, -1 if x_range[0] < 0 else 1]
    _check_packing(p, x)


def _check_packing(p: ConvPlan, x: np.ndarray) -> None:
    """``conv_pack``'s statement run on ``x``: every byte as ``_reference`` says."""
    import tvm
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T
    from tvm.tirx.script.builder.ir import add_to_parent

    assert conv_pack.applies(p)
    size = p.gemm.geometry.groups * p.phases.group_pixels * 4
    act = np.full((2, p.gemm.act_planes, size), 0xEE, np.uint8)  # every byte must be written
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        T.func_attr({"tirx.noalias": True})
        xb = T.arg("x", T.buffer(x.shape, str(x.dtype)))
        ab = T.arg("act", T.buffer(act.shape, "uint8"))
        add_to_parent(conv_pack.pack_stmt(p, xb, ab))
    func = ib.get().with_attr("global_symbol", "main")
    ex = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(TARGET))
    tensors = [tvm.runtime.tensor(a) for a in (x, act)]
    ex["main"](*tensors)
    assert np.array_equal(tensors[1].numpy(), _reference(x.astype(np.int64), p))
    # eight pixels a store: 32 bytes of four channels
    assert "uint8x32" in func.script()


def test_only_stride_one_whole_byte_x86_convs_take_the_vector_packing():
    assert conv_pack.applies(_plan(16, (8, 8), 1, 1, 0))
    assert not conv_pack.applies(_plan(16, (8, 8), 1, 1, 0, stride=(2, 2)))
    assert not conv_pack.applies(_plan(16, (8, 8), 1, 1, 0, mode="split"))  # nibble planes
    assert not conv_pack.applies(_plan(1, (28, 28), 0, 1, 0, columns=True))  # lenet's first
    rpi5 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"}
    assert not conv_pack.applies(_plan(16, (8, 8), 1, 1, 0, target=rpi5, mode="sdot"))
    assert not conv_pack.applies(None)
