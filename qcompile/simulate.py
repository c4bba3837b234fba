"""`qcompile simulate`: run every implementation of a frozen model on the same inputs and
compare them bit for bit.

Implementations: the numpy simulator (the spec) and the PyTorch reference of the frozen
model; backends add their artifacts. ``exact`` is the fraction of inputs whose outputs are
identical (np.array_equal per input) across all of them. Accuracies are reported for each,
and for the fake-quant trained model when its checkpoint is still where freeze found it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qcompile.errors import QCompileError
from qcompile.ir.graph import Graph
from qcompile.sim import Simulator, quantize_input
from qcompile.sim.reference import FrozenTorch

Impl = Callable[[np.ndarray], np.ndarray]
BATCH = 256


def implementations(graph: Graph) -> dict[str, Impl]:
    sim, ref = Simulator(graph), FrozenTorch(graph)
    out = graph.outputs[0]
    return {"sim": lambda x: sim.run(x)[out], "frozen": lambda x: ref(x)[out]}


def load_model(path: str) -> tuple[Graph, dict[str, Impl], dict[str, Any]]:
    """A .qir file, or an exported artifact directory (its .qir plus the artifact itself)."""
    from qcompile.ir import qir

    p = Path(path)
    if not p.is_dir():
        graph = qir.load(p)
        return graph, implementations(graph), {}
    from qcompile.backends.artifact import read_manifest

    info = read_manifest(p)
    graph = qir.load(p / str(info.get("qir", "model.qir")))
    impls = implementations(graph)
    if info["target"] in ("arm", "cpu", "gpu"):
        from qcompile.backends.tvm.export import TvmRunner, load_weights

        extra = {"artifact": str(p), "target": info["target"]}
        if info["target"] == "arm":
            from qcompile.backends.tvm.arm import ArmRunner

            impls["arm_qemu"] = ArmRunner(p, graph, load_weights(p, info))
        elif info["target"] == "cpu":
            impls["tvm_cpu"] = TvmRunner(p, graph, info)
        else:
            from qcompile.backends.tvm.cuda import cuda_device_present

            if cuda_device_present():
                impls["tvm_gpu"] = TvmRunner(p, graph, info, device="cuda")
            else:
                extra["gpu"] = (
                    "not run: no CUDA device on this machine (the artifact's .cu "
                    "and .ptx are built)"
                )
        return graph, impls, extra
    if info["target"] != "fpga":
        raise QCompileError(f"{p}: artifacts for target {info['target']!r} are not supported")
    from qcompile.backends.hls4ml import CSim

    csim = CSim(p, graph, str(info.get("project", "myproject")))
    impls["fpga_csim"] = csim
    return graph, impls, {"artifact": str(p), "target": "fpga", "build_s": round(csim.build_s, 2)}


def compare(
    graph: Graph,
    impls: dict[str, Impl],
    x_int: np.ndarray,
    labels: np.ndarray | None,
    outs: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Figures for ``x_int`` (already on the input grid) through every implementation; each
    one's integer outputs are also put in ``outs`` when given."""
    outs = {} if outs is None else outs
    outs.update(
        (k, np.concatenate([f(x_int[i : i + BATCH]) for i in range(0, len(x_int), BATCH)]))
        for k, f in impls.items()
    )
    spec = outs["sim"]
    n = len(x_int)
    same = np.ones(n, dtype=bool)
    unit = graph.tensors()[graph.outputs[0]].unit
    diff = 0.0
    for o in outs.values():
        same &= np.array([np.array_equal(a, b) for a, b in zip(o, spec, strict=True)])
        diff = max(diff, float(np.abs(o - spec).max() * unit) if n else 0.0)
    result: dict[str, Any] = {
        "n": n,
        "exact": float(same.mean()) if n else 1.0,
        "max_abs_diff": diff,
        "compared": sorted(outs),
    }
    for k, o in outs.items():
        result[f"acc_{k}"] = _acc(o, labels)
    return result


def _acc(out: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None or not len(out):
        return None
    return float((out.reshape(len(out), -1).argmax(1) == labels).mean())


def load_inputs(
    graph: Graph, data: str | None, inputs: str | None, n: int
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Float inputs (first ``n``), their labels if known, and where they came from."""
    if inputs:
        try:
            x = np.load(inputs, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise QCompileError(f"--inputs {inputs}: cannot read a .npy array ({e})") from None
        if x.ndim != len(graph.input.shape) + 1 or tuple(x.shape[1:]) != graph.input.shape:
            raise QCompileError(
                f"--inputs {inputs}: shape {list(x.shape)}, the model takes "
                f"N x {list(graph.input.shape)}"
            )
        if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
            raise QCompileError(f"--inputs {inputs}: needs finite numbers")
        return x[:n].astype(np.float32), None, inputs
    from qcompile.data import load_dataset

    meta = graph.meta()
    name = data or meta.get("data")
    if not name:
        raise QCompileError("no dataset recorded in the .qir: pass --data D or --inputs X.npy")
    ds = load_dataset(name, meta.get("data_dir", "") if name == meta.get("data") else "")
    if tuple(ds.in_shape) != graph.input.shape:
        raise QCompileError(
            f"--data {name} has inputs {list(ds.in_shape)}, the model takes "
            f"{list(graph.input.shape)}"
        )
    return ds.test_x[:n].numpy(), ds.test_y[:n].numpy(), f"{name} test split"


def fake_quant_accuracy(graph: Graph, x: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Accuracy of the trained (fake-quant) model, if its checkpoint is still there."""
    ckpt = graph.meta().get("checkpoint")
    if labels is None or not ckpt or not Path(ckpt).is_file():
        return None
    from qcompile.freeze import load_trained

    model = load_trained(ckpt)[0]
    with torch.no_grad():
        pred = torch.cat(
            [model(torch.from_numpy(x[i : i + BATCH])).argmax(1) for i in range(0, len(x), BATCH)]
        )
    return float((pred.numpy() == labels).mean())


def simulate(
    graph: Graph,
    data: str | None = None,
    inputs: str | None = None,
    n: int = 1000,
    impls: dict[str, Impl] | None = None,
    save_outputs: str | None = None,
) -> dict[str, Any]:
    """Compare ``impls`` (default: simulator and frozen PyTorch) on ``n`` inputs; with
    ``save_outputs`` write each one's integer outputs there (:func:`save_arrays`)."""
    x, labels, source = load_inputs(graph, data, inputs, n)
    impls = impls if impls is not None else implementations(graph)
    outs: dict[str, np.ndarray] = {}
    result = compare(graph, impls, quantize_input(graph, x), labels, outs)
    if save_outputs:
        save_arrays(Path(save_outputs), {"inputs": x, **outs})
        result["saved"] = save_outputs
    result["acc_fakequant"] = fake_quant_accuracy(graph, x, labels)
    result["inputs"] = source
    return result


def save_arrays(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """``out/NAME.npy`` for each array (``inputs``: the float inputs; every other name an
    implementation's integer outputs), each file written whole or not at all."""
    from qcompile.checkpoint import atomic_write

    if out.exists() and not out.is_dir():
        raise QCompileError(f"--save-outputs {out}: exists and is not a directory")

    def writer(a: np.ndarray) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a path would get ".npy" appended
                np.save(f, a, allow_pickle=False)

        return write

    for name, a in arrays.items():
        atomic_write(out / f"{name}.npy", writer(a))
