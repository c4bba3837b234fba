"""The typed context each kernel template is rendered from, built from one IR node.

Every field of ``config.h.tpl`` is a field here; a kernel reads the ones it needs. Types are
spelled for Vivado/Vitis HLS (``ap_int``/``ap_uint``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qcompile.ir.graph import Node
from qcompile.ir.ops import Add, Conv2d, MaxPool, Pool
from qcompile.ir.packing import codes_per_word
from qcompile.ir.types import QType, TensorInfo

TEMPLATES = Path(__file__).parent / "templates"


def ap_type(q: QType) -> str:
    return f"ap_int<{q.bits}>" if q.signed else f"ap_uint<{q.bits}>"


def table_type(values: np.ndarray) -> str:
    """Signed type for LUT or bias entries, never narrower than 3 bits: hls4ml reads a signed
    2-bit integer weight type as ternary {-1, 0, 1} (DESIGN.md), and a 1-bit one is no
    signed type at all."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    q = QType.fitting(min(lo, -1), hi)
    return f"ap_int<{max(3, q.bits)}>"


@dataclass(frozen=True)
class KernelContext:
    comment: str
    accum_t: str
    res_t: str
    lut_t: str = "ap_int<3>"
    bias_t: str = "ap_int<3>"
    reuse_factor: int = 1
    unroll: int = 1
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
    per_word: int = 32
    n_words: int = 1
    n_levels: int = 2
    lut_rows: int = 1
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


def _spatial(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2]) if len(shape) == 3 else (shape[0], 1, 1)


def kernel_context(node: Node, inputs: list[TensorInfo], reuse_factor: int) -> KernelContext:
    """The template context of ``node`` (inputs in order)."""
    out = node.output
    r = node.requant
    base: dict = {
        "comment": f"{node.kind} {node.name}",
        "res_t": ap_type(out.qtype),
        "reuse_factor": reuse_factor,
        "n_elem": int(np.prod(out.shape)),
        "unroll": max(1, int(np.prod(out.shape)) // reuse_factor),
    }
    if r is not None:
        base.update(
            accum_t=f"ap_int<{r.acc_bits}>",
            multiplier=r.multiplier,
            shift=r.shift,
            lo=r.lo,
            hi=r.hi,
        )
    else:  # pass-through ops: accumulate in the input's own range, plus a sign bit
        q = inputs[0].qtype
        base.update(accum_t=f"ap_int<{q.bits + 1}>", lo=q.range[0], hi=q.range[1])
    op, w = node.op, node.weights
    if w is not None:
        bias = w.bias if w.bias is not None else np.zeros(w.shape[0], dtype=np.int64)
        base.update(
            lut_t=table_type(w.lut),
            bias_t=table_type(bias),
            bits=w.bits,
            per_word=codes_per_word(w.bits),
            n_words=w.words,
            n_levels=1 << w.bits,
            lut_rows=int(w.lut.shape[0]),
            n_out=w.shape[0],
            n_in=int(np.prod(w.shape[1:])),
        )
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
