"""qcompile: quantization-aware training frozen to a bit-exact integer IR.

>>> import torch, qcompile
>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> qnet = qcompile.quantize(net, method="uniform", wbits=2, abits=4)
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["QuantModel", "__version__", "quantize"]


def __getattr__(name: str) -> Any:
    # The training API needs torch; importing it lazily keeps the deployment side (and the
    # worker process that runs artifacts, python -m qcompile.backends.worker) free of it.
    if name in ("QuantModel", "quantize"):
        from qcompile import stages

        return getattr(stages, name)
    raise AttributeError(f"module 'qcompile' has no attribute {name!r}")
