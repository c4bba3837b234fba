"""What `qcompile inspect` reports: per-layer bits, levels, parameters and weight memory
(``summary(graph)`` for the figures, ``table(summary)`` for the text)."""

from __future__ import annotations

from typing import Any

import numpy as np

from qcompile.ir.graph import Graph, Node, Table
from qcompile.ir.ops import signed_bits

SHIFT_BITS = 6  # a requantization shift is 0..62


def _width(a: np.ndarray | None) -> int:
    """Signed bits of the widest entry (0 for nothing stored)."""
    if a is None or not a.size:
        return 0
    return signed_bits(int(a.min()), int(a.max()))


def _stored(a: np.ndarray) -> int:
    """Bits to store per-channel constants ``a``: once when they are all equal."""
    n = 1 if a.size and np.all(a == a.flat[0]) else a.size
    return n * _width(a)


def constant_bits(n: Node) -> dict[str, int]:
    """Bits of everything but the codes that a weighted node stores, by kind."""
    w, r = n.weights, n.requant
    assert w is not None
    out = {"table_bits": 0, "zero_bits": 0, "bias_bits": 0, "requant_bits": 0}
    if isinstance(w.levels, Table):
        out["table_bits"] = w.levels.entries.size * _width(w.levels.entries)
    else:
        out["zero_bits"] = _stored(w.levels.zero)
    if r is not None:
        out["requant_bits"] = _stored(r.multipliers) + SHIFT_BITS
        if r.bias is not None:
            out["bias_bits"] = r.biases.size * _width(r.biases)
    return out


def layer_row(n: Node) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": n.name,
        "op": n.kind,
        "shape": list(n.output.shape),
        "out_type": str(n.output.qtype),
        "act_bits": n.output.qtype.bits,
    }
    w = n.weights
    if w is None:
        return row
    bias = 0 if n.requant is None or n.requant.bias is None else len(n.requant.bias)
    consts = constant_bits(n)
    lo, hi = w.level_range()
    row.update(
        weight_shape=list(w.shape),
        # bits per weight: a layer with per-channel widths counts each channel at its own
        weight_bits=w.bits if w.channel_bits is None else w.mean_bits,
        max_weight_bits=w.bits,
        levels="uniform" if w.uniform else "non-uniform",
        num_levels=1 << w.bits,
        level_bits=signed_bits(lo, hi),  # the widest integer weight operand of a multiply
        table_entries=0 if w.uniform else int(w.levels.entries.size),
        params=w.count + bias,
        weights=w.count,
        channels=w.shape[0],
        code_bits=w.words * 32,  # the words the IR stores (row-wise with channel widths)
        **consts,
        weight_mem_bits=w.words * 32 + sum(consts.values()),
    )
    return row


def summary(graph: Graph) -> dict[str, Any]:
    """Per-layer rows and totals; ``avg_weight_bits`` is weighted by weight count."""
    rows = [layer_row(n) for n in graph.nodes]
    weighted = [r for r in rows if "weights" in r]
    weights = sum(r["weights"] for r in weighted)
    params = sum(r["params"] for r in weighted)
    mem = sum(r["weight_mem_bits"] for r in weighted)
    biases = params - weights
    avg = sum(r["weights"] * r["weight_bits"] for r in weighted) / weights if weights else 0.0
    return {
        "name": graph.name,
        "input": {"shape": list(graph.input.shape), "type": str(graph.input.qtype)},
        "outputs": list(graph.outputs),
        "layers": rows,
        "params": params,
        "avg_weight_bits": round(avg, 4),
        "weight_mem_bits": mem,
        "code_bits": sum(r["code_bits"] for r in weighted),
        "table_bits": sum(r["table_bits"] for r in weighted),
        "max_level_bits": max((r["level_bits"] for r in weighted), default=0),
        "model_bytes": (mem + 7) // 8,
        # hls4ml's default: every weight and bias an ap_fixed<16,6>
        "hls4ml_default_bits": 16 * (weights + biases),
        "float32_bytes": params * 4,
        "compression": round(params * 32 / mem, 2) if mem else None,
        "source": graph.meta().get("checkpoint"),
    }


def table(s: dict[str, Any]) -> str:
    cols = (
        "name",
        "op",
        "shape",
        "weight_bits",
        "levels",
        "level_bits",
        "act_bits",
        "params",
        "weight_mem_bits",
    )
    head = ("layer", "op", "output", "w bits", "levels", "w int", "a bits", "params", "mem bits")
    body = [[_cell(r.get(c)) for c in cols] for r in s["layers"]]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    out = [line(head), line(["-" * w for w in widths]), *(line(b) for b in body)]
    out.append(
        f"\n{s['params']} parameters, average weight bits {s['avg_weight_bits']:.2f}, "
        f"model {s['model_bytes']} bytes ({s['compression']}x smaller than float32, "
        f"{s['float32_bytes']} bytes)"
    )
    return "\n".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):  # a per-channel layer's mean width
        return f"{v:.2f}"
    return "x".join(map(str, v)) if isinstance(v, list) else str(v)
