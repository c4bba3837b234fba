"""The vector kernels of issue 16 (GEMV and GEMM), each compiled alone for an x86-64 ISA and
run in process: bit-exact against the IR's own integer weights (``Weights.decoded``, what the
simulator multiplies) for every width 1-8, affine and table levels, every multiply mode."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.backends.cpu_features import running_features, target_isa
from qcompile.backends.tvm import digits as D
from qcompile.backends.tvm.gemm_dot import GemmPlan, Geometry, gemm_stmt, tile_shape
from qcompile.backends.tvm.gemv_lut import GemvPlan, decode_width, gemv_stmt, rows_per_step
from qcompile.backends.tvm.isa import isa_of
from qcompile.backends.tvm.lut_decode import LevelsPlan
from qcompile.backends.tvm.mac import choose
from qcompile.backends.tvm.row_layout import RowLayout
from qcompile.ir.weights import Affine, Table, Weights

# AVX2 without and with VNNI (AVX-VNNI), AVX-512 BW without and with VNNI
CPUS = ["x86-64-v3", "alderlake", "x86-64-v4", "sapphirerapids"]
X_RANGES = [(0, 15), (-128, 127), (0, 255), (-3, 12)]


def _target(mcpu: str) -> dict:
    return {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu}


def _runnable(mcpu: str) -> object:
    ok = target_isa(_target(mcpu)) <= running_features()
    why = f"this CPU cannot run {mcpu} code"
    return pytest.param(mcpu, marks=pytest.mark.skipif(not ok, reason=why))


def _weights(rng: np.random.Generator, bits: int, kind: str, rows: int, k: int) -> Weights:
    codes = rng.integers(0, 1 << bits, (rows, k)).astype(np.uint8)
    codes[0, :] = (1 << bits) - 1  # the top code everywhere in one row
    if kind == "table":
        entries = rng.integers(-128, 128, (rows, 1 << bits))
        entries[0, -1], entries[1, 0] = -128, 127  # both int8 extremes
        return Weights(bits, (rows, k), codes, False, Table(entries.astype(np.int64)))
    if kind == "narrow":  # W2 uniform as the zoo's models: weights -2..1
        return Weights(bits, (rows, k), codes, False, Affine(1, np.full(rows, -2)))
    step = 2 if bits < 7 and bits % 2 else 1
    span = step * ((1 << bits) - 1)
    zero = rng.integers(-128, 128 - span, rows)
    return Weights(bits, (rows, k), codes, False, Affine(step, zero.astype(np.int64)))


def _levels(w: Weights, order: list[int]) -> tuple[LevelsPlan, np.ndarray]:
    if isinstance(w.levels, Affine):
        return LevelsPlan(True, w.levels.step), (w.levels.zero[order] % 256).astype(np.uint8)
    plan = LevelsPlan(False, 1, max(1, (1 << w.bits) // 16))
    out = np.zeros((w.shape[0], 16 * plan.tables), np.int8)
    out[:, : 1 << w.bits] = w.levels.entries[order]
    return plan, out


def _x(rng: np.random.Generator, x_range: tuple[int, int], n: int, k: int) -> np.ndarray:
    x = rng.integers(x_range[0], x_range[1] + 1, (n, k))
    x[0, ::2], x[-1, 1::2] = x_range[0], x_range[1]  # where int16 pair sums would saturate
    return x


def _compile(mcpu: str, args: dict[str, np.ndarray], stmt_of) -> object:
    import tvm
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T
    from tvm.tirx.script.builder.ir import add_to_parent

    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        T.func_attr({"tirx.noalias": True})
        bufs = {k: T.arg(k, T.buffer(a.shape, str(a.dtype))) for k, a in args.items()}
        add_to_parent(stmt_of(bufs))
    func = ib.get().with_attr("global_symbol", "main")
    ex = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(_target(mcpu)))
    tensors = [tvm.runtime.tensor(a) for a in args.values()]
    ex["main"](*tensors)
    return tensors[list(args).index("acc")].numpy()


@pytest.mark.parametrize("mcpu", [_runnable(c) for c in CPUS])
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("kind", ["affine", "table"])
def test_gemv_is_exact(mcpu, bits, kind):
    _gemv_case(mcpu, bits, kind, X_RANGES[bits % len(X_RANGES)], binary=False)


@pytest.mark.parametrize("mcpu", [_runnable(c) for c in CPUS])
@pytest.mark.parametrize("x_range", X_RANGES)
@pytest.mark.parametrize("kind", ["affine", "table"])
def test_binary_gemv_is_exact(mcpu, x_range, kind):
    """1-bit layers multiply their codes by signed activation bytes (``binary``)."""
    _gemv_case(mcpu, 1, kind, x_range, binary=True)


def _gemv_case(mcpu: str, bits: int, kind: str, x_range: tuple[int, int], binary: bool) -> None:
    rng = np.random.default_rng(bits)
    rows, k, n = 37, 300, 3  # rows and k off every tile and chunk size
    isa = isa_of(_target(mcpu))
    w = _weights(rng, bits, kind, rows, k)
    widths = w.row_bits() if bits < 5 else tuple(bits - (r % 3 == 1) for r in range(rows))
    layout = RowLayout.plan(k, widths, decode_width(isa))
    if bits >= 5:  # rows of two widths (DMBQ): each row's codes below its own width
        codes = w.data % (1 << np.array(widths))[:, None]
        w = Weights(bits, w.shape, codes.astype(np.uint8), False, w.levels, widths)
    W = w.decoded()
    mac = choose(isa, x_range, w.level_range(), layout.max_kr, binary)
    assert (mac.mode == "binary") == binary
    order = [r for g in layout.groups for r in g.rows]
    levels_plan, levels = _levels(w, order)
    plan = GemvPlan(isa, mac, layout, levels_plan, rows_per_step(isa, mac), True)
    x = _x(rng, x_range, n, k)
    xp = np.zeros((n, mac.planes, layout.max_kr), np.uint8)
    a = x + mac.offset
    if mac.planes == 2:
        xp[:, 0, :k], xp[:, 1, :k] = a & 15, a >> 4
    else:
        xp[:, 0, :k] = a % 256
    args = {"xp": xp, "stored": layout.pack(w.codes()), "levels": levels}
    args["comp"] = (-mac.offset * W.sum(axis=1))[order].astype(np.int32)
    args["acc"] = np.zeros((rows, n), np.int32)

    def stmt(bufs):
        if not mac.offset:
            bufs = {k: v for k, v in bufs.items() if k != "comp"}
        return gemv_stmt(plan, bufs, n)

    got = _compile(mcpu, args, stmt)
    assert np.array_equal(got, (x @ W.T).T[order])


@pytest.mark.parametrize("mcpu", [_runnable(c) for c in CPUS])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("kind", ["affine", "table"])
def test_gemm_decodes_once_and_is_exact(mcpu, bits, kind):
    _gemm_case(mcpu, bits, kind, X_RANGES[bits % len(X_RANGES)], binary=False)


@pytest.mark.parametrize("mcpu", [_runnable(c) for c in CPUS])
def test_gemm_of_narrow_layers_takes_wide_tiles_and_is_exact(mcpu):
    """W2A4 (resnet20's layers): the int16 sums of every step fit one flush, so no int32
    accumulator is live in the loop and AVX2 takes 4 x 2 tiles (AVX-512 4 x 4)."""
    _gemm_case(mcpu, 2, "narrow", (0, 15), binary=False)


@pytest.mark.parametrize("mcpu", [_runnable(c) for c in CPUS])
@pytest.mark.parametrize("x_range", X_RANGES)
@pytest.mark.parametrize("kind", ["affine", "table"])
def test_binary_gemm_is_exact(mcpu, x_range, kind):
    _gemm_case(mcpu, 1, kind, x_range, binary=True)


def _gemm_case(
    mcpu: str, bits: int, kind: str, x_range: tuple[int, int], binary: bool, max_vecs: int = 4
) -> tuple[int, int]:
    """Run one GEMM case exactly; returns its tile (rows, vecs)."""
    rng = np.random.default_rng(10 + bits)
    rows, k, n = 40, 300, 37
    isa = isa_of(_target(mcpu))
    w = _weights(rng, bits, kind, rows, k)
    W = w.decoded()
    k4 = -(-k // 4) * 4
    codes = np.zeros((rows, k4), np.uint8)
    codes[:, :k] = w.codes()
    layout = RowLayout.plan(k4, w.row_bits(), 16)
    mac = choose(isa, x_range, w.level_range(), k4, binary)
    assert (mac.mode == "binary") == binary
    levels_plan, levels = _levels(w, list(range(rows)))
    R, Q = tile_shape(isa, mac, k4 // 4, max_vecs=max_vecs)
    if kind == "narrow" and not isa.vnni:  # every step in one int16 flush: no int32 sums
        shape = (R, Q)
        assert shape == ((4, 2) if isa.vbytes == 32 else (4, 4))
    tp = Q * isa.lanes
    npad = -(-n // tp) * tp
    geo = Geometry(k4 // 4, (0,), npad, True)
    plan = GemmPlan(isa, mac, layout, levels_plan, geo, R, Q, True, 2, 1)
    x = _x(rng, x_range, n, k)
    a = np.zeros((npad, k4), np.int64)
    a[:n, :k] = x + mac.offset
    tiles = a.reshape(npad // tp, tp, k4 // 4, 4).transpose(0, 2, 1, 3)
    act = np.zeros((1, mac.planes, *tiles.shape), np.uint8)
    if mac.planes == 2:
        act[0, 0], act[0, 1] = tiles & 15, tiles >> 4
    else:
        act[0, 0] = tiles % 256
    got = _gemm_acc(mcpu, plan, act, layout.pack(codes), levels, mac.offset, W, npad, n)
    assert np.array_equal(got, (x @ W.T).T)
    return R, Q


def _gemm_acc(
    mcpu: str,
    plan: GemmPlan,
    act: np.ndarray,
    stored: np.ndarray,
    levels: np.ndarray,
    offset: int,
    W: np.ndarray,
    npad: int,
    n: int,
) -> np.ndarray:
    """``plan``'s GEMM run on packed activations ``act`` (1, planes, ...) whose bytes carry
    ``offset`` (taken back by the per-row compensation ``-offset * sum(W)``): the first
    ``n`` columns of its accumulators, one row per weight row."""
    args = {"act": act.reshape(1, act.shape[1], -1), "stored": stored, "levels": levels}
    args["comp"] = (-offset * W.sum(axis=1)).astype(np.int32)
    args["acc"] = np.zeros((plan.acc_rows, npad), np.int32)

    def stmt(bufs):
        if not offset:
            bufs = {k: v for k, v in bufs.items() if k != "comp"}
        return gemm_stmt(plan, bufs, 1, npad, True)

    return _compile(mcpu, args, stmt)[: len(W), :n]


# Wide activations (residual sums): ranges of 2, 3 and 4 byte digits, signed and unsigned
# (range, digits)
WIDE_RANGES = [
    ((-300, 700), 2),
    ((0, 65535), 2),
    ((-(1 << 20), (1 << 20) - 1), 3),
    ((-(1 << 26), 1 << 26), 4),
]


@pytest.mark.parametrize("mcpu", [_runnable(c) for c in CPUS])
@pytest.mark.parametrize(("x_range", "count"), WIDE_RANGES)
def test_gemm_on_byte_digits_is_exact(mcpu, x_range, count):
    """An input wider than a byte runs the GEMM once per byte digit (Horner's rule on the
    same accumulators), exact up to the int32 bound ``digits.plan`` checks."""
    _digits_case(mcpu, x_range, count)


@pytest.mark.parametrize("mcpu", [_runnable(c) for c in CPUS])
@pytest.mark.parametrize("max_vecs", [1, 2])
def test_layers_of_few_pixel_vectors_take_tall_tiles_exactly(mcpu, max_vecs):
    """mobilenetv2's 4x4 layers are one AVX-512 vector of pixels: up to sixteen
    accumulators in rows instead (a 4 x 1 tile was latency-bound), bytes and byte digits."""
    tiles = [
        _gemm_case(mcpu, 2, "affine", (0, 255), binary=False, max_vecs=max_vecs),
        _digits_case(mcpu, *WIDE_RANGES[2], max_vecs=max_vecs),
    ]
    for rows, vecs in tiles:
        assert max_vecs >= vecs
        isa = isa_of(_target(mcpu))
        if isa.vnni and isa.regs == 32:  # AVX-512 VNNI, an int32 register each: sixteen
            assert rows * vecs == 16


def _digits_case(
    mcpu: str, x_range: tuple[int, int], count: int, max_vecs: int = 4
) -> tuple[int, int]:
    rng = np.random.default_rng(x_range[1] % 97)
    isa = isa_of(_target(mcpu))
    rows, n = 40, 37
    bits = 8 if x_range[1] < 1 << 16 else 2
    w = _weights(rng, bits, "table" if bits == 8 else "affine", rows, 300)
    if bits == 2:  # weights -2..1: the widest inputs still fit a few products in int32
        w = Weights(2, w.shape, w.data, False, Affine(1, np.full(rows, -2)))
    wmax = int(np.abs(w.decoded()).max())
    k4 = min(300, (2**31 - 1) // (wmax * (max(map(abs, x_range)) + 512))) // 4 * 4
    w = Weights(bits, (rows, k4), w.data[:, :k4], False, w.levels)
    W = w.decoded()
    layout = RowLayout.plan(k4, w.row_bits(), 16)
    digits = D.plan(isa, x_range, w.level_range(), k4)
    assert digits is not None and digits.count == count
    mac = choose(isa, (0, 255), w.level_range(), k4)
    levels_plan, levels = _levels(w, list(range(rows)))
    R, Q = tile_shape(isa, mac, max_vecs=max_vecs)
    tp = Q * isa.lanes
    npad = -(-n // tp) * tp
    geo = Geometry(k4 // 4, (0,), npad, True)
    plan = GemmPlan(isa, mac, layout, levels_plan, geo, R, Q, True, 2, 1, digits)
    x = _x(rng, x_range, n, k4)
    x[1] //= 1 << 12  # small values too: carries through every digit
    a = np.zeros((npad, k4), np.int64)
    a[:n] = x
    act = np.zeros((1, plan.act_planes, npad // tp, k4 // 4, tp, 4), np.uint8)
    tiles = a.reshape(npad // tp, tp, k4 // 4, 4).transpose(0, 2, 1, 3)
    for d in range(digits.count):
        act[0, d * mac.planes] = (digits.value(tiles, d) + (d == 0) * digits.top_offset) % 256
        if mac.planes == 2:  # nibbles of the digit's byte
            act[0, 2 * d + 1] = act[0, 2 * d] >> 4
            act[0, 2 * d] &= 15
    stored = layout.pack(w.codes())
    got = _gemm_acc(mcpu, plan, act, stored, levels, digits.top_offset, W, npad, n)
    assert np.array_equal(got, (x @ W.T).T)
    return R, Q


@pytest.mark.parametrize("arch", ["x86", "arm"])
def test_x86_gemv_prefetches_the_next_block_of_rows(arch):
    """The x86 GEMV prefetches one cache line of each next row per 64 bytes it reads (the
    code loads of a layer past L2 stalled without); aarch64 keeps its instruction count."""
    from tvm import tirx

    from qcompile.backends.tvm.isa import Isa

    isa = Isa("x86", 32) if arch == "x86" else Isa("arm", 16, dotprod=True)
    rows, k = 40, 4096
    layout = RowLayout.plan(k, (2,) * rows, decode_width(isa))
    mac = choose(isa, (-128, 127), (-128, 127), layout.max_kr)
    plan = GemvPlan(isa, mac, layout, LevelsPlan(False), rows_per_step(isa, mac), True)
    bufs = {
        "xp": tirx.decl_buffer((1, mac.planes, layout.max_kr), "uint8", name="xp"),
        "stored": tirx.decl_buffer((layout.nbytes,), "uint8", name="stored"),
        "levels": tirx.decl_buffer((rows, 16), "int8", name="levels"),
        "comp": tirx.decl_buffer((rows,), "int32", name="comp"),
        "acc": tirx.decl_buffer((rows, 1), "int32", name="acc"),
    }
    text = gemv_stmt(plan, bufs, tirx.const(1, "int32")).script()
    # one prefetch per row of a block, and one per tail row, each in its row loop's body
    expected = plan.rows + 1 if rows % plan.rows else plan.rows
    assert text.count("prefetch(") == (expected if arch == "x86" else 0)
