"""Resource and latency estimate of the hls4ml project qcompile generates: a model of the
kernels in ``templates/nnet_qcompile.h``, not a synthesis report (no vendor tool runs here).

Schedule (what the kernels and hls4ml's top function do):

- ``unrolled``: io_parallel + Latency strategy. hls4ml pipelines the top function, which
  unrolls every loop: the model is one pipeline taking an input every cycle (II = 1), its
  latency the sum of the layers' depths. Each conv output pixel gets its own datapath.
- ``dataflow``: Resource strategy or io_stream. Layers are dataflow tasks, each with its own
  reuse factor R (the profile's for every layer, or one per layer chosen by reuse.py for
  ``reuse_factor = "auto"``; clamped to the layer's rows or elements); a weighted layer
  with reuse factor R runs ``R`` pipelined iterations (II 1) of ``P = ceil(n_out / R)``
  parallel output lanes, each a full dot product (hls4ml's Resource strategy: ``n_in * n_out
  / R`` multipliers); a conv repeats that for every output pixel. Element-wise layers run R
  iterations of ``ceil(n / R)`` lanes. Model II = the slowest layer's cycles; latency = their
  sum. io_stream adds each layer's stream reads and writes (``elements / shape[-1]`` beats).

Per weighted layer (dense, conv2d), ``a`` = input bits, ``w`` = the integer weight's signed
bits, ``b`` = code bits, ``n_in`` = taps per output:

- constant weights (unrolled, or R = 1): each weight is a constant multiply by shift-and-add:
  ``LUT = (csd(|w|) - 1) * (a + bits(|w|))`` (``csd``: non-zero canonical-signed-digit count;
  0 and powers of two cost nothing); the sum of a row's ``nz`` non-zero terms costs
  ``(nz - 1) * acc_bits`` LUTs (one LUT6 + carry per adder bit). Codes and tables fold away.
- shared weights (R > 1): ``P * n_in`` multipliers ``a x w``: LUT fabric
  ``ceil(a * w / 2)`` LUTs (two partial-product bits per LUT6 + carry) unless both operands
  are ``>= DSP_MIN_BITS`` (then DSP slices, as below); adder trees ``P * (n_in - 1) *
  acc_bits``; decoding a code: affine ``+ zero`` ``w`` LUTs per tap, a table a ROM of ``R *
  2^b`` entries of ``w`` bits per tap (``w * ceil(R * 2^b / 64)`` LUTs: a LUT6 is a 64 x 1
  ROM); code words: ``P * n_in * b`` bits a cycle from ROM (depth R; block RAM when ``R >=
  BRAM_MIN_DEPTH``: ``ceil(width / 36) * ceil(R / 512)`` BRAM18 in 36 x 512 mode, else
  ``width * ceil(R / 64)`` LUTs); rows that start at different bit offsets in their word add
  a shifter: ``P * n_in * b * ceil(log2(S) / 2)`` LUTs (S distinct offsets; a LUT6 is a 4:1
  mux). A pipelined conv reads each tap from a pixel-dependent position: ``taps * a *
  ceil((pixels - 1) / 3)`` LUTs of multiplexers.
- requantization per lane: ``acc * m`` on DSP slices when both are ``>= DSP_MIN_BITS``
  (``ceil(max / dsp_a) * ceil(min / dsp_b)`` slices; the bias is the post-adder), else
  ``ceil(acc_bits * m_bits / 2)`` LUTs; round, shift and clip ``prod_bits - shift +
  out_bits`` LUTs.
- FF: each lane's accumulator and product (``acc_bits + prod_bits``), and every output
  element (``out_bits``; twice in dataflow: ping-pong channels).
- depth (cycles): ``1 + ceil(log2(n_in) / L) + 1 + DSP_STAGES + 1`` (read, adder tree at
  ``L = max(1, floor(clock / ADDER_NS))`` levels a cycle, multiply, requant pipeline, clip).

``DSP_MIN_BITS = 10``: Vivado HLS builds narrower products in LUTs (hls4ml: Duarte et al.,
JINST 13 (2018) P07027, Sec. 5: DSP use falls to zero below ~10-bit weights). With weights of
at most 8 bits (numeric contract v1) only the requantization multipliers reach DSP slices.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from qcompile.backends.estimates import FpgaEstimate, LayerEstimate, TotalEstimate
from qcompile.backends.hls4ml.fit import fit
from qcompile.backends.hls4ml.parts import find_part
from qcompile.backends.hls4ml.project import HlsOptions
from qcompile.ir import ops
from qcompile.ir.graph import Graph, Node, Table
from qcompile.ir.ops import Add, AvgPool, Clip, Conv2d, Dense, Flatten, MaxPool
from qcompile.ir.packing import row_starts

DSP_MIN_BITS = 10
ADDER_NS = 1.6  # one 16-24 bit carry-chain add plus routing, 7-series/UltraScale+ (model)
DSP_STAGES = 3  # DSP48 multiply-add with MREG and PREG (and the input register)
BRAM_MIN_DEPTH = 128  # shallower ROMs stay in LUTs (distributed ROM)
DSP_SHAPE = (25, 18)  # DSP48E1, for parts not in the table
# reuse_factor = "auto" raises reuse factors until every resource is at most this share of
# the part (reuse.py): placement and routing need headroom, and the estimate is a model
UTILISATION_BUDGET = 0.8


@dataclass
class Cost:
    lut: int = 0
    ff: int = 0
    dsp: int = 0
    bram18: int = 0

    def __iadd__(self, o: Cost) -> Cost:
        self.lut, self.ff = self.lut + o.lut, self.ff + o.ff
        self.dsp, self.bram18 = self.dsp + o.dsp, self.bram18 + o.bram18
        return self

    def times(self, k: int) -> Cost:
        return Cost(self.lut * k, self.ff * k, self.dsp * k, self.bram18 * k)


def csd_digits(v: int) -> int:
    """Non-zero digits of ``|v|`` in canonical signed-digit form.

    >>> [csd_digits(v) for v in (0, 1, 3, 7, 5, -6)]
    [0, 1, 2, 2, 2, 2]
    """
    v, n = abs(int(v)), 0
    while v:
        if v & 1:
            n += 1
            v -= 2 - (v & 3)  # 1 mod 4: digit +1; 3 mod 4: digit -1 (carry up)
        v >>= 1
    return n


def const_mult_lut(a: int, w: int) -> int:
    """LUTs of ``x * w`` for an ``a``-bit x and a constant w: shift-and-add."""
    return max(0, csd_digits(w) - 1) * (a + abs(int(w)).bit_length())


def mult_cost(a: int, b: int, dsp: tuple[int, int]) -> Cost:
    """A variable ``a x b``-bit multiplier: DSP slices when both are wide, else LUTs."""
    if min(a, b) >= DSP_MIN_BITS:
        hi, lo = max(a, b), min(a, b)
        return Cost(dsp=math.ceil(hi / dsp[0]) * math.ceil(lo / dsp[1]))
    return Cost(lut=math.ceil(a * b / 2))


def mux_lut(n: int) -> int:
    """LUT6s per bit of an n:1 multiplexer (a LUT6 is a 4:1 mux)."""
    return math.ceil((n - 1) / 3) if n > 1 else 0


def rom_cost(width: int, depth: int) -> Cost:
    if depth >= BRAM_MIN_DEPTH:
        return Cost(bram18=math.ceil(width / 36) * math.ceil(depth / 512))
    return Cost(lut=width * math.ceil(depth / 64))


@dataclass(frozen=True)
class Shape:
    """What the schedule gives a layer: parallel lanes, pipelined iterations, depth."""

    lanes: int
    iterations: int
    depth: int
    constant: bool  # weights fixed per lane: folded into logic


def bits_of(t: str) -> int:
    return int(t[t.index("<") + 1 : t.index(">")])


class Estimator:
    def __init__(self, graph: Graph, opts: HlsOptions) -> None:
        self.graph = graph
        self.opts = opts
        self.unrolled = opts.io_type == "io_parallel" and opts.strategy == "Latency"
        self.part = find_part(opts.part)
        self.dsp = (self.part.dsp_a, self.part.dsp_b) if self.part else DSP_SHAPE
        self.levels = max(1, math.floor(opts.clock_period / ADDER_NS))
        self.tensors = self.graph.tensors()

    def tree_depth(self, n: int) -> int:
        return math.ceil(math.ceil(math.log2(n)) / self.levels) if n > 1 else 0

    def requant(self, node: Node, lanes: int, acc_bits: int) -> tuple[Cost, int]:
        r = node.requant
        if r is None:
            return Cost(), 0
        ins = [self.tensors[t].qtype.range for t in node.inputs]
        prod = ops.product_bits_needed(node, ins)
        m_bits = ops.signed_bits(int(r.multipliers.min()), int(r.multipliers.max()))
        c = Cost(lut=prod - r.shift + node.output.qtype.bits)
        if r.multipliers.size > 1 or r.multiplier != 1:
            c += mult_cost(acc_bits, m_bits, self.dsp)
        c.ff = acc_bits + prod
        return c.times(lanes), DSP_STAGES + 1

    def layer(self, node: Node, reuse: int | None = None) -> LayerEstimate:
        """The estimate of ``node`` built for reuse factor ``reuse`` (default: what the
        options give it)."""
        rf = self.opts.reuse_of(node.name) if reuse is None else reuse
        rf = 1 if self.unrolled else min(rf, parallel_units(node))  # as the kernels clamp it
        out = node.output
        n_out_elems = math.prod(out.shape)
        a = self.tensors[node.inputs[0]].qtype.bits
        if isinstance(node.op, Dense | Conv2d):
            cost, shape = self.weighted(node, a, rf)
        else:
            cost, shape = self.elementwise(node, a, rf)
        cost.ff += n_out_elems * out.qtype.bits * (1 if self.unrolled else 2)
        cycles = shape.depth if self.unrolled else shape.iterations + shape.depth
        if self.opts.io_type == "io_stream":
            ins = [self.tensors[t].shape for t in node.inputs]
            cycles += sum(math.prod(s) // s[-1] for s in ins) + n_out_elems // out.shape[-1]
        return LayerEstimate(
            name=node.name,
            op=node.kind,
            reuse=rf,
            lanes=shape.lanes,
            iterations=1 if self.unrolled else shape.iterations,
            cycles=cycles,
            **asdict(cost),
        )

    def weighted(self, node: Node, a: int, reuse: int) -> tuple[Cost, Shape]:
        w, r = node.weights, node.requant
        assert w is not None and r is not None
        pixels = math.prod(node.output.shape[1:]) if isinstance(node.op, Conv2d) else 1
        n_out, n_in = w.shape[0], w.per_row
        lo, hi = w.level_range()
        wb = ops.signed_bits(lo, hi)
        acc = r.acc_bits
        lanes = math.ceil(n_out / reuse)
        depth = 1 + self.tree_depth(n_in) + 1
        if reuse == 1:  # every row has its own datapath: weights are constants
            dec = w.decoded().reshape(n_out, -1)
            c = Cost(lut=sum(const_mult_lut(a, int(v)) for v in dec.ravel()))
            c.lut += sum(max(0, int((row != 0).sum()) - 1) for row in dec) * acc
            shape = Shape(lanes, pixels, depth, True)
        else:
            c = mult_cost(a, wb, self.dsp).times(lanes * n_in)
            c.lut += lanes * (n_in - 1) * acc
            if isinstance(w.levels, Table):
                c.lut += lanes * n_in * wb * math.ceil(reuse * (1 << w.bits) / 64)
            else:
                c.lut += lanes * n_in * wb
            width = (math.ceil(lanes * n_in * w.bits / 32) + 1) * 32
            c += rom_cost(width, reuse)
            starts = row_starts(n_in, w.channel_bits) * 32 if w.channel_bits else None
            offsets = {
                (int(starts[o]) if starts is not None else o * n_in * w.bits) % 32
                for o in range(n_out)
            }
            c.lut += lanes * n_in * w.bits * math.ceil(math.log2(len(offsets)) / 2)
            consts = ops.signed_bits(int(r.biases.min()), int(r.biases.max())) + ops.signed_bits(
                int(r.multipliers.min()), int(r.multipliers.max())
            )
            c += rom_cost(consts * lanes, reuse)
            shape = Shape(lanes, pixels * reuse, depth, False)
        if pixels > 1 and not self.unrolled:  # the pixel loop reads pixel-dependent taps
            cin = self.tensors[node.inputs[0]].shape[0]
            c.lut += cin * math.prod(w.shape[2:]) * a * mux_lut(pixels)
        rq, rq_depth = self.requant(node, lanes, acc)
        c += rq
        inst = pixels if self.unrolled else 1
        lanes_all = shape.lanes * inst
        return c.times(inst), Shape(lanes_all, shape.iterations, depth + rq_depth, shape.constant)

    def elementwise(self, node: Node, a: int, reuse: int) -> tuple[Cost, Shape]:
        n = math.prod(node.output.shape)
        lanes = math.ceil(n / reuse)
        op = node.op
        c, depth = Cost(), 1
        if isinstance(op, Add):
            acc = node.requant.acc_bits if node.requant else a
            c.lut = sum(const_mult_lut(a, m) for m in op.multipliers)
            c.lut += (len(op.multipliers) - 1) * acc
            depth += self.tree_depth(len(op.multipliers))
        elif isinstance(op, MaxPool | AvgPool):
            win = math.prod(op.kernel)
            width = node.requant.acc_bits if node.requant else a
            c.lut = (win - 1) * width  # comparators or adders
            depth += self.tree_depth(win)
            if reuse > 1:
                c.lut += win * a * mux_lut(reuse)
        elif isinstance(op, Flatten):
            depth = 0 if self.unrolled else 1
        elif not isinstance(op, Clip):
            raise ValueError(f"no estimate for {node.kind}")
        c = c.times(lanes)
        acc = node.requant.acc_bits if node.requant else a
        rq, rq_depth = self.requant(node, lanes, acc)
        c += rq
        return c, Shape(lanes, reuse, depth + rq_depth, True)

    def run(self) -> FpgaEstimate:
        layers = tuple(self.layer(n) for n in self.graph.nodes)
        total = Cost()
        for row in layers:
            total += Cost(row.lut, row.ff, row.dsp, row.bram18)
        cycles = [row.cycles for row in layers]
        latency = sum(cycles)
        o = self.opts
        checked = fit(total, self.part, o.part, auto=o.reuse_auto)
        return FpgaEstimate(
            note="a model of the generated kernels (qcompile/backends/hls4ml/estimate.py), "
            "not a synthesis report",
            schedule="unrolled" if self.unrolled else "dataflow",
            reuse_factor=self.reuse_label(),
            budget=UTILISATION_BUDGET if o.reuse_auto else None,
            clock_period=o.clock_period,
            layers=layers,
            total=TotalEstimate(
                **asdict(total),
                ii_cycles=1 if self.unrolled else max(cycles),
                latency_cycles=latency,
                latency_ns=round(latency * o.clock_period, 3),
            ),
            part=checked.part,
            utilization=checked.utilization,
            fits=checked.fits,
            warning=checked.warning,
        )

    def reuse_label(self) -> int | str:
        """The model's reuse factor as the profile gives it: 1 under Latency, ``auto``
        when chosen per layer (each layer's is in its row)."""
        if self.opts.strategy == "Latency":
            return 1
        return "auto" if self.opts.reuse_auto else self.opts.reuse_factor


def parallel_units(node: Node) -> int:
    """What a layer's reuse factor divides among its iterations: a weighted layer's output
    rows (filters), an element-wise layer's elements. The kernels clamp R to it."""
    if node.weights is not None:
        return node.weights.shape[0]
    return math.prod(node.output.shape)


def estimate(graph: Graph, opts: HlsOptions) -> FpgaEstimate:
    """The estimate of ``graph`` (lowered by ``passes.pipelines.FPGA``, as the export and
    ``registry.preview`` give it) exported with ``opts`` (see the module docstring)."""
    return Estimator(graph, opts).run()
