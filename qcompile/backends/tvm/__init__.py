"""The TVM backend: the IR as one tensor-expression function compiled by Apache TVM.

``--target cpu`` compiles for the host (llvm) into ``model.so``; ``qcompile simulate DIR``
checks this CPU has the instruction-set features the library needs, runs it in a worker
process through the TVM runtime and compares it bit for bit with the simulator. TVM is
imported lazily (it takes seconds to import).
"""

from qcompile.backends.tvm.export import export_tvm
from qcompile.backends.tvm.runner import TvmLibrary, TvmRunner, load_weights

__all__ = ["TvmLibrary", "TvmRunner", "export_tvm", "load_weights"]
