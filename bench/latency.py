"""End-to-end batch-1 latency on the host and build time per model, same run.

lenet (1x28x28) and resnet20 (3x32x32), W2A4 uniform with data-calibrated state: the TVM cpu
artifact (int32 where proven, vectorised packed-LUT kernels) against the float model in
torch fp32 and in onnxruntime fp32 (exported with torch.onnx). Each library runs in its own
process with the same thread count (TVM_NUM_THREADS, torch.set_num_threads, onnxruntime's
intra-op threads); figures are medians of repeated single-image calls, checked bit-exact
against the simulator. Build times: `qcompile export` for cpu, arm (TVM compile plus
the static aarch64 link) and gpu (TVM CUDA codegen plus nvcc PTX, where nvcc is present).

    python -m bench.latency [--threads 2] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.kernels import median_time

CASES = [("lenet", (1, 28, 28)), ("resnet20", (3, 32, 32))]


def models(name: str, shape: tuple[int, ...]):
    """(float net, frozen graph): the same seeds in every process give the same weights."""
    from bench.sim import calibrated

    net, _, graph = calibrated(name, shape)
    return net, graph


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(4):  # with median_time's own call: 5 warm-up calls
        fn()
    return 1e3 * median_time(fn, repeats)


def child(kind: str, name: str, artifact: str, repeats: int) -> float:
    shape = dict(CASES)[name]
    net, graph = models(name, shape)
    x = torch.randn(1, *shape)
    if kind == "torch":
        with torch.no_grad():
            return median_ms(lambda: net(x), repeats)
    if kind == "onnxruntime":
        import onnxruntime as ort

        path = Path(artifact) / "float.onnx"
        torch.onnx.export(net, (x,), str(path), dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ["OMP_NUM_THREADS"])
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return median_ms(lambda: sess.run(None, feed), repeats)
    from qcompile.backends.tvm import TvmLibrary
    from qcompile.sim import Simulator, quantize_input

    # In this process (already a child of the bench's own): a worker's pipes would be timed.
    runner = TvmLibrary(artifact, graph.tensors()[graph.outputs[0]].shape)
    xi = quantize_input(graph, torch.randn(64, *shape).numpy())
    one = xi[:1]
    ms = median_ms(lambda: runner(one), repeats)
    # Checked after timing: the simulator's BLAS threads spin for a while after a call.
    if not np.array_equal(runner(xi), Simulator(graph).run(xi)[graph.outputs[0]]):
        raise SystemExit(f"{name}: the TVM artifact differs from the simulator")
    return ms


def run_child(kind: str, name: str, artifact: Path, threads: int, repeats: int) -> float:
    env = {**os.environ, **{k: str(threads) for k in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}}
    code = (
        f"import torch; torch.set_num_threads({threads}); from bench.latency import child; "
        f"print(child({kind!r}, {name!r}, {str(artifact)!r}, {repeats}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} on {name} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


def build_times(name: str, graph, root: Path) -> dict[str, float | None]:
    from qcompile.backends.registry import deploy
    from qcompile.backends.targets import load_target

    times: dict[str, float | None] = {}
    for target in ("cpu", "arm", "gpu"):
        if target == "arm" and not shutil.which("aarch64-linux-gnu-gcc"):
            times[target] = None
            continue
        if target == "gpu" and not shutil.which("nvcc"):
            times[target] = None
            continue
        t = time.perf_counter()
        deploy(graph, load_target(target), root / target)
        times[target] = time.perf_counter() - t
    return times


def main() -> None:
    from bench.report import machine, write_section

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    lat_rows, build_rows = [], []
    with tempfile.TemporaryDirectory(prefix="qcompile-latency-") as tmp:
        for name, shape in CASES:
            _, graph = models(name, shape)
            root = Path(tmp) / name
            builds = build_times(name, graph, root)
            ms = {k: run_child(k, name, root / "cpu", a.threads, a.repeats) for k in
                  ("tvm", "torch", "onnxruntime")}  # fmt: skip
            print(name, json.dumps(ms), json.dumps(builds), flush=True)
            lat_rows.append(
                f"| {name} {'x'.join(map(str, shape))} | {ms['tvm']:.3f} | {ms['torch']:.3f} | "
                f"{ms['onnxruntime']:.3f} | {ms['torch'] / ms['tvm']:.2f}x | "
                f"{ms['onnxruntime'] / ms['tvm']:.2f}x |"
            )
            cell = {k: "-" if v is None else f"{v:.1f}" for k, v in builds.items()}
            build_rows.append(f"| {name} | {cell['cpu']} | {cell['arm']} | {cell['gpu']} |")
    write_section(
        "latency",
        "\n".join(
            [
                "## End-to-end batch-1 latency and build time (`python -m bench.latency`)",
                "",
                f"W2A4 uniform, random weights with calibrated state; {a.threads} threads per "
                f"library, each in its own process; median of {a.repeats} single-image calls; "
                f"{machine()}. The TVM artifact is checked bit-exact against the simulator "
                "(after timing). torch and onnxruntime run the float model (fp32).",
                "",
                "| model | TVM cpu ms | torch fp32 ms | onnxruntime fp32 ms | vs torch | "
                "vs onnxruntime |",
                "|---|---|---|---|---|---|",
                *lat_rows,
                "",
                "Build time of `qcompile export` per target, seconds (arm includes the static "
                "aarch64 link; gpu includes nvcc's PTX; '-' where the toolchain is absent):",
                "",
                "| model | cpu | arm | gpu |",
                "|---|---|---|---|",
                *build_rows,
            ]
        ),
    )


if __name__ == "__main__":
    main()
