"""The TVM backend: the IR as one tensor-expression function compiled by Apache TVM.

``--target cpu`` compiles for the host (llvm) into ``model.so``; ``qcompile simulate DIR``
loads it with the TVM runtime and compares it bit for bit with the simulator. TVM is
imported lazily (it takes seconds to import).
"""

from qcompile.backends.tvm.export import TvmRunner, export_tvm

__all__ = ["TvmRunner", "export_tvm"]
