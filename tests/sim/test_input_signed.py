"""Signed input quantizers (a QONNX/Brevitas signed input ``Quant``): codes clip to the
two's-complement range, and a .qir keeps the flag."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.ir import Dense, Graph, InputQuant, Node, QType, Requant, TensorInfo, qir, verify
from qcompile.ir.graph import Affine, Weights
from qcompile.sim import quantize_input


def test_signed_codes_round_half_even_and_saturate() -> None:
    iq = InputQuant(bits=4, lo=0.0, step=0.5, zero=0, signed=True)
    x = np.array([[-100.0, -4.0, -0.25, 0.25, 0.75, 3.5, 3.75, 100.0]])
    assert quantize_input(iq, x).tolist() == [[-8, -8, 0, 0, 2, 7, 7, 7]]
    assert iq.codes == (-8, 7)


def test_signed_needs_two_bits() -> None:
    with pytest.raises(ValueError, match="signed"):
        InputQuant(bits=1, lo=0.0, step=1.0, zero=0, signed=True)


def _graph(signed: bool, in_type: QType) -> Graph:
    x = TensorInfo("x", (2,), in_type, 0.5)
    w = Weights(1, (1, 2), np.array([[1, 0]], np.uint8), False, Affine(1, np.array([0])), None)
    y = Node("y", Dense(), ("x",), TensorInfo("y", (1,), QType(9, True), 0.5), w,
             Requant(0, -256, 255, 10))  # fmt: skip
    return Graph("g", x, InputQuant(8, 0.0, 0.5, 0, signed), (y,), ("y",))


def test_verify_checks_the_signed_code_range() -> None:
    verify(_graph(True, QType(8, True)))
    with pytest.raises(Exception, match="input"):
        verify(_graph(True, QType(8, False)))


def test_qir_keeps_signed_flag(tmp_path) -> None:
    for signed, qt in ((True, QType(8, True)), (False, QType(8, False))):
        qir.save(_graph(signed, qt), tmp_path / "m.qir")
        assert qir.load(tmp_path / "m.qir").input_quant.signed is signed
