"""Run gpu artifacts on a machine that has a GPU but not the TVM compiler.

``prepare DIR`` (here, with TVM and nvcc): exports every zoo model, the 1..8-bit chains
(uniform and non-uniform LUTs) and a graph with per-channel widths for ``--target gpu``, with
256 inputs each and the simulator's outputs, plus the TVM runtime libraries a GPU machine
needs (``libtvm_runtime*.so``: 4 MB, against 260 MB for the compiler). ``run DIR OUT``
(there: torch with CUDA and tvm-ffi) loads each artifact's library, runs it on the GPU and
writes ``OUT/results.json``: per model whether the outputs equal the simulator's
(``np.array_equal``) and the batch time.

    python -m bench.gpu_exact prepare .gpu_run
    python -m bench.gpu_exact run .gpu_run $OUT      # on the GPU machine
"""

from __future__ import annotations

import ctypes
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CASES = ("mlp", "lenet", "resnet20", "resnet18", "vgg_small", "mobilenetv2")


def prepare(root: Path) -> None:
    import tvm

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from qcompile.backends.registry import deploy
    from qcompile.backends.targets import load_target
    from qcompile.sim import Simulator
    from tests.backends.helpers import ZOO, chain, mixed_chain, random_inputs, zoo_graph

    root.mkdir(parents=True, exist_ok=True)
    graphs = [(name, zoo_graph(name, shape, opts)) for name, shape, opts in ZOO]
    graphs += [(f"chain_{lv}", chain(lv)) for lv in ("uniform", "nonuniform")]
    graphs += [("mixed_widths", mixed_chain("nonuniform"))]  # per-channel widths
    for name, graph in graphs:
        t = time.perf_counter()
        deploy(graph, load_target("gpu"), root / name, force=True)
        x = random_inputs(graph, 256)
        np.save(root / name / "x.npy", x.astype(np.int16))  # 8-bit inputs; keeps the copy small
        np.save(root / name / "expect.npy", Simulator(graph).run(x)[graph.outputs[0]])
        print(f"{name}: exported in {time.perf_counter() - t:.1f} s", flush=True)
    lib = Path(tvm.__file__).parent / "lib"
    for so in ("libtvm_runtime.so", "libtvm_runtime_cuda.so"):
        shutil.copy(lib / so, root / so)


def register_nvcc(arch: str) -> None:
    """TVM's wheel embeds CUDA source in the library (its compiler is built without the CUDA
    runtime), and the runtime compiles it at load through ``tvm_callback_cuda_compile``: here
    that is the GPU machine's nvcc, to a fatbin for ``arch``."""
    import subprocess
    import tempfile

    import tvm_ffi

    @tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
    def compile_source(code: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            src, fat = Path(tmp) / "m.cu", Path(tmp) / "m.fatbin"
            src.write_text(code)
            cmd = ["nvcc", "--fatbin", "-O3", f"-arch={arch}", str(src), "-o", str(fat)]
            subprocess.run(cmd, check=True)
            return fat.read_bytes()


def run(root: Path, out: Path) -> None:
    import torch
    import tvm_ffi

    for so in ("libtvm_runtime.so", "libtvm_runtime_cuda.so"):
        ctypes.CDLL(str(root / so), mode=ctypes.RTLD_GLOBAL)
    register_nvcc("sm_90")
    results = {}
    for d in sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()):
        info = json.loads((d / "manifest.json").read_text())
        with np.load(d / info["weights"]) as z:
            weights = [torch.from_numpy(z[k]).cuda() for k in sorted(z.files)]
        fn = tvm_ffi.load_module(str(d / info["library"]))[info["entry"]]
        x = torch.from_numpy(np.load(d / "x.npy").astype(np.int64)).cuda()
        expect = np.load(d / "expect.npy")
        y = torch.zeros(expect.shape, dtype=torch.int64, device="cuda")
        fn(x, *weights, y)
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            t = time.perf_counter()
            fn(x, *weights, y)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        got = y.cpu().numpy()
        np.save(out / f"{d.name}.npy", got) if len(results) < 6 else None
        results[d.name] = {
            "exact": bool(np.array_equal(got, expect)),
            "n": len(expect),
            "batch_ms": round(1e3 * statistics.median(times), 3),
            "device": torch.cuda.get_device_name(),
        }
        print(d.name, results[d.name], flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["prepare"]:
        prepare(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["run"]:
        run(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
