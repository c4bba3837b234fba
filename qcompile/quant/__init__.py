"""Quantizer library: functions and modules with straight-through estimators.

Weight quantizers by name (``make_weight_quantizer``): ``minmax``, ``sawb`` (calibrated MSE
clip), ``sawb_closed`` (fitted closed form), ``bwn``, ``twn``, ``lsq``; 32 bits gives
:class:`Identity`. Activation quantizers (``make_act_quantizer``): ``pact``, ``lsq``.
"""

from __future__ import annotations

from collections.abc import Callable

from qcompile.errors import unknown_choice
from qcompile.quant.activation import PACT, InputQuant
from qcompile.quant.base import Encoded, Identity, IntGrid, Quantizer
from qcompile.quant.binary import BWN, TWN
from qcompile.quant.uniform import LSQ, SAWB, MinMax, sawb_calibrate, sawb_closed_form

FLOAT_BITS = 32
# Quantizers defined for one bitwidth only.
FIXED_BITS = {"bwn": 1, "twn": 2}

WEIGHT_QUANTIZERS: dict[str, Callable[[int, int, bool], Quantizer]] = {
    "minmax": lambda bits, channels, per_channel: MinMax(bits, per_channel),
    "sawb": lambda bits, channels, per_channel: SAWB(bits, per_channel, channels=channels),
    "sawb_closed": lambda bits, channels, per_channel: SAWB(bits, per_channel, closed_form=True),
    "bwn": lambda bits, channels, per_channel: BWN(per_channel),
    "twn": lambda bits, channels, per_channel: TWN(per_channel),
    "lsq": lambda bits, channels, per_channel: LSQ(bits, True, channels if per_channel else 1),
}

ACT_QUANTIZERS: dict[str, Callable[[int, float], Quantizer]] = {
    "pact": lambda bits, init: PACT(bits, init),
    "lsq": lambda bits, init: LSQ(bits, signed=False, activation=True),
}


def make_weight_quantizer(
    name: str, bits: int, channels: int = 1, per_channel: bool = True
) -> Quantizer:
    """Weight quantizer ``name`` at ``bits`` for a layer with ``channels`` output channels.

    ``bwn`` (1-bit) and ``twn`` (2-bit) asked for another width give min-max at that width.

    >>> make_weight_quantizer("minmax", 4, channels=8)
    MinMax(bits=4, per_channel=True)
    """
    if bits == FLOAT_BITS:
        return Identity()
    if name not in WEIGHT_QUANTIZERS:
        raise unknown_choice("weight quantizer", name, WEIGHT_QUANTIZERS)
    if FIXED_BITS.get(name, bits) != bits:
        # BWN/TWN layers kept at other widths (the 8-bit first and last layers) use min-max.
        name = "minmax"
    return WEIGHT_QUANTIZERS[name](bits, channels, per_channel)


def make_act_quantizer(name: str, bits: int, init: float = 3.0) -> Quantizer:
    """Unsigned activation quantizer ``name`` (after a ReLU) at ``bits``."""
    if bits == FLOAT_BITS:
        return Identity()
    if name not in ACT_QUANTIZERS:
        raise unknown_choice("activation quantizer", name, ACT_QUANTIZERS)
    return ACT_QUANTIZERS[name](bits, init)


__all__ = [
    "ACT_QUANTIZERS",
    "BWN",
    "FIXED_BITS",
    "FLOAT_BITS",
    "LSQ",
    "PACT",
    "SAWB",
    "TWN",
    "WEIGHT_QUANTIZERS",
    "Encoded",
    "Identity",
    "InputQuant",
    "IntGrid",
    "MinMax",
    "Quantizer",
    "make_act_quantizer",
    "make_weight_quantizer",
    "sawb_calibrate",
    "sawb_closed_form",
]
