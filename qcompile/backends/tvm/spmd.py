"""One image on every thread: the graph's loop nests in one parallel region, a barrier
between them.

``batch.per_image`` shares a batch out image by image, so a batch of one ran on one thread
whatever ``TVM_NUM_THREADS`` said (mobilenetv2 on two AVX2 threads: 1.85 ms an image, the
same as on one). Each nest running its own parallel loop would pay a thread-pool launch per
layer (tried earlier: the launches and the nests no longer outlined ate the gain). Here the
whole graph is one launch (TVM's ``pragma_parallel_launch_point``: every thread runs the
body) in which each nest's outermost parallel loop is split between the threads (TVM's
static split: thread ``t`` of ``T`` takes the ``t``-th contiguous share), and a barrier
(``pragma_parallel_barrier_when_finish``) ends each nest, so the next reads finished
tensors. A nest without such a loop runs on thread 0 (a parallel loop of one iteration)
while the others wait at its barrier. Each split loop's body is a function of its own
(``compute_scope``, as ``per_image`` outlines its nests: LLVM then keeps the AVX2 GEMM's
accumulators in registers); outlining must sit inside the split loop, since the outlined
function cannot see the thread's index.

The tensors between nests are allocated outside the parallel region (the storage planner
places a buffer at the scope that holds all its uses: the root block, for any tensor two
nests share), so every thread reads and writes the same ones; a nest's private scratch is
allocated inside it, per thread.
"""

from __future__ import annotations

from typing import Any

LAUNCH = "pragma_parallel_launch_point"
BARRIER = "pragma_parallel_barrier_when_finish"
CHUNKS = 8  # calls a split loop is cut into (the threads then take equal shares of them)


def spmd_body(func: Any, params: dict[Any, Any]) -> Any:
    """The body of ``func`` (a scheduled batch-of-one PrimFunc whose blocks may run their
    loops in parallel) as one parallel region; ``params``: each of its parameter buffers
    -> the buffer of the calling function that holds it (declared as a view of it)."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize

    root = func.body.block
    nests = list(root.body.seq) if isinstance(root.body, tirx.SeqStmt) else [root.body]
    # the last nest's loop body stays inline: TVM's LLVM codegen leaves an outlined
    # function's debug location current, and the caller's next branch failed LLVM's
    # verifier (as in ``batch.per_image``)
    phases = [_phase(s, k, k < len(nests) - 1) for k, s in enumerate(nests)]
    region = tirx.AttrStmt(
        tirx.const(0, "int32"), LAUNCH, tirx.const(1, "int32"), tirx.SeqStmt(phases)
    )
    block = SBlock([], [], [], "spmd", region, alloc_buffers=list(root.alloc_buffers))
    views = [tirx.DeclBuffer(own, data=theirs.data) for own, theirs in params.items()]
    realize = SBlockRealize([], tirx.const(True), block)
    return tirx.SeqStmt([*views, realize]) if views else realize


def _phase(stmt: Any, k: int, own: bool = True) -> Any:
    """One nest: its split loop's body outlined (or the whole nest, on thread 0), then a
    barrier."""
    from tvm import ir, tirx

    loop = split_loop(stmt)
    name = ir.StringImm(f"spmd{k}_{_first_name(stmt)}_compute_")

    def outline(s: Any) -> Any:
        if not own:
            return s
        return tirx.AttrStmt(tirx.const(0, "int32"), "compute_scope", name, s)

    if loop is None:
        # two iterations, the first doing the work: a loop of one iteration is unwrapped
        # by TVM's lowering, and every thread would then run the nest
        z = tirx.Var("thread0", "int32")
        first = tirx.IfThenElse(tirx.EQ(z, tirx.const(0, "int32")), outline(stmt), None)
        stmt = tirx.For(z, 0, 2, tirx.ForKind.PARALLEL, first)
    else:
        stmt = _rebuilt(stmt, loop, lambda s: _chunked(s, outline))
    return tirx.AttrStmt(tirx.const(0, "int32"), BARRIER, tirx.const(1, "int32"), stmt)


def _chunked(loop: Any, outline: Any) -> Any:
    """``loop`` (parallel, from 0) as ``CHUNKS`` contiguous chunks of its iterations, each
    chunk's serial loop one call of the outlined function (a call per iteration cost more
    than a requantization's row)."""
    from tvm import tirx

    extent = loop.extent
    n = min(int(extent.value), CHUNKS) if isinstance(extent, tirx.IntImm) else None
    if n is None or n == int(extent.value):
        body = outline(loop.body)
        return tirx.For(loop.loop_var, loop.min, extent, loop.kind, body)
    dt = extent.ty.dtype if hasattr(extent, "ty") else extent.dtype
    t = tirx.Var(f"{loop.loop_var.name}_chunk", dt)
    parts = tirx.const(n, dt)
    lo, hi = t * extent // parts, (t + 1) * extent // parts
    serial = tirx.For(loop.loop_var, lo, hi - lo, tirx.ForKind.SERIAL, loop.body)
    return tirx.For(t, 0, n, tirx.ForKind.PARALLEL, outline(serial))


def _rebuilt(s: Any, loop: Any, outline: Any) -> Any:
    """``s`` (a chain of wrappers down to ``loop``) with ``loop`` replaced by
    ``outline(loop)``."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize

    if s.same_as(loop):
        return outline(s)
    if isinstance(s, tirx.For):
        return tirx.For(
            s.loop_var,
            s.min,
            s.extent,
            s.kind,
            _rebuilt(s.body, loop, outline),
            s.thread_binding,
            s.annotations,
        )
    if isinstance(s, SBlockRealize):
        b = s.block
        block = SBlock(
            b.iter_vars,
            b.reads,
            b.writes,
            b.name_hint,
            _rebuilt(b.body, loop, outline),
            b.init,
            b.alloc_buffers,
            b.match_buffers,
            b.annotations,
        )
        return SBlockRealize(s.iter_values, s.predicate, block)
    return tirx.AttrStmt(s.node, s.attr_key, s.value, _rebuilt(s.body, loop, outline))


def split_loop(stmt: Any) -> Any:
    """The nest's outermost parallel loop where everything the nest writes is inside it
    (reached through loops of one iteration and blocks without an init), else None."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlockRealize

    s = stmt
    while True:
        if isinstance(s, tirx.For):
            if s.kind == tirx.ForKind.PARALLEL:
                return s
            if not (isinstance(s.extent, tirx.IntImm) and s.extent.value == 1):
                return None
            s = s.body
        elif isinstance(s, SBlockRealize):
            if s.block.init is not None or s.block.alloc_buffers:
                return None
            s = s.block.body
        elif isinstance(s, tirx.AttrStmt):
            s = s.body
        else:
            return None


def _first_name(stmt: Any) -> str:
    while not hasattr(stmt, "block"):
        stmt = stmt.seq[0] if hasattr(stmt, "seq") else stmt.body
    return stmt.block.name_hint
