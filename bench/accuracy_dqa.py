"""DQA against its baselines on lenet / mnist5k: 3 seeds, one epoch budget for every row.

    python -m bench.accuracy_dqa [--epochs 15] [--seeds 0 1 2]

Rows follow papers/003 Tables 1-2 at our scale: weights-only (float activations) and W2A2
(2-bit PACT activations; DQA also mixes the activations), and 1-bit weights (BWN, and DQA over
the paper's BWN/TWN mixtures, weights only). The test accuracy is the deployed model's
(mixtures snapped to their lowest-bit member); "snap drop" is the mixture's accuracy minus
that; epoch time is relative to the FP row measured in the same run. DQA's temperature and
BR's relaxation use their defaults, scaled to the run (qcompile/stages/dqa.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.report import machine, write_section
from qcompile.batches import num_batches
from qcompile.data import load_dataset
from qcompile.recipe import load_recipe
from qcompile.stages.dqa import scaled_omega_growth, scaled_t0
from qcompile.train import train

MIX = ["minmax:2", "minmax:4", "minmax:8"]


# papers/003's 1-bit mixtures, weights only; lam as in models/lenet_mnist5k_dqa_bwn_twn_*.toml.
ONE_BIT = {
    "stage.method": "dqa", "stage.wbits": 1, "stage.abits": 32, "stage.weight_quant": "bwn",
    "stage.lam": 10.0,
}  # fmt: skip


PLAIN_BWN = {
    "stage.method": "uniform", "stage.wbits": 1, "stage.abits": 32, "stage.weight_quant": "bwn"
}  # fmt: skip


def row(method: str, abits: int, **extra: object) -> dict:
    return {"stage.method": method, "stage.wbits": 2, "stage.abits": abits, **extra}


ROWS: list[tuple[str, dict]] = [
    ("FP (W32A32)", {"stage.wbits": 32, "stage.abits": 32}),
    ("W2: plain 2-bit min-max", row("uniform", 32)),
    ("W2: BR (2 + FP)", row("br", 32)),
    ("W2: BR (2/4/8)", row("br", 32, **{"stage.mixture": MIX})),
    ("W2: DQA (2/4/8)", row("dqa", 32)),
    ("W2A2: plain 2-bit min-max", row("uniform", 2)),
    ("W2A2: BR (2 + FP)", row("br", 2)),
    ("W2A2: BR (2/4/8)", row("br", 2, **{"stage.mixture": MIX})),
    ("W2A2: DQA (2/4/8, activations mixed too)", row("dqa", 2, **{"stage.act_mixture": True})),
    ("W1: plain BWN", {**PLAIN_BWN}),
    ("W1: DQA (BWN/TWN/8-bit)", {**ONE_BIT, "stage.mixture": ["bwn", "twn", "minmax:8"]}),
    ("W1: DQA (BWN/TWN/FP)", {**ONE_BIT, "stage.mixture": ["bwn", "twn", "fp"]}),
]


def verdicts(accs: dict[str, float]) -> str:
    """DQA's mean accuracy minus plain QAT's, per precision, in percentage points."""
    pairs = [
        ("W2", "W2: DQA (2/4/8)", "W2: plain 2-bit min-max"),
        ("W2A2", "W2A2: DQA (2/4/8, activations mixed too)", "W2A2: plain 2-bit min-max"),
        ("W1 (BWN/TWN/8)", "W1: DQA (BWN/TWN/8-bit)", "W1: plain BWN"),
        ("W1 (BWN/TWN/FP)", "W1: DQA (BWN/TWN/FP)", "W1: plain BWN"),
    ]
    return ", ".join(f"{k} {100 * (accs[d] - accs[p]):+.2f}" for k, d, p in pairs if d in accs)


def fmt(values: list[float], scale: float = 100.0) -> str:
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def lenet_args(doc: str) -> argparse.Namespace:
    """``--epochs``, ``--seeds`` and ``--data``: what every lenet accuracy table takes."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data", default="mnist5k")
    return ap.parse_args()


def main() -> None:
    args = lenet_args(__doc__)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, over) in enumerate(ROWS):
            accs, drops, times = [], [], []
            for seed in args.seeds:
                base = {"model.name": "lenet", "data.name": args.data, "train.epochs": args.epochs}
                r = load_recipe(None, {**base, "train.seed": seed, **over})
                s = train(r, Path(tmp) / f"{i}-{seed}", progress=False, log=lambda m: None)
                accs.append(s["test_acc"])
                drops.append(s.get("snap_drop", 0.0))
                times.append(s["epoch_time_s"])
            results.append((label, accs, drops, statistics.median(times)))
            print(
                f"{label}: {fmt(accs)}  snap {fmt(drops)}  {statistics.median(times):.3f}s/epoch",
                flush=True,
            )
    fp_time = results[0][3]
    data = load_dataset(args.data)
    steps = args.epochs * num_batches(len(data.train_x), 64)
    times = {label: t for label, _, _, t in results}
    dqa = {"W2": "W2: DQA (2/4/8)", "W2A2": "W2A2: DQA (2/4/8, activations mixed too)"}
    ratios = [f"{k}: {times[v] / times[f'{k}: plain 2-bit min-max']:.2f}x" for k, v in dqa.items()]
    accs = {label: statistics.mean(a) for label, a, _, _ in results}
    mixed = ("BR", "DQA")
    print(f"DQA minus plain QAT: {verdicts(accs)}", flush=True)
    lines = [
        f"| {label} | {fmt(accs)} | "
        f"{fmt(drops) if label.split(': ')[-1].startswith(mixed) else '-'} | {t / fp_time:.2f}x |"
        for label, accs, drops, t in results
    ]
    seeds = " ".join(map(str, args.seeds))
    write_section(
        f"accuracy_dqa_{args.data}",
        f"""## DQA vs Binary-Relax vs plain 2-bit: lenet / {args.data}

`python -m bench.accuracy_dqa --epochs {args.epochs} --seeds {seeds} --data {args.data}`
({machine()}). Test accuracy in % (mean ± std over seeds) of the deployed model, every row
{args.epochs} epochs of Adam (lr 0.01, cosine), first/last layers 8-bit. Snap drop: accuracy of
the mixture at the end of training minus that of its lowest-bit member alone (pp). DQA and BR
schedules at their defaults, scaled to the run: T0 = {scaled_t0(steps, 0.03):g} for these
{steps} steps, BR omega x{scaled_omega_growth(args.epochs):.3f} per epoch.

| configuration | test acc % | snap drop pp | epoch time vs FP |
|---|---|---|---|
{chr(10).join(lines)}

DQA epoch time / plain 2-bit QAT epoch time, same run: {", ".join(ratios)}.
DQA minus plain QAT (mean test accuracy, pp): {verdicts(accs)}.
""",
    )


if __name__ == "__main__":
    main()
