"""Compile an exported FPGA artifact's C simulation with g++ and run it.

The artifact is copied to a temporary directory and built there with its own
``build_lib.sh``: the files that are simulated are the files that were exported, and the
artifact itself is left untouched. The built library runs in a worker process
(``qcompile.backends.worker``): a crash in it is one error line, not the end of the caller.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from qcompile.backends.hls4ml.project import check_inputs
from qcompile.backends.worker import BuiltRunner
from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph


class CSimLibrary:
    """The built C simulation loaded into this process (the worker's side): float64 rows of
    ``n_in`` values in, ``n_out`` out, through hls4ml's ``<project>_double`` entry point."""

    def __init__(self, library: str, function: str, n_out: int) -> None:
        try:
            self._fn = getattr(ctypes.cdll.LoadLibrary(library), function)
        except (OSError, AttributeError) as e:
            raise QCompileError(f"cannot load the C simulation {library}: {e}") from None
        self._fn.restype = None
        self._n_out = n_out

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        y = np.zeros((len(flat), self._n_out), dtype=np.float64)
        ptr = ctypes.POINTER(ctypes.c_double)
        for i in range(len(flat)):
            row = np.ascontiguousarray(flat[i], dtype=np.float64)
            self._fn(row.ctypes.data_as(ptr), y[i].ctypes.data_as(ptr))
        return y


class CSim(BuiltRunner):
    """``CSim(artifact_dir, graph)(x_int)`` -> integer outputs; ``build_s`` is the g++ time."""

    def __init__(self, artifact: Path, graph: Graph, project: str = "myproject") -> None:
        if shutil.which("g++") is None:
            raise QCompileError("the FPGA C simulation needs g++ (apt-get install g++)")
        self.graph = graph
        super().__init__(artifact, "qcompile-csim-")
        work = self._dir / "prj"
        shutil.copytree(artifact, work)
        for old in (work / "firmware").glob(f"{project}-*.so"):
            old.unlink()
        t = time.perf_counter()
        r = subprocess.run(["bash", "build_lib.sh"], cwd=work, capture_output=True, text=True)
        self.build_s = time.perf_counter() - t
        if r.returncode != 0:
            self.close()
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise QCompileError(f"g++ failed to build the C simulation of {artifact}: {tail[0]}")
        lib = next((work / "firmware").glob(f"{project}-*.so"))
        out = graph.tensors()[graph.outputs[0]]
        self.out_shape = out.shape
        n_out = int(np.prod(out.shape))
        self.worker.open("csim", library=str(lib), function=f"{project}_double", n_out=n_out)

    def __call__(self, x_int: np.ndarray) -> np.ndarray:
        flat = check_inputs(x_int, self.graph.input)
        y = self.worker(flat)
        if not np.array_equal(y, np.rint(y)):
            raise QCompileError("the C simulation returned non-integer outputs")
        return y.astype(np.int64).reshape(len(flat), *self.out_shape)
