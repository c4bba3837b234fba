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


def plot_layer_bits(out: Path, history: list[dict[str, Any]]) -> Path | None:
    """``bits.png``: the final bits of every weight layer, with the average (papers/000 Fig. 3)."""
    rows = [h for h in history if h.get("wbits")]
    if not rows:
        return None
    plt = _pyplot()
    bits = rows[-1]["wbits"]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(bits) + 2), 3.2))
    ax.bar(range(len(bits)), list(bits.values()), color="tab:blue")
    ax.axhline(
        rows[-1]["avg_wbits"],
        color="tab:red",
        ls="--",
        label=f"average {rows[-1]['avg_wbits']:.2f}",
    )
    ax.set_xticks(range(len(bits)), list(bits), rotation=60, fontsize=7)
    ax.set(ylabel="weight bits", title=f"learned bitwidths, epoch {rows[-1]['epoch']}")
    ax.legend(fontsize=8)
    return _save(plt, fig, out / "bits.png")


def plot_per_layer(
    out: Path, history: list[dict[str, Any]], key: str, name: str, ylabel: str, title: str,
    log: bool = False,
) -> Path | None:  # fmt: skip
    """``name``: ``history[epoch][key][layer]`` per epoch for every layer, with the weighted
    average ``key + "_avg"`` (or ``"avg_" + key``) as a dashed line."""
    rows = [h for h in history if h.get(key)]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    epochs = [h["epoch"] for h in rows]
    for layer in rows[-1][key]:
        ax.plot(epochs, [h[key].get(layer) for h in rows], marker=".", label=layer)
    avg = next(k for k in (f"{key}_avg", f"avg_{key}") if k in rows[-1])
    ax.plot(epochs, [h[avg] for h in rows], color="black", lw=2, ls="--", label="average")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=6, ncol=2)
    return _save(plt, fig, out / name)


def plot_bit_evolution(out: Path, history: list[dict[str, Any]]) -> Path | None:
    """``bits_evolution.png``: each layer's bits per epoch (papers/000 Fig. 5)."""
    return plot_per_layer(
        out, history, "wbits", "bits_evolution.png", "weight bits", "bitwidths over training"
    )


def plot_quant_error(out: Path, history: list[dict[str, Any]]) -> Path | None:
    """``quant_error.png``: relative quantization error per epoch (papers/000 Fig. 4a/6)."""
    return plot_per_layer(
        out, history, "quant_error", "quant_error.png", "||w - Q(w)||^2 / ||w||^2",
        "quantization error", log=True,
    )  # fmt: skip


def plot_levels(out: Path, history: list[dict[str, Any]]) -> Path | None:
    """``levels.png``: channel 0's weight histogram with its final quantization levels, for the
    largest learned layers (papers/000 Fig. 1)."""
    rows = [h for h in history if h.get("levels")]
    if not rows:
        return None
    plt = _pyplot()
    snap = rows[-1]["levels"]
    fig, axes = plt.subplots(1, len(snap), figsize=(4 * len(snap), 3.2), squeeze=False)
    for ax, (layer, s) in zip(axes[0], snap.items(), strict=True):
        edges = s["edges"]
        ax.stairs(s["counts"], edges, fill=True, color="tab:gray", alpha=0.6, label="weights")
        for i, v in enumerate(s["levels"]):
            ax.axvline(v, color="tab:red", lw=1, label="levels" if i == 0 else None)
        ax.set(title=f"{layer}, channel 0, {s['bits']}-bit", xlabel="w", ylabel="count")
        ax.legend(fontsize=8)
    return _save(plt, fig, out / "levels.png")
