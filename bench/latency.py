"""End-to-end batch-1 latency and batch-64 time on the host, and build time per model.

lenet (1x28x28), resnet20 and mobilenetv2 (3x32x32), W2A4 uniform with data-calibrated
state: the TVM cpu artifact (the host profile; ``$QCOMPILE_CPU_FEATURES=x86-64-v3`` builds
the AVX2 code) against the float model in torch fp32 and in onnxruntime fp32 (exported with
torch.onnx). Each library runs in its own process with the same thread count
(TVM_NUM_THREADS, torch.set_num_threads, onnxruntime's intra-op threads); figures are
medians of repeated calls, the artifact checked bit-exact against the simulator. Under
x86-64-v3 on an AVX-512 host the float baselines run their AVX2 kernels, as on the machine
the profile stands for (:mod:`bench.cpu_level`), and onnxruntime runs a second time with
the host's AVX-512 (``onnxruntime_host_ms``). Build
times: `qcompile export` for cpu and arm (TVM compile plus the static aarch64 link). Prints a
Markdown table and, last, one JSON object.

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

CASES = [("lenet", (1, 28, 28)), ("resnet20", (3, 32, 32)), ("mobilenetv2", (3, 32, 32))]
BATCH = 64


def models(name: str, shape: tuple[int, ...]):
    """(float net, frozen graph): the same seeds in every process give the same weights."""
    from bench.sim import calibrated

    net, _, graph = calibrated(name, shape)
    return net, graph


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(4):  # with median_time's own call: 5 warm-up calls
        fn()
    return 1e3 * median_time(fn, repeats)


def child(kind: str, name: str, artifact: str, repeats: int, batch: int = 1) -> float:
    from bench.cpu_level import check_masked

    check_masked()
    shape = dict(CASES)[name]
    net, graph = models(name, shape)
    x = torch.randn(batch, *shape)
    if kind == "torch":
        with torch.no_grad():
            return median_ms(lambda: net(x), repeats)
    if kind == "onnxruntime":
        import onnxruntime as ort

        path = Path(artifact) / "float.onnx"
        axes = {"input": {0: "n"}}
        torch.onnx.export(
            net, (x,), str(path), dynamo=False, input_names=["input"], dynamic_axes=axes
        )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ["OMP_NUM_THREADS"])
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return median_ms(lambda: sess.run(None, feed), repeats)
    from qcompile.backends.tvm import TvmLibrary
    from qcompile.sim import Simulator, quantize_input

    # In this process (already a child of the bench's own): a worker's pipes would be timed.
    runner = TvmLibrary(artifact, graph.tensors()[graph.outputs[0]].shape)
    xi = quantize_input(graph, torch.randn(BATCH, *shape).numpy())
    one = xi[:batch]
    ms = median_ms(lambda: runner(one), repeats)
    # Checked after timing: the simulator's BLAS threads spin for a while after a call.
    if not np.array_equal(runner(xi), Simulator(graph).run(xi)[graph.outputs[0]]):
        raise SystemExit(f"{name}: the TVM artifact differs from the simulator")
    return ms


def run_child(
    kind: str,
    name: str,
    artifact: Path,
    threads: int,
    repeats: int,
    batch: int = 1,
    extra: dict[str, str] | None = None,
) -> float:
    """``extra``: environment for this child (a float baseline's CPUID mask)."""
    env = {**os.environ, **{k: str(threads) for k in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}}
    env.update(extra or {})
    code = (
        f"import torch; torch.set_num_threads({threads}); from bench.latency import child; "
        f"print(child({kind!r}, {name!r}, {str(artifact)!r}, {repeats}, {batch}))"
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
    for target in ("cpu", "arm"):
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


LIBS = {"tvm": "qcompile", "torch": "torch", "onnxruntime": "onnxruntime"}
HOST_ORT = "onnxruntime_host"  # onnxruntime with the host's features, where the rest are masked


def goals(f: dict[str, dict]) -> list[str]:
    """Issue 16's goals, each with this run's figure and whether it is met."""
    out = []
    for key, what in (("models", "batch-1 latency"), ("batch64", f"batch-{BATCH} time")):
        for name, ms in f[key].items():
            ratio = ms["onnxruntime_ms"] / ms["qcompile_ms"]
            verdict = "met" if ratio > 1 else "not met"
            line = f"- Goal: {name} {what} below onnxruntime fp32's: {ratio:.2f}x, {verdict}"
            if f"{HOST_ORT}_ms" in ms:
                host = ms[f"{HOST_ORT}_ms"] / ms["qcompile_ms"]
                line += f" (against its AVX-512 kernels on this host: {host:.2f}x)"
            out.append(line + ".")
    cpu = (f["build_s"].get("resnet20") or {}).get("cpu")
    if cpu is not None:
        out.append(
            f"- Goal: resnet20 cpu build under 30 s: {cpu} s, {'met' if cpu < 30 else 'not met'}."
        )
    return out


def main() -> None:
    from bench.cpu_level import baseline_env
    from bench.kernels import isa_label, section_name, simulated
    from bench.report import machine, write_section

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    isa = isa_label()
    masked, baselines_on = baseline_env()
    # figure -> (the child that measures it, its extra environment)
    kinds = {k: (k, masked if k != "tvm" else {}) for k in LIBS}
    if masked:
        kinds[HOST_ORT] = ("onnxruntime", {})
    lat_rows, batch_rows, build_rows = [], [], []
    figures: dict[str, dict] = {"models": {}, "batch64": {}, "build_s": {}}
    with tempfile.TemporaryDirectory(prefix="qcompile-latency-") as tmp:
        for name, shape in CASES:
            _, graph = models(name, shape)
            root = Path(tmp) / name
            builds = build_times(name, graph, root)
            for batch, rows, key in ((1, lat_rows, "models"), (BATCH, batch_rows, "batch64")):
                reps = a.repeats if batch == 1 else max(10, a.repeats // 10)
                ms = {
                    k: run_child(kind, name, root / "cpu", a.threads, reps, batch, env)
                    for k, (kind, env) in kinds.items()
                }
                figures[key][name] = {f"{LIBS.get(k, k)}_ms": round(v, 4) for k, v in ms.items()}
                print(name, batch, json.dumps(ms), flush=True)
                host = f" {ms[HOST_ORT]:.3f} | {ms[HOST_ORT] / ms['tvm']:.2f}x |" if masked else ""
                rows.append(
                    f"| {name} {'x'.join(map(str, shape))} | {ms['tvm']:.3f} | "
                    f"{ms['torch']:.3f} | {ms['onnxruntime']:.3f} | "
                    f"{ms['torch'] / ms['tvm']:.2f}x | {ms['onnxruntime'] / ms['tvm']:.2f}x |"
                    + host
                )
            figures["build_s"][name] = {k: None if v is None else round(v, 1) for k, v in
                                        builds.items()}  # fmt: skip
            cell = {k: "-" if v is None else f"{v:.1f}" for k, v in builds.items()}
            build_rows.append(f"| {name} | {cell['cpu']} | {cell['arm']} |")
    head = (
        "| model | qcompile TVM ms | torch fp32 ms | onnxruntime fp32 ms | vs torch | "
        "vs onnxruntime |" + (" onnxruntime, host AVX-512 ms | vs it |" if masked else "")
    )
    head += "\n|" + "---|" * (8 if masked else 6)
    host_note = (
        " The last two columns: onnxruntime again, with this host's AVX-512 kernels (no "
        "AVX2 machine runs those)."
        if masked
        else ""
    )
    text = "\n".join(
        [
            f"## End-to-end latency and build time (`python -m bench.latency`, {isa})",
            "",
            f"W2A4 uniform, random weights with calibrated state; {a.threads} threads per "
            f"library, each in its own process; {machine()}; host profile's vector unit: "
            f"{isa}{simulated()}. The TVM artifact is checked bit-exact against the simulator "
            "(after timing). torch and onnxruntime run the float model (fp32), their kernels "
            f"chosen for {baselines_on}. 'vs' columns: their time / qcompile's (above 1: "
            f"qcompile is faster).{host_note}",
            "",
            f"Batch 1, median of {a.repeats} calls:",
            "",
            head,
            *lat_rows,
            "",
            f"Batch {BATCH} (one call on {BATCH} images), median of "
            f"{max(10, a.repeats // 10)} calls:",
            "",
            head,
            *batch_rows,
            "",
            "Build time of `qcompile export` per target, seconds (arm includes the static "
            "aarch64 link; '-' where the toolchain is absent):",
            "",
            "| model | cpu | arm |",
            "|---|---|---|",
            *build_rows,
            "",
            *goals(figures),
        ]
    )
    write_section(section_name("latency"), text)
    print(text)
    print(json.dumps({"isa": isa, **figures}))


if __name__ == "__main__":
    main()
