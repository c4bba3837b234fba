"""ARM (aarch64) artifacts: the TVM object linked with a standalone C runner, run under qemu.

The object needs no TVM runtime: its entry point ``__tvm_ffi_main`` takes DLTensor
arguments through the TVM FFI calling convention, and the runner (templates/harness.c)
provides the one symbol it imports and the workspace allocator hooks.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from qcompile.backends.worker import NativeCrash, describe_exit
from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph

CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
TEMPLATES = Path(__file__).parent / "templates"
HEADERS = ("dlpack/dlpack.h", "tvm/ffi/c_api.h", "tvm/ffi/endian.h")
# DLPack type codes: kDLInt 0, kDLUInt 1
DTYPES = {
    np.dtype(t): code
    for t, code in (("int64", 0), ("int32", 0), ("int8", 0), ("uint32", 1), ("uint8", 1))
}


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise QCompileError(f"{tool} is needed for ARM targets: apt-get install {package}")
    return path


def write_sources(out: Path) -> None:
    """main.c, the FFI headers it includes, a Makefile for cross-building."""
    import tvm_ffi

    include = Path(tvm_ffi.__file__).parent / "include"
    shutil.copy(TEMPLATES / "harness.c", out / "main.c")
    for h in HEADERS:
        (out / "include" / h).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(include / h, out / "include" / h)
    shutil.copy(TEMPLATES / "Makefile.arm", out / "Makefile")


def link(out: Path) -> None:
    """Build ``model_runner`` (static aarch64 ELF) from main.c and model.o in ``out``."""
    need(CC, "gcc-aarch64-linux-gnu")
    # gcc 12 for aarch64 can ICE while vectorising; the model's own loops are TVM's anyway.
    cmd = [
        CC,
        "-O2",
        "-fno-tree-vectorize",
        "-static",
        "-Iinclude",
        "main.c",
        "model.o",
        "-o",
        "model_runner",
        "-lm",
        "-lpthread",
    ]
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise QCompileError(f"linking the ARM runner failed: {tail[0]}")


def pack_args(arrays: list[np.ndarray]) -> bytes:
    """The runner's argument file: per array its dtype, shape and raw data."""
    out = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        head = struct.pack("<3i", DTYPES[a.dtype], a.dtype.itemsize * 8, a.ndim)
        out.append(head + struct.pack(f"<{a.ndim}q", *a.shape) + a.tobytes())
    return b"".join(out)


class ArmRunner:
    """Runs an ARM artifact's ``model_runner`` under qemu-aarch64 on integer inputs."""

    def __init__(self, artifact: Path, graph: Graph, weights: list[np.ndarray]) -> None:
        self.qemu = need(QEMU, "qemu-user")
        self.artifact = Path(artifact)
        self.runner = self.artifact / "model_runner"
        if not self.runner.is_file():
            raise QCompileError(f"{artifact}: no model_runner (run `make` there to build it)")
        self.weights = weights
        self.out_shape = graph.tensors()[graph.outputs[0]].shape

    def __call__(self, x_int: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x_int, dtype=np.int64)
        out = np.zeros((len(x), *self.out_shape), np.int64)
        with tempfile.TemporaryDirectory(prefix="qcompile-arm-") as tmp:
            args, res = Path(tmp) / "args.bin", Path(tmp) / "out.bin"
            args.write_bytes(pack_args([x, *self.weights, out]))
            r = subprocess.run(
                [self.qemu, str(self.runner), str(args), str(res)], capture_output=True, text=True
            )
            if r.returncode < 0:  # qemu-user dies of the signal its guest did not handle
                raise NativeCrash(
                    f"{self.artifact}: the ARM runner crashed under qemu with "
                    f"{describe_exit(r.returncode)}"
                )
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
                raise NativeCrash(
                    f"{self.artifact}: the ARM runner failed under qemu "
                    f"({describe_exit(r.returncode)}): {tail[0]}"
                )
            return np.fromfile(res, dtype=np.int64).reshape(out.shape)
