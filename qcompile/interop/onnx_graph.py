"""A small ONNX graph builder that records every tensor's element type and shape.

qonnx's executor needs a shape for every tensor (it allocates its execution context from
them) and runs each standard node alone in onnxruntime, so the QONNX exporter writes a
``value_info`` for every intermediate; :class:`Builder` keeps them as it adds nodes.

>>> b = Builder()
>>> x = b.input("x", FLOAT, (1, 3))
>>> y = b.node("Mul", [x, b.const("two", np.full((1, 3), 2, np.float32))], "y")
>>> y.shape, len(b.nodes)
((1, 3), 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, DOUBLE, INT64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64
NUMPY = {FLOAT: np.float32, DOUBLE: np.float64, INT64: np.int64}
QONNX_DOMAIN = "qonnx.custom_op.general"


@dataclass(frozen=True)
class Val:
    """A tensor of the graph under construction: its name, element type and full shape."""

    name: str
    dtype: int
    shape: tuple[int, ...]


class Builder:
    """Accumulates nodes, initializers and value_infos under unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.infos: list[onnx.ValueInfoProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._used: set[str] = set()

    def reserve(self, names: Sequence[str]) -> None:
        """Keep ``names`` from :meth:`fresh` (they are given out by renaming)."""
        self._used.update(names)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def input(self, name: str, dtype: int, shape: tuple[int, ...]) -> Val:
        v = Val(self.fresh(name), dtype, shape)
        self.inputs.append(helper.make_tensor_value_info(v.name, dtype, list(shape)))
        return v

    def const(self, base: str, array: np.ndarray) -> Val:
        """An initializer holding ``array`` (its dtype decides the element type)."""
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
        return Val(name, dtype, tuple(array.shape))

    def scalar(self, base: str, value: float, dtype: int) -> Val:
        return self.const(base, np.asarray(value, dtype=NUMPY[dtype]))

    def node(
        self,
        op: str,
        inputs: Sequence[Val],
        out: str,
        *,
        dtype: int | None = None,
        shape: tuple[int, ...] | None = None,
        domain: str = "",
        **attrs: Any,
    ) -> Val:
        """Add ``op`` and record its output (element type and shape default to the first
        input's)."""
        v = Val(
            self.fresh(out),
            inputs[0].dtype if dtype is None else dtype,
            inputs[0].shape if shape is None else shape,
        )
        self.nodes.append(
            helper.make_node(
                op,
                [i.name for i in inputs],
                [v.name],
                self.fresh(f"{op}_{v.name}"),
                domain=domain,
                **attrs,
            )
        )
        self.infos.append(helper.make_tensor_value_info(v.name, v.dtype, list(v.shape)))
        return v

    def cast(self, v: Val, dtype: int) -> Val:
        return (
            v
            if v.dtype == dtype
            else self.node("Cast", [v], f"{v.name}.cast", dtype=dtype, to=dtype)
        )

    def mul(self, v: Val, factor: np.ndarray | float, base: str) -> Val:
        """``v * factor`` (a scalar or a broadcastable array) in ``v``'s element type."""
        f = np.asarray(factor, dtype=NUMPY[v.dtype])
        return self.node("Mul", [v, self.const(f"{base}.factor", f)], base)

    def add(self, v: Val, term: np.ndarray | float, base: str) -> Val:
        t = np.asarray(term, dtype=NUMPY[v.dtype])
        return self.node("Add", [v, self.const(f"{base}.term", t)], base)

    def clip(self, v: Val, lo: float, hi: float, base: str) -> Val:
        """Clip to ``[lo, hi]`` (bounds in ``v``'s element type)."""
        lo_v, hi_v = self.scalar(f"{base}.lo", lo, v.dtype), self.scalar(f"{base}.hi", hi, v.dtype)
        return self.node("Clip", [v, lo_v, hi_v], base)

    def model(
        self, name: str, outputs: Sequence[Val], opset: int, meta: dict[str, str]
    ) -> onnx.ModelProto:
        out_names = {o.name for o in outputs}
        graph = helper.make_graph(
            self.nodes,
            name,
            self.inputs,
            [helper.make_tensor_value_info(o.name, o.dtype, list(o.shape)) for o in outputs],
            self.inits,
            value_info=[i for i in self.infos if i.name not in out_names],
        )
        m = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(QONNX_DOMAIN, 1)],
            producer_name="qcompile",
        )
        helper.set_model_props(m, meta)
        return m
