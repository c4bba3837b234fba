"""Epoch time of every training stage against float training, measured in the same run.

Each configuration trains through the real loop (``qcompile.train.train``). Before anything
is timed, every configuration runs one untimed warm-up epoch in this process (lazy imports,
first allocations, compiled kernels), so no row pays for another's start-up. Then the
configurations run in turn, ``--repeats`` times, each time a fresh run of ``--epochs``
epochs, with a float run before and after each; a run's figure is its mean epoch time
(every epoch counts: stages change what they do during a run, e.g. SDQ searches then
fine-tunes, DDQ fixes its bits half-way), and a row's ratio is the median over repeats of
that figure divided by the mean of its two neighbouring float runs' (the machine is shared:
its load drifts over minutes, and this keeps each comparison seconds apart).

Models: lenet on mnist5k (4,000 training images, 63 steps of 64 per epoch) and resnet20 on
synthetic CIFAR-shaped data (``--resnet-images`` random 3x32x32 images, augmented as
CIFAR-10 is: fewer steps than a real CIFAR epoch, the same work per step). Weights-only
rows quantize weights to 2 bits (``sdq``/``ddq``/``dmbq`` start at 4 and learn widths under
a 2.0-bit budget); W+A rows add 2-bit PACT activations (``dqa`` mixes them too). First and
last layers keep 8 bits, the input 8 bits.

    python -m bench.train_overhead [--epochs 3] [--repeats 3] [--models lenet resnet20]
                                   [--threads 1]

One torch thread by default: this 2-core machine is shared, and two threads per process
under a load of 5-8 made lock-step parallel regions wait for a descheduled sibling (float
lenet epochs of 13-73 s instead of ~0.5 s); one thread measures the work, not the queue.
For the same reason the ratios are taken of the epochs' CPU time (``epoch_cpu_s`` in
metrics.jsonl: with one thread, what the epoch's wall time is on an idle machine; other jobs
stretch the wall time, not the CPU time); the wall-time ratios are printed beside them.

The last line printed is one JSON object: ``{"ratios": {"lenet/mnist5k": {"uniform/w": ...,
"uniform/wa": ..., ...}, "resnet20/synthetic": {...}}, "wall_ratios": {...}, ...}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import machine, write_section
from qcompile.data.cifar10 import write_batches
from qcompile.quant import compiled
from qcompile.recipe import load_recipe
from qcompile.train import train

GOAL = 1.3
MODELS = {
    "lenet": ("lenet/mnist5k", {"model.name": "lenet", "data.name": "mnist5k"}),
    "resnet20": ("resnet20/synthetic", {"model.name": "resnet20", "data.name": "cifar10"}),
}
STAGES: dict[str, dict[str, Any]] = {
    "uniform": {"stage.method": "uniform", "stage.wbits": 2},
    "dqa": {"stage.method": "dqa", "stage.wbits": 2},
    "br": {"stage.method": "br", "stage.wbits": 2},
    "sdq": {"stage.method": "sdq", "stage.wbits": 4, "stage.target_bits": 2.0},
    "ddq": {"stage.method": "ddq", "stage.wbits": 4, "stage.target_bits": 2.0},
    "dmbq": {"stage.method": "dmbq", "stage.wbits": 4, "stage.target_bits": 2.0},
}
FLOAT = {"stage.wbits": 32, "stage.abits": 32}


def configurations() -> dict[str, dict[str, Any]]:
    """Row name -> recipe overrides: float, then every stage weights-only and W+A."""
    rows = {"float": FLOAT}
    for name, over in STAGES.items():
        rows[f"{name}/w"] = {**over, "stage.abits": 32}
        wa = {**over, "stage.abits": 2}
        if name == "dqa":
            wa["stage.act_mixture"] = True
        rows[f"{name}/wa"] = wa
    return rows


def mean_epoch_time(overrides: dict[str, Any], epochs: int, out: Path) -> tuple[float, float]:
    """Train a fresh run; its mean epoch (CPU time, wall time): the training loop only, as
    metrics.jsonl has them."""
    recipe = load_recipe(None, {**overrides, "train.epochs": epochs})
    train(recipe, out, progress=False, log=lambda m: None)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return (
        statistics.mean(r["epoch_cpu_s"] for r in rows),
        statistics.mean(r["epoch_time_s"] for r in rows),
    )


def synthetic_cifar(root: Path, images: int) -> Path:
    """CIFAR-10-format batches of random images (``images`` to train on, a quarter to test)."""
    rng = np.random.default_rng(0)
    n_test = max(64, images // 4)
    x = rng.integers(0, 256, (images + n_test, 3, 32, 32), dtype=np.uint8)
    write_batches(root, x, rng.integers(0, 10, images + n_test), n_test=n_test)
    return root


def compile_time() -> float | None:
    """Seconds to build (or load from Inductor's disk cache) the compiled activation kernels
    (the DQA mixture's and a single PACT's) on first use in this process; None when
    compiling is off or fails."""
    if not compiled.enabled():
        return None
    from qcompile.quant.activation import PACT
    from qcompile.quant.dqa import Mixture

    x = torch.rand(2, compiled.PACT_MIN_NUMEL, requires_grad=True)
    t = time.perf_counter()
    Mixture([PACT(2), PACT(4), PACT(8)])(x).sum().backward()
    PACT(2)(x).sum().backward()
    return round(time.perf_counter() - t, 2) if compiled.enabled() else None


def measure(
    base: dict[str, Any], rows: dict[str, dict[str, Any]], epochs: int, repeats: int, tmp: Path
) -> dict[str, dict[str, float]]:
    """Per clock ("cpu", "wall"): the ratio to float per row (median over repeats) and
    ``float_s``, after one warm-up epoch per row; runs go to fresh directories under ``tmp``."""
    tmp.mkdir(parents=True)
    for name, over in rows.items():
        mean_epoch_time({**base, **over}, 1, tmp / f"warm-{name.replace('/', '-')}")
    clocks = ("cpu", "wall")
    ratios = {c: {name: [] for name in rows if name != "float"} for c in clocks}
    floats: dict[str, list[float]] = {c: [] for c in clocks}
    runs = itertools.count()

    def timed(name: str) -> dict[str, float]:
        out = tmp / f"{next(runs)}-{name.replace('/', '-')}"
        return dict(zip(clocks, mean_epoch_time({**base, **rows[name]}, epochs, out), strict=True))

    for _ in range(repeats):
        before = timed("float")
        for c in clocks:
            floats[c].append(before[c])
        for name in ratios["cpu"]:  # float, A, float, B, ...: each run between two float runs
            t = timed(name)
            after = timed("float")
            for c in clocks:
                floats[c].append(after[c])
                ratios[c][name].append(t[c] / ((before[c] + after[c]) / 2))
            before = after
    return {
        c: {"float_s": statistics.median(floats[c])}
        | {name: statistics.median(rs) for name, rs in ratios[c].items()}
        for c in clocks
    }


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """CPU-time ratios, the wall-time ratio of the same runs in brackets."""
    models = list(results)
    head = "| stage | " + " | ".join(f"{m} weights | {m} W+A" for m in models) + " |"
    sep = "|---|" + "---|---|" * len(models)
    lines = [head, sep]
    for stage in STAGES:
        cells = [
            f"{results[m]['cpu'][f'{stage}/{k}']:.2f}x ({results[m]['wall'][f'{stage}/{k}']:.2f}x)"
            for m in models
            for k in ("w", "wa")
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    floats = ", ".join(
        f"{m} {results[m]['cpu']['float_s']:.3f} s CPU ({results[m]['wall']['float_s']:.3f} s wall)"
        for m in models
    )
    return "\n".join(lines) + f"\n\nFloat epoch (median): {floats}."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--resnet-images", type=int, default=640)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (see the docstring)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    compile_s = compile_time()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for key in args.models:
            label, base = MODELS[key]
            if base["data.name"] == "cifar10":
                base = {**base, "data.dir": str(synthetic_cifar(tmp / "cifar", args.resnet_images))}
            runs = tmp / key
            results[label] = measure(base, configurations(), args.epochs, args.repeats, runs)
            print(
                f"{label}: "
                + "  ".join(
                    f"{k} {v:.2f}x" for k, v in results[label]["cpu"].items() if k != "float_s"
                ),
                flush=True,
            )
    over = [f"{m} {k} ({v:.2f}x)" for m, r in results.items() for k, v in r["cpu"].items()
            if k != "float_s" and v > GOAL]  # fmt: skip
    verdict = "Every ratio meets the goal." if not over else "Above the goal: " + ", ".join(over)
    compiled_note = (
        f"compiled activation kernels on (first use in the process: {compile_s} s)"
        if compile_s is not None
        else "compiled kernels off (eager only)"
    )
    write_section(
        "train_overhead",
        f"""## Training cost: epoch time of every stage / float epoch time

`python -m bench.train_overhead --epochs {args.epochs} --repeats {args.repeats} \\
--resnet-images {args.resnet_images} --threads {args.threads}` ({machine()};
{compiled_note}; whole bench {time.perf_counter() - t_start:.0f} s). Every configuration
warms up for one untimed epoch first; each figure is the median over {args.repeats} repeats
of (mean epoch CPU time of a fresh {args.epochs}-epoch run) / (the mean of the float runs just
before and after it); in brackets the same ratio of wall times (inflated by other jobs on
this shared machine; with one thread the CPU time is the idle machine's wall time).
Weights: 2 bits (sdq/ddq/dmbq start at 4 and learn widths under a 2.0-bit budget); W+A adds
2-bit PACT activations (dqa mixes them too); first/last layers 8-bit. resnet20 trains on
{args.resnet_images} random CIFAR-shaped images per epoch. Goal: <= {GOAL}x.

{table(results)}

{verdict}
""",
    )
    print(
        json.dumps(
            {
                "ratios": {
                    m: {k: round(v, 3) for k, v in r["cpu"].items() if k != "float_s"}
                    for m, r in results.items()
                },
                "wall_ratios": {
                    m: {k: round(v, 3) for k, v in r["wall"].items() if k != "float_s"}
                    for m, r in results.items()
                },
                "float_epoch_s": {m: round(r["cpu"]["float_s"], 4) for m, r in results.items()},
                "goal": GOAL,
                "over_goal": over,
                "compile_s": compile_s,
            }
        )
    )


if __name__ == "__main__":
    main()
