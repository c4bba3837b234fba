"""qcompile: quantization-aware training frozen to a bit-exact integer IR.

>>> import torch, qcompile
>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> qnet = qcompile.quantize(net, method="uniform", wbits=2, abits=4)
"""

from qcompile.stages import QuantModel, quantize

__version__ = "0.1.0"
__all__ = ["QuantModel", "__version__", "quantize"]
