"""The learned mixed-precision stages against FP, uniform and DQA: lenet, 3 seeds, one budget.

    python -m bench.accuracy_mp [--epochs 15] [--seeds 0 1 2] [--data mnist5k]

Every quantized row has 4-bit PACT activations and 8-bit first/last layers (so plain 2-bit
weights average 2.10 bits on lenet); SDQ, DDQ and DMBQ+LBA learn per-layer widths under
``target_bits = 2.0`` counted as ``qcompile inspect`` counts ``avg_weight_bits`` (first and
last layers included). Each row's accuracy is the deployed model's; epoch time is relative
to the FP row measured in the same run.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from torch import nn

from bench.accuracy_dqa import fmt, lenet_args
from bench.report import machine, write_section
from qcompile.data import load_dataset
from qcompile.recipe import load_recipe
from qcompile.train import train
from qcompile.zoo import build_model


def learned(method: str) -> dict:
    return {"stage.method": method, "stage.target_bits": 2.0, "stage.abits": 4}


ROWS: list[tuple[str, dict]] = [
    ("FP (W32A32)", {"stage.wbits": 32, "stage.abits": 32}),
    ("uniform 2-bit min-max", {"stage.method": "uniform", "stage.wbits": 2, "stage.abits": 4}),
    ("DQA 2-bit (2/4/8)", {"stage.method": "dqa", "stage.wbits": 2, "stage.abits": 4}),
    ("SDQ, target 2.0", learned("sdq")),
    ("DDQ, target 2.0", learned("ddq")),
    ("DMBQ + LBA, target 2.0", learned("dmbq")),
]


def weight_counts(data: str) -> dict[str, int]:
    d = load_dataset(data)
    net = build_model("lenet", d.in_shape, d.num_classes)
    return {
        n: m.weight.numel() for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)
    }


def avg_bits(summary: dict, sizes: dict[str, int]) -> float | None:
    """Average weight bits weighted by weight count, as inspect counts them (None: float)."""
    bits = summary["bits"]
    if any(b == 32 for b in bits.values()):
        return None
    return sum(bits[n] * sizes[n] for n in sizes) / sum(sizes.values())


def main() -> None:
    args = lenet_args(__doc__)
    results = []
    sizes = weight_counts(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, over) in enumerate(ROWS):
            accs, bits, times = [], [], []
            for seed in args.seeds:
                base = {"model.name": "lenet", "data.name": args.data, "train.epochs": args.epochs}
                r = load_recipe(None, {**base, "train.seed": seed, **over})
                s = train(r, Path(tmp) / f"{i}-{seed}", progress=False, log=lambda m: None)
                accs.append(s["test_acc"])
                bits.append(avg_bits(s, sizes))
                times.append(s["epoch_time_s"])
            results.append((label, accs, bits, statistics.median(times)))
            shown = "-" if bits[0] is None else f"{statistics.mean(bits):.2f}"
            print(f"{label}: {fmt(accs)}  bits {shown}  {statistics.median(times):.3f}s/epoch")
    fp_time = results[0][3]
    lines = []
    for label, accs, bits, t in results:
        shown = "32" if bits[0] is None else f"{min(bits):.2f}-{max(bits):.2f}"
        lines.append(f"| {label} | {fmt(accs)} | {shown} | {t / fp_time:.2f}x |")
    seeds = " ".join(map(str, args.seeds))
    write_section(
        f"accuracy_mp_{args.data}",
        f"""## Learned mixed precision: lenet / {args.data}

`python -m bench.accuracy_mp --epochs {args.epochs} --seeds {seeds} --data {args.data}`
({machine()}). Test accuracy in % (mean ± std over seeds) of the deployed model, every row
{args.epochs} epochs of Adam (lr 0.01, cosine), A4 activations, first/last layers 8-bit.
Average weight bits as `qcompile inspect` counts them (range over seeds).

| configuration | test acc % | avg weight bits | epoch time vs FP |
|---|---|---|---|
{chr(10).join(lines)}
""",
    )


if __name__ == "__main__":
    main()
