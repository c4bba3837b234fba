"""Frozen integer model vs the fake-quant model it came from: accuracy on the full test split.

Trains lenet W2A4 with every stage (uniform min-max; DQA over {2,4,8} bits; Binary-Relax;
SDQ, DDQ and DMBQ under a 2-bit budget) on digits and mnist5k for 15 epochs, freezes each
checkpoint and runs `qcompile simulate`'s comparison on every test image: fake-quant
accuracy, frozen PyTorch accuracy, simulator accuracy and `exact`.

    python -m bench.freeze_accuracy [--epochs 15] [--seed 0] [--data digits mnist5k]

The section in BENCHMARKS.md is rewritten after every row and names the rows not yet run, so
a run cut short still leaves true figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.report import machine, write_section
from qcompile.freeze import freeze_checkpoint
from qcompile.recipe import load_recipe
from qcompile.simulate import simulate
from qcompile.train import train

STAGES = ("uniform", "dqa", "br", "sdq", "ddq", "dmbq")
DATASETS = ("digits", "mnist5k")


def run(data: str, method: str, epochs: int, seed: int, out: Path) -> dict:
    r = load_recipe(
        None,
        {
            "model.name": "lenet",
            "data.name": data,
            "stage.method": method,
            "stage.wbits": 2,
            "stage.abits": 4,
            "train.epochs": epochs,
            "train.seed": seed,
        },
    )
    train(r, out, progress=False, log=lambda m: None)
    ckpt = out / "checkpoint.pt"
    return simulate(freeze_checkpoint(ckpt), n=100_000, checkpoint=ckpt)


def section(args: argparse.Namespace, rows: list[str], pending: list[str]) -> str:
    lines = [
        "## Frozen vs fake-quant accuracy (`python -m bench.freeze_accuracy`)",
        "",
        f"{args.epochs} epochs, seed {args.seed}, whole test split; {machine()}.",
        "Drop = fake-quant minus frozen, in percentage points (goal: within 0.3).",
        "",
        "| model / data | stage | n | fake-quant % | frozen torch % | simulator % | drop pp "
        "| exact |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if pending:
        lines += ["", f"Not run in this measurement: {', '.join(pending)}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", nargs="+", choices=DATASETS, default=list(DATASETS))
    args = ap.parse_args()
    cases = [(data, method) for data in args.data for method in STAGES]
    rows: list[str] = []
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (data, method) in enumerate(cases):
            r = run(data, method, args.epochs, args.seed, Path(tmp) / f"{data}-{method}")
            drop = 100 * (r["acc_fakequant"] - r["acc_frozen"])
            print(data, method, r, flush=True)
            figures[f"{data}/{method}"] = round(drop, 2)
            rows.append(
                f"| lenet / {data} | {method} W2A4 | {r['n']} | {100 * r['acc_fakequant']:.2f} | "
                f"{100 * r['acc_frozen']:.2f} | {100 * r['acc_sim']:.2f} | {drop:+.2f} | "
                f"{r['exact']:.3f} |"
            )
            pending = [f"{d}/{m}" for d, m in cases[i + 1 :]]
            pending += [f"{d}/{m}" for d in DATASETS if d not in args.data for m in STAGES]
            write_section("freeze_accuracy", section(args, rows, pending))
    print(json.dumps({"drop_pp": figures}))


if __name__ == "__main__":
    main()
