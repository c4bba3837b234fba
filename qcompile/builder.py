"""Models from recipes and checkpoints: the one place they are built.

Training builds the recipe's model (:func:`build`); freeze, ``simulate --checkpoint``, SDQ's
distillation teacher and DMBQ's ``init_from`` all rebuild a trained one from its checkpoint
(:func:`from_checkpoint`, :func:`copy_weights`). Nothing a checkpoint names is run or read as
data: a recipe whose model is a user's ``FILE.py:FACTORY`` is refused unless the caller names
the factory again (``model_spec``: the ``--model`` flag, the user's own choice of code to
import), and a dataset is known by its shape only (no file of it is opened).

>>> from qcompile.recipe import load_recipe
>>> build(load_recipe(None, {"model.name": "mlp"}), (1, 8, 8), 10).weight_bits()
{'1': 8, '4': 4, '7': 8}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from qcompile.errors import QCompileError, clip
from qcompile.recipe import ModelSpec, Recipe, from_dict
from qcompile.stages import QuantModel, stage_class
from qcompile.zoo import build_model, is_user_factory


def build(recipe: Recipe, in_shape: tuple[int, ...], num_classes: int) -> QuantModel:
    """The recipe's architecture for inputs of ``in_shape`` and ``num_classes`` classes,
    wrapped by the recipe's stage (its config is validated already)."""
    net = build_model(recipe.model.name, in_shape, num_classes, **recipe.model.options)
    return stage_class(recipe.method)(recipe.stage).wrap(net)


@dataclass(frozen=True)
class Trained:
    """A model rebuilt from a checkpoint (eval mode), with its recipe and input shape."""

    model: QuantModel
    recipe: Recipe
    in_shape: tuple[int, ...]


def from_checkpoint(
    path: str | Path,
    model_spec: str | None = None,
    shape: tuple[tuple[int, ...], int] | None = None,
    what: str = "checkpoint",
) -> Trained:
    """The trained model of checkpoint ``path`` for ``shape`` = (input shape, classes), by
    default its own dataset's; ``what`` names the file in messages ("teacher", ...)."""
    from qcompile.checkpoint import load_checkpoint
    from qcompile.data import dataset_shape

    shown = clip(str(path))
    ckpt = load_checkpoint(path)
    recipe = from_dict(ckpt["recipe"], f"{what} {shown}")
    named = recipe.model.name
    if model_spec is not None:
        recipe = dataclasses.replace(recipe, model=ModelSpec(model_spec, recipe.model.options))
    elif is_user_factory(named):
        raise QCompileError(
            f"{what} {shown} was trained with the model factory {clip(named)!r}; qcompile "
            "imports no code named inside a checkpoint: pass --model FILE.py:FACTORY to name "
            "the factory yourself"
        )
    if shape is None:
        d = recipe.data
        shape = dataset_shape(d.name, d.dir, d.image_size)
    in_shape, num_classes = shape
    model = build(recipe, in_shape, num_classes)
    load_state(model, ckpt["model"], f"{what} {shown} does not fit the model {clip(named)!r}")
    return Trained(model.eval(), recipe, tuple(in_shape))


def load_state(model: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """``model.load_state_dict(state)``; a mismatch is one line starting with ``where``."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise QCompileError(f"{where}: {clip(first, 200)}") from None


@dataclass(frozen=True)
class RunCheckpoints:
    """What a stage reads of other runs (:class:`qcompile.stages.base.CheckpointLoader`),
    for a run on inputs of ``in_shape`` with ``num_classes`` classes."""

    in_shape: tuple[int, ...]
    num_classes: int

    def trained(self, path: str, what: str) -> QuantModel:
        model = from_checkpoint(path, shape=(self.in_shape, self.num_classes), what=what).model
        model.requires_grad_(False)
        return model

    def copy_weights(self, model: QuantModel, path: str, what: str) -> None:
        copy_weights(model, path, what)

    def recipe_wbits(self, path: str, what: str) -> int:
        from qcompile.checkpoint import load_checkpoint

        return from_dict(load_checkpoint(path)["recipe"], f"{what} {clip(path)}").stage.wbits


def copy_weights(model: QuantModel, path: str | Path, what: str = "init_from") -> None:
    """Copy a finished run's network state from checkpoint ``path`` into ``model``: every
    weight, bias and BatchNorm entry must be there with the same shape; activation and input
    quantizer state is taken where the shapes agree; weight quantizers start afresh."""
    from qcompile.checkpoint import load_checkpoint
    from qcompile.quant import Quantizer

    source = load_checkpoint(path)["model"]
    quantizers = [n + "." for n, m in model.named_modules() if isinstance(m, Quantizer)]
    take: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        if ".weight_quant." in key:
            continue
        found = source.get(key)
        if isinstance(found, Tensor) and found.shape == value.shape:
            take[key] = found
        elif not any(key.startswith(p) for p in quantizers):
            have = "missing" if found is None else f"shape {tuple(found.shape)}"
            raise QCompileError(
                f"{what} {clip(str(path))}: '{key}' is {have}, this model needs "
                f"{tuple(value.shape)} (a run of another architecture or dataset?)"
            )
    model.load_state_dict(take, strict=False)
