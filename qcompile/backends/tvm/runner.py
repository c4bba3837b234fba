"""Running exported cpu and gpu artifacts: checked against this CPU, then out of process.

:class:`TvmRunner` is what the tool uses: it refuses an artifact whose instruction-set
features this CPU lacks (one line: which are missing, what to export instead) and runs the
library in a worker process (``qcompile.backends.worker``), so a crash in it is one error
line, not the end of the caller. :class:`TvmLibrary` is the library loaded into the current
process, for the worker itself and for benchmarks that time calls inside a child of their own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qcompile.backends.artifact import read_manifest
from qcompile.backends.cpu_features import check_runnable, target_isa
from qcompile.backends.worker import Worker
from qcompile.errors import QCompileError

if TYPE_CHECKING:
    from qcompile.ir.graph import Graph


def load_weights(artifact: Path, info: dict[str, Any]) -> list[np.ndarray]:
    """The artifact's weight arrays in argument order."""
    try:
        with np.load(Path(artifact) / info["weights"], allow_pickle=False) as z:
            return [z[k] for k in sorted(z.files)]
    except (OSError, KeyError, ValueError) as e:
        raise QCompileError(f"{artifact}: cannot load the compiled model: {e}") from None


def _open_weights(artifact: Path, info: dict[str, Any]) -> None:
    try:
        with np.load(artifact / info["weights"], allow_pickle=False) as z:
            z.files  # noqa: B018  (reads the archive's directory)
    except (OSError, KeyError, ValueError) as e:
        raise QCompileError(f"{artifact}: cannot load the compiled model: {e}") from None


def needed_features(info: dict[str, Any]) -> list[str]:
    """The features a cpu artifact's code needs: its manifest's ``isa_features``, or, for an
    artifact exported before manifests recorded them, LLVM's reading of its target."""
    if "isa_features" in info:
        return list(info["isa_features"])
    return sorted(target_isa(info.get("profile", {}).get("tvm_target", {})))


def check_host(artifact: Path, info: dict[str, Any]) -> None:
    """Refuse (one line) a cpu artifact this CPU cannot execute; arm and gpu pass (qemu and
    the GPU run their code)."""
    if info.get("target") == "cpu":
        check_runnable(artifact, needed_features(info))


def _import_tvm() -> Any:
    """``import tvm``, keeping tvm_ffi from importing torch where it is not loaded yet (the
    worker never uses it; tvm_ffi imports it eagerly, to dodge a Windows symbol clash, and
    that costs a worker about 1.5 s of its start)."""
    if "torch" in sys.modules:
        import tvm

        return tvm
    sys.modules["torch"] = None  # type: ignore[assignment]  (import torch -> ImportError)
    try:
        import tvm
    finally:
        del sys.modules["torch"]
    return tvm


class TvmLibrary:
    """A cpu (or, with ``device="cuda"``, gpu) artifact's library in this process, through
    the TVM runtime. A crash in it ends this process: the tool uses :class:`TvmRunner`.

    >>> # f = TvmLibrary("lenet_cpu", out_shape=[10]); y = f(x_int)   (in a worker)
    """

    def __init__(self, artifact: str, out_shape: Sequence[int], device: str = "cpu") -> None:
        tvm = _import_tvm()

        info = read_manifest(Path(artifact))
        if device == "cuda":
            # The library carries CUDA source (TVM's wheel has no CUDA runtime to compile it
            # at build time); the runtime compiles it at load through this callback, with
            # nvcc: the default, nvrtc, needs cuda-bindings, which the wheel does not bring.
            os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
            import tvm.support.nvcc  # registers tvm_callback_cuda_compile
        else:
            check_host(Path(artifact), info)
        self.dev = tvm.cuda(0) if device == "cuda" else tvm.cpu()
        weights = load_weights(Path(artifact), info)
        try:
            self.fn = tvm.runtime.load_module(str(Path(artifact) / info["library"]))["main"]
        except (OSError, KeyError, ValueError) as e:
            raise QCompileError(f"{artifact}: cannot load the compiled model: {e}") from None
        self.weights = [tvm.runtime.tensor(w, self.dev) for w in weights]
        self.out_shape = tuple(out_shape)
        self._io: tuple[Any, ...] | None = None  # the last batch's shape, tensors, views

    def _tensors(self, shape: tuple[int, ...]) -> tuple[Any, ...]:
        """Input and output tensors for a batch of ``shape``, reused while the shape stays
        (a lenet call takes ~40 us; allocating and converting them took ~30 us more), with
        numpy views of their memory on the CPU."""
        import tvm

        if self._io is None or self._io[0] != shape:
            xt = tvm.runtime.empty(shape, "int64", self.dev)
            yt = tvm.runtime.empty((shape[0], *self.out_shape), "int64", self.dev)
            cpu = self.dev.dlpack_device_type() == tvm.cpu().dlpack_device_type()
            views = (np.from_dlpack(xt), np.from_dlpack(yt)) if cpu else (None, None)
            self._io = (shape, xt, yt, *views)
        return self._io[1:]

    def __call__(self, x_int: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x_int, dtype=np.int64)
        xt, yt, xv, yv = self._tensors(x.shape)
        if xv is None:  # a device tensor: copied through the runtime
            xt.copyfrom(x)
            self.fn(xt, *self.weights, yt)
            return yt.numpy()
        np.copyto(xv, x)
        self.fn(xt, *self.weights, yt)
        return yv.copy()


class TvmRunner:
    """Runs an exported cpu (or, with ``device="cuda"``, gpu) artifact on integer input
    batches in a worker process, after checking this CPU can execute it."""

    def __init__(
        self, artifact: Path, graph: Graph, info: dict[str, Any], device: str = "cpu"
    ) -> None:
        if device != "cuda":
            check_host(Path(artifact), info)
        _open_weights(Path(artifact), info)  # refuse a damaged artifact here, not at run time
        self.worker = Worker(str(artifact))
        out_shape = list(graph.tensors()[graph.outputs[0]].shape)
        self.worker.open("tvm", artifact=str(artifact), out_shape=out_shape, device=device)

    def __call__(self, x_int: np.ndarray) -> np.ndarray:
        return self.worker(np.ascontiguousarray(x_int, dtype=np.int64))

    def close(self) -> None:
        self.worker.close()
