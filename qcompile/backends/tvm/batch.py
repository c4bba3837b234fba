"""The whole model run image by image: one parallel loop over the batch around the graph.

A graph's blocks each sweep the whole batch when the function takes it as one tensor: at
batch 64 every intermediate tensor is 64 images large (megabytes: resnet20's are 4 MB of
int32 each), written to memory by one block and read back by the next, and every block pays
its own parallel launch. Compiled for one image instead, the intermediates stay in the cache
(tens of kilobytes), and one parallel loop over the images shares the batch out to the
threads once per call. The function keeps its calling convention (input ``[n, ...]`` int64,
the weights, output ``[n, ...]`` int64): each iteration declares the one-image input and
output buffers of the compiled graph as views of image ``i``. Loop nests that only decode
weights (a TE conv's levels) run once per call, before the loop.
"""

from __future__ import annotations

from typing import Any


def per_image(func: Any, outline: bool = False, threaded: Any = None) -> Any:
    """``func``: a scheduled PrimFunc for a batch of one (input first, output last, the
    weights between; no parallel loop inside) -> the same function over a batch ``n``, one
    image per iteration of a parallel loop. ``outline``: each loop nest but the last in a
    function of its own (``_own_function``; the x86 targets). ``threaded``: the same
    graph scheduled with parallel loops, taken for a batch of one (:mod:`spmd`: the image
    on every thread)."""
    from tvm import tirx
    from tvm.s_tir.stmt import SBlock, SBlockRealize
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as T
    from tvm.tirx.script.builder.ir import add_to_parent

    one_in, one_out = func.params[0], func.params[-1]
    n = tirx.Var("n", "int64")
    root = func.body.block
    # The loop nests that only decode weights (a TE conv's ``*_levels``) run once per call,
    # before the images: they read no activation.
    nests = list(root.body.seq) if isinstance(root.body, tirx.SeqStmt) else [root.body]
    once = [s for s in nests if writes_levels(s)]
    every = [s for s in nests if not writes_levels(s)]
    levels = {b.source.name for s in once for b in first_block(s).writes}
    hoisted = [b for b in root.alloc_buffers if b.name in levels]
    kept = [b for b in root.alloc_buffers if b.name not in levels]
    if outline:
        # the last nest stays inline: TVM's LLVM codegen leaves an outlined function's
        # debug location current, and the caller's return then failed LLVM's verifier
        every = [*(_own_function(s, k) for k, s in enumerate(every[:-1])), every[-1]]
    image = SBlock([], [], [], "image", tirx.SeqStmt(every), alloc_buffers=kept)
    with IRBuilder() as ib, T.prim_func():
        T.func_name("main")
        # not noalias: TVM marks an outlined nest's pointer arguments noalias with its
        # function, and two of them may name one memory (the 1-8-bit chain on x86-64-v4
        # computed wrong outputs, even with only the GEMM nests outlined; mobilenetv2 on
        # x86-64-v3 was about 15% faster that way, and wrong is not an option)
        T.func_attr({"tirx.noalias": not outline})
        x = T.arg("input", T.buffer((n, *one_in.shape[1:]), one_in.dtype))
        for w in func.params[1:-1]:
            T.arg(w.name, w)
        y = T.arg("output", T.buffer((n, *one_out.shape[1:]), one_out.dtype))
        with T.parallel(0, n) as i:
            for one, whole in ((one_in, x), (one_out, y)):
                first = [i, *[tirx.const(0, "int64")] * (len(one.shape) - 1)]
                at = tirx.address_of(tirx.BufferLoad(whole, first))
                add_to_parent(tirx.DeclBuffer(one, data=at))
            add_to_parent(SBlockRealize([], tirx.const(True), image))
    f = ib.get()
    loop = f.body
    body = tirx.SeqStmt([*once, loop]) if once else loop
    if threaded is not None:
        from qcompile.backends.tvm.spmd import spmd_body

        views = dict(zip(threaded.params, f.params, strict=True))
        body = tirx.IfThenElse(tirx.EQ(n, tirx.const(1, "int64")), spmd_body(threaded, views), body)
    outer = SBlock([], [], [], "root", body, alloc_buffers=hoisted)
    return f.with_body(SBlockRealize([], tirx.const(True), outer))


def _own_function(stmt: Any, k: int) -> Any:
    """``stmt`` compiled as a function of its own (TVM's ``compute_scope``: LLVM outlines
    it). In one function with the whole graph, LLVM's register allocator spilled the AVX2
    GEMM's int16 accumulators lane by lane into general registers (vpinsrd / vpextrd: a
    third of mobilenetv2's x86-64-v3 samples); each nest alone keeps them in registers."""
    return outlined(stmt, f"nest{k}_{first_block(stmt).name_hint}_compute_")


def outlined(stmt: Any, name: str) -> Any:
    """``stmt`` as a function of its own named ``name`` (TVM's ``compute_scope``)."""
    from tvm import ir, tirx

    return tirx.AttrStmt(tirx.const(0, "int32"), "compute_scope", ir.StringImm(name), stmt)


def first_block(stmt: Any) -> Any:
    """The first block inside a loop nest."""
    while not hasattr(stmt, "block"):
        stmt = stmt.seq[0] if hasattr(stmt, "seq") else stmt.body
    return stmt.block


def writes_levels(stmt: Any) -> bool:
    return any(b.source.name.endswith("_levels") for b in first_block(stmt).writes)
