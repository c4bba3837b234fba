"""The RTL backend: fully parallel Verilog of the whole model from da4ml (no vendor tool),
simulated bit for bit under Verilator.

>>> # qcompile export jet.qir --target rtl -o jet_rtl
>>> # qcompile simulate jet_rtl --data jets --json          (Verilator)
"""

from qcompile.backends.rtl.export import export_rtl
from qcompile.backends.rtl.runner import RtlRunner

__all__ = ["RtlRunner", "export_rtl"]
