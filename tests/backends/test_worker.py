"""Native crashes inside artifacts: a deliberately broken model.so (an illegal instruction, a
bad pointer, an abort while loading), a broken C simulation library and a crashing ARM
runner each end as one error line naming the artifact and the signal; the test process
lives on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qcompile.backends.artifact import read_manifest, seal
from qcompile.backends.registry import deploy
from qcompile.backends.targets import load_target
from qcompile.backends.tvm import TvmRunner, load_weights
from qcompile.backends.tvm.arm import ArmRunner
from qcompile.backends.worker import NativeCrash, Worker, describe_exit
from qcompile.errors import QCompileError
from tests.backends.helpers import random_inputs, zoo_graph
from tests.conftest import NEEDS_ARM, NEEDS_GXX, run_cli

# g++ links the real host artifact; its Debian package brings gcc, which builds the broken
# libraries as C (g++ would mangle the entry point's name).
CC = shutil.which("gcc") or "gcc"

# Entry points with the TVM FFI signature of the exported ``main``.
BROKEN = {
    "SIGILL": "int __tvm_ffi_main(void *s, const void *a, int n, void *r) "
    "{ __builtin_trap(); return 0; }",
    "SIGSEGV": "int __tvm_ffi_main(void *s, const void *a, int n, void *r) "
    "{ *(volatile int *)0 = 1; return 0; }",
    "SIGABRT": "#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) "
    "{ abort(); }\nint __tvm_ffi_main(void *s, const void *a, int n, void *r) { return 0; }",
}


def shared_library(source: str, out: Path) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source + "\n")
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A real host artifact of a small model, to copy and break."""
    root = tmp_path_factory.mktemp("crash")
    graph = zoo_graph("mlp", (1, 8, 8), {})
    deploy(graph, load_target("cpu"), root / "good")
    np.save(root / "x.npy", np.random.default_rng(0).normal(size=(8, 1, 8, 8)).astype("f4"))
    return root, graph


def broken_copy(artifact, signal: str, tmp_path: Path) -> Path:
    root, _ = artifact
    bad = tmp_path / f"broken-{signal}"
    shutil.copytree(root / "good", bad)
    shared_library(BROKEN[signal], bad / "model.so")
    (bad / "model.c").unlink()
    seal(bad)  # as if the export itself had produced the broken library
    return bad


@NEEDS_GXX
@pytest.mark.parametrize("signal", list(BROKEN))
def test_a_crashing_library_is_one_error_not_a_dead_process(artifact, signal, tmp_path):
    _, graph = artifact
    bad = broken_copy(artifact, signal, tmp_path)
    runner = TvmRunner(bad, graph, read_manifest(bad))
    with pytest.raises(NativeCrash) as e:
        runner(random_inputs(graph, 4))
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and f"crashed with {signal} (" in msg


@NEEDS_GXX
def test_simulate_reports_a_crash_in_one_line(artifact, tmp_path):
    root, _ = artifact
    bad = broken_copy(artifact, "SIGILL", tmp_path)
    r = run_cli("simulate", str(bad), "--inputs", str(root / "x.npy"))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        f"error: {bad}: the compiled model crashed with SIGILL (Illegal instruction)"
    )
    good = run_cli("simulate", str(root / "good"), "--inputs", str(root / "x.npy"))
    assert good.returncode == 0 and "exact 100.0%" in good.stdout, good.stderr


@NEEDS_GXX
def test_a_crashing_c_simulation_is_one_error(tmp_path):
    lib = shared_library(
        "void myproject_double(double *x, double *y) { *(volatile int *)0 = 1; }",
        tmp_path / "libcsim.so",
    )
    worker = Worker("fpga_artifact")
    worker.open("csim", library=str(lib), function="myproject_double", n_out=10)
    with pytest.raises(NativeCrash, match=r"^fpga_artifact: .*SIGSEGV \(Segmentation fault\)$"):
        worker(np.zeros((2, 64)))


def test_loader_errors_come_back_as_themselves(tmp_path):
    worker = Worker("fpga_artifact")
    worker.open("csim", library=str(tmp_path / "none.so"), function="f", n_out=1)
    with pytest.raises(QCompileError, match="cannot load the C simulation") as e:
        worker(np.zeros((1, 1)))
    assert not isinstance(e.value, NativeCrash)
    assert describe_exit(3) == "exit status 3"


@NEEDS_ARM
def test_a_crashing_arm_runner_is_one_error(tmp_path):
    graph = zoo_graph("mlp", (1, 8, 8), {})
    art = tmp_path / "arm"
    deploy(graph, load_target("arm"), art)
    src = tmp_path / "crash.c"
    src.write_text("int main(void) { *(volatile int *)0 = 1; return 0; }\n")
    subprocess.run(
        ["aarch64-linux-gnu-gcc", "-static", "-o", str(art / "model_runner"), str(src)], check=True
    )
    runner = ArmRunner(art, graph, load_weights(art, read_manifest(art)))
    with pytest.raises(NativeCrash, match=r"under qemu with SIGSEGV \(Segmentation fault\)$"):
        runner(random_inputs(graph, 4))
