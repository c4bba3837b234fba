"""A grouped conv with short output rows, summed over its padded input's flat grid (x86).

A depthwise conv vectorises along an output row: one level times a row of pixels per tap.
Rows shorter than a vector leave most lanes idle: mobilenetv2's 8x8 and 4x4 layers filled a
quarter and an eighth of an AVX-512 register of int16 sums. Here the padded input is one
flat array per channel (and stride phase), rows ``G`` wide, and the conv's outputs are
computed on the same grid: output ``(i, j)`` is grid point ``q = i * G + j``, and tap
``(ri, rj)`` reads the phase plane ``(ri % sh, rj % sw)`` at ``q + (ri // sh) * G +
rj // sw``, a contiguous run for any run of ``q``. The grid's columns past the output's
(``G - ow`` a row) are computed and never read; the grid is rounded up to whole vectors of
``LANES`` points, the padded array to the rows those read (zeros).
"""

from __future__ import annotations

from typing import Any

from qcompile.backends.tvm.pad_rows import PadGeometry

LANES = 32  # grid points a vector: 32 int16 sums fill an AVX-512 register


def applies(op: Any, out_shape: tuple[int, ...]) -> bool:
    """Whether a grouped conv takes the flat grid: output rows shorter than, or not a
    multiple of, a vector (a whole-vector row wastes nothing), no dilation, and a padded
    or strided input (which is copied anyway)."""
    ow = out_shape[-1]
    copied = any(op.padding) or any(s > 1 for s in op.stride)
    return op.dilation == (1, 1) and ow % LANES != 0 and copied


def flat_acc(
    te: Any, x: Any, op: Any, levels: Any, out_shape: tuple, dt: str, inner: Any, name: str
) -> Any:
    """The conv's accumulator accessor ``at(n, f, i, j)``: ``x`` its input ``[n, c, h, w]``,
    ``levels`` its decoded weights ``[o, cg, kh, kw]``, ``inner`` the zero-padded accessor
    of ``x`` (``compute._pad``)."""
    (ph, pw), (sh, sw) = op.padding, op.stride
    batch, c, w = x.shape[0], int(x.shape[1]), int(x.shape[3])
    o, cg, kh, kw = (int(v) for v in levels.shape)
    og = o // op.groups
    oh = out_shape[1]
    G = -(-(w + 2 * pw) // sw)
    Q = -(-oh * G // LANES) * LANES
    reach = (kh - 1) // sh * G + (kw - 1) // sw  # the farthest tap past a grid point
    E = -(-(Q + reach) // G) * G
    geo = PadGeometry((ph, pw), (sh, sw), flat=True)
    flat = te.compute(
        (batch, c, sh * sw, E),
        lambda n, ch, p, e: inner(n, ch, p // sw + sh * (e // G), p % sw + sw * (e % G)),
        name=f"{name}_pad",
        attrs=geo.attrs(),
    )
    rc = te.reduce_axis((0, cg), name="rc")
    ri, rj = te.reduce_axis((0, kh), name="ri"), te.reduce_axis((0, kw), name="rj")
    acc = te.compute(
        (batch, o, Q),
        lambda n, f, q: te.sum(
            flat[
                n, (f // og) * cg + rc, ri % sh * sw + rj % sw, q + ri // sh * G + rj // sw
            ].astype(dt)
            * levels[f, rc, ri, rj],
            axis=[rc, ri, rj],
        ),
        name=f"{name}_acc",
    )
    return lambda n, f, i, j: acc[n, f, i * G + j]
