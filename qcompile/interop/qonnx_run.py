"""Run a QONNX model with qonnx's own executor (``qonnx.core.onnx_exec.execute_onnx``), and read
the integers back from a qcompile export's real outputs.

qonnx runs fixed shapes, so inputs go through in batches of the model's batch size (the last
one padded with zeros, its padding dropped from the outputs).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from qcompile.interop.qonnx_export import KEY_UNITS


def run_qonnx(model: onnx.ModelProto | str | Path, x: np.ndarray) -> list[np.ndarray]:
    """Every graph output of ``model`` for the float inputs ``x`` ``[N, ...]``."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    wrapper = ModelWrapper(model if isinstance(model, onnx.ModelProto) else str(model))
    if not wrapper.check_all_tensor_shapes_specified():  # e.g. straight from Brevitas
        wrapper = wrapper.transform(InferShapes())
    name = wrapper.graph.input[0].name
    batch = wrapper.get_tensor_shape(name)[0]
    outs: list[list[np.ndarray]] = [[] for _ in wrapper.graph.output]
    for i in range(0, len(x), batch):
        part = np.asarray(x[i : i + batch], dtype=np.float32)
        n = len(part)
        if n < batch:
            part = np.concatenate([part, np.zeros((batch - n, *part.shape[1:]), np.float32)])
        result = execute_onnx(wrapper, {name: part})
        for k, o in enumerate(wrapper.graph.output):
            outs[k].append(result[o.name][:n])
    return [np.concatenate(o) for o in outs]


def output_units(model: onnx.ModelProto) -> list[float]:
    """The unit of each output of a qcompile export (``real = int * unit``)."""
    props = {p.key: p.value for p in model.metadata_props}
    if KEY_UNITS not in props:
        raise ValueError(f"not a qcompile QONNX export (no {KEY_UNITS} property)")
    return [float(u) for u in json.loads(props[KEY_UNITS])]


def integers(real: np.ndarray, unit: float) -> np.ndarray:
    """The integers behind a qcompile export's real output (exact: see qonnx_export)."""
    return np.rint(real.astype(np.float64) / unit).astype(np.int64)
