"""Solve the traced graph with da4ml and write its Verilog project, in a child process that
is stopped after the profile's ``max_solve_s`` (da4ml's solver is compiled code a Python
timeout cannot interrupt; a long solve ends as one clear error, not a hang)."""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qcompile.backends.worker import describe_exit
from qcompile.errors import QCompileError

TOP = "qmodel"  # the Verilog top module (and the artifact's project name)


def _solve_and_write(
    qir_bytes: bytes, out: str, part: str, clock: float, cutoff: int, q: Any
) -> None:
    try:
        import numpy as np
        from da4ml.codegen import RTLModel
        from da4ml.codegen.rtl.rtl_model import get_io_kifs

        from qcompile.backends.rtl.trace import exact_decimals, trace_pipeline
        from qcompile.ir import qir

        graph = qir.loads(qir_bytes)
        with exact_decimals(graph):
            t = time.perf_counter()
            pipe = trace_pipeline(graph, cutoff)
            solve_s = time.perf_counter() - t
            model = RTLModel(
                pipe, TOP, out, flavor="verilog", print_latency=False, part_name=part,
                clock_period=clock,
            )  # fmt: skip
            model.write()
        kin, kout = get_io_kifs(pipe)
        q.put(
            {
                "solve_s": round(solve_s, 2),
                "cost": float(pipe.cost),
                "reg_bits": int(pipe.reg_bits),
                "latency_cycles": len(pipe.solutions),
                "in_kif": [int(v) for v in np.max(kin, axis=1)],
                "out_kif": [int(v) for v in np.max(kout, axis=1)],
            }
        )
    except BaseException as e:  # reported to the parent, which decides what it means
        q.put({"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})


def solve_and_write(
    qir_bytes: bytes, out: Path, part: str, clock: float, cutoff: int, limit_s: float
) -> dict[str, Any]:
    """Trace, solve and write the project into ``out``; da4ml's figures (cost, register
    bits, latency, the I/O fixed-point types). Raises QCompileError past ``limit_s``."""
    try:
        result = in_child(_solve_and_write, (qir_bytes, str(out), part, clock, cutoff), limit_s)
    except SolveTimeout:
        raise QCompileError(
            f"da4ml did not finish solving the model within max_solve_s = {limit_s:g} s; "
            "export a smaller model, raise max_solve_s in a target profile, or use "
            "--target fpga (HLS shares multipliers)"
        ) from None
    if "error" in result:
        raise RuntimeError(f"da4ml failed on this model: {result['error']}\n{result['trace']}")
    return result


class SolveTimeout(QCompileError):
    """A child process ran past its time limit and was stopped."""


def in_child(target: Callable[..., None], args: tuple[Any, ...], limit_s: float) -> Any:
    """``target(*args, q)`` in a spawned child process (no inherited threads or torch state;
    da4ml's compiled solver cannot be interrupted in this one): the one object it puts on
    ``q``. :class:`SolveTimeout` past ``limit_s`` (the child is killed); a QCompileError
    when it dies without answering. ``target`` must be importable by name (spawn)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q), daemon=True)
    p.start()
    result = await_answer(p, q, limit_s)
    p.join()
    return result


def await_answer(p: Any, q: Any, limit_s: float) -> Any:
    """Process ``p``'s answer on ``q``; :class:`SolveTimeout` past ``limit_s`` (``p`` is
    killed), a QCompileError when it dies without answering (a crash, or a start-up failure
    before its own error handler): checked every second, so a dead child is not waited on
    for the whole limit."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            return q.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
        except queue.Empty:
            pass
        if not p.is_alive():
            try:  # an answer sent just before it ended is still in the pipe
                return q.get(timeout=1.0)
            except queue.Empty:
                p.join()
                raise QCompileError(
                    f"da4ml's solver process ended with {describe_exit(p.exitcode or 0)} "
                    "without solving the model; run the export again, or report it with the model"
                ) from None
        if time.monotonic() >= deadline:
            p.kill()
            p.join()
            raise SolveTimeout(f"no answer within {limit_s:g} s")
