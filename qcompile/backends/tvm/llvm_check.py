"""Check a cpu profile's ``mtriple``, ``mcpu`` and ``mattr`` with LLVM before TVM sees them.

TVM hands them to LLVM unchecked: an unknown triple crashes the process (LLVM finds no
target and TVM dereferences it), and an unknown CPU or feature is only logged while the
build goes on for something else. LLVM's own queries answer safely, so each field is asked
about first and a bad one is a one-line error naming the file and the field.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from qcompile.backends.cpu_features import is_x86_64
from qcompile.backends.targets import CpuTarget
from qcompile.errors import QCompileError, did_you_mean

ARCHES = ("x86_64", "aarch64")  # a host library, or the ARM runner under qemu


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (LLVM and TVM log from C++ there while being asked)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_llvm_target(target: CpuTarget) -> None:
    """Raise QCompileError (one line) if LLVM does not know ``target``'s triple, CPU or
    features, or the triple is not one qcompile builds artifacts for.

    >>> check_llvm_target(CpuTarget("rpi4", "aarch64-linux-gnu", "cortex-a72", ("+neon",)))
    """
    if target.is_host:
        return  # built from the running CPU's own features
    import tvm
    from tvm.target import codegen

    where = f"target file {target.path or target.name}"
    triple = target.mtriple or str(codegen.llvm_get_system_triple())
    with quiet_stderr():
        if target.mtriple and not codegen.llvm_is_valid_cpu("generic", triple):
            raise QCompileError(
                f"{where}: mtriple '{target.mtriple}' is not a target triple LLVM knows "
                "(e.g. x86_64-linux-gnu, aarch64-linux-gnu)"
            )
        if not (is_x86_64(triple) or triple.startswith("aarch64")):
            raise QCompileError(
                f"{where}: mtriple '{triple}': qcompile builds for {' and '.join(ARCHES)}"
            )
        if target.mcpu and not codegen.llvm_is_valid_cpu(target.mcpu, triple):
            cpus = codegen.llvm_get_cpu_archlist(tvm.target.Target(_probe(triple)))
            raise QCompileError(
                f"{where}: mcpu '{target.mcpu}' is not a CPU LLVM knows for {triple}"
                f"{did_you_mean(target.mcpu, [str(c) for c in cpus])}"
            )
        names = [a[1:] for a in target.mattr]
        if names:
            probe = _probe(triple, [f"+{n}" for n in names])
            known = set(codegen.llvm_get_cpu_features(tvm.target.Target(probe)))
            unknown = [a for a, n in zip(target.mattr, names, strict=True) if n not in known]
            if unknown:
                raise QCompileError(
                    f"{where}: mattr '{unknown[0]}' is not a feature LLVM knows for {triple}"
                )


def _probe(triple: str, mattr: list[str] | None = None) -> dict:
    return {"kind": "llvm", "mtriple": triple, **({"mattr": mattr} if mattr else {})}
