"""The TVM backend: the IR as one tensor-expression function compiled by Apache TVM.

``--target cpu`` compiles for the host (llvm) into ``model.so``; ``qcompile simulate DIR``
checks this CPU has the instruction-set features the library needs, runs it in a worker
process through the TVM runtime and compares it bit for bit with the simulator. TVM is
imported lazily (it takes seconds to import), and so are this package's modules: the worker
that loads a library imports only ``runner``.
"""

import importlib
from typing import Any

_WHERE = {
    "export_tvm": "qcompile.backends.tvm.export",
    "runners": "qcompile.backends.tvm.export",
    "TvmLibrary": "qcompile.backends.tvm.runner",
    "TvmRunner": "qcompile.backends.tvm.runner",
    "load_weights": "qcompile.backends.tvm.runner",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
