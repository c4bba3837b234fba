"""The TVM backend's export (cpu, arm, gpu artifacts: library, weights, manifest), its runners
and its export line (the registry's entries for them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.backends.artifact import write_artifact
from qcompile.backends.cpu_features import target_isa
from qcompile.backends.manifest import Manifest
from qcompile.backends.registry import artifact_kind
from qcompile.backends.targets import CpuTarget, GpuTarget
from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph

LIB, WEIGHTS = "model.so", "weights.npz"
SPMD_MACS = 1 << 22  # the smallest model (MACs an image) considered for ``spmd``
SPMD_WORK = 64  # the fewest iterations a block shares out inside the batch-of-one region


def compile_graph(graph: Graph, target: CpuTarget) -> tuple[Any, list]:
    """(TVM executable, weights in call order). Dense layers use the AVX-512 LUT kernel where
    the target (not this machine) has the features and the layer qualifies. The target's
    triple, CPU and features are checked with LLVM first (TVM would crash or ignore them)."""
    import tvm
    from tvm import te

    from qcompile.backends.tvm.avx512_dense import target_features
    from qcompile.backends.tvm.batch import per_image
    from qcompile.backends.tvm.compute import build_program
    from qcompile.backends.tvm.cpu import schedule_cpu
    from qcompile.backends.tvm.isa import isa_of
    from qcompile.backends.tvm.llvm_check import check_llvm_target
    from qcompile.backends.tvm.spmd import pays

    check_llvm_target(target)
    tvm_target = target.tvm_target()
    avx512, isa = target_features(tvm_target), isa_of(tvm_target)
    # int8/int16 tensors between nodes on x86 only: on aarch64 the same schedules with
    # narrow tensors ran more instructions under qemu (lenet/digits: rpi4 17,217 -> 17,697,
    # rpi5 10,966 -> 11,354 per image; mobilenetv2 about 1.5% more), and no ARM CPU here
    # can time what the smaller tensors save in memory traffic
    narrow = artifact_kind(target) != "arm"
    if image_by_image(graph):
        prog = build_program(graph, avx512, isa, batch=1, threads=False, narrow=narrow)
        func = schedule_cpu(te.create_prim_func(prog.params), prog.kernels, False)
        threaded = None  # the batch-of-one graph on every thread (x86, where it pays)
        if narrow and threaded_image(graph):
            threaded, kernels = threaded_graph(graph, avx512, isa)
            threaded = threaded if pays(graph, kernels, threaded) else None
        # outlined nests on x86 (AVX2's 16 vector registers); aarch64 has 32, and its
        # instruction counts under qemu were measured with one function
        func = per_image(func, outline=narrow, threaded=threaded)
    else:
        prog = build_program(graph, avx512, isa, narrow=narrow)
        func = schedule_cpu(te.create_prim_func(prog.params), prog.kernels)
    # TVM's StorageRewrite reuses a dead buffer's memory for later ones (the intermediates of
    # one image stay in cache). It sees a buffer's accesses only through that buffer, so no
    # kernel reads an allocated buffer through a view of its memory (gemm_dot's scratch).
    ex = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(tvm_target))
    return ex, prog.weights


def threaded_graph(graph: Graph, avx512: Any, isa: Any) -> tuple[Any, dict[str, Any]]:
    """(the scheduled batch-of-one graph whose every layer shares its loop out to the
    threads, its kernels): what :mod:`spmd` runs in one parallel region (x86: narrow
    tensors)."""
    from tvm import te

    from qcompile.backends.tvm.compute import build_program
    from qcompile.backends.tvm.cpu import schedule_cpu

    one = build_program(graph, avx512, isa, batch=1, narrow=True, spread=True)
    return schedule_cpu(te.create_prim_func(one.params), one.kernels, True, SPMD_WORK), one.kernels


def threaded_image(graph: Graph) -> bool:
    """Whether a batch of one may get a second compiled graph, its image on every thread
    (:mod:`spmd`, built where ``spmd.pays``): models of at least ``SPMD_MACS``
    multiply-accumulates an image. A smaller one is over in a few microseconds on one
    thread (lenet: 11 us), where a barrier per layer would not pay, and deciding would cost
    its build a second schedule."""
    return graph.macs() >= SPMD_MACS


def image_by_image(graph: Graph) -> bool:
    """Whether the model runs image by image (``batch.per_image``): where it convolves. A
    conv model's intermediates are images, which stay in the cache one image at a time; a
    model of dense layers only keeps the whole batch in each call instead, so a batch of
    rows shares one decode of every layer's codes (the GEMM) and a large layer's rows are
    shared out to the threads (one image on one thread would read a 4096x4096 layer alone:
    GEMM M=64 went from 3.2 to 19 ms, and a 2-bit GEMV from 0.25 to 0.35 ms)."""
    return any(n.kind == "conv2d" for n in graph.nodes)


def export_tvm(
    graph: Graph, qir_bytes: bytes, out: Path, target: CpuTarget | GpuTarget, force: bool = False
) -> Manifest:
    """Compile ``graph`` for a cpu, arm or gpu profile into the artifact directory ``out``."""
    arm = artifact_kind(target) == "arm"
    if not arm:
        from tvm.support.cc import get_cc

        if get_cc() is None:  # TVM links model.so with the host's C compiler
            raise QCompileError(f"the {target.kind} target needs g++ (apt-get install g++)")
    t = time.perf_counter()
    cuda = None
    if isinstance(target, GpuTarget):
        from qcompile.backends.tvm.cuda import compile_cuda

        ex, weights, *cuda = compile_cuda(graph, target.arch)
    else:
        ex, weights = compile_graph(graph, target)
    build_s = time.perf_counter() - t
    tvm_target = target.tvm_target()
    details: dict[str, Any] = {
        "library": "model.o" if arm else LIB,
        "weights": WEIGHTS,
        "entry": "main",
        "params": ["input", *[f"{n}.{k}" for n, k, _ in weights], "output"],
        "stored_weight_bytes": sum(int(a.nbytes) for _, _, a in weights),
        "build_s": round(build_s, 2),
    }
    if isinstance(target, CpuTarget):
        # What the code may execute, checked against the CPU before the library is loaded.
        details["isa_features"] = sorted(target_isa(tvm_target))
    if arm:
        details["runner"] = "model_runner"
    if cuda:
        details.update(cuda_source="model.cu", ptx="model.ptx")
    profile = {"name": target.name, "tvm_target": tvm_target}
    info = Manifest.of(graph, qir_bytes, artifact_kind(target), profile, **details)

    def fill(tmp: Path) -> None:
        np.savez(tmp / WEIGHTS, **{f"{i:03d}": a for i, (_, _, a) in enumerate(weights)})
        if arm:
            from qcompile.backends.tvm.arm import link, write_sources

            ex.mod.write_to_file(str(tmp / "model.o"))
            write_sources(tmp)
            (tmp / "model.h").write_text(_header(graph, target, info))
            link(tmp)
        else:
            ex.export_library(str(tmp / LIB))
        if cuda:
            (tmp / "model.cu").write_text(cuda[0])
            (tmp / "model.ptx").write_text(cuda[1])
        info.write(tmp, qir_bytes)

    write_artifact(out, force, fill)
    return info


def describe_manifest(info: Any) -> str:
    """What ``export`` prints for a TVM artifact."""
    tvm = describe(info["profile"]["tvm_target"])
    return f"{info['target']}: TVM {tvm}, built in {info['build_s']} s"


def runners(
    artifact: Path, graph: Graph, info: dict[str, Any]
) -> tuple[dict[str, Callable[[np.ndarray], np.ndarray]], dict[str, Any]]:
    """The artifact's implementation for ``simulate``: the library in a worker process (cpu),
    the static runner under qemu (arm), the library on a CUDA device where one is (gpu)."""
    from qcompile.backends.tvm.runner import TvmRunner, load_weights

    kind, extra = info["target"], {"artifact": str(artifact), "target": info["target"]}
    if kind == "arm":
        from qcompile.backends.tvm.arm import ArmRunner

        return {"arm_qemu": ArmRunner(artifact, graph, load_weights(artifact, info))}, extra
    if kind == "cpu":
        return {"tvm_cpu": TvmRunner(artifact, graph, info)}, extra
    from qcompile.backends.tvm.cuda import cuda_device_present

    if cuda_device_present():
        return {"tvm_gpu": TvmRunner(artifact, graph, info, device="cuda")}, extra
    extra["gpu"] = "not run: no CUDA device on this machine (the artifact's .cu and .ptx are built)"
    return {}, extra


def describe(tvm_target: dict[str, Any]) -> str:
    """A TVM target in a few words.

    >>> describe({"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vnni", "+gfni"]})
    'llvm x86-64-v4 +avx512vnni +gfni'
    """
    parts = [tvm_target["kind"], tvm_target.get("mtriple", ""), tvm_target.get("mcpu", "")]
    parts.append(tvm_target.get("arch", ""))
    mattr = list(tvm_target.get("mattr", []))
    parts += mattr if len(mattr) <= 4 else [*mattr[:3], f"and {len(mattr) - 3} more features"]
    return " ".join(p for p in parts if p)


def _header(graph: Graph, target: CpuTarget, info: Manifest) -> str:
    out = graph.tensors()[graph.outputs[0]]
    params = "\n".join(f" *   {i:3d}  {p}" for i, p in enumerate(info["params"]))
    text = (Path(__file__).parent / "templates" / "model.h.tpl").read_text()
    return text.format(
        name=graph.name,
        triple=target.mtriple,
        cpu=target.mcpu or "generic",
        params=params,
        in_shape=list(graph.input.shape),
        out_shape=list(out.shape),
        out_type=out.qtype,
        out_frac=out.qtype.frac,
        out_scale=out.scale,
    )
