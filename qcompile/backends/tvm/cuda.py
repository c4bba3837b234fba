"""GPU artifacts: CUDA source and PTX from TVM's CUDA codegen (a GPU is not needed to build),
plus the TVM library that runs them where a GPU is present."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

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


class GpuRunner:
    """Runs an exported gpu artifact's library on the first CUDA device."""

    def __init__(self, artifact: Path, graph: Graph, info: dict[str, Any]) -> None:
        import tvm

        self.dev = tvm.cuda(0)
        self.fn = tvm.runtime.load_module(str(Path(artifact) / info["library"]))["main"]
        with np.load(Path(artifact) / info["weights"], allow_pickle=False) as z:
            self.weights = [tvm.runtime.tensor(z[k], self.dev) for k in sorted(z.files)]
        self.out_shape = graph.tensors()[graph.outputs[0]].shape

    def __call__(self, x_int: np.ndarray) -> np.ndarray:
        import tvm

        x = np.ascontiguousarray(x_int, dtype=np.int64)
        out = tvm.runtime.tensor(np.zeros((len(x), *self.out_shape), np.int64), self.dev)
        self.fn(tvm.runtime.tensor(x, self.dev), *self.weights, out)
        return out.numpy()
