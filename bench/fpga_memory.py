"""FPGA weight memory and build time.

Weight memory for every zoo model frozen at W2A4 (first/last layers 8-bit), from the IR:
packed codes plus per-channel LUTs and biases, against hls4ml's default storage of one
``ap_fixed<16,6>`` word per weight and bias (the precision `config_from_*_model` assigns).
Then export + g++ C-simulation build time for lenet and resnet20. Estimates, not synthesis.

    python -m bench.fpga_memory
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench.report import machine, write_section
from qcompile.backends.hls4ml import CSim, export_fpga
from qcompile.backends.targets import load_target
from qcompile.freeze import freeze_model
from qcompile.report import summary
from qcompile.stages import quantize
from qcompile.zoo import build_model

MODELS = [
    ("mlp", (1, 28, 28)),
    ("lenet", (1, 28, 28)),
    ("resnet20", (3, 32, 32)),
    ("resnet18", (3, 32, 32)),
    ("vgg_small", (3, 32, 32)),
    ("mobilenetv2", (3, 32, 32)),
]
DEFAULT_BITS = 16


def frozen(name: str, shape: tuple[int, ...]):
    torch.manual_seed(0)
    q = quantize(build_model(name, shape, 10), wbits=2, abits=4)
    q.train()
    with torch.no_grad():
        q(torch.randn(8, *shape))
    return freeze_model(q.eval(), shape, name)


def main() -> None:
    rows, builds = [], []
    for name, shape in MODELS:
        s = summary(frozen(name, shape))
        default = s["params"] * DEFAULT_BITS
        codes = sum(r["code_bits"] for r in s["layers"] if "code_bits" in r)
        rows.append(
            f"| {name} {'x'.join(map(str, shape))} | {s['params']:,} | "
            f"{s['avg_weight_bits']:.2f} | {codes:,} | {s['weight_mem_bits']:,} | "
            f"{default:,} | {default / s['weight_mem_bits']:.2f}x |"
        )
        print(rows[-1], flush=True)
    target = load_target("fpga")
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in [("lenet", (1, 28, 28)), ("resnet20", (3, 32, 32))]:
            graph = frozen(name, shape)
            t = time.perf_counter()
            export_fpga(graph, Path(tmp) / name, target)
            exported = time.perf_counter() - t
            csim = CSim(Path(tmp) / name, graph)
            builds.append(
                f"| {name} | {exported:.1f} | {csim.build_s:.1f} | {exported + csim.build_s:.1f} |"
            )
            csim.close()
            print(builds[-1], flush=True)
    write_section(
        "fpga_memory",
        "\n".join(
            [
                "## FPGA weight memory and build time (`python -m bench.fpga_memory`)",
                "",
                "Zoo models frozen at W2A4 (first/last layers 8-bit), random weights;",
                f"{machine()}.",
                "Packed: codes in 32-bit words plus the per-channel integer LUTs and biases, as "
                "exported. hls4ml default: every weight and bias one `ap_fixed<16,6>` element. "
                "Estimates from the IR, not synthesis reports.",
                "",
                "| model | params | avg weight bits | code bits | packed total bits "
                "| hls4ml default bits | saving |",
                "|---|---|---|---|---|---|---|",
                *rows,
                "",
                "Export (hls4ml project written) and C-simulation build (g++ -O3 via the project's "
                "build_lib.sh), seconds (goal: lenet under 60 s):",
                "",
                "| model | export s | C-sim build s | total s |",
                "|---|---|---|---|",
                *builds,
                "",
                "Small layers pay for their tables: an 8-bit layer carries 256 LUT entries per "
                "output channel, which for lenet's first conv (6 channels, 150 weights) "
                "outweighs its codes. The mlp's average is 7.16 bits because its first layer "
                "(784 x 256, 85% of its weights) keeps 8 bits under the first/last-layer policy.",
            ]
        ),
    )


if __name__ == "__main__":
    main()
