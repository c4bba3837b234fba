"""Packed low-bit GEMV/GEMM kernels from TVM against torch, numpy and onnxruntime fp32.

y = W x for a 4096x4096 weight matrix of b-bit codes (b = 1, 2, 4: int8 table levels per row;
b = 8: uniform int8 levels), int8 inputs, int32 accumulation, through the backend's own
``compile_graph`` for the host profile (``$QCOMPILE_CPU_FEATURES=x86-64-v3`` builds the AVX2
code); the baselines multiply a dense fp32 matrix (under x86-64-v3 on an AVX-512 host, with
their AVX2 kernels: :mod:`bench.cpu_level`). Each library runs in its own process with the
same thread count; figures are medians of repeats. Effective weight bandwidth = bytes of
codes read per call / time, against the streaming bandwidth (numpy copy of 512 MiB) measured
in the same run. Prints a Markdown table and, last, one JSON object.

    python -m bench.kernels [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from qcompile.ir import ops
from qcompile.ir.graph import Affine, Dense, Graph, InputQuant, Node, Requant, Table, Weights
from qcompile.ir.types import QType, TensorInfo
from qcompile.sim import Simulator

N = 4096
BITS = (1, 2, 4, 8)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def gemv_graph(bits: int, seed: int = 0) -> Graph:
    """One dense layer of the IR: 4096x4096 b-bit codes, int8 per-row table levels (uniform
    int8 levels at 8 bits, what an 8-bit layer is), 8-bit inputs; the output keeps the whole
    accumulator (no clipping)."""
    rng = np.random.default_rng(seed)
    x = TensorInfo("x", (N,), QType(8, True), 1.0)
    if bits == 8:
        levels: Affine | Table = Affine(1, np.full(N, -128, np.int64))
    else:
        levels = Table(rng.integers(-128, 128, (N, 1 << bits)).astype(np.int64))
    codes = rng.integers(0, 1 << bits, (N, N)).astype(np.uint8)
    w = Weights(bits, (N, N), codes, False, levels)
    probe = Node("y", Dense(), ("x",), x, w, Requant(0, 0, 0, 64))
    acc = ops.acc_bits_needed(probe, [x.qtype.range])
    lo, hi = -(1 << (acc - 1)), (1 << (acc - 1)) - 1
    y = TensorInfo("y", (N,), QType(acc, True), 1.0)
    node = Node("y", Dense(), ("x",), y, w, Requant(0, lo, hi, acc))
    return Graph("gemv", x, InputQuant(8, -128.0, 1.0, -128), (node,), ("y",))


def tvm_gemv(bits: int, m: int, repeats: int) -> float:
    """The backend's own compute and CPU schedule for one dense layer, batch ``m``."""
    import tvm

    from qcompile.backends.targets import load_target
    from qcompile.backends.tvm.export import compile_graph

    graph = gemv_graph(bits)
    ex, weights = compile_graph(graph, load_target("cpu"))
    rng = np.random.default_rng(1)
    dev = tvm.cpu()
    x = rng.integers(-128, 128, (m, N)).astype(np.int64)
    args = [
        tvm.runtime.tensor(a, dev)
        for a in (x, *(w for _, _, w in weights), np.zeros((m, N), np.int64))
    ]
    t = median_time(lambda: ex["main"](*args), repeats)
    # Checked after timing: the simulator's BLAS threads keep spinning for a while after a
    # call and would steal the cores TVM's threads are timed on.
    if not np.array_equal(args[-1].numpy(), Simulator(graph).run(x)["y"]):
        raise SystemExit(f"TVM {bits}-bit GEMV differs from the simulator")
    return t


def dense_fp32(lib: str, m: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((N, N), dtype=np.float32)
    x = rng.standard_normal((N, m), dtype=np.float32)
    if lib == "numpy":
        return median_time(lambda: w @ x, repeats)
    if lib == "onnxruntime":
        return _onnxruntime(w, x, repeats)
    import torch

    tw, tx = torch.from_numpy(w), torch.from_numpy(x)
    with torch.no_grad():
        return median_time(lambda: tw @ tx, repeats)


def _onnxruntime(w: np.ndarray, x: np.ndarray, repeats: int) -> float:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m = x.shape[1]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, N])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ["OMP_NUM_THREADS"])
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": np.ascontiguousarray(x.T)}
    del onnx
    return median_time(lambda: sess.run(None, feed), repeats)


def stream_gbs(repeats: int) -> float:
    a = np.ones(512 * 2**20 // 8)
    b = np.empty_like(a)
    t = median_time(lambda: np.copyto(b, a), max(3, repeats // 4))
    return 2 * a.nbytes / t / 1e9  # read + write


def child(spec: str, repeats: int) -> None:
    from bench.cpu_level import check_masked

    check_masked()
    kind, *rest = spec.split(":")
    if kind == "tvm":
        t = tvm_gemv(int(rest[0]), int(rest[1]), repeats)
    elif kind == "stream":
        t = stream_gbs(repeats)
    else:
        t = dense_fp32(kind, int(rest[0]), repeats)
    print(json.dumps({"spec": spec, "value": t}))


def run(spec: str, threads: int, repeats: int, extra: dict[str, str] | None = None) -> float:
    """``extra``: environment for this child (a float baseline's CPUID mask)."""
    env = {
        **os.environ,
        "TVM_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        **(extra or {}),
    }
    code = (
        f"import torch; torch.set_num_threads({threads}); "
        f"from bench.kernels import child; child({spec!r}, {repeats})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["value"]


def isa_label() -> str:
    """The vector unit the host profile's kernels use (as $QCOMPILE_CPU_FEATURES leaves it)."""
    from qcompile.backends.targets import load_target
    from qcompile.backends.tvm.isa import isa_of

    isa = isa_of(load_target("cpu").tvm_target())
    return isa.name if isa else "none"


def simulated() -> str:
    spec = os.environ.get("QCOMPILE_CPU_FEATURES")
    return f" (QCOMPILE_CPU_FEATURES={spec})" if spec else ""


def section_name(base: str) -> str:
    """``base``, or ``base_<level>`` when $QCOMPILE_CPU_FEATURES simulates another CPU (so
    the AVX2 run does not overwrite the host's)."""
    spec = os.environ.get("QCOMPILE_CPU_FEATURES", "")
    level = spec.split(",")[0].strip()
    return f"{base}_{level.replace('-', '_')}" if level else base


def main() -> None:
    from bench.cpu_level import baseline_env
    from bench.report import machine, write_section

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    isa = isa_label()
    masked, baselines_on = baseline_env()
    stream = run("stream", a.threads, a.repeats)
    rows: list[str] = []
    figures: dict[str, dict[str, float]] = {"gemv_ms": {}, "gemm64_ms": {}}
    for m in (1, 64):
        key = "gemv_ms" if m == 1 else "gemm64_ms"
        base = {lib: run(f"{lib}:{m}", a.threads, a.repeats, masked) for lib in FP32}
        torch_t = base["torch"]
        for lib, t in base.items():
            figures[key][lib] = round(t * 1e3, 4)
            rows.append(
                f"| {'GEMV' if m == 1 else 'GEMM M=64'} | {lib} fp32 | - | {t * 1e3:.2f} | "
                f"{torch_t / t:.2f}x | {base['numpy'] / t:.2f}x | {4 * N * N / t / 1e9:.1f} |"
            )
        for bits in BITS:
            t = run(f"tvm:{bits}:{m}", a.threads, a.repeats)
            figures[key][str(bits)] = round(t * 1e3, 4)
            gbs = N * N * bits / 8 / t / 1e9
            rows.append(
                f"| | qcompile TVM ({isa}) | {bits} | {t * 1e3:.2f} | {torch_t / t:.2f}x | "
                f"{base['numpy'] / t:.2f}x | {gbs:.2f} ({100 * gbs / stream:.1f}% of stream) |"
            )
            print(rows[-1], flush=True)
    table = [
        f"## Packed low-bit kernels vs fp32 (`python -m bench.kernels`, {isa})",
        "",
        f"{N}x{N} weights, {a.threads} threads per library (each in its own process), median "
        f"of {a.repeats} calls; {machine()}; host profile's vector unit: {isa}{simulated()}; "
        f"the fp32 baselines' kernels chosen for {baselines_on}. "
        f"Streaming bandwidth (numpy copy): {stream:.1f} GB/s.",
        "",
        "The stream figure copies 512 MiB; the packed matrices (2-16 MiB) stay in the CPU's "
        "caches between calls (this VM reports a shared L3 of hundreds of MiB), so a share "
        "above 100% means cache-resident weights, not a faster memory.",
        "",
        "| kernel | library | bits | ms | vs torch | vs numpy | weight GB/s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *goals(figures, stream),
    ]
    write_section(section_name("kernels"), "\n".join(table))
    print("\n".join(table))
    print(json.dumps({"isa": isa, "stream_gbps": round(stream, 2), **figures}))


FP32 = ("torch", "numpy", "onnxruntime")


def goals(f: dict[str, dict[str, float]], stream: float) -> list[str]:
    """Issue 16's goals, each with the figure this run measured and whether it is met."""
    gemv, gemm = f["gemv_ms"], f["gemm64_ms"]
    share2 = N * N * 2 / 8 / (gemv["2"] / 1e3) / 1e9 / stream
    x4, x8 = gemv["numpy"] / gemv["4"], gemv["numpy"] / gemv["8"]
    worst = min(gemm["torch"] / gemm[str(b)] for b in BITS)
    checks = [
        ("2-bit GEMV >= 50% of streaming bandwidth", f"{100 * share2:.0f}%", share2 >= 0.5),
        ("4-bit GEMV >= 2x numpy fp32", f"{x4:.2f}x", x4 >= 2),
        ("8-bit GEMV >= 1x numpy fp32", f"{x8:.2f}x", x8 >= 1),
        ("GEMM M=64 >= torch fp32 at every width", f"worst {worst:.2f}x", worst >= 1),
    ]
    return [f"- Goal: {what}: {got}, {'met' if ok else 'not met'}." for what, got, ok in checks]


if __name__ == "__main__":
    main()
