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

from qcompile.errors import QCompileError
from qcompile.freeze.lower import Lowering, trace
from qcompile.freeze.values import Int
from qcompile.ir.graph import Graph, InputQuant
from qcompile.ir.types import QType, TensorInfo
from qcompile.ir.verify import verify
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
    return run_pipeline(verify(graph))


def freeze_checkpoint(path: str | Path, model_spec: str | None = None) -> Graph:
    """Rebuild the trained model from checkpoint ``path`` and freeze it. The graph's metadata
    records the checkpoint's path and SHA-256 (``simulate --checkpoint`` compares with the
    training model only for that file), the recipe, and the dataset's name and directory."""
    from qcompile.builder import from_checkpoint
    from qcompile.fileio import sha256_file

    trained = from_checkpoint(path, model_spec)  # checks the file first
    model, recipe, in_shape = trained.model, trained.recipe, trained.in_shape
    digest = sha256_file(path)
    meta = {
        "checkpoint": str(Path(path).resolve()),
        "checkpoint_sha256": digest,
        "recipe": json.dumps(recipe.to_dict()),
        "data": recipe.data.name,
        "data_dir": recipe.data.dir,
        "method": recipe.method,
    }
    name = recipe.model.name.rpartition(":")[2]
    return freeze_model(model, in_shape, name, meta)


__all__ = ["freeze_checkpoint", "freeze_model"]
