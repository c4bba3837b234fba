"""Architectures by name, and users' own factories given as ``FILE.py:FACTORY``.

Every factory is called as ``factory(in_shape=(C, H, W), num_classes=K, **options)``.

>>> build_model("lenet", (1, 8, 8), 10).__class__.__name__
'LeNet'
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from qcompile.errors import QCompileError, clip, did_you_mean, unknown_choice
from qcompile.zoo.jet import jet_mlp
from qcompile.zoo.lenet import LeNet
from qcompile.zoo.mlp import MLP
from qcompile.zoo.mobilenetv2 import MobileNetV2
from qcompile.zoo.resnet import resnet18, resnet20
from qcompile.zoo.vgg import VGGSmall

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "lenet": LeNet,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "vgg_small": VGGSmall,
    "mobilenetv2": MobileNetV2,
    "jet_mlp": jet_mlp,
}


def is_user_factory(spec: str) -> bool:
    return ":" in spec and spec.split(":", 1)[0].endswith(".py")


def load_user_factory(spec: str) -> Callable[..., nn.Module]:
    """Import ``FILE.py:FACTORY`` (the way uvicorn takes ``module:app``)."""
    file, _, attr = spec.partition(":")
    path = Path(file)
    if not path.is_file():
        raise QCompileError(f"--model {clip(spec)}: no such file {clip(file)}")
    name = f"qcompile_user_{abs(hash(str(path.resolve())))}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise QCompileError(f"--model {spec}: cannot import {file}")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:  # the user's file: report its error, not ours
        raise QCompileError(
            f"--model {clip(spec)}: importing {clip(file)} failed: {type(e).__name__}: "
            f"{clip(str(e))}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise QCompileError(
            f"--model {spec}: {file} has no callable '{attr}'{did_you_mean(attr, names)}"
        )
    return factory


def build_model(
    spec: str, in_shape: tuple[int, int, int], num_classes: int, **options: Any
) -> nn.Module:
    """Build zoo model ``spec`` (or a user's ``FILE.py:FACTORY``) for the given data shape."""
    if is_user_factory(spec):
        factory = load_user_factory(spec)
    elif spec in MODELS:
        factory = MODELS[spec]
        params = inspect.signature(factory).parameters
        for key in options:
            if key not in params or key in ("in_shape", "num_classes"):
                valid = [p for p in params if p not in ("in_shape", "num_classes", "self")]
                raise QCompileError(
                    f"model '{spec}' has no option '{key}'{did_you_mean(key, valid)}; "
                    f"valid: {', '.join(valid) or 'none'}"
                )
    else:
        raise unknown_choice("model", spec, MODELS)
    shown = clip(spec)
    try:
        model = factory(in_shape=tuple(in_shape), num_classes=num_classes, **options)
    except (TypeError, ValueError, RuntimeError) as e:
        raise QCompileError(
            f"model '{shown}' for input {tuple(in_shape)}: {clip(str(e))}"
        ) from None
    except Exception as e:  # a user's factory may raise anything: report it, not ours
        if not is_user_factory(spec):
            raise
        raise QCompileError(f"--model {shown} raised {type(e).__name__}: {clip(str(e))}") from None
    if not isinstance(model, nn.Module):
        raise QCompileError(f"--model {shown} returned {type(model).__name__}, not an nn.Module")
    return model


__all__ = ["MODELS", "build_model", "is_user_factory", "load_user_factory"]
