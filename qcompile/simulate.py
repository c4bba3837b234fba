"""`qcompile simulate`: run every implementation of a frozen model on the same inputs and
compare them bit for bit.

Implementations: the numpy simulator (the spec) and the PyTorch reference of the frozen
model; backends add their artifacts. ``exact`` is the fraction of inputs whose outputs are
identical (np.array_equal per input) across all of them, and ``mismatch`` says, for each
implementation that differs from the simulator, on how many inputs and where first.
Accuracies are reported for each, and for the fake-quant trained model when the user names
its checkpoint (``--checkpoint``): nothing a .qir or an artifact names is loaded, imported or
unpickled on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.errors import QCompileError, clip
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
    try:
        is_dir = p.is_dir()
    except OSError:  # a name too long: qir.load says so in one line
        is_dir = False
    if not is_dir:
        graph = qir.load(p)
        return graph, implementations(graph), {}
    from qcompile.backends.artifact import open_artifact
    from qcompile.backends.registry import runners

    info = open_artifact(p)  # every file checked against its manifest before anything runs
    graph = qir.load(p / str(info.get("qir", "model.qir")))
    impls = implementations(graph)
    extra_impls, extra = runners(p, graph, info)
    return graph, {**impls, **extra_impls}, extra


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
    diff: float | None = 0.0  # None: some output has another shape, no difference defined
    mismatch: dict[str, dict[str, Any]] = {}
    for k, o in outs.items():
        if o.shape != spec.shape:
            mismatch[k] = {"inputs": n, "first_input": 0, "shape": list(o.shape)}
            same[:] = False
            diff = None
            continue
        differs = (o != spec).reshape(n, -1)
        rows = differs.any(axis=1)
        same &= ~rows
        if rows.any():
            first = int(np.argmax(rows))
            mismatch[k] = {
                "inputs": int(rows.sum()),
                "first_input": first,
                "first_element": int(np.argmax(differs[first])),
            }
            if diff is not None:
                diff = max(diff, float(np.abs(o - spec).max() * unit))
    result: dict[str, Any] = {
        "n": n,
        "exact": float(same.mean()) if n else 1.0,
        "max_abs_diff": diff,
        "compared": sorted(outs),
        "mismatch": mismatch,
    }
    for k, o in outs.items():
        result[f"acc_{k}"] = _acc(o, labels) if o.shape == spec.shape else None
    return result


def disagreement(result: dict[str, Any]) -> str | None:
    """One line naming the implementations that differ from the simulator, on how many
    inputs, and the first differing input; None when all agree."""
    parts = []
    for k, m in sorted(result.get("mismatch", {}).items()):
        if "shape" in m:
            parts.append(f"{k} returned outputs of shape {m['shape']}")
        else:
            parts.append(
                f"{k} on {m['inputs']} of {result['n']} inputs (first: input {m['first_input']}"
                f", output element {m['first_element']})"
            )
    if not parts:
        return None
    return (
        f"implementations disagree with the simulator: {'; '.join(parts)}; "
        f"exact {100 * result['exact']:.1f}%, max_abs_diff {_num(result['max_abs_diff'])}"
    )


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def _acc(out: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None or not len(out):
        return None
    return float((out.reshape(len(out), -1).argmax(1) == labels).mean())


def load_inputs(
    graph: Graph, data: str | None, inputs: str | None, n: int, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Float inputs (first ``n``), their labels if known, and where they came from. A
    dataset directory comes from ``data_dir`` (the user's --data-dir) only: the one the .qir
    records is not read."""
    if inputs:
        from qcompile.user_inputs import read_inputs

        return read_inputs(inputs, graph.input.shape, n), None, inputs
    from qcompile.data import load_dataset

    name = data or graph.meta().get("data")
    if not name:
        raise QCompileError("no dataset recorded in the .qir: pass --data D or --inputs X.npy")
    shape = graph.input.shape
    size = shape[-1] if len(shape) == 3 and shape[1] == shape[2] else 32
    ds = load_dataset(name, data_dir or "", size)
    if tuple(ds.in_shape) != graph.input.shape:
        raise QCompileError(
            f"--data {name} has inputs {list(ds.in_shape)}, the model takes "
            f"{list(graph.input.shape)}"
        )
    return ds.test_x[:n].numpy(), ds.test_y[:n].numpy(), f"{name} test split"


def trained_model(graph: Graph, checkpoint: str, model_spec: str | None = None) -> Any:
    """The fake-quant training model of ``checkpoint``, which must be the file ``graph`` was
    frozen from (the SHA-256 freeze recorded)."""
    from qcompile.builder import from_checkpoint
    from qcompile.fileio import input_file, sha256_file

    shown = clip(checkpoint)
    recorded = graph.meta().get("checkpoint_sha256")
    if not recorded:
        raise QCompileError(
            "--checkpoint: the .qir records no checkpoint hash (frozen by an older qcompile, "
            "or not from a checkpoint); re-freeze it to compare with its training model"
        )
    actual = sha256_file(input_file(checkpoint, "--checkpoint"))
    if actual != recorded:
        raise QCompileError(
            f"--checkpoint {shown} is not the checkpoint this model was frozen from (its "
            f"SHA-256 is {actual[:12]}..., the .qir records {recorded[:12]}...)"
        )
    return from_checkpoint(checkpoint, model_spec).model


def fake_quant_accuracy(model: Any, x: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Accuracy of the trained (fake-quant) ``model`` on ``x``; None without labels."""
    if labels is None:
        return None
    import torch

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
    data_dir: str | None = None,
    checkpoint: str | Path | None = None,
    model_spec: str | None = None,
    save_outputs: str | None = None,
) -> dict[str, Any]:
    """Compare ``impls`` (default: simulator and frozen PyTorch) on ``n`` inputs; with
    ``checkpoint`` also report the fake-quant training model's accuracy; with
    ``save_outputs`` write each one's integer outputs there (:func:`save_arrays`)."""
    trained = trained_model(graph, str(checkpoint), model_spec) if checkpoint else None
    x, labels, source = load_inputs(graph, data, inputs, n, data_dir)
    impls = impls if impls is not None else implementations(graph)
    outs: dict[str, np.ndarray] = {}
    result = compare(graph, impls, quantize_input(graph, x), labels, outs)
    if save_outputs:
        save_arrays(Path(save_outputs), {"inputs": x, **outs})
        result["saved"] = save_outputs
    result["acc_fakequant"] = (
        fake_quant_accuracy(trained, x, labels) if trained is not None else None
    )
    result["inputs"] = source
    return result


def save_arrays(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """``out/NAME.npy`` for each array (``inputs``: the float inputs; every other name an
    implementation's integer outputs), each file written whole or not at all."""
    from qcompile.fileio import atomic_write

    if out.exists() and not out.is_dir():
        raise QCompileError(f"--save-outputs {out}: exists and is not a directory")

    def writer(a: np.ndarray) -> Callable[[Path], None]:
        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a path would get ".npy" appended
                np.save(f, a, allow_pickle=False)

        return write

    for name, a in arrays.items():
        atomic_write(out / f"{name}.npy", writer(a))
