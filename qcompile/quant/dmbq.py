"""DMBQ: distribution-aware multi-bit weight quantization (papers/001, METHODS.md).

A channel ``c`` quantized with ``b`` bits has the ``2^b`` levels
``A_c * sum_k alpha_(b,k) e_k``, ``e_k in {-1, +1}``: a non-uniform, symmetric set whose top
level is the clip ``A_c`` (``sum_k alpha = 1``). ``alpha`` and the clip constant ``c_b`` in
``A_c = c_b * mean|w_c|`` minimise the expected squared error under a Laplace(0, 1) density
(``mean|w|`` is the Laplace scale's maximum-likelihood estimate, so the fit is scale-free);
:func:`solve_laplace` re-solves them. Weights map to ``u = clamp(w / A_c, -1, 1)`` and round to
the nearest level, with a straight-through gradient that is zero outside the clip.

Choices where the sources are silent, or where this differs from the authors' code (DAMBQV2):

- The constants are METHODS.md's re-solved values; ``alpha`` is renormalised to sum to exactly
  1 (the 3-bit row sums to 0.9999 as printed). 1-bit uses the authors' ``c_1 = 0.98``: the
  Laplace optimum is ``E|X| = 1``, and 0.98 costs 0.04 % more expected error.
- No 0-bit (pruned) channels: the IR stores 1..8-bit layers, and a pruned channel would only
  pay off once per-channel widths reach the IR. Bits are 1..4.
- ``A_c`` is a buffer updated in training forward passes only, ``A <- m A + (1 - m) c_b
  mean|w_c|`` with ``m = 0.99``, initialised to ``c_b mean|w_c|`` on the first forward pass (in
  any mode, so an untrained model can be frozen). When a channel's bits change, ``A_c`` is
  rescaled by ``c_new / c_old`` so that it keeps tracking the same running ``mean|w_c|``; the
  authors' code lets the running average drift to the new constant instead, which stretches
  the new levels by up to 1.4x for a few hundred steps.
- Ties (``u`` exactly half-way between two levels) go to the lower level.
- The LUT of a channel with fewer bits than the layer's widest channel holds its ``2^b_c``
  levels first and zeros after them: its codes never exceed ``2^b_c - 1``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from qcompile.quant.base import Encoded, Quantizer

MAX_BITS = 4

# bits -> (c_b, alpha_(b,1..b)): METHODS.md's values, re-solved under Laplace(0, 1).
LAPLACE_CONSTANTS: dict[int, tuple[float, tuple[float, ...]]] = {
    1: (0.98, (1.0,)),
    2: (2.594, (0.6144, 0.3856)),
    3: (4.161, (0.4556, 0.3448, 0.1995)),
    4: (5.686, (0.3304, 0.2850, 0.2334, 0.1512)),
}


def sign_patterns(bits: int) -> np.ndarray:
    """All ``2^bits`` vectors ``e`` in ``{-1, +1}^bits``, as rows."""
    return np.array(list(itertools.product((1.0, -1.0), repeat=bits)))


def multibit_levels(alpha: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """The sorted ``2^b`` values ``sum_k alpha_k e_k``.

    >>> multibit_levels((0.75, 0.25)).tolist()
    [-1.0, -0.5, 0.5, 1.0]
    """
    return np.sort(sign_patterns(len(alpha)) @ np.asarray(alpha, dtype=np.float64))


# ---- the Laplace fit -------------------------------------------------------------------------


def _laplace_partial_moments(x: np.ndarray) -> np.ndarray:
    """``[G0, G1, G2](x)``, ``Gk(x) = integral_-inf^x t^k f(t) dt``, ``f(t) = exp(-|t|) / 2``."""
    finite = np.where(np.isfinite(x), x, 0.0)
    e = np.where(np.isfinite(x), np.exp(-np.abs(finite)), 0.0)
    neg = x <= 0
    g0 = np.where(neg, 0.5 * e, 1 - 0.5 * e)
    g1 = np.where(neg, 0.5 * e * (finite - 1), -0.5 * e * (finite + 1))
    g2 = np.where(
        neg, 0.5 * e * (finite**2 - 2 * finite + 2), 2 - 0.5 * e * (finite**2 + 2 * finite + 2)
    )
    return np.stack([g0, g1, g2])


def _cells(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sign patterns sorted by level, the sorted levels, and each nearest-level cell's
    ``[mass, first moment, second moment]`` under Laplace(0, 1)."""
    signs = sign_patterns(len(beta))
    levels = signs @ beta
    order = np.argsort(levels, kind="stable")
    levels = levels[order]
    edges = np.concatenate([[-np.inf], (levels[1:] + levels[:-1]) / 2, [np.inf]])
    g = _laplace_partial_moments(edges)
    return signs[order], levels, g[:, 1:] - g[:, :-1]


def laplace_error(beta: np.ndarray | tuple[float, ...]) -> float:
    """``E[(X - Q(X))^2]`` for ``X ~ Laplace(0, 1)`` and ``Q`` = nearest of the levels
    ``sum_k beta_k e_k`` (``beta = c_b * alpha``), in closed form."""
    _, levels, (mass, m1, m2) = _cells(np.asarray(beta, dtype=np.float64))
    return float(np.sum(m2 - 2 * levels * m1 + levels**2 * mass))


def _refine(beta: np.ndarray, iters: int = 20000, tol: float = 1e-13) -> np.ndarray:
    """Lloyd iteration for a multi-bit codebook: assign cells to the nearest level, then
    solve the least-squares ``beta`` for those cells; the error never rises."""
    for _ in range(iters):
        signs, _, (mass, m1, _) = _cells(beta)
        new = np.linalg.solve(signs.T @ (mass[:, None] * signs), signs.T @ m1)
        if np.max(np.abs(new - beta)) < tol:
            return new
        beta = new
    return beta


def solve_laplace(bits: int, starts: int = 15) -> tuple[float, np.ndarray]:
    """``(c_b, alpha)`` minimising the expected squared error under Laplace(0, 1).

    The problem has poor local minima (from a power-of-two start the 3-bit fit stops 15 %
    above the optimum), so Lloyd runs from ``starts`` geometric starts
    ``beta_k ~ rho^k``, ``rho`` in [0.3, 1], and keeps the best.

    >>> c, alpha = solve_laplace(2)
    >>> round(c, 3), alpha.round(4).tolist()
    (2.594, [0.6144, 0.3856])
    """
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"solve_laplace: bits must be 1..{MAX_BITS}, got {bits}")
    best: tuple[float, np.ndarray] | None = None
    for rho in np.linspace(0.3, 1.0, starts):
        start = rho ** np.arange(bits)
        beta = _refine(start * 1.4 * bits / start.sum())
        err = laplace_error(beta)
        if best is None or err < best[0] - 1e-15:
            best = (err, beta)
    assert best is not None
    beta = np.sort(np.abs(best[1]))[::-1]  # flipping a sign of beta_k gives the same levels
    return float(beta.sum()), beta / beta.sum()


# ---- the quantizer ---------------------------------------------------------------------------


def unit_table() -> Tensor:
    """``[MAX_BITS + 1, 2^MAX_BITS]``: row ``b`` holds the sorted unit levels (top level 1) of
    ``b`` bits, then zeros; row 0 is unused."""
    table = torch.zeros(MAX_BITS + 1, 2**MAX_BITS, dtype=torch.float64)
    for b, (_, alpha) in LAPLACE_CONSTANTS.items():
        a = np.asarray(alpha) / np.sum(alpha)
        table[b, : 2**b] = torch.from_numpy(multibit_levels(a))
    return table.float()


def clip_constants() -> Tensor:
    """``[MAX_BITS + 1]``: ``c_b`` by bitwidth (0 unused)."""
    return torch.tensor([0.0] + [LAPLACE_CONSTANTS[b][0] for b in range(1, MAX_BITS + 1)])


def _midpoints(unit: Tensor, bits: int) -> Tensor:
    levels = unit[bits, : 2**bits]
    return (levels[1:] + levels[:-1]) / 2


# Nearest-level search by table: [-1, 1] is cut into CELLS cells and a code is the number of
# decision midpoints below u. torch.bucketize does a scalar binary search per weight (80 ns
# a weight here, most of a DMBQ step on lenet); this is a few vectorised passes.
CELLS = 2048


def _cell(u: Tensor) -> Tensor:
    """Cell of every ``u`` in [-1, 1]: ``floor((u + 1) * CELLS / 2)`` in ``u``'s float
    arithmetic, so it never decreases as ``u`` grows (all the search relies on)."""
    return u.add(1.0).mul_(CELLS // 2).floor_().clamp_(0, CELLS - 1).long()


def _search_tables(unit: Tensor) -> tuple[Tensor, Tensor]:
    """``(below, inside)``, each ``[MAX_BITS + 1, CELLS]``: for width b and cell c, how many
    of b's midpoints lie in cells before c, and the midpoint lying in c (+inf if none).

    A midpoint in an earlier cell is below any ``u`` of cell c and one in a later cell above
    it (the cell index never decreases with the value), so the code of ``u`` in cell c,
    ``#{m < u}``, is ``below[c] + (u > inside[c])``: exactly ``torch.bucketize(u, mids)``,
    ties included (they go to the lower level). That needs at most one midpoint per cell,
    which is checked here."""
    below = torch.zeros(MAX_BITS + 1, CELLS, dtype=torch.long)
    inside = torch.full((MAX_BITS + 1, CELLS), float("inf"))
    for b in range(1, MAX_BITS + 1):
        mids = _midpoints(unit.cpu(), b)
        cells = _cell(mids)
        if cells.unique().numel() != cells.numel():
            raise AssertionError(f"two {b}-bit midpoints share a search cell: raise CELLS")
        below[b] = torch.searchsorted(cells, torch.arange(CELLS), right=False)
        inside[b, cells] = mids
    return below.reshape(-1).to(unit.device), inside.reshape(-1).to(unit.device)


@dataclass(frozen=True)
class _PerBits:
    """What a DMBQ layer's ``channel_bits`` decides: ``c_b`` per channel, each channel's unit
    levels padded to the widest (the LUT rows), and where each channel's width starts in the
    flattened search tables (``[C, 1]``)."""

    key: tuple[int, int, int]
    constants: Tensor
    unit_rows: Tensor
    offsets: Tensor

    @staticmethod
    def build(key: tuple[int, int, int], bits: Tensor, unit: Tensor, constants: Tensor) -> _PerBits:
        widest = int(bits.max())
        return _PerBits(key, constants[bits], unit[bits, : 2**widest], (bits * CELLS)[:, None])


class _ClippedSTE(torch.autograd.Function):
    """Exactly ``q`` forward; backward passes ``dL/dq`` to ``w`` inside the clip and hands
    ``dL/dq`` with the quantization error ``w - q`` to ``sink`` (the LBA sensitivity)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, w: Tensor, q: Tensor, inside: Tensor, err: Tensor | None, sink: Callable | None
    ) -> Tensor:
        ctx.sink = sink
        ctx.save_for_backward(inside, err if err is not None else inside)
        return q.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        inside, err = ctx.saved_tensors
        if ctx.sink is not None:
            ctx.sink(err, grad)
        return grad * inside, None, None, None, None


class DMBQ(Quantizer):
    """Per-output-channel multi-bit quantizer with Laplace-optimal levels (1..4 bits).

    Buffers (fixed shapes, so a checkpoint always loads): ``channel_bits`` (long ``[C]``),
    ``clip`` (``A_c``, ``[C]``), ``initialized`` and ``track`` (whether the backward pass
    accumulates sensitivity). ``bits`` is the widest channel (the LUT's width); freeze stores
    each channel at its own width (``Weights.channel_bits``).

    >>> q = DMBQ(channels=2, bits=2)
    >>> w = torch.tensor([[1.0, -1.0, 0.2, -0.2], [2.0, 0.5, -0.5, -2.0]])
    >>> q.encode(w).levels.shape, q.bits
    (torch.Size([2, 4]), 2)
    """

    uniform = False

    def __init__(self, channels: int, bits: int = MAX_BITS, momentum: float = 0.99) -> None:
        super().__init__()
        if not 1 <= bits <= MAX_BITS:
            raise ValueError(f"DMBQ supports 1..{MAX_BITS} bits, got {bits}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"DMBQ momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("channel_bits", torch.full((channels,), bits, dtype=torch.long))
        self.register_buffer("clip", torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("track", torch.tensor(True))
        # Constants: moved with the module, never saved.
        self.register_buffer("unit", unit_table(), persistent=False)
        self.register_buffer("constants", clip_constants(), persistent=False)
        # Sum over the current step of (w - q) dL/dq per channel (float64). A plain attribute,
        # not a buffer: DDP broadcasts rank 0's buffers every forward pass and would overwrite
        # each rank's own sum. The stage collects it with take_step_sum() every step.
        self.step_sum: Tensor | None = None
        self._tables: _PerBits | None = None
        self._search: tuple[Tensor, Tensor] | None = None

    @property
    def bits(self) -> int:  # type: ignore[override]
        return int(self.channel_bits.max())

    @property
    def channels(self) -> int:
        return self.channel_bits.numel()

    # -- state ---------------------------------------------------------------------------------

    @torch.no_grad()
    def observe(self, w: Tensor, update: bool) -> None:
        """Initialise ``A_c`` from ``w`` on first use; with ``update``, move it toward
        ``c_b mean|w_c|`` (training forward passes)."""
        if bool(self.initialized) and not update:
            return
        target = self._per_bits().constants * w.reshape(self.channels, -1).abs().mean(1)
        if not bool(self.initialized):
            self.clip.copy_(target)
            self.initialized.fill_(True)
        else:
            self.clip.mul_(self.momentum).add_((1 - self.momentum) * target)

    @torch.no_grad()
    def set_channel_bits(self, bits: Tensor) -> None:
        """Set every channel's bits (1..4), rescaling ``A_c`` to the new constant."""
        bits = bits.to(self.channel_bits)
        if bits.shape != self.channel_bits.shape:
            raise ValueError(f"channel_bits must have shape {tuple(self.channel_bits.shape)}")
        if int(bits.min()) < 1 or int(bits.max()) > MAX_BITS:
            raise ValueError(f"DMBQ channel bits must be 1..{MAX_BITS}")
        self.clip.mul_(self.constants[bits] / self.constants[self.channel_bits])
        self.channel_bits.copy_(bits)

    def _per_bits(self) -> _PerBits:
        """The tables that depend on ``channel_bits`` alone, built again only when it changes
        (LBA changes it at most once an epoch; every training step reads them)."""
        key = (self.channel_bits._version, self.channel_bits.data_ptr(), self.unit.data_ptr())
        if self._tables is None or self._tables.key != key:
            self._tables = _PerBits.build(key, self.channel_bits, self.unit, self.constants)
        return self._tables

    def take_step_sum(self) -> Tensor | None:
        """The per-channel ``sum (w - q) dL/dq`` accumulated since the last call (then reset)."""
        s, self.step_sum = self.step_sum, None
        return s

    def _accumulate(self, err: Tensor, grad: Tensor) -> None:
        s = (err * grad).reshape(self.channels, -1).sum(1, dtype=torch.float64)
        self.step_sum = s if self.step_sum is None else self.step_sum + s

    # -- quantization --------------------------------------------------------------------------

    def levels(self) -> Tensor:
        """``[C, 2^bits]`` LUT: ``A_c`` times channel ``c``'s unit levels (zeros after them)."""
        return self.clip.unsqueeze(1) * self._per_bits().unit_rows

    def _ratio(self, w: Tensor) -> Tensor:
        """``w / A_c`` as ``[C, n]`` (a zero clip, a channel of zeros, divides by 1)."""
        clip = torch.where(self.clip > 0, self.clip, 1.0)
        return w.detach().reshape(self.channels, -1) / clip.unsqueeze(1)

    def _codes(self, ratio: Tensor) -> Tensor:
        """Nearest-level codes ``[C, n]`` of ``u = clamp(ratio, -1, 1)``."""
        return self._codes_of(ratio.clamp(-1.0, 1.0))

    def _codes_of(self, u: Tensor) -> Tensor:
        """Codes of ``u`` (``[C, n]``, in [-1, 1]): ``torch.bucketize(u[c], midpoints of
        channel c's width)`` for every row, by :func:`_search_tables`."""
        if self._search is None or self._search[0].device != u.device:
            self._search = _search_tables(self.unit)
        below, inside = self._search
        cell = _cell(u).add_(self._per_bits().offsets).view(-1)  # index_select: 4x `[]`
        codes = below.index_select(0, cell).add_(u.view(-1) > inside.index_select(0, cell))
        return codes.view(u.shape)

    def _midpoints(self, bits: int) -> Tensor:
        return _midpoints(self.unit, bits)

    def forward(self, w: Tensor) -> Tensor:
        self.observe(w, update=self.training)
        ratio = self._ratio(w)
        u = ratio.clamp(-1.0, 1.0)
        codes = self._codes_of(u)
        q = torch.gather(self.levels(), 1, codes).reshape(w.shape)
        if not torch.is_grad_enabled() or not w.requires_grad:
            return q
        inside = (u == ratio).reshape(w.shape)  # |ratio| <= 1: clamping left it as it was
        tracking = self.training and bool(self.track)
        err = (w.detach() - q) if tracking else None
        return _ClippedSTE.apply(w, q, inside, err, self._accumulate if tracking else None)

    def encode(self, x: Tensor) -> Encoded:
        self.observe(x, update=False)
        codes = self._codes(self._ratio(x)).reshape(x.shape)
        return Encoded(self.bits, codes, self.levels())

    def extra_repr(self) -> str:
        counts = torch.bincount(self.channel_bits, minlength=MAX_BITS + 1)[1:].tolist()
        return f"bits={self.bits}, channels={self.channels}, channels_per_bits={counts}"
