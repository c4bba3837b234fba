"""CPU schedule (host and aarch64) for the graph's TE function.

One rule per kind of block, chosen by what the block computes:

- padding is already inlined into its consumer (``compute._pad``); a grouped conv's padded
  copy of its input is replaced by whole-row vector stores (``pad_rows``); the int64 ->
  int32 input cast is kept as its own pass: the convolutions then read 4-byte pixels;
- a GEMM's activation packing unrolls the four bytes of a pixel (``_pack_pixels``); a
  conv's runs one loop per channel group, pixel row and column of its phase planes, and on
  x86 a stride-1 conv's is replaced by whole-vector rows (``conv_pack``);
- a vector kernel's placeholder block (``vector_dense``, ``vector_conv``) is left alone, then
  replaced by its kernel statement;
- a dense accumulator whose rows start on word boundaries is ``rfactor``-ed over the codes of
  one uint32 word: the word is loaded once, the shifts are constants, and the Select-tree
  lookup, multiply and add run as one vector over the word's codes (then a short
  horizontal sum);
- a dense (groups = 1) conv accumulates channels-last: output channels in vector lanes, the
  reduction outside them, four output pixels per vector of levels (the levels were
  dequantized once per call, stored [c, kh, kw, f]);
- a grouped or depthwise conv moves its reduction outside the output row and vectorises along
  the row: one level serves every output pixel of the row; its requantization runs in the
  row's loop, on the row's sums while they are in a register; one whose rows are not whole
  vectors (x86) sums in vectors of grid points of its flat padded input (``flat_grid``);
- an AVX-512 dense kernel's placeholder block is left alone, then replaced by the kernel
  (``avx512_dense.attach``: scheduled by hand already);
- every block vectorises its innermost data-parallel loop where its extent is static and,
  unless the function runs inside a parallel loop of its own (``batch.per_image``, what
  exports do), runs its outer data-parallel loops in parallel (``TVM_NUM_THREADS`` threads)
  where they are big enough to pay for the launch.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from qcompile.backends.tvm import conv_pack, flat_grid, pad_rows
from qcompile.backends.tvm.avx512_dense import attach
from qcompile.backends.tvm.isa import ARM
from qcompile.backends.tvm.vector_conv import SUFFIX as CONV_SUFFIX
from qcompile.backends.tvm.vector_conv import ConvPlan
from qcompile.backends.tvm.vector_dense import SUFFIX as VEC_SUFFIX
from qcompile.backends.tvm.vector_dense import DensePlan
from qcompile.backends.tvm.vector_dense import attach as attach_vector

PIXELS = 4  # output pixels sharing one vector of levels in a channels-last conv
MAX_LANES = 64  # a longer static innermost loop is left to LLVM's loop vectoriser
MAX_TAPS = 7  # a grouped conv's kernel rows and columns up to this long are unrolled
# Below this many inner iterations per batch item a parallel launch costs more than it saves
# (lenet's small layers ran 1.8x slower at batch 1 when every block was parallel).
MIN_PARALLEL_WORK = 1 << 15


def schedule_cpu(
    func: Any,
    kernels: dict[str, Any] | None = None,
    threads: bool = True,
    min_work: int = MIN_PARALLEL_WORK,
) -> Any:
    """``func`` (a PrimFunc from ``te.create_prim_func``) scheduled for a CPU; ``kernels``:
    ``Program.kernels``, the AVX-512 kernels that replace their placeholder blocks;
    ``threads``: whether blocks may run their loops in parallel (not where the function
    runs inside a parallel loop of its own: ``batch.per_image``); ``min_work``: the fewest
    iterations a block runs in parallel (inside one parallel region, :mod:`spmd`, a share
    costs a barrier, not a launch)."""
    import tvm

    sch = tvm.s_tir.Schedule(func)
    par = partial(_parallel, min_work=min_work) if threads else _serial
    kernels = kernels or {}
    packs: dict[str, ConvPlan] = {}  # conv packings replaced by ``conv_pack``'s statement
    pads: dict[str, pad_rows.PadGeometry] = {}  # padded copies replaced by ``pad_rows``'
    done: set[str] = set()  # blocks scheduled with their producer
    for block in _blocks(sch):
        if sch.get(block).name_hint in kernels or sch.get(block).name_hint in done:
            continue
        geo = pad_rows.geometry(sch.get(block))
        if geo is not None and pad_rows.applies(_io(sch.get(block))[0]):
            pads[sch.get(block).name_hint] = geo
            continue
        iters = sch.get(block).iter_vars
        kinds = [v.iter_type for v in iters]  # 0: data parallel, 2: reduction
        if sch.get(block).name_hint.endswith("_act"):
            name = sch.get(block).name_hint
            plan = kernels.get(name[: -len("_act")] + CONV_SUFFIX)
            if conv_pack.applies(plan):
                packs[name] = plan
            else:
                _pack_pixels(sch, block, par, plan)
        elif 2 not in kinds:
            _elementwise(sch, block, par, _byte_lanes(sch.get(block).name_hint, kernels))
        elif _is_dense_two_axis(sch, block):
            _dense(sch, block, par)
        elif sch.get(block).name_hint.endswith("_acc_nhwc"):
            _conv_channels_last(sch, block, par)
        elif len(kinds) == 7 and kinds[:4] == [0, 0, 0, 0]:
            _conv(sch, block, par, done)
        elif kinds == [0, 0, 0, 2, 2, 2] and sch.get(block).name_hint.endswith("_acc"):
            _conv_flat(sch, block, par)
        else:
            _outer_parallel(sch, block, kinds.count(0), par)
    for name, plan in packs.items():
        _replace(sch, name, lambda blk, p=plan: conv_pack.pack_stmt(p, *_io(blk), threads))
    for name, geo in pads.items():
        _replace(sch, name, lambda blk, g=geo: pad_rows.pad_stmt(*_io(blk), g, threads))
    vec = {k: v for k, v in kernels.items() if isinstance(v, DensePlan | ConvPlan)}
    attach(sch, {k: v for k, v in kernels.items() if k not in vec})
    attach_vector(sch, vec)
    return sch.mod["main"]


def _io(block: Any) -> tuple[Any, Any]:
    """(the buffer a one-input block reads, the buffer it writes)."""
    return block.reads[0].source, block.writes[0].source


def _replace(sch: Any, name: str, stmt_of: Any) -> None:
    """Replace block ``name`` and its loops with ``stmt_of(block)``."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize

    rv = sch.get_sblock(name)
    stmt = stmt_of(sch.get(rv))
    outer = sch.get_loops(rv)[0]
    block = SBlock([], [], [], name, stmt)
    sch.state.replace(sch.get_sref(outer), SBlockRealize([], tirx.const(True), block), {})


def _blocks(sch: Any) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _static(loop_extent: Any) -> int | None:
    value = getattr(loop_extent, "value", None)
    return int(value) if value is not None else None


def _extent(sch: Any, loop: Any) -> int | None:
    return _static(sch.get(loop).extent)


def _work(sch: Any, block: Any) -> int:
    """Iterations per batch item (the product of the static loop extents)."""
    total = 1
    for loop in sch.get_loops(block):
        total *= _extent(sch, loop) or 1
    return total


def _serial(sch: Any, block: Any, loops: list) -> None:
    """``_parallel`` where the function runs inside a parallel loop: nothing to do."""


def _parallel(sch: Any, block: Any, loops: list, min_work: int = MIN_PARALLEL_WORK) -> None:
    if _work(sch, block) >= min_work:
        sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])


def _elementwise(sch: Any, block: Any, par: Any, lanes: int | None = None) -> None:
    """``lanes``: split a longer innermost loop into vectors of this many lanes."""
    loops = sch.get_loops(block)
    inner = _extent(sch, loops[-1])
    if len(loops) > 1:
        par(sch, block, loops[:-1])
    if inner is not None and lanes and inner > MAX_LANES and inner % lanes == 0:
        sch.vectorize(sch.split(loops[-1], [None, lanes])[1])
    elif inner is not None and 1 < inner <= MAX_LANES:
        sch.vectorize(loops[-1])


def _byte_lanes(name: str, kernels: dict[str, Any]) -> int | None:
    """16 for an aarch64 GEMV's activation bytes (``*_xp``): LLVM's loop vectoriser left
    lenet's 128 and 96 bytes scalar, a compare and branch each (~1,300 instructions per
    image). x86 keeps its schedule."""
    plan = kernels.get(name.removesuffix("_xp") + VEC_SUFFIX) if name.endswith("_xp") else None
    return 16 if isinstance(plan, DensePlan) and plan.gemv.isa.arch == ARM else None


def _pack_pixels(sch: Any, block: Any, par: Any, plan: Any) -> None:
    """A GEMM's activation packing ``[1, planes, tiles, c4, pixel, lane]``: the four bytes of
    a pixel unrolled (a 4-lane vector of gathers cost more: lenet/digits on cortex-a76 took
    1.02 aarch64 instructions per MAC with it, 0.90 unrolled; putting pixels outside the
    channel groups was worse still, 1.24)."""
    loops = sch.get_loops(block)
    if isinstance(plan, ConvPlan):
        # [channel group, pixel row, column, lane]: the divisions of the flat index become
        # loop variables (one row's bounds per row, not per byte)
        ph = plan.phases
        rows = ph.group_pixels // ph.cols
        loops = [*loops[:-1], *sch.split(loops[-1], [None, rows, ph.cols, 4])]
    elif len(loops) == 3:  # computed flat, [image, plane, bytes]: the pixel's four bytes
        loops = [*loops[:-1], *sch.split(loops[-1], [None, 4])]
    par(sch, block, loops[:-1])
    sch.unroll(loops[-1])


def _outer_parallel(sch: Any, block: Any, spatial: int, par: Any) -> None:
    loops = sch.get_loops(block)
    if spatial:
        par(sch, block, loops[: min(spatial, 2)])


def _is_dense_two_axis(sch: Any, block: Any) -> bool:
    iters = sch.get(block).iter_vars
    return [v.iter_type for v in iters] == [0, 0, 2, 2]


def _dense(sch: Any, block: Any, par: Any) -> None:
    kl = sch.get_loops(block)[-1]
    lanes = _extent(sch, kl)
    rf = sch.rfactor(kl, 2)  # rf[n, j, slot] = sum over words; the block sums the slots
    rn, rj, _, rkl = sch.get_loops(rf)
    par(sch, rf, [rn, rj])
    if lanes and lanes > 1:
        sch.vectorize(rkl)
    n2, j2, _ = sch.get_loops(block)
    par(sch, block, [n2, j2])


def _conv(sch: Any, block: Any, par: Any, done: set[str]) -> None:
    """``done``: gets the name of a consumer block this schedules too."""
    n, f, i, j, rc, ri, rj = sch.get_loops(block)
    width = _extent(sch, j)
    if not width or width == 1:
        par(sch, block, [n, f])
        return
    sch.reorder(rc, ri, rj, j)
    # parallel and vectorize need the block to keep its own init: decompose last.
    par(sch, block, [n, f])
    if width <= MAX_LANES:
        sch.vectorize(j)
        fused = _requantize_each_row(sch, block, i)
        if fused is not None:
            done.add(fused)
    # the taps unrolled: one straight run of vector multiply-adds into the row's
    # accumulator, which LLVM then keeps in registers (a loop stored it after every tap)
    for loop in (ri, rj):
        if (_extent(sch, loop) or MAX_TAPS + 1) <= MAX_TAPS:
            sch.unroll(loop)
    sch.decompose_reduction(block, rc)


def _conv_flat(sch: Any, block: Any, par: Any) -> None:
    """acc[n, f, q] on a flat grid (``flat_grid``): the reduction outside vectors of
    ``LANES`` grid points, the taps unrolled, each vector's sums in a local buffer (a
    register) stored once."""
    n, f, q, rc, ri, rj = sch.get_loops(block)
    qo, qi = sch.split(q, [None, flat_grid.LANES])
    sch.reorder(qo, rc, ri, rj, qi)
    par(sch, block, [n, f])
    sch.vectorize(qi)
    for loop in (ri, rj):
        if (_extent(sch, loop) or MAX_TAPS + 1) <= MAX_TAPS:
            sch.unroll(loop)
    store = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(store, qo)
    sch.vectorize(sch.get_loops(store)[-1])
    sch.decompose_reduction(block, rc)


def _requantize_each_row(sch: Any, block: Any, row: Any) -> str | None:
    """Move the grouped conv's one elementwise consumer (its requantization) into the
    output-row loop ``row``: the row's accumulator is then a buffer of one row (TVM
    allocates a buffer where its accesses meet), which LLVM keeps in a register. Across the
    whole outlined nest it was stored after every tap (the nest's pointers are not noalias)
    and read back by a pass of its own. Returns the consumer's name, or None."""
    consumers = sch.get_consumers(block)
    if len(consumers) != 1:  # a shared accumulator's several requantizations stay apart
        return None
    (out,) = consumers
    if [v.iter_type for v in sch.get(out).iter_vars] != [0, 0, 0, 0]:
        return None
    sch.reverse_compute_at(out, row)
    inner = sch.get_loops(out)[-1]
    if (_extent(sch, inner) or MAX_LANES + 1) <= MAX_LANES:
        sch.vectorize(inner)
    return sch.get(out).name_hint


def _conv_channels_last(sch: Any, block: Any, par: Any) -> None:
    """acc[n, i, j, f]: output channels in vector lanes, the reduction outside them, and
    ``PIXELS`` output pixels of a row per level-vector load (register blocking)."""
    n, i, j, f, rc, ri, rj = sch.get_loops(block)
    channels, width = _extent(sch, f), _extent(sch, j)
    lanes = next((v for v in (16, 8, 4) if channels and channels % v == 0), None)
    if lanes is None:
        par(sch, block, [n, i])
        return
    fo, fi = sch.split(f, [None, lanes])
    pix = PIXELS if width and width % PIXELS == 0 else 1
    jo, ji = sch.split(j, [None, pix])
    sch.reorder(fo, i, jo, rc, ri, rj, ji, fi)
    par(sch, block, [n, fo, i])
    sch.vectorize(fi)
    if pix > 1:
        sch.unroll(ji)
    sch.decompose_reduction(block, rc)
