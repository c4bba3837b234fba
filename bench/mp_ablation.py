"""Ablations of the learned mixed-precision stages on lenet, 3 seeds, one epoch budget.

    python -m bench.mp_ablation [--epochs 15] [--seeds 0 1 2] [--data mnist5k]

- DDQ with and without its gradient correction: the relative weight quantization error
  ``||w - Q(w)||^2 / ||w||^2`` of the learned layers (weighted by weight count) over training,
  as papers/000 Fig. 4/6 plot it, and the deployed accuracy.
- DMBQ+LBA at global, layer and channel granularity (GP/LP/CP): accuracy, the average weight
  bits the frozen model stores (inspect's) and, for CP, the channel-mean bits per-channel IR
  widths would store.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from bench.accuracy_dqa import fmt, lenet_args
from bench.report import machine, write_section
from qcompile.recipe import load_recipe
from qcompile.train import train


def run(over: dict, data: str, epochs: int, seed: int, out: Path) -> tuple[dict, list[dict]]:
    base = {"model.name": "lenet", "data.name": data, "train.epochs": epochs}
    r = load_recipe(None, {**base, "train.seed": seed, "stage.target_bits": 2.0, **over})
    s = train(r, out, progress=False, log=lambda m: None)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return s, history


def main() -> None:
    from bench.accuracy_mp import avg_bits, weight_counts

    a = lenet_args(__doc__)
    sizes = weight_counts(a.data)
    ddq_rows, curves, lba_rows = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for on in (True, False):
            accs, errs, finals = [], [], []
            for seed in a.seeds:
                over = {"stage.method": "ddq", "stage.grad_correction": on}
                s, hist = run(over, a.data, a.epochs, seed, Path(tmp) / f"ddq{on}{seed}")
                accs.append(s["test_acc"])
                errs.append([h["quant_error_avg"] for h in hist])
                finals.append(avg_bits(s, sizes))
            curves[on] = [statistics.mean(e) for e in zip(*errs, strict=True)]
            label = "on" if on else "off"
            ddq_rows.append(
                f"| {label} | {fmt(accs)} | {curves[on][-1]:.4f} | "
                f"{min(finals):.2f}-{max(finals):.2f} |"
            )
            print("ddq", label, fmt(accs), curves[on], flush=True)
        for gran in ("global", "layer", "channel"):
            accs, stored = [], []
            for seed in a.seeds:
                over = {"stage.method": "dmbq", "stage.granularity": gran}
                s, _ = run(over, a.data, a.epochs, seed, Path(tmp) / f"dmbq{gran}{seed}")
                accs.append(s["test_acc"])
                stored.append(avg_bits(s, sizes))
            lba_rows.append(f"| {gran} | {fmt(accs)} | {statistics.mean(stored):.2f} |")
            print("dmbq", gran, fmt(accs), stored, flush=True)
    epochs = range(1, a.epochs + 1)
    curve_rows = [
        f"| {e} | {curves[True][e - 1]:.4f} | {curves[False][e - 1]:.4f} |" for e in epochs
    ]
    seeds = " ".join(map(str, a.seeds))
    write_section(
        f"mp_ablation_{a.data}",
        f"""## Ablations of DDQ and DMBQ+LBA: lenet / {a.data}

`python -m bench.mp_ablation --epochs {a.epochs} --seeds {seeds} --data {a.data}` ({machine()}).
Every run: target 2.0 average weight bits (inspect's count), A4 activations, {a.epochs} epochs
of Adam; accuracy in % (mean ± std over seeds) of the deployed model.

DDQ gradient correction (relative quantization error of the learned layers, weighted by
weight count, at the end of training; avg weight bits: range over seeds):

| correction | test acc % | quantization error | avg weight bits |
|---|---|---|---|
{chr(10).join(ddq_rows)}

Quantization error over training (mean over seeds; the bits are fixed half-way):

| epoch | correction on | correction off |
|---|---|---|
{chr(10).join(curve_rows)}

DMBQ+LBA granularity (GP: one group for the network; LP: per layer; CP: per output
channel). Average weight bits as the .qir stores them (each channel at its own width):

| granularity | test acc % | avg weight bits |
|---|---|---|
{chr(10).join(lba_rows)}
""",
    )


if __name__ == "__main__":
    main()
