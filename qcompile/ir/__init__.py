"""The frozen integer IR: types, graph, verifier and the .qir file format."""

from qcompile.ir.graph import (
    OPS,
    Add,
    Affine,
    AvgPool,
    Clip,
    Conv2d,
    Dense,
    Flatten,
    Graph,
    InputQuant,
    MaxPool,
    Node,
    Requant,
    Table,
    Weights,
)
from qcompile.ir.types import QType, TensorInfo
from qcompile.ir.verify import MAX_ACC_BITS, VerifyError, verify

__all__ = [
    "MAX_ACC_BITS",
    "OPS",
    "Add",
    "Affine",
    "AvgPool",
    "Clip",
    "Conv2d",
    "Dense",
    "Flatten",
    "Graph",
    "InputQuant",
    "MaxPool",
    "Node",
    "QType",
    "Requant",
    "Table",
    "TensorInfo",
    "VerifyError",
    "Weights",
    "verify",
]
