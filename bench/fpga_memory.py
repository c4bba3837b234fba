"""Weight memory under numeric contract v1, and FPGA build time.

For every zoo model frozen at W2A4 (first/last layers 8-bit, random weights) and for trained
models (the demo recipe, DMBQ and DDQ on digits): what the .qir and every artifact store,
from the IR (`qcompile inspect`'s figures), against the bound of issue 15,

    sum over channels of b_c * n_c  +  64 bits per output channel  +  tables (non-uniform),

the widest integer weight operand (`level_bits`), and hls4ml's default storage of one
`ap_fixed<16,6>` per weight and bias. Then export + g++ C-simulation build time for lenet and
resnet20. Estimates from the IR, not synthesis reports.

    python -m bench.fpga_memory [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.report import machine, write_section
from qcompile.backends.hls4ml import CSim
from qcompile.backends.registry import deploy
from qcompile.backends.targets import load_target
from qcompile.freeze import freeze_checkpoint, freeze_model
from qcompile.ir.graph import Graph
from qcompile.recipe import load_recipe
from qcompile.report import summary
from qcompile.stages import quantize
from qcompile.train import train
from qcompile.zoo import build_model

MODELS = [
    ("mlp", (1, 28, 28)),
    ("lenet", (1, 28, 28)),
    ("resnet20", (3, 32, 32)),
    ("resnet18", (3, 32, 32)),
    ("vgg_small", (3, 32, 32)),
    ("mobilenetv2", (3, 32, 32)),
]
TRAINED = [
    ("demo lenet/digits W4A4", "models/lenet_digits_w4a4.toml"),
    ("DMBQ lenet/digits", "models/lenet_digits_dmbq.toml"),
    ("DDQ lenet/digits", "models/lenet_digits_ddq.toml"),
]
PER_CHANNEL = 64  # bits each output channel may spend on constants (issue 15)


def frozen(name: str, shape: tuple[int, ...]) -> Graph:
    torch.manual_seed(0)
    q = quantize(build_model(name, shape, 10), wbits=2, abits=4)
    q.train()
    with torch.no_grad():
        q(torch.randn(8, *shape))
    return freeze_model(q.eval(), shape, name)


def trained(recipe: str, out: Path, epochs: int | None) -> Graph:
    r = load_recipe(recipe, {"train.epochs": epochs})
    train(r, out, progress=False, log=lambda m: None)
    return freeze_checkpoint(out / "checkpoint.pt")


def memory(graph: Graph) -> dict[str, Any]:
    """The figures of one model: stored bits, the bound, its parts."""
    s = summary(graph)
    layers = [r for r in s["layers"] if "weights" in r]
    net = 0  # sum of b_c * n_c
    for n in graph.weighted():
        w = n.weights
        net += sum(w.row_bits()) * (w.count // w.shape[0])
    channels = sum(r["channels"] for r in layers)
    tables = s["table_bits"]
    bound = net + PER_CHANNEL * channels + tables
    constants = s["weight_mem_bits"] - s["code_bits"] - tables
    return {
        "params": s["params"],
        "avg_weight_bits": s["avg_weight_bits"],
        "code_net_bits": net,
        "code_bits": s["code_bits"],
        "table_bits": tables,
        "constant_bits_per_channel": round(constants / channels, 1),
        "weight_mem_bits": s["weight_mem_bits"],
        "bytes": s["model_bytes"],
        "bound_bits": bound,
        "within_bound": s["weight_mem_bits"] <= bound,
        "max_level_bits": s["max_level_bits"],
        "uniform_level_bits_ok": all(
            r["level_bits"] <= r["max_weight_bits"] + 1 for r in layers if r["levels"] == "uniform"
        ),
        "hls4ml_default_bits": s["hls4ml_default_bits"],
    }


def row(label: str, m: dict[str, Any]) -> str:
    return (
        f"| {label} | {m['params']:,} | {m['avg_weight_bits']:.2f} | {m['code_net_bits']:,} | "
        f"{m['code_bits']:,} | {m['table_bits']:,} | {m['constant_bits_per_channel']} | "
        f"{m['weight_mem_bits']:,} ({m['bytes']:,} B) | {m['bound_bits']:,} "
        f"{'ok' if m['within_bound'] else 'OVER'} | {m['max_level_bits']} | "
        f"{m['hls4ml_default_bits']:,} | {m['hls4ml_default_bits'] / m['weight_mem_bits']:.2f}x |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs")
    args = ap.parse_args()
    rows, builds, figures = [], [], {}
    for name, shape in MODELS:
        m = memory(frozen(name, shape))
        figures[name] = m
        rows.append(row(f"{name} {'x'.join(map(str, shape))} W2A4 (random)", m))
        print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for label, recipe in TRAINED:
            m = memory(trained(recipe, Path(tmp) / Path(recipe).stem, args.epochs))
            figures[label] = m
            rows.append(row(label, m))
            print(rows[-1], flush=True)
        target = load_target("fpga")
        for name, shape in [("lenet", (1, 28, 28)), ("resnet20", (3, 32, 32))]:
            graph = frozen(name, shape)
            t = time.perf_counter()
            deploy(graph, target, Path(tmp) / name)
            exported = time.perf_counter() - t
            csim = CSim(Path(tmp) / name, graph)
            builds.append(
                f"| {name} | {exported:.1f} | {csim.build_s:.1f} | {exported + csim.build_s:.1f} |"
            )
            figures[f"build_s/{name}"] = round(exported + csim.build_s, 1)
            csim.close()
            print(builds[-1], flush=True)
    write_section(
        "fpga_memory",
        "\n".join(
            [
                "## Weight memory (numeric contract v1) and FPGA build time "
                "(`python -m bench.fpga_memory`)",
                "",
                f"{machine()}. What the .qir and every artifact store, from the IR: codes at "
                "each channel's width (a dense bit stream, each row from a word boundary), "
                "int8 tables of non-uniform layers, and per channel a zero point (affine "
                "levels), a bias and a requantization multiplier at the widths they need "
                "(equal across channels: stored once), plus a 6-bit shift per layer. Bound: "
                "sum of b_c * n_c + 64 bits per output channel + tables. `w int`: the widest "
                "integer weight operand of any multiply (uniform layers: at most b + 1 bits). "
                "hls4ml default: every weight and bias one `ap_fixed<16,6>`.",
                "",
                "| model | params | avg w bits | sum b*n | code bits | table bits "
                "| constants / channel | stored bits | bound | w int | hls4ml default | saving |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
                *rows,
                "",
                "Export (hls4ml project written) and C-simulation build (g++ -O3 via the project's "
                "build_lib.sh), seconds (goal: lenet under 60 s):",
                "",
                "| model | export s | C-sim build s | total s |",
                "|---|---|---|---|",
                *builds,
            ]
        ),
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
