"""Training plots written by ``qcompile train`` for the mixture stages (papers/003 Fig. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_attention(out: Path, history: list[dict[str, Any]], max_layers: int = 4) -> Path | None:
    """``attention.png``: each member's weight a_k per epoch, one panel per layer (Fig. 3a)."""
    rows = [h for h in history if h.get("attention")]
    if not rows:
        return None
    plt = _pyplot()
    layers = list(rows[-1]["attention"])[:max_layers]
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.2), squeeze=False)
    epochs = [h["epoch"] for h in rows]
    for ax, layer in zip(axes[0], layers, strict=True):
        series = list(zip(*[h["attention"][layer] for h in rows], strict=True))
        for k, values in enumerate(series):
            ax.plot(epochs, values, marker=".", label=f"Q{k + 1}")
        ax.set(title=layer, xlabel="epoch", ylabel="attention a_k", ylim=(-0.02, 1.02))
        ax.legend(fontsize=8)
    return _save(plt, fig, out / "attention.png")


def plot_quantizer(out: Path, history: list[dict[str, Any]]) -> Path | None:
    """``quantizer.png``: the effective quantization function q(w) of one layer at a few
    points of training (Fig. 3b)."""
    rows = [h for h in history if h.get("qfunc")]
    if not rows:
        return None
    plt = _pyplot()
    picks = sorted({0, len(rows) // 4, len(rows) // 2, len(rows) - 1})
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i in picks:
        f = rows[i]["qfunc"]
        ax.plot(f["w"], f["q"], drawstyle="steps-mid", label=f"epoch {rows[i]['epoch']}")
    lo, hi = min(rows[-1]["qfunc"]["w"]), max(rows[-1]["qfunc"]["w"])
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.6, ls="--", label="identity")
    ax.set(title=f"{rows[-1]['qfunc']['layer']}, channel 0", xlabel="w", ylabel="q(w)")
    ax.legend(fontsize=8)
    return _save(plt, fig, out / "quantizer.png")
