"""Simulator throughput against float PyTorch inference, measured in the same run.

For lenet (1x28x28, mnist5k shape) and resnet20 (3x32x32), W2A4 uniform, random weights with
data-calibrated state: images/s of the numpy integer simulator, of the float64 PyTorch
frozen reference, and of the float32 fake-quant and float models in PyTorch (eval mode, no
grad), each the median of repeated batch runs. Ratios are against float PyTorch.

    python -m bench.sim [--batch 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bench.report import machine, write_section
from qcompile.freeze import freeze_model
from qcompile.ir.graph import Graph
from qcompile.sim import Simulator, quantize_input
from qcompile.sim.reference import FrozenTorch
from qcompile.stages import quantize
from qcompile.zoo import build_model

CASES = [("lenet", (1, 28, 28)), ("resnet20", (3, 32, 32))]


def rate(fn: Callable[[], object], n: int, repeats: int) -> float:
    fn()  # warm-up: allocations, BLAS threads
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def calibrated(name: str, shape: tuple[int, ...]) -> tuple[torch.nn.Module, torch.nn.Module, Graph]:
    """(float net, W2A4 fake-quant model, frozen graph), seeded: every process gets the same
    weights; the quantizer state is calibrated on one random batch."""
    torch.manual_seed(0)
    net = build_model(name, shape, 10).eval()
    q = quantize(net, wbits=2, abits=4)
    q.train()
    with torch.no_grad():
        q(torch.randn(64, *shape))
    q.eval()
    return net, q, freeze_model(q, shape, name)


def measure(name: str, shape: tuple[int, ...], batch: int, repeats: int) -> dict[str, float]:
    net, q, graph = calibrated(name, shape)
    x = torch.randn(batch, *shape)
    xi = quantize_input(graph, x.numpy())
    sim, ref = Simulator(graph), FrozenTorch(graph)
    with torch.no_grad():
        out = {
            "float": rate(lambda: net(x), batch, repeats),
            "fakequant": rate(lambda: q(x), batch, repeats),
            "sim": rate(lambda: sim.run(xi), batch, repeats),
            "frozen": rate(lambda: ref(xi), batch, repeats),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for name, shape in CASES:
        r = measure(name, shape, args.batch, args.repeats)
        print(name, {k: round(v) for k, v in r.items()}, flush=True)
        f = r["float"]
        rows.append(
            f"| {name} {'x'.join(map(str, shape))} | {r['float']:,.0f} | "
            f"{r['fakequant']:,.0f} ({r['fakequant'] / f:.2f}x) | {r['sim']:,.0f} "
            f"({r['sim'] / f:.3f}x) | {r['frozen']:,.0f} ({r['frozen'] / f:.3f}x) |"
        )
    body = "\n".join(
        [
            "## Integer simulator throughput (`python -m bench.sim`)",
            "",
            f"Images/s, batch {args.batch}, median of {args.repeats} runs; {machine()}.",
            "Ratios are against float PyTorch inference in the same run.",
            "",
            "| model | float torch | fake-quant torch | numpy simulator | float64 frozen torch |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "The simulator is the specification, written for clarity and exactness, not speed: it "
            "materialises im2col copies in numpy and runs the dot products in float64 BLAS (exact "
            "where the verified accumulator is at most 53 bits). The frozen PyTorch reference "
            "runs float64 convolutions, which PyTorch does not accelerate on CPU.",
        ]
    )
    write_section("sim", body)


if __name__ == "__main__":
    main()
