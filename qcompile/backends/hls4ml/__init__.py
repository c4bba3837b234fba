"""The FPGA backend: an hls4ml project built from the IR, with qcompile's LUT kernels.

>>> # qcompile export lenet.qir --target zcu104 -o lenet_fpga
>>> # qcompile simulate lenet_fpga --data digits --json      (g++ C simulation)

Its modules are imported on first use: the worker that runs a C simulation imports only
``csim``, not hls4ml.
"""

import importlib
from typing import Any

_WHERE = {"CSim": "qcompile.backends.hls4ml.csim", "export_fpga": "qcompile.backends.hls4ml.export"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
