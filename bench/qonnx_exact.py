"""QONNX export exactness: every zoo model (calibrated, untrained) and the trained demo, DQA,
DDQ and DMBQ LeNets on digits, exported with ``qcompile export --target qonnx`` and executed
by qonnx's own ``execute_onnx``: the fraction of inputs whose integers equal the simulator's
(goal 1.000), and qonnx's time against the simulator's on the same inputs.

    python -m bench.qonnx_exact [--epochs 3] [--n 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.report import machine, write_section
from qcompile.data import load_dataset
from qcompile.freeze import freeze_checkpoint, freeze_model
from qcompile.interop.qonnx_export import to_qonnx
from qcompile.interop.qonnx_run import integers, output_units, run_qonnx
from qcompile.ir import Graph
from qcompile.recipe import load_recipe
from qcompile.sim import Simulator, quantize_input
from qcompile.stages import quantize
from qcompile.train import train
from qcompile.zoo import build_model

ZOO = [
    ("mlp", (1, 8, 8), {}),
    ("lenet", (1, 8, 8), {}),
    ("resnet20", (3, 16, 16), {"width": 0.5}),
    ("resnet18", (3, 32, 32), {"width": 0.125}),
    ("vgg_small", (3, 16, 16), {"width": 0.125}),
    ("mobilenetv2", (3, 16, 16), {"width": 0.25}),
]
RECIPES = {
    "demo (uniform W4A4)": "models/lenet_digits_w4a4.toml",
    "DQA W2": "models/lenet_digits_dqa_w2.toml",
    "DDQ": "models/lenet_digits_ddq.toml",
    "DMBQ": "models/lenet_digits_dmbq.toml",
}


def calibrated(name: str, shape: tuple[int, ...], opts: dict) -> Graph:
    torch.manual_seed(0)
    q = quantize(build_model(name, shape, 10, **opts), wbits=2, abits=4).train()
    with torch.no_grad():
        for _ in range(3):
            q(torch.randn(32, *shape))
    return freeze_model(q.eval(), shape, name)


def trained(recipe: str, epochs: int, out: Path) -> Graph:
    r = load_recipe(recipe, {"train.epochs": epochs})
    train(r, out, progress=False, log=lambda m: None)
    return freeze_checkpoint(out / "checkpoint.pt")


def measure(label: str, graph: Graph, x: np.ndarray) -> dict:
    model = to_qonnx(graph, batch=min(64, len(x)))
    t0 = time.perf_counter()
    sim = Simulator(graph).run(quantize_input(graph, x))[graph.outputs[0]]
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = integers(run_qonnx(model, x)[0], output_units(model)[0])
    t_qonnx = time.perf_counter() - t0
    same = [np.array_equal(a, b) for a, b in zip(got, sim, strict=True)]
    return {
        "model": label,
        "ir_nodes": len(graph.nodes),
        "qonnx_nodes": len(model.graph.node),
        "n": len(x),
        "exact": float(np.mean(same)),
        "qonnx_vs_sim_time": round(t_qonnx / t_sim, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n", type=int, default=256)
    args = ap.parse_args()
    rows = []
    for name, shape, opts in ZOO:
        x = np.random.default_rng(1).normal(0, 1.3, (args.n, *shape)).astype(np.float32)
        rows.append(
            measure(f"{name} {shape[1]}x{shape[2]} (calibrated)", calibrated(name, shape, opts), x)
        )
        print(rows[-1], flush=True)
    digits = load_dataset("digits").test_x[: args.n].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        for label, recipe in RECIPES.items():
            graph = trained(recipe, args.epochs, Path(tmp) / label.split()[0])
            rows.append(measure(f"lenet digits {label}, {args.epochs} epochs", graph, digits))
            print(rows[-1], flush=True)
    table = [
        "| model | IR nodes | QONNX nodes | inputs | exact | qonnx time / simulator time |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['model']} | {r['ir_nodes']} | {r['qonnx_nodes']} | {r['n']} | "
            f"{r['exact']:.3f} | {r['qonnx_vs_sim_time']} |"
            for r in rows
        ),
    ]
    body = "\n".join(
        [
            "## QONNX export exactness (`python -m bench.qonnx_exact`)",
            "",
            f"qonnx 1.0.0's execute_onnx on `qcompile export --target qonnx` files; {machine()}.",
            "exact = fraction of inputs whose integers equal the simulator's (np.array_equal).",
            "",
            *table,
        ]
    )
    print(body)
    write_section("qonnx_exact", body)
    print(json.dumps({"rows": rows, "all_exact": all(r["exact"] == 1.0 for r in rows)}))


if __name__ == "__main__":
    main()
