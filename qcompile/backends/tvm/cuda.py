"""GPU artifacts: CUDA source and PTX from TVM's CUDA codegen (a GPU is not needed to build),
plus the TVM library that :class:`~qcompile.backends.tvm.TvmRunner` runs where a GPU is."""

from __future__ import annotations

import shutil
from typing import Any

from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph


def compile_cuda(graph: Graph, arch: str) -> tuple[Any, list, str, str]:
    """(executable, weights, CUDA source, PTX) for ``graph`` on ``arch``."""
    import tvm
    from tvm import te
    from tvm.support import nvcc

    from qcompile.backends.tvm.compute import build_program
    from qcompile.backends.tvm.gpu import schedule_gpu

    if shutil.which("nvcc") is None:
        raise QCompileError("the gpu target needs the CUDA toolkit's nvcc to emit PTX")
    prog = build_program(graph)
    target = tvm.target.Target({"kind": "cuda", "arch": arch})
    func = schedule_gpu(te.create_prim_func(prog.params))
    ex = tvm.compile(tvm.IRModule({"main": func}), target=target)
    source = ex.mod.imports[0].inspect_source()
    with target:
        ptx = nvcc.compile_cuda(source, target_format="ptx", compiler="nvcc")
    return ex, prog.weights, source, bytes(ptx).decode() if not isinstance(ptx, str) else ptx


def cuda_device_present() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)
