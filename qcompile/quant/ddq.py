"""Learned quantization levels with a learned bitwidth: the DDQ quantizer (papers/000).

Per row (output channel, or the whole tensor with ``per_channel=False``) there are
``K = 2^bmax`` trainable levels ``q``. A weight ``x`` maps to an index on a uniform grid of
``K`` points over the row's range (round, clamp, straight-through) and its output is the level
at that index. Binary gates ``g_1 >= ... >= g_bmax`` set the bitwidth ``s = sum g_i``; the
averaged quantizer ``q~ = reshape(q, [2^s, 2^(bmax - s)]).mean(-1)`` (``U^T q`` normalised,
METHODS.md) is indexed by ``idx >> (bmax - s)``, so the layer deploys ``2^s`` levels per row.

Choices where the sources are silent:

- Levels live in normalised units: a row's output is ``lo + (hi - lo) * q~[idx]`` with
  ``lo``/``hi`` the row's current min/max (no gradient, as min-max quantizers use them), the
  index is ``round((x - lo) / (hi - lo) * (K - 1))`` and ``q`` starts at ``k / (K - 1)`` (the
  uniform grid). The range follows the weights, so no weight is ever clipped and the
  straight-through gradient reaches every weight; a fixed grid set at initialisation left
  30-40% of lenet's weights outside it, stuck at zero gradient, after 10 epochs.
- The levels are stored flat (``[C * K]``, read as ``[C, K]`` through ``levels``): the
  optimizer decays parameters with more than one dimension, and weight decay on normalised
  levels would drag every level toward the channel minimum. Quantizer parameters are exempt
  from decay everywhere else (PACT clips, LSQ steps); a flat shape keeps them so.
- ``g_1`` is always 1: a layer keeps at least one bit (the IR has no 0-bit layers). The other
  gates are ``g_i = prod_{j<=i} H(theta_j)`` (``H``: on iff the logit > 0), so they stay in
  descending order; the gradient reaches ``theta_i`` straight through, as identity.
- The loss reaches the gates through the Kronecker form: factor ``i`` maps the levels to
  ``g_i v + (1 - g_i) mean_i(v)`` (mean over index bit ``i``, MSB first). With hard gates this
  equals the block average, so ``dL/dg_i`` is the first-order change of the loss when bit ``i``
  is resolved rather than averaged. The forward *value* is the block average computed by
  ``reshape().mean()`` exactly as ``encode`` computes it, so ``encode(x).decode()`` equals
  ``forward(x)`` bit for bit; the Kronecker product only defines the gradient (computed in
  closed form by :func:`~qcompile.quant.ddq_fused.gated_average_grads`; autograd through
  the factors took ~10 small ops per bit, half of a lenet training step at bmax 8).
- Once ``fix(bits)`` is called (buffer ``fixed_bits`` > 0) the bitwidth no longer depends on
  the logits; they stay in the graph with a zero gradient so DDP sees every parameter used.
- A training step runs the layer as one autograd node,
  :class:`~qcompile.quant.ddq_fused.LearnedStep`, which also returns the per-row squared
  error the stage's gradient correction needs (:meth:`LearnedLevels.training_error`).

Every tensor that decides bits or levels has a fixed shape (levels ``[C * K]``, logits
``[bmax - 1]``), so a checkpoint loads into a freshly wrapped model whatever bits it learned.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qcompile.quant.base import Encoded, Quantizer, channel_rows, expand_rows
from qcompile.quant.ddq_fused import LearnedStep
from qcompile.quant.fused import row_extremes
from qcompile.quant.ste import safe_step, uniform_codes


def average_levels(q: Tensor, bits: int, bmax: int) -> Tensor:
    """``[R, 2^bits]``: each run of ``2^(bmax - bits)`` neighbouring levels of ``q`` averaged.

    >>> average_levels(torch.tensor([[0.0, 1.0, 2.0, 5.0]]), 1, 2).tolist()
    [[0.5, 3.5]]
    """
    return q.reshape(q.shape[0], 2**bits, 2 ** (bmax - bits)).mean(dim=-1)


def kron_average(q: Tensor, gates: Tensor) -> Tensor:
    """``q`` (``[R, 2^b]``) times the Kronecker product of ``g_i I + (1 - g_i) J / 2``.

    Factor ``i`` acts on bit ``i`` of the level index, most significant first: with gates
    ``[1, 0]`` neighbouring pairs are averaged. Differentiable in ``q`` and ``gates``.

    >>> kron_average(torch.tensor([[0.0, 1.0, 2.0, 5.0]]), torch.tensor([1.0, 0.0])).tolist()
    [[0.5, 0.5, 3.5, 3.5]]
    """
    b = gates.numel()
    v = q.reshape(q.shape[0], *([2] * b))
    for i in range(b):
        g = gates[i]
        v = g * v + (1 - g) * v.mean(dim=i + 1, keepdim=True)
    return v.reshape(q.shape)


def descending_gates(logits: Tensor) -> Tensor:
    """``[1, g_2, ..., g_bmax]`` with ``g_i = prod_{j<=i} H(theta_j)``: hard 0/1 values,
    identity gradient to ``theta_i`` (``hard + 0.0`` is exact, so the value stays 0 or 1).

    >>> descending_gates(torch.tensor([0.3, -0.1, 0.2])).tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    hard = torch.cumprod((logits.detach() > 0).to(logits.dtype), dim=0)
    return torch.cat([logits.new_ones(1), hard + (logits - logits.detach())])


def _weights_key(x: Tensor) -> tuple:
    """Identifies ``x``'s values without reading them: the same storage, shape and version
    (an in-place update, e.g. the optimizer's, bumps the version)."""
    return x.data_ptr(), x.shape, x._version, x.dtype


class LearnedLevels(Quantizer):
    """DDQ weight quantizer: ``2^bmax`` trainable levels per row, gated down to ``2^bits``.

    ``channels`` is the layer's output channel count (one row per channel when
    ``per_channel``); ``gate_init`` is every gate logit's initial value (> 0: all gates open,
    ``bits = bmax``).

    >>> w = torch.linspace(-1, 1, 12).reshape(3, 4)
    >>> q = LearnedLevels(2, channels=3)
    >>> q.bits, torch.equal(q(w), q.encode(w).decode())
    (2, True)
    >>> q.fix(1); q.encode(w).levels.shape
    torch.Size([3, 2])
    """

    uniform = False

    def __init__(
        self, bmax: int, channels: int, per_channel: bool = True, gate_init: float = 0.05
    ) -> None:
        super().__init__()
        if not 1 <= bmax <= 8:
            raise ValueError(f"LearnedLevels supports 1..8 bits, got {bmax}")
        self.bmax = bmax
        self.per_channel = per_channel
        rows = channels if per_channel else 1
        grid = torch.arange(2**bmax, dtype=torch.float32) / (2**bmax - 1)
        self.levels_flat = nn.Parameter(grid.repeat(rows))
        self.logits = nn.Parameter(torch.full((bmax - 1,), float(gate_init)))
        self.register_buffer("fixed_bits", torch.tensor(0))
        # What a training forward pass found, for the stage's terms in the same step (see
        # forward): the gates it used, and the weights' row range and grid indices.
        self._kept_gates: tuple[Tensor, tuple[int, int]] | None = None
        self._kept_index: tuple[tuple, Tensor, Tensor, Tensor] | None = None
        self._kept_error: tuple[Tensor, Tensor, tuple] | None = None

    @property
    def levels(self) -> Tensor:
        """``[R, 2^bmax]`` normalised levels (0 = the row's minimum, 1 = its maximum)."""
        return self.levels_flat.view(-1, 2**self.bmax)

    @property
    def bits(self) -> int:  # type: ignore[override]
        """The bitwidth the layer deploys now: ``fixed_bits`` once fixed, else ``sum g_i``."""
        fixed = int(self.fixed_bits)
        if fixed:
            return fixed
        return 1 + int(torch.cumprod(self.logits.detach() > 0, dim=0).sum())

    @property
    def fixed(self) -> bool:
        return int(self.fixed_bits) > 0

    def fix(self, bits: int) -> None:
        """Freeze the bitwidth at ``bits`` (1..bmax): from now on the gates are constant."""
        if not 1 <= bits <= self.bmax:
            raise ValueError(f"bits must be 1..{self.bmax}, got {bits}")
        self.fixed_bits.fill_(bits)

    def gates(self) -> Tensor:
        """``[bmax]`` gate values (0/1); while not fixed they carry the logits' gradient."""
        return self._gates_and_bits()[0]

    def _gates_and_bits(self) -> tuple[Tensor, int]:
        """:meth:`gates` and :attr:`bits` from one look at the logits."""
        fixed = int(self.fixed_bits)
        if fixed:
            on = torch.arange(self.bmax, device=self.logits.device) < fixed
            return on.to(self.logits.dtype), fixed
        hard = torch.cumprod((self.logits.detach() > 0).to(self.logits.dtype), dim=0)
        gates = torch.cat([self.logits.new_ones(1), hard + (self.logits - self.logits.detach())])
        return gates, 1 + int(hard.sum())  # descending_gates(self.logits), and its sum

    def gate_sum(self) -> Tensor:
        """``s = sum g_i`` as a tensor (value ``bits``) for the memory constraint.

        Right after a training forward pass this sums the gates that pass used (once; the
        logits unchanged since), so the gradient reaches the logits through one gate node
        per step instead of two: the same values, and the same sum of two terms."""
        kept, self._kept_gates = self._kept_gates, None
        if kept is not None and kept[1] == self._gate_versions() and torch.is_grad_enabled():
            return kept[0].sum()
        return self.gates().sum()

    def _gate_versions(self) -> tuple[int, int]:
        return self.logits._version, self.fixed_bits._version

    def row_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(lo, hi - lo)`` per row of ``x``, each ``[R, 1]``, without gradient."""
        lo, hi = row_extremes(channel_rows(x.detach(), self.per_channel))
        return lo[:, None], (hi - lo)[:, None]

    def index(self, x: Tensor) -> Tensor:
        """Index of every element of ``x`` on its row's ``2^bmax``-point grid (long)."""
        return self._index(x, *self.row_range(x))

    def _index(self, x: Tensor, lo: Tensor, span: Tensor) -> Tensor:
        top = 2**self.bmax - 1
        x = x.detach()
        step = safe_step(span / top)
        return uniform_codes(x, expand_rows(lo, x), expand_rows(step, x), top).long()

    def deployed_levels(self, x: Tensor) -> Tensor:
        """``[R, 2^bits]`` LUT in ``x``'s units: ``lo + range * q~`` (differentiable in q)."""
        lo, span = self.row_range(x)
        return lo + span * average_levels(self.levels, self.bits, self.bmax)

    def forward(self, x: Tensor) -> Tensor:
        gates, bits = self._gates_and_bits()
        lo, span = self.row_range(x)
        index = self._index(x, lo, span)
        # Each table entry is lo + span * (its block's mean), the arithmetic of
        # deployed_levels element for element: encode(x).decode() is forward(x) bit for bit.
        # Once fixed, the logits still get a (zero) gradient: DDP expects every parameter
        # to take part.
        unused = self.logits if self.fixed else None
        rows = index.reshape(self.levels.shape[0], -1)
        y, error = LearnedStep.apply(x, self.levels, gates, unused, bits, lo, span, rows)
        if torch.is_grad_enabled():
            key = _weights_key(x)
            self._kept_gates = (gates, self._gate_versions())
            self._kept_index = (key, lo, span, index)
            self._kept_error = (error, span, (key, self.levels_flat._version, bits))
        return y

    def encode(self, x: Tensor) -> Encoded:
        bits = self.bits
        codes = self.index(x) >> (self.bmax - bits)
        return Encoded(bits, codes, self.deployed_levels(x).detach())

    def training_error(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`range_and_error` for the stage's correction term: right after a training
        forward pass on ``x`` (unchanged since, and the levels too), the error that pass
        computed in the same node (taken once); otherwise computed afresh."""
        kept, self._kept_error = self._kept_error, None
        if kept is not None and torch.is_grad_enabled():
            error, span, key = kept
            if key == (_weights_key(x), self.levels_flat._version, self.bits):
                return span, error
        return self.range_and_error(x)

    def squared_error(self, x: Tensor) -> Tensor:
        """``[R]``: ``||x_r - Q(x_r)||^2`` per row, with ``x`` and the gates held constant: its
        gradient pulls each deployed level toward the mean of the weights it represents."""
        return self.range_and_error(x)[1]

    def range_and_error(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(hi - lo, squared_error(x))``, both per row (``[R, 1]`` and ``[R]``).

        The row range and grid indices depend on ``x`` alone: when ``x`` is the tensor the
        last forward pass quantized, unchanged since, they are reused, not recomputed."""
        bits = self.bits
        kept = self._kept_index
        if kept is not None and kept[0] == _weights_key(x):
            lo, span, index = kept[1:]
        else:
            lo, span = self.row_range(x)
            index = self._index(x, lo, span)
        levels = lo + span * average_levels(self.levels, bits, self.bmax)
        codes = index >> (self.bmax - bits)
        q = torch.gather(levels, 1, codes.reshape(levels.shape[0], -1))
        return span, (x.detach().reshape(levels.shape[0], -1) - q).pow(2).sum(dim=1)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, bmax={self.bmax}, per_channel={self.per_channel}"
