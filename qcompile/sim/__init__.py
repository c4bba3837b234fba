"""The integer simulator: the executable definition of the numeric contract."""

from qcompile.sim.interpreter import Simulator, quantize_input, simulate

__all__ = ["Simulator", "quantize_input", "simulate"]
