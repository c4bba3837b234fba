"""Freeze: a trained quantized model (or its checkpoint) -> a verified integer IR graph.

>>> import torch
>>> from qcompile.stages import quantize
>>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16),
...                           torch.nn.ReLU(), torch.nn.Linear(16, 10))
>>> q = quantize(net, wbits=2, abits=4).eval()
>>> [n.kind for n in freeze_model(q, (1, 8, 8)).nodes]
['flatten', 'dense', 'dense']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qcompile.errors import QCompileError
from qcompile.freeze.lower import Lowering, trace
from qcompile.freeze.values import Int
from qcompile.ir.graph import Graph, InputQuant
from qcompile.ir.types import QType, TensorInfo
from qcompile.passes import run_pipeline
from qcompile.stages.layers import QuantModel


def freeze_model(
    model: QuantModel,
    in_shape: tuple[int, ...],
    name: str = "model",
    metadata: dict[str, str] | None = None,
) -> Graph:
    """Lower ``model`` (eval mode is set) for per-sample inputs of ``in_shape``."""
    if model.input_quant is None:
        raise QCompileError("the model is not quantized (float weights and activations)")
    model.eval()
    lo, step = (float(t) for t in model.input_quant.quant.grid())
    bits = model.input_quant.quant.bits
    zero = round(lo / step)
    iq = InputQuant(bits, lo, step, zero)
    x = TensorInfo("input", tuple(in_shape), QType.fitting(zero, zero + (1 << bits) - 1), step)
    lowering = Lowering(trace(model.net, in_shape), Int(x))
    nodes, outputs = lowering.run()
    graph = Graph(
        name, x, iq, tuple(nodes), tuple(outputs), tuple(sorted((metadata or {}).items()))
    )
    return run_pipeline(graph)


def load_trained(path: str | Path) -> tuple[QuantModel, Any, Any]:
    """The trained model of checkpoint ``path`` (eval mode), its recipe and its dataset."""
    from qcompile.checkpoint import load_checkpoint
    from qcompile.data import load_dataset
    from qcompile.recipe import from_dict
    from qcompile.train import build_quant_model

    ckpt = load_checkpoint(path)
    recipe = from_dict(ckpt["recipe"])
    data = load_dataset(recipe.data.name, recipe.data.dir, recipe.data.image_size)
    model = build_quant_model(recipe, data)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise QCompileError(
            f"checkpoint {path} does not fit its recipe's model: {str(e).splitlines()[0]}"
        ) from None
    return model.eval(), recipe, data


def freeze_checkpoint(path: str | Path) -> Graph:
    """Rebuild the trained model from checkpoint ``path`` and freeze it."""
    model, recipe, data = load_trained(path)
    meta = {
        "checkpoint": str(Path(path).resolve()),
        "recipe": json.dumps(recipe.to_dict()),
        "data": recipe.data.name,
        "data_dir": recipe.data.dir,
        "method": recipe.method,
    }
    name = recipe.model.name.rpartition(":")[2]
    return freeze_model(model, data.in_shape, name, meta)


__all__ = ["freeze_checkpoint", "freeze_model", "load_trained"]
