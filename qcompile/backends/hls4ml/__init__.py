"""The FPGA backend: an hls4ml project built from the IR, with qcompile's LUT kernels.

>>> # qcompile export lenet.qir --target zcu104 -o lenet_fpga
>>> # qcompile simulate lenet_fpga --data digits --json      (g++ C simulation)
"""

from qcompile.backends.hls4ml.csim import CSim
from qcompile.backends.hls4ml.export import export_fpga

__all__ = ["CSim", "export_fpga"]
