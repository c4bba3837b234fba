"""Vectorised int64 numpy kernels the op classes execute with; batches are ``[N, ...]`` int64
arrays.

Dot products go through float64 BLAS when ``exact`` says every partial sum stays below 2^53
(the verifier's accumulator bound proves it: each product's range contains 0, so no partial
sum leaves the range of the full sum); integers below 2^53 add and multiply exactly in
float64 in any order. numpy's int64 matmul, the fallback, is ~20x slower.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pair = tuple[int, int]


def _windows(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    fill: int,
) -> np.ndarray:
    """``[N, C, Ho, Wo, kh, kw]`` view of the (padded) input's windows."""
    (ph, pw), (dh, dw) = padding, dilation
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    span = ((kernel[0] - 1) * dh + 1, (kernel[1] - 1) * dw + 1)
    win = sliding_window_view(x, span, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]
    return win[..., ::dh, ::dw]


def matmul(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """``a @ b`` as int64; float64 BLAS when ``exact`` (operands may already be float64,
    which saves converting the larger im2col copy)."""
    if not exact:
        return np.matmul(a, b)
    f64 = np.float64
    return np.matmul(a.astype(f64, copy=False), b.astype(f64, copy=False)).astype(np.int64)


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: int,
    exact: bool,
) -> np.ndarray:
    """``weight`` is the decoded int64 weight tensor ``[O, C/g, kh, kw]``.

    Channels-last im2col: the ``kh * kw`` shifted views are copied side by side, so each copy
    moves whole channel rows (a 7-D transposed im2col was 3x slower here).
    """
    o, cg, kh, kw = weight.shape
    g = groups
    dtype = np.float64 if exact else np.int64
    (ph, pw), (sh, sw), (dh, dw) = padding, stride, dilation
    xt = x.transpose(0, 2, 3, 1).astype(dtype)  # NHWC
    if ph or pw:
        xt = np.pad(xt, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    n, hp, wp, c = xt.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    views = [
        xt[:, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    wt = weight.astype(dtype)
    if cg == 1 and g == c:  # depthwise: output channel k reads input channel k // (o / g)
        rep = o // g
        acc = np.zeros((n, ho, wo, o), dtype=dtype)
        taps = wt.reshape(o, kh * kw)
        for t, v in enumerate(views):
            acc += (np.repeat(v, rep, axis=3) if rep > 1 else v) * taps[:, t]
    else:
        og = o // g
        parts = []
        for k in range(g):
            cols = np.empty((n, ho, wo, kh * kw, cg), dtype=dtype)
            for t, v in enumerate(views):
                cols[:, :, :, t] = v[..., k * cg : (k + 1) * cg]
            mat = wt[k * og : (k + 1) * og].transpose(2, 3, 1, 0).reshape(kh * kw * cg, og)
            parts.append(np.matmul(cols.reshape(-1, kh * kw * cg), mat).reshape(n, ho, wo, og))
        acc = parts[0] if g == 1 else np.concatenate(parts, axis=3)
    return acc.transpose(0, 3, 1, 2).astype(np.int64)


def pool(
    x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair, fill: int, how: str
) -> np.ndarray:
    """Window max (padding ``fill`` never wins) or sum (zero padding)."""
    win = _windows(x, kernel, stride, padding, (1, 1), fill)
    return win.max(axis=(4, 5)) if how == "max" else win.sum(axis=(4, 5))
