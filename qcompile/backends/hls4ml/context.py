"""The typed context each kernel template is rendered from, built from one IR node.

Every field of ``config.h.tpl`` is a field here; a kernel reads the ones it needs. Types are
spelled for Vivado/Vitis HLS (``ap_int``/``ap_uint``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qcompile.ir import ops
from qcompile.ir.graph import Affine, Node
from qcompile.ir.ops import Add, Conv2d, MaxPool, Pool, signed_bits
from qcompile.ir.packing import row_starts
from qcompile.ir.types import QType, TensorInfo

TEMPLATES = Path(__file__).parent / "templates"


def ap_type(q: QType) -> str:
    return f"ap_int<{q.bits}>" if q.signed else f"ap_uint<{q.bits}>"


def table_type(values: np.ndarray) -> str:
    """Signed type for level, bias or multiplier entries, never narrower than 3 bits: hls4ml
    reads a signed 2-bit integer weight type as ternary {-1, 0, 1} (DESIGN.md), and a 1-bit
    one is no signed type at all."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    q = QType.fitting(min(lo, -1), hi)
    return f"ap_int<{max(3, q.bits)}>"


@dataclass(frozen=True)
class KernelContext:
    comment: str
    accum_t: str
    res_t: str
    prod_t: str = "ap_int<64>"
    level_t: str = "ap_int<3>"
    weight_t: str = "ap_int<9>"
    bias_t: str = "ap_int<3>"
    mult_t: str = "ap_int<32>"
    row_t: str = "ap_uint<16>"
    reuse_factor: int = 1
    reuse: int = 1
    n_par: int = 1
    code_factor: int = 1
    level_factor: int = 1
    chan_factor: int = 1
    bias_factor: int = 1
    mult_factor: int = 1
    rows_factor: int = 1
    multiplier: int = 1
    shift: int = 0
    lo: int = 0
    hi: int = 0
    m0: int = 0
    m1: int = 0
    m2: int = 0
    n_elem: int = 1
    n_in: int = 1
    n_out: int = 1
    bits: int = 1
    per_row: int = 1
    n_words: int = 1
    affine: bool = True
    step: int = 1
    level_rows: int = 1
    level_cols: int = 1
    n_mult: int = 1
    n_bias: int = 1
    row_widths: bool = False
    n_rows: int = 1
    n_chan: int = 1
    in_height: int = 1
    in_width: int = 1
    n_filt: int = 1
    out_height: int = 1
    out_width: int = 1
    filt_height: int = 1
    filt_width: int = 1
    stride_height: int = 1
    stride_width: int = 1
    dilation_height: int = 1
    dilation_width: int = 1
    pad_top: int = 0
    pad_left: int = 0
    groups: int = 1
    is_max: bool = False

    def render(self, index: int) -> str:
        fields = {
            k: (str(v).lower() if isinstance(v, bool) else v) for k, v in asdict(self).items()
        }
        return (TEMPLATES / "config.h.tpl").read_text().format(index=index, **fields)


def weight_arrays(node: Node) -> dict[str, np.ndarray]:
    """The arrays a weighted node's kernel takes, in call order: packed codes, levels (zero
    points or int8 table, flattened), the requantization's biases and multipliers (one
    entry when per tensor), each row's first bit in the code stream (constants, so that
    an unrolled kernel selects fixed bits: no row-dependent shifter) and each row's width
    (one unused entry for one-width layers)."""
    w, r = node.weights, node.requant
    assert w is not None and r is not None
    w = w.pack()
    lv = w.levels
    levels = lv.zero if isinstance(lv, Affine) else lv.entries.reshape(-1)
    rows = np.arange(w.shape[0], dtype=np.int64)
    if w.channel_bits is None:
        start, bits = rows * w.per_row * w.bits, np.zeros(1, dtype=np.int64)
    else:
        start = row_starts(w.per_row, w.channel_bits) * 32
        bits = np.array(w.channel_bits, dtype=np.int64)
    return {
        "codes": w.data,
        "levels": levels,
        "bias": r.biases,
        "mult": r.multipliers,
        "row_pos": start,
        "row_bits": bits,
    }


def lanes(n_out: int, n_in: int, bits: int, words: int, level_rows: int, rf: int) -> dict:
    """A weighted kernel's schedule and array partitioning for reuse factor ``rf``: ``reuse``
    pipelined iterations, each computing ``n_par`` consecutive output rows in parallel
    (hls4ml's Resource strategy: ``n_in * n_out / rf`` multipliers). Per-row arrays are
    split cyclically into ``n_par`` banks (row o in bank o % n_par: lane j always reads bank
    j); the code words are reshaped into words of ``code_factor`` words, so one iteration's
    rows sit in at most two of them (one dual-port read)."""
    reuse = min(rf, n_out)
    n_par = -(-n_out // reuse)
    return {
        "reuse": reuse,
        "n_par": n_par,
        "code_factor": min(words, -(-n_par * n_in * bits // 32) + 1),
        "level_factor": n_par if level_rows > 1 else 1,
        "chan_factor": n_par,
    }


def _spatial(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else (shape[0], 1, 1)


def kernel_context(node: Node, inputs: list[TensorInfo], reuse_factor: int) -> KernelContext:
    """The template context of ``node`` (inputs in order)."""
    out = node.output
    r = node.requant
    n_elem = int(np.prod(out.shape))
    # Element-wise kernels: `reuse` pipelined iterations (II 1) of `n_par` parallel lanes.
    reuse = min(reuse_factor, n_elem)
    base: dict = {
        "comment": f"{node.kind} {node.name}",
        "res_t": ap_type(out.qtype),
        "reuse_factor": reuse_factor,
        "n_elem": n_elem,
        "reuse": reuse,
        "n_par": -(-n_elem // reuse),
    }
    if r is not None:
        ms = r.multipliers
        base.update(
            accum_t=f"ap_int<{r.acc_bits}>",
            prod_t=f"ap_int<{ops.product_bits_needed(node, [t.qtype.range for t in inputs])}>",
            mult_t=f"ap_int<{signed_bits(int(ms.min()), int(ms.max()))}>",
            multiplier=1 if r.per_channel else r.multiplier,
            n_mult=len(ms),
            n_bias=len(r.biases),
            bias_t=table_type(r.biases),
            shift=r.shift,
            lo=r.lo,
            hi=r.hi,
        )
    else:  # pass-through ops: accumulate in the input's own range, plus a sign bit
        q = inputs[0].qtype
        base.update(accum_t=f"ap_int<{q.bits + 1}>", lo=q.range[0], hi=q.range[1])
    op, w = node.op, node.weights
    if w is not None:
        arrays = weight_arrays(node)
        levels = arrays["levels"]
        lo, hi = w.level_range()
        base.update(
            level_t=table_type(levels),
            weight_t=f"ap_int<{max(3, signed_bits(lo, hi))}>",
            bits=w.bits,
            per_row=w.per_row,
            n_words=w.words,
            affine=isinstance(w.levels, Affine),
            step=w.levels.step if isinstance(w.levels, Affine) else 1,
            level_rows=w.levels.rows,
            level_cols=1 if isinstance(w.levels, Affine) else 1 << w.bits,
            row_widths=w.channel_bits is not None,
            n_rows=len(arrays["row_bits"]),
            n_out=w.shape[0],
            n_in=w.per_row,
            **lanes(w.shape[0], w.per_row, w.bits, w.words, w.levels.rows, reuse_factor),
        )
        base["level_factor"] *= 1 if isinstance(w.levels, Affine) else 1 << w.bits
        # a bank count never above the array's size: per-tensor constants stay one register
        base["bias_factor"] = min(base["n_par"], base["n_bias"])
        base["mult_factor"] = min(base["n_par"], base["n_mult"])
        base["rows_factor"] = min(base["n_par"], base["n_rows"])
    if isinstance(op, Add):
        base.update({f"m{i}": m for i, m in enumerate(op.multipliers)})
    if isinstance(op, Conv2d | Pool):
        c, h, wd = _spatial(inputs[0].shape)
        _, oh, ow = _spatial(out.shape)
        base.update(
            n_chan=c,
            in_height=h,
            in_width=wd,
            out_height=oh,
            out_width=ow,
            n_filt=out.shape[0],
            stride_height=op.stride[0],
            stride_width=op.stride[1],
            pad_top=op.padding[0],
            pad_left=op.padding[1],
        )
        if isinstance(op, Conv2d):
            assert w is not None
            base.update(
                filt_height=w.shape[2],
                filt_width=w.shape[3],
                groups=op.groups,
                dilation_height=op.dilation[0],
                dilation_width=op.dilation[1],
            )
        else:
            base.update(
                filt_height=op.kernel[0], filt_width=op.kernel[1], is_max=isinstance(op, MaxPool)
            )
    return KernelContext(**base)
