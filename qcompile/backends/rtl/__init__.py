"""The RTL backend: fully parallel Verilog of the whole model from da4ml (no vendor tool),
simulated bit for bit under Verilator.

>>> # qcompile export jet.qir --target rtl -o jet_rtl
>>> # qcompile simulate jet_rtl --data jets --json          (Verilator)

Its modules are imported on first use: the worker that runs a Verilated model imports only
``runner``.
"""

import importlib
from typing import Any

_WHERE = {"RtlRunner": "qcompile.backends.rtl.runner", "export_rtl": "qcompile.backends.rtl.export"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
