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

from qcompile.errors import QCompileError, clip
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


def load_trained(
    path: str | Path, model_spec: str | None = None
) -> tuple[QuantModel, Any, tuple[int, int, int]]:
    """The trained model of checkpoint ``path`` (eval mode), its recipe and its input shape.

    Nothing the checkpoint names is run or read as data: a recipe whose model is a user's
    ``FILE.py:FACTORY`` is refused unless the caller names the factory again (``model_spec``,
    the ``--model`` flag: the user's own choice of code to import), and the dataset is known
    by its shape only (no example is loaded, so no data file the recipe names is opened).
    """
    import dataclasses

    from qcompile.checkpoint import load_checkpoint
    from qcompile.data import dataset_shape
    from qcompile.recipe import ModelSpec, from_dict
    from qcompile.train import build_quant_model
    from qcompile.zoo import is_user_factory

    shown = clip(str(path))
    ckpt = load_checkpoint(path)
    recipe = from_dict(ckpt["recipe"], f"checkpoint {shown}")
    named = recipe.model.name
    if model_spec is not None:
        recipe = dataclasses.replace(recipe, model=ModelSpec(model_spec, recipe.model.options))
    elif is_user_factory(named):
        raise QCompileError(
            f"checkpoint {shown} was trained with the model factory {clip(named)!r}; qcompile "
            "imports no code named inside a checkpoint: pass --model FILE.py:FACTORY to name "
            "the factory yourself"
        )
    in_shape, num_classes = dataset_shape(recipe.data.name, recipe.data.dir, recipe.data.image_size)
    model = build_quant_model(recipe, in_shape, num_classes)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise QCompileError(
            f"checkpoint {shown} does not fit the model {clip(recipe.model.name)!r}: "
            f"{clip(str(e).splitlines()[0] if str(e) else type(e).__name__, 200)}"
        ) from None
    return model.eval(), recipe, in_shape


def freeze_checkpoint(path: str | Path, model_spec: str | None = None) -> Graph:
    """Rebuild the trained model from checkpoint ``path`` and freeze it. The graph's metadata
    records the checkpoint's path and SHA-256 (``simulate --checkpoint`` compares with the
    training model only for that file), the recipe, and the dataset's name and directory."""
    from qcompile.fileio import sha256_file

    model, recipe, in_shape = load_trained(path, model_spec)  # checks the file first
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


__all__ = ["freeze_checkpoint", "freeze_model", "load_trained"]
