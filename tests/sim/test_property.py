"""Property tests of the numeric contract: on any valid graph, the numpy simulator (float64
BLAS where proven exact), the pure int64 simulator and the PyTorch float64 reference agree
bit for bit.

Graphs are built straight from the IR dataclasses (no training, no freeze), each node sized
the way ``qcompile.freeze.emit._finish`` sizes it: a probe node with a throwaway
``Requant`` gives the proven accumulator range, ``acc_bits_needed`` the declared width.
Bulky arrays (codes, levels, biases, inputs) come from a numpy generator seeded by
hypothesis; the graph's structure and every size, width, multiplier and shift are drawn by
hypothesis itself.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from qcompile.ir import (
    MAX_ACC_BITS,
    Add,
    Affine,
    AvgPool,
    Clip,
    Conv2d,
    Dense,
    Flatten,
    Graph,
    InputQuant,
    MaxPool,
    Node,
    QType,
    Requant,
    Table,
    TensorInfo,
    Weights,
    ops,
    verify,
)
from qcompile.ir.graph import Op
from qcompile.ir.packing import (
    pack_codes,
    packed_words,
    padding_is_zero,
    unpack_codes,
)
from qcompile.ir.verify import MAX_PRODUCT_BITS
from qcompile.sim import Simulator
from qcompile.sim.reference import FrozenTorch

# Tensors wider than this are not produced, so that a later layer can still be made to fit
# MAX_ACC_BITS by shrinking its weights (see _fit): int8 weights, fan-in up to 2^7.
MAX_TENSOR_BITS = 36

PROPERTY = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


# ---------------------------------------------------------------------------------------------
# weights


def _table(draw: st.DrawFn, rng: np.random.Generator, bits: int, rows: int) -> Table:
    """Arbitrary non-uniform int8 levels: signed, all positive, constant or a grid."""
    mag = draw(st.integers(0, 7))
    style = draw(st.sampled_from(["signed", "positive", "negative", "constant", "grid"]))
    levels = 1 << bits
    top = min(1 << mag, 127)
    if style == "signed":
        return Table(rng.integers(-top, top + 1, (rows, levels), dtype=np.int64))
    if style == "positive":
        return Table(rng.integers(0, top + 1, (rows, levels), dtype=np.int64))
    if style == "negative":
        return Table(-rng.integers(0, top + 1, (rows, levels), dtype=np.int64))
    if style == "constant":
        v = rng.integers(-top, top + 1, (rows, 1), dtype=np.int64)
        return Table(np.repeat(v, levels, axis=1))
    lo = rng.integers(-top, top + 1, (rows, 1), dtype=np.int64)
    step = rng.integers(0, (127 - int(abs(lo).max())) // max(1, levels - 1) + 1, (rows, 1))
    return Table((lo + step * np.arange(levels, dtype=np.int64)).astype(np.int64))


def _affine(
    draw: st.DrawFn, rng: np.random.Generator, widths: np.ndarray, per_channel: bool
) -> Affine:
    """Uniform levels ``step * code + zero`` inside int8 for each row's width."""
    step = 2 if draw(st.booleans()) and widths.max() < 8 else 1
    span = step * ((1 << widths) - 1)  # per row
    hi = 127 - span  # zero <= hi keeps the top level in int8
    rows = len(widths) if per_channel else 1
    lo_z, hi_z = (-128, int(hi.min())) if not per_channel else (-128, None)
    if per_channel:
        zero = np.array([rng.integers(-128, int(h) + 1) for h in hi], dtype=np.int64)
    else:
        zero = rng.integers(lo_z, hi_z + 1, rows).astype(np.int64)
    return Affine(step, zero)


def _weights(draw: st.DrawFn, rng: np.random.Generator, shape: tuple[int, ...]) -> Weights:
    bits = draw(st.integers(1, 8))
    per_channel = draw(st.booleans())
    # per-channel widths (Weights.channel_bits): row-wise packing, each row's own code range
    widths = None
    if bits > 1 and shape[0] > 1 and draw(st.booleans()):
        drawn = rng.integers(1, bits + 1, shape[0])
        drawn[0], drawn[-1] = bits, rng.integers(1, bits)  # the widest is bits; not all equal
        widths = tuple(int(b) for b in drawn)
    row_bits = np.array(widths or (bits,) * shape[0])
    if draw(st.booleans()):
        levels: Affine | Table = _affine(draw, rng, row_bits, per_channel)
    else:
        levels = _table(draw, rng, bits, shape[0] if per_channel else 1)
    top = row_bits.reshape(-1, *[1] * (len(shape) - 1))
    codes = (rng.random(shape) * (1 << top)).astype(np.uint8)  # below 2^b of each row
    if draw(st.booleans()):  # codes at the extremes of their range
        codes = np.where(rng.random(shape) < 0.5, 0, (1 << top) - 1).astype(np.uint8)
    w = Weights(bits, shape, codes, False, levels, widths)
    return w.pack() if draw(st.booleans()) else w


def _shrinkable(w: Weights) -> bool:
    return bool(np.any((w.level_table() != 0) & (w.level_table() != -1)))


def _shrunk(w: Weights) -> Weights:
    """Halve the integer weights (arithmetic shift): shrinks the accumulator's range (affine
    levels become the equivalent table, halved)."""
    return dataclasses.replace(w, levels=Table(w.level_table() >> 1))


# ---------------------------------------------------------------------------------------------
# nodes


class _Builder:
    """Appends nodes to a graph under construction, each one valid by construction."""

    def __init__(self, draw: st.DrawFn, rng: np.random.Generator, x: TensorInfo) -> None:
        self.draw, self.rng = draw, rng
        self.tensors = [x]
        self.nodes: list[Node] = []

    @property
    def cur(self) -> TensorInfo:
        return self.tensors[-1]

    def name(self) -> str:
        return f"n{len(self.nodes)}"

    def push(self, node: Node) -> None:
        self.nodes.append(node)
        self.tensors.append(node.output)

    def passthrough(self, op: Op, src: TensorInfo) -> None:
        """maxpool/flatten: the output keeps the input's type and scale."""
        name = self.name()
        probe = Node(name, op, (src.name,), src)
        shape = ops.infer_shape(probe, [src.shape])
        self.push(Node(name, probe.op, probe.inputs, TensorInfo(name, shape, src.qtype, src.scale)))

    def requantized(self, op: Op, srcs: tuple[TensorInfo, ...], w: Weights | None) -> None:
        """Draw shift, multiplier and clip; size the accumulator as freeze does."""
        draw, name = self.draw, self.name()
        shift = draw(st.integers(0, 24))
        mult: int | tuple[int, ...] = draw(st.integers(1, 1 << 10)) * draw(st.sampled_from([1, -1]))
        if draw(st.booleans()):
            mult = 1
        channels = ops.infer_shape(Node(name, op, (), srcs[0], w), [s.shape for s in srcs])[0]
        if draw(st.booleans()):  # one multiplier per output channel
            mult = tuple(draw(st.integers(-(1 << 16), 1 << 16)) for _ in range(channels))
        bias = None
        if draw(st.booleans()):  # a bias per output channel, added after the multiplier
            bb = draw(st.integers(0, 40))
            bias = tuple(int(v) for v in self.rng.integers(-(1 << bb), (1 << bb) + 1, channels))
        op, w, shift, mult, acc_bits = _fit(name, op, srcs, w, shift, mult, bias)
        probe = Node(
            name, op, tuple(s.name for s in srcs), srcs[0], w, Requant(shift, 0, 0, 64, mult, bias)
        )
        ranges = [s.qtype.range for s in srcs]
        shape = ops.infer_shape(probe, [s.shape for s in srcs])
        lo, hi = ops.shifted_range(probe, ranges)  # the shifted value, before the clip
        wide = QType.fitting(lo, hi)
        if draw(st.booleans()) and wide.bits <= MAX_TENSOR_BITS:
            out = wide  # a fixed-point tensor: the clip is the value's whole range
        else:
            out = QType(draw(st.integers(2, 16)), draw(st.booleans()))
            a, b = out.range
            lo = draw(st.integers(a, b))
            hi = draw(st.integers(lo, b))
        info = TensorInfo(name, shape, out, draw(st.sampled_from([1.0, 0.5, 0.037])))
        self.push(
            Node(name, op, probe.inputs, info, w, Requant(shift, lo, hi, acc_bits, mult, bias))
        )

    # one method per op ------------------------------------------------------------------------

    def conv2d(self) -> None:
        draw, src = self.draw, self.cur
        c, h, wd = src.shape
        groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
        out = groups * draw(st.integers(1, 3))
        k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        pad = []
        for size, kk, dd in zip((h, wd), k, dil, strict=True):
            p = draw(st.integers(0, 2))
            span = dd * (kk - 1) + 1
            pad.append(max(p, (span - size + 1) // 2))  # the window must fit
        op = Conv2d(stride, tuple(pad), dil, groups)
        w = _weights(draw, self.rng, (out, c // groups, *k))
        self.requantized(op, (src,), w)

    def dense(self) -> None:
        src = self.cur
        w = _weights(self.draw, self.rng, (self.draw(st.integers(1, 8)), src.shape[0]))
        self.requantized(Dense(), (src,), w)

    def pool(self, cls: type) -> None:
        draw, src = self.draw, self.cur
        k, s, p = [], [], []
        for size in src.shape[1:]:
            kk = draw(st.integers(1, 3))
            pp = draw(st.integers(0, kk // 2))
            k.append(min(kk, size + 2 * pp))  # stays >= 2 * pp
            s.append(draw(st.integers(1, 3)))
            p.append(pp)
        op = cls(tuple(k), tuple(s), tuple(p))
        if cls is MaxPool:
            self.passthrough(op, src)
        else:
            self.requantized(op, (src,), None)

    def add(self) -> None:
        draw, src = self.draw, self.cur
        same = [t for t in self.tensors if t.shape == src.shape]
        others = draw(st.lists(st.sampled_from(same), min_size=1, max_size=2))
        mults = tuple(draw(st.integers(-256, 256)) for _ in range(1 + len(others)))
        self.requantized(Add(mults), (src, *others), None)

    def clip(self) -> None:
        self.requantized(Clip(), (self.cur,), None)

    def flatten(self) -> None:
        self.passthrough(Flatten(), self.cur)


def _fit(
    name: str,
    op: Op,
    srcs: tuple[TensorInfo, ...],
    w: Weights | None,
    shift: int,
    mult: int | tuple[int, ...],
    bias: tuple[int, ...] | None = None,
) -> tuple[Op, Weights | None, int, int | tuple[int, ...], int]:
    """Shrink weights, multipliers and shift until the accumulator fits ``MAX_ACC_BITS`` and
    the product ``MAX_PRODUCT_BITS``; return them with the width ``acc_bits_needed`` gives
    (often just under the limit)."""
    ranges = [s.qtype.range for s in srcs]
    while True:
        req = Requant(shift, 0, 0, 64, mult, bias)
        probe = Node(name, op, tuple(s.name for s in srcs), srcs[0], w, req)
        need = ops.acc_bits_needed(probe, ranges)
        product = ops.product_bits_needed(probe, ranges)
        if need <= MAX_ACC_BITS and product <= MAX_PRODUCT_BITS:
            return op, w, shift, mult, need
        ms = mult if isinstance(mult, tuple) else (mult,)
        if need > MAX_ACC_BITS and w is not None and _shrinkable(w):
            w = _shrunk(w)
        elif (
            need > MAX_ACC_BITS and isinstance(op, Add) and any(abs(m) > 1 for m in op.multipliers)
        ):
            op = Add(tuple(m // 2 if abs(m) > 1 else m for m in op.multipliers))
        elif any(abs(m) > 1 for m in ms):
            halved = tuple(m // 2 if abs(m) > 1 else m for m in ms)
            mult = halved if isinstance(mult, tuple) else halved[0]
        elif shift:
            shift -= 1
        elif w is not None and _shrinkable(w):
            w = _shrunk(w)
        else:  # cannot happen for tensors of <= MAX_TENSOR_BITS
            raise AssertionError(f"{name}: cannot fit the accumulator ({need} bits)")


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    rng = _rng(draw)
    bits, signed = draw(st.integers(2, 8)), draw(st.booleans())
    qtype = QType(bits, signed, frac=draw(st.integers(0, 8)))
    zero = qtype.range[0]
    iq = InputQuant(bits, lo=zero * 0.25, step=0.25, zero=zero)
    if draw(st.booleans()):
        shape: tuple[int, ...] = (
            draw(st.integers(1, 4)),
            draw(st.integers(1, 6)),
            draw(st.integers(1, 6)),
        )
    else:
        shape = (draw(st.integers(1, 24)),)
    b = _Builder(draw, rng, TensorInfo("x", shape, qtype, 0.25))
    for _ in range(draw(st.integers(1, 5))):
        if len(b.cur.shape) == 3:
            kinds = ["conv2d", "conv2d", "maxpool", "maxpool", "avgpool", "add", "clip", "flatten"]
        else:
            kinds = ["dense", "dense", "add", "clip", "flatten"]
        kind = draw(st.sampled_from(kinds))
        if kind in ("maxpool", "avgpool"):
            b.pool(MaxPool if kind == "maxpool" else AvgPool)
        else:
            getattr(b, kind)()
    produced = [n.output.name for n in b.nodes]
    extra = draw(st.lists(st.sampled_from(produced), unique=True, max_size=2))
    outputs = tuple(dict.fromkeys([produced[-1], *extra]))
    return verify(Graph("random", b.tensors[0], iq, tuple(b.nodes), outputs))


def _inputs(draw: st.DrawFn, g: Graph) -> np.ndarray:
    """A batch holding both extremes of the input type, a checkerboard of them and noise."""
    rng = _rng(draw)
    lo, hi = g.input.qtype.range
    shape = g.input.shape
    rows = [
        np.full(shape, lo),
        np.full(shape, hi),
        np.where(rng.random(shape) < 0.5, lo, hi),
        rng.integers(lo, hi + 1, shape),
    ]
    rows += [rng.integers(lo, hi + 1, shape) for _ in range(draw(st.integers(0, 3)))]
    return np.stack(rows).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# the contract


@PROPERTY
@given(data=st.data())
def test_simulators_and_reference_agree_bit_for_bit(data: st.DataObject) -> None:
    g = data.draw(graphs())
    x = _inputs(data.draw, g)
    blas = Simulator(g).run(x, keep=True)
    ints = Simulator(g, blas=False).run(x, keep=True)
    ref = FrozenTorch(g)(x, keep=True)
    assert blas.keys() == ints.keys() == ref.keys()
    for node in g.nodes:
        t = node.output.name
        a, b, c = blas[t], ints[t], ref[t]
        assert a.dtype == b.dtype == c.dtype == np.int64, t
        assert a.shape == b.shape == c.shape == (len(x), *node.output.shape), t
        assert np.array_equal(a, b), f"{t} ({node.kind}): BLAS != int64"
        assert np.array_equal(a, c), f"{t} ({node.kind}): numpy != torch"
        # every value lies in the declared type, inside the requant clip
        r = node.requant
        lo, hi = (r.lo, r.hi) if r else node.output.qtype.range
        assert lo <= a.min() and a.max() <= hi, t
    outputs = Simulator(g).run(x)
    assert outputs.keys() == set(g.outputs)
    assert all(np.array_equal(outputs[t], blas[t]) for t in g.outputs)


@PROPERTY
@given(data=st.data())
def test_packed_weights_simulate_like_unpacked(data: st.DataObject) -> None:
    g = data.draw(graphs())
    x = _inputs(data.draw, g)
    nodes = []
    for n in g.nodes:
        w = n.weights
        if w is not None:
            w = w.pack() if not w.packed else dataclasses.replace(w, data=w.codes(), packed=False)
        nodes.append(Node(n.name, n.op, n.inputs, n.output, w, n.requant))
    other = verify(g.replace_nodes(nodes))
    a, b = Simulator(g).run(x), Simulator(other).run(x)
    assert all(np.array_equal(a[t], b[t]) for t in g.outputs)


@PROPERTY
@given(data=st.data())
def test_accumulators_at_the_proven_bound(data: st.DataObject) -> None:
    """A 16-bit input scaled into a tensor as wide as the 53-bit limit allows, 64 inputs per
    output and int8 weights, shrunk only as far as the limit needs: inputs at the per-channel
    worst case drive the accumulator to both ends of its proven range, where float64 BLAS is
    only just exact."""
    draw = data.draw
    rng = _rng(draw)
    qtype = QType(draw(st.integers(8, 16)), draw(st.booleans()))
    lo, hi = qtype.range
    if draw(st.booleans()):  # conv whose kernel covers the input: one dot product per channel
        shape: tuple[int, ...] = tuple(draw(st.integers(1, 4)) for _ in range(3))
        op: Op = Conv2d()
        wshape = (draw(st.integers(1, 4)), *shape)
    else:
        shape = (draw(st.integers(1, 64)),)
        op = Dense()
        wshape = (draw(st.integers(1, 4)), shape[0])
    bits = draw(st.integers(1, 8))
    rows = wshape[0] if draw(st.booleans()) else 1
    table = rng.integers(-127, 128, (rows, 1 << bits), dtype=np.int64)
    if draw(st.booleans()):  # saturated: every entry +-127
        table = np.where(table < 0, -127, 127).astype(np.int64)
    codes = rng.integers(0, 1 << bits, wshape, dtype=np.uint8)
    w = Weights(bits, wshape, codes, False, Table(table))
    # widen x by 2^k so that the accumulator lands just under the limit
    x = TensorInfo("x", shape, qtype)
    probe = Node("y", op, ("w",), x, w, Requant(0, 0, 0, 64))
    slack = draw(st.integers(0, 2))
    k = min(30, max(0, MAX_ACC_BITS - ops.acc_bits_needed(probe, [qtype.range]) - slack))
    wq = QType.fitting(lo << k, hi << k)
    widen = Node("w", Clip(), ("x",), TensorInfo("w", shape, wq), None,
                 Requant(0, *wq.range, qtype.bits + 1, 1 << k))  # fmt: skip
    op, w, _, _, acc_bits = _fit("y", op, (widen.output,), w, 0, 1)
    target(acc_bits)
    probe = Node("y", op, ("w",), widen.output, w, Requant(0, 0, 0, 64))
    wlo, whi = lo << k, hi << k
    alo, ahi = ops.acc_range(probe, [(wlo, whi)])
    out = TensorInfo("y", ops.infer_shape(probe, [shape]), QType.fitting(alo, ahi))
    node = Node("y", probe.op, ("w",), out, w, Requant(0, alo, ahi, acc_bits))
    g = verify(Graph("bound", x, InputQuant(qtype.bits, 0.0, 1.0, lo), (widen, node), ("y",)))

    dec = w.decoded().reshape(wshape[0], *shape)
    batch = np.concatenate([np.where(dec > 0, hi, lo), np.where(dec > 0, lo, hi)])
    y = Simulator(g).run(batch)["y"].reshape(len(batch), -1)
    assert np.array_equal(y, Simulator(g, blas=False).run(batch)["y"].reshape(len(batch), -1))
    assert np.array_equal(y, FrozenTorch(g)(batch)["y"].reshape(len(batch), -1))
    assert (int(y.min()), int(y.max())) == (alo, ahi)  # the bound is attained: it is tight
    assert acc_bits == ops.acc_bits_needed(node, [wq.range]) <= MAX_ACC_BITS


# ---------------------------------------------------------------------------------------------
# packing and the small pieces the generator relies on


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, 8), count=st.integers(0, 200), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits: int, count: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 1 << bits, count, dtype=np.uint8)
    words = pack_codes(codes, bits)
    assert words.dtype == np.uint32
    assert words.shape == (packed_words(count, bits),)
    assert np.array_equal(unpack_codes(words, bits, count), codes)
    assert padding_is_zero(words, bits, count)
    # code i sits at stream bit b*i, read from the pair of words around it as kernels do
    pairs = np.append(words, 0).astype(np.uint64)
    for i in range(count):
        w, sh = divmod(bits * i, 32)
        pair = int(pairs[w]) | int(pairs[w + 1]) << 32
        assert (pair >> sh) & ((1 << bits) - 1) == codes[i]


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 8), count=st.integers(1, 100), data=st.data())
def test_stray_bits_are_not_a_valid_packing(bits: int, count: int, data: st.DataObject) -> None:
    """Setting any bit past the last code makes the packing invalid; flipping a bit inside a
    code keeps it valid."""
    codes = np.random.default_rng(count).integers(0, 1 << bits, count, dtype=np.uint8)
    words = pack_codes(codes, bits)
    i = data.draw(st.integers(0, len(words) - 1))
    bit = data.draw(st.integers(0, 31))
    bad = words.copy()
    bad[i] ^= np.uint32(1 << bit)
    assert padding_is_zero(bad, bits, count) == (32 * i + bit < count * bits)


@settings(max_examples=100, deadline=None)
@given(
    shape=st.sampled_from([(3,), (4, 5), (2, 3, 3, 3), (5, 1, 2, 2), (1, 33)]),
    bits=st.integers(1, 8),
    per_channel=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_weights_pack_keeps_decoded(
    shape: tuple[int, ...], bits: int, per_channel: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << bits, shape, dtype=np.uint8)
    rows = shape[0] if per_channel else 1
    lut = rng.integers(-128, 128, (rows, 1 << bits), dtype=np.int64)
    w = Weights(bits, shape, codes, False, Table(lut))
    p = w.pack()
    assert p.packed and p.data.dtype == np.uint32 and p.data.shape == (w.words,)
    assert p.pack() is p
    assert np.array_equal(p.codes(), codes)
    assert np.array_equal(p.decoded(), w.decoded())
    assert w.decoded().shape == shape
    # decoded is LUT[row of the channel, code]
    flat = codes.reshape(shape[0], -1)
    for c in range(shape[0]):
        row = lut[c if per_channel else 0]
        assert np.array_equal(w.decoded().reshape(shape[0], -1)[c], row[flat[c]])


@settings(max_examples=300, deadline=None)
@given(a=st.integers(-(2**40), 2**40), b=st.integers(-(2**40), 2**40))
@example(a=-1, b=0)
@example(a=-1, b=-1)
@example(a=0, b=0)
@example(a=-(2**63), b=2**63 - 1)
def test_qtype_fitting_is_the_narrowest_holding_type(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    t = QType.fitting(lo, hi)
    assert t.contains(lo, hi)
    assert t.signed == (lo < 0)
    narrower = t.bits - 1
    if narrower >= (2 if t.signed else 1):
        assert not QType(narrower, t.signed).contains(lo, hi)


@settings(max_examples=100, deadline=None)
@given(
    bits=st.integers(1, 8),
    signed=st.booleans(),
    mult=st.sampled_from([-8, -5, -2, -1, 1, 2, 3, 8]),
    shift=st.integers(0, 4),
)
def test_acc_bits_needed_is_a_valid_requant_width(
    bits: int, signed: bool, mult: int, shift: int
) -> None:
    """Every accumulator range, however small, sizes a constructible ``Requant``; the product
    width holds ``acc * m + round`` and no narrower width does."""
    qtype = QType(max(bits, 2) if signed else bits, signed)
    x = TensorInfo("x", (3,), qtype)
    probe = Node("c", Clip(), ("x",), x, None, Requant(shift, 0, 0, 64, mult))
    need = ops.acc_bits_needed(probe, [qtype.range])
    assert QType(need, True).contains(*ops.acc_range(probe, [qtype.range]))
    product = ops.product_bits_needed(probe, [qtype.range])
    lo, hi = ops.requant_range(probe, [qtype.range])
    assert QType(product, True).contains(lo, hi)
    assert not (product > 2 and QType(product - 1, True).contains(lo, hi))
    Requant(shift, 0, 0, need, mult)  # raises if acc_bits_needed returned 1
