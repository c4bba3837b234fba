"""One image on every thread: the graph's loop nests in one parallel region, a barrier
between them.

``batch.per_image`` shares a batch out image by image, so a batch of one ran on one thread
whatever ``TVM_NUM_THREADS`` said (mobilenetv2 on two AVX2 threads: 1.76 ms an image, the
same as on one). Each nest running its own parallel loop would pay a thread-pool launch per
layer (tried earlier: the launches and the nests no longer outlined ate the gain). Here the
whole graph is one launch (TVM's ``pragma_parallel_launch_point``: every thread runs the
body) in which each nest's outermost parallel loop is split between the threads (TVM's
static split: thread ``t`` of ``T`` takes the ``t``-th contiguous share), and a barrier
(``pragma_parallel_barrier_when_finish``) ends each nest, so the next reads finished
tensors. Nests without such a loop run on thread 0 (the first of a parallel loop's two
iterations) while the others wait at the barrier after them; the weight decodes of the
grouped convs, which read no activation, all run first, split, with one barrier. Each
split loop is cut into up to ``CHUNKS`` chunks, each a function of its own
(``compute_scope``, as ``per_image`` outlines its nests: LLVM then keeps the AVX2 GEMM's
accumulators in registers); outlining must sit inside the split loop, since the outlined
function cannot see the thread's index.

The export builds this graph beside the image-by-image one (taken where ``n == 1``) only
for models whose nests have the work to pay for being shared (``pays``).

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
# Estimated dot-product instructions per nest below which sharing each nest between the
# threads costs more than it saves (a barrier, and each core reading what the other wrote;
# the barriers alone measured ~1%) (same-process A/B, two threads, one image): resnet20 on
# AVX-512 VNNI (7,971 a nest) 0.219 -> 0.251 ms; resnet20 on AVX2 (32,230) 0.339 -> 0.310,
# mobilenetv2 on AVX2 (49,975) 1.76 -> 1.19 and on AVX-512 VNNI (12,426) faster too (see
# BENCHMARKS.md). The bound sits between the two VNNI models, at their geometric mean.
STEPS_PER_NEST = 10_000


def pays(graph: Any, kernels: dict[str, Any], func: Any) -> bool:
    """Whether ``func`` (the batch-of-one graph, scheduled with its kernels ``kernels``)
    has enough work a nest to share each nest out (``STEPS_PER_NEST``)."""
    from tvm import tirx

    body = func.body.block.body
    nests = len(body.seq) if isinstance(body, tirx.SeqStmt) else 1
    return dot_steps(graph, kernels) >= STEPS_PER_NEST * nests


def dot_steps(graph: Any, kernels: dict[str, Any]) -> int:
    """Dot-product instructions an image's conv GEMMs run, estimated: each multiply-
    accumulate once per activation plane (byte digits; nibbles of ``split``), ``4 * lanes``
    of them a VNNI or sdot instruction, half that a vpmaddubsw (a vpaddw beside it)."""
    from qcompile.backends.tvm.decode import c_name
    from qcompile.backends.tvm.vector_conv import SUFFIX, ConvPlan

    total = 0
    for node in graph.nodes:
        p = kernels.get(c_name(node) + SUFFIX)
        if isinstance(p, ConvPlan):
            g = p.gemm
            per = g.isa.lanes * (4 if g.mac.mode in ("vnni", "sdot") else 2)
            total += node.macs() * g.act_planes // per
    return total


def spmd_body(func: Any, params: dict[Any, Any]) -> Any:
    """The body of ``func`` (a scheduled batch-of-one PrimFunc whose blocks may run their
    loops in parallel) as one parallel region; ``params``: each of its parameter buffers
    -> the buffer of the calling function that holds it (declared as a view of it)."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize

    from qcompile.backends.tvm.batch import first_block, outlined, writes_levels

    root = func.body.block
    nests = list(root.body.seq) if isinstance(root.body, tirx.SeqStmt) else [root.body]
    # The last nest's code stays inline: TVM's LLVM codegen leaves an outlined function's
    # debug location current, and the caller's next branch failed LLVM's verifier (as in
    # ``batch.per_image``).
    last = len(nests) - 1

    def name(s: Any, k: int) -> str:
        return f"spmd{k}_{first_block(s).name_hint}_compute_"

    def shared(s: Any, k: int) -> Any:
        """Nest ``k``, its split loop cut into outlined chunks."""
        return _rebuilt(s, split_loop(s), lambda loop: _chunked(loop, name(s, k), k < last))

    # the weight decodes (a grouped conv's levels) read no activation: all of them first,
    # split, one barrier after them all (mobilenetv2: 17 barriers fewer)
    decodes = [s for s in nests if writes_levels(s)]
    if decodes and all(split_loop(s) is not None for s in decodes):
        nests = decodes + [s for s in nests if not writes_levels(s)]
        phases = [_barrier(_seq([shared(s, k) for k, s in enumerate(decodes)]))]
    else:
        decodes, phases = [], []
    run: list[Any] = []  # consecutive nests on thread 0, one barrier after them all
    for k, s in enumerate(nests[len(decodes) :], start=len(decodes)):
        if split_loop(s) is None:
            run.append(outlined(s, name(s, k)) if k < last else s)
            continue
        if run:
            phases.append(_on_thread0(run))
            run = []
        phases.append(_barrier(shared(s, k)))
    if run:
        phases.append(_on_thread0(run))
    region = tirx.AttrStmt(
        tirx.const(0, "int32"), LAUNCH, tirx.const(1, "int32"), tirx.SeqStmt(phases)
    )
    block = SBlock([], [], [], "spmd", region, alloc_buffers=list(root.alloc_buffers))
    views = [tirx.DeclBuffer(own, data=theirs.data) for own, theirs in params.items()]
    realize = SBlockRealize([], tirx.const(True), block)
    return tirx.SeqStmt([*views, realize]) if views else realize


def _seq(stmts: list[Any]) -> Any:
    from tvm import tirx

    return stmts[0] if len(stmts) == 1 else tirx.SeqStmt(stmts)


def _barrier(stmt: Any) -> Any:
    from tvm import tirx

    return tirx.AttrStmt(tirx.const(0, "int32"), BARRIER, tirx.const(1, "int32"), stmt)


def _on_thread0(stmts: list[Any]) -> Any:
    """``stmts`` on thread 0 while the others wait at the barrier after them: a parallel
    loop of two iterations, the first doing the work (a loop of one iteration is unwrapped
    by TVM's lowering, and every thread would then run them)."""
    from tvm import tirx

    z = tirx.Var("thread0", "int32")
    first = tirx.IfThenElse(tirx.EQ(z, tirx.const(0, "int32")), _seq(stmts), None)
    return _barrier(tirx.For(z, 0, 2, tirx.ForKind.PARALLEL, first))


def _chunked(loop: Any, name: str, own: bool) -> Any:
    """``loop`` (parallel, from 0) as up to ``CHUNKS`` contiguous chunks of its iterations,
    each chunk's serial loop one call of a function named ``name`` (inline where not
    ``own``; a call per iteration cost more than a requantization's row)."""
    from tvm import tirx

    from qcompile.backends.tvm.batch import outlined

    def chunk(s: Any) -> Any:
        return outlined(s, name) if own else s

    extent = loop.extent
    n = min(int(extent.value), CHUNKS) if isinstance(extent, tirx.IntImm) else None
    if n is None or n == int(extent.value):
        return tirx.For(loop.loop_var, loop.min, extent, loop.kind, chunk(loop.body))
    dt = extent.ty.dtype
    t = tirx.Var(f"{loop.loop_var.name}_chunk", dt)
    parts = tirx.const(n, dt)
    lo, hi = t * extent // parts, (t + 1) * extent // parts
    serial = tirx.For(loop.loop_var, lo, hi - lo, tirx.ForKind.SERIAL, loop.body)
    return tirx.For(t, 0, n, tirx.ForKind.PARALLEL, chunk(serial))


def _rebuilt(s: Any, loop: Any, replace: Any) -> Any:
    """``s`` (a chain of wrappers down to ``loop``) with ``loop`` replaced by
    ``replace(loop)``."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize

    if s.same_as(loop):
        return replace(s)
    if isinstance(s, tirx.For):
        return tirx.For(
            s.loop_var,
            s.min,
            s.extent,
            s.kind,
            _rebuilt(s.body, loop, replace),
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
            _rebuilt(b.body, loop, replace),
            b.init,
            b.alloc_buffers,
            b.match_buffers,
            b.annotations,
        )
        return SBlockRealize(s.iter_values, s.predicate, block)
    return tirx.AttrStmt(s.node, s.attr_key, s.value, _rebuilt(s.body, loop, replace))


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
