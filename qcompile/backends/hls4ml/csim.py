"""Compile an exported FPGA artifact's C simulation with g++ and run it.

The artifact is copied to a temporary directory and built there with its own
``build_lib.sh``: the files that are simulated are the files that were exported, and the
artifact itself is left untouched.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from qcompile.backends.hls4ml.project import check_inputs
from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph


class CSim:
    """``CSim(artifact_dir, graph)(x_int)`` -> integer outputs; ``build_s`` is the g++ time."""

    def __init__(self, artifact: Path, graph: Graph, project: str = "myproject") -> None:
        if shutil.which("g++") is None:
            raise QCompileError("the FPGA C simulation needs g++ (apt-get install g++)")
        self.graph = graph
        self._dir = Path(tempfile.mkdtemp(prefix="qcompile-csim-"))
        work = self._dir / "prj"
        shutil.copytree(artifact, work)
        for old in (work / "firmware").glob(f"{project}-*.so"):
            old.unlink()
        t = time.perf_counter()
        r = subprocess.run(["bash", "build_lib.sh"], cwd=work, capture_output=True, text=True)
        self.build_s = time.perf_counter() - t
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise QCompileError(f"g++ failed to build the C simulation of {artifact}: {tail[0]}")
        lib = next((work / "firmware").glob(f"{project}-*.so"))
        self._fn = getattr(ctypes.cdll.LoadLibrary(str(lib)), f"{project}_double")
        self._fn.restype = None
        out = graph.tensors()[graph.outputs[0]]
        self.out_shape = out.shape
        self._n_out = int(np.prod(out.shape))

    def __call__(self, x_int: np.ndarray) -> np.ndarray:
        flat = check_inputs(x_int, self.graph.input)
        y = np.zeros((len(flat), self._n_out), dtype=np.float64)
        ptr = ctypes.POINTER(ctypes.c_double)
        for i in range(len(flat)):
            row = np.ascontiguousarray(flat[i])
            self._fn(row.ctypes.data_as(ptr), y[i].ctypes.data_as(ptr))
        if not np.array_equal(y, np.rint(y)):
            raise QCompileError("the C simulation returned non-integer outputs")
        return y.astype(np.int64).reshape(len(flat), *self.out_shape)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self) -> None:
        self.close()
