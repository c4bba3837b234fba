"""Recipes: architecture + dataset + stage + hyper-parameters, from TOML with flag overrides.

A recipe file has four tables; every key is optional and has the default shown by
``qcompile train --help``::

    [model]   name = "lenet"            # plus the architecture's options, e.g. width = 0.5
    [data]    name = "digits"           # dir = "..." for cifar10 / imagefolder
    [stage]   method = "uniform"        # plus the method's options: wbits, abits, ...
    [train]   epochs = 15               # optimizer, lr, schedule, seed, ...

Unknown or mistyped keys are errors that name the key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcompile.errors import QCompileError, clip, did_you_mean, unknown_choice
from qcompile.fileio import input_file
from qcompile.stages import STAGES, StageConfig, stage_class

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
MAX_IMAGE_SIZE = 4096
MAX_SEED = 2**63 - 1  # what TOML and torch.manual_seed both take


@dataclass(frozen=True)
class ModelSpec:
    name: str = "lenet"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"
    dir: str = ""
    image_size: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be 1..{MAX_IMAGE_SIZE}, got {self.image_size}")


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings. ``step`` decays the rate by ``gamma`` at each of ``milestones``
    (fractions of the run, e.g. 0.5 and 0.75, or absolute epochs when > 1)."""

    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:  # also refuses nan
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {self.gamma}")
        if not all(math.isfinite(m) and m > 0 for m in self.milestones):
            raise ValueError(f"milestones must be finite numbers > 0, got {list(self.milestones)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be 0..{MAX_SEED}, got {self.seed}")


@dataclass(frozen=True)
class Recipe:
    model: ModelSpec
    data: DataSpec
    method: str
    stage: StageConfig
    train: TrainSpec

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML/JSON/checkpoint safe) that :func:`from_dict` reads back."""
        return {
            "model": {"name": self.model.name, **self.model.options},
            "data": dataclasses.asdict(self.data),
            "stage": {"method": self.method, **dataclasses.asdict(self.stage)},
            "train": {**dataclasses.asdict(self.train), "milestones": list(self.train.milestones)},
        }


SECTIONS = ("model", "data", "stage", "train")


def _check_type(value: Any, hint: Any) -> Any:
    """Return ``value`` coerced to ``hint`` (int -> float, list -> tuple) or raise TypeError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _check_type(value, arg)
            except TypeError:
                continue
        raise TypeError(_type_name(hint))
    if origin is tuple:
        (item, _) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise TypeError("a list")
        return tuple(_check_type(v, item) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise TypeError("a finite number") from None
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise TypeError("a finite number")
    if hint is int and isinstance(value, bool):
        raise TypeError("an integer")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise TypeError(_type_name(hint))
    return value


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in hints:
            raise QCompileError(
                f"{where}: unknown key {clip(repr(key), 40)}{did_you_mean(key, valid)}; "
                f"valid: {', '.join(valid)}"
            )
        try:
            kwargs[key] = _check_type(value, hints[key])
        except TypeError as e:
            raise QCompileError(f"{where}: '{key}' must be {e}, got {clip(repr(value))}") from None
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise QCompileError(f"{where}: {e}") from None


def from_dict(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a nested recipe dict (as read from TOML) into a :class:`Recipe`."""
    source = clip(source)
    tables = ", ".join(f"[{s}]" for s in SECTIONS)
    if not isinstance(raw, dict):
        raise QCompileError(
            f"{source}: a recipe is a table of tables ({tables}), not {type(raw).__name__} "
            f"{clip(repr(raw), 40)}"
        )
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            continue
        if key in SECTIONS:
            raise QCompileError(
                f"{source}: '{key}' must be a table ([{key}] on its own line), "
                f"got {clip(repr(value), 40)}"
            )
        home = [s for s in SECTIONS if key in _section_keys(s)]
        if home:
            raise QCompileError(
                f"{source}: key {clip(repr(key), 40)} is outside any table; "
                f"put it under [{home[0]}]"
            )
        if isinstance(value, dict):
            raise QCompileError(
                f"{source}: unknown table [{clip(str(key), 40)}]{did_you_mean(str(key), SECTIONS)}"
                f"; valid: {tables}"
            )
        raise QCompileError(
            f"{source}: unknown key {clip(repr(key), 40)} outside any table; a recipe has "
            f"the tables {tables}"
        )
    model = dict(raw.get("model", {}))
    name = model.pop("name", ModelSpec.name)
    if not isinstance(name, str):
        raise QCompileError(f"{source} [model]: 'name' must be a string, got {clip(repr(name))}")
    stage = dict(raw.get("stage", {}))
    method = stage.pop("method", "uniform")
    if not isinstance(method, str):
        raise QCompileError(
            f"{source} [stage]: 'method' must be a string, got {clip(repr(method))}"
        )
    try:
        config_class = stage_class(method).config_class
    except QCompileError as e:
        raise QCompileError(f"{source} [stage]: {e}") from None
    _check_names(name, raw.get("data", {}).get("name", DataSpec.name), source)
    return Recipe(
        model=ModelSpec(name, model),
        data=_build(DataSpec, raw.get("data", {}), f"{source} [data]"),
        method=method,
        stage=_build(config_class, stage, f"{source} [stage] (method {method})"),
        train=_build(TrainSpec, raw.get("train", {}), f"{source} [train]"),
    )


def _check_names(model: str, data: object, source: str) -> None:
    """The model and dataset must exist: said here, where the recipe's file is known."""
    from qcompile.data import DATASETS
    from qcompile.zoo import MODELS, is_user_factory

    if model not in MODELS and not is_user_factory(model):
        raise QCompileError(f"{source} [model]: {unknown_choice('model', model, MODELS)}")
    if isinstance(data, str) and data not in DATASETS:
        raise QCompileError(f"{source} [data]: {unknown_choice('dataset', data, DATASETS)}")


def _section_keys(section: str) -> set[str]:
    """Keys that may appear in ``section`` (for [stage]: any method's)."""
    if section == "model":
        return {"name", "width", "hidden"}
    if section == "stage":
        return {
            "method",
            *(f.name for c in STAGES.values() for f in dataclasses.fields(c.config_class)),
        }
    spec = DataSpec if section == "data" else TrainSpec
    return {f.name for f in dataclasses.fields(spec)}


def read_toml(path: str | Path) -> dict[str, Any]:
    p = input_file(path, "recipe")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise QCompileError(f"recipe {clip(str(p))}: not valid TOML: {clip(str(e))}") from None
    except OSError as e:
        raise QCompileError(f"recipe {clip(str(p))}: cannot read: {e.strerror or e}") from None


def load_recipe(path: str | Path | None, overrides: dict[str, Any]) -> Recipe:
    """Read ``path`` (or start from defaults) and apply ``overrides`` given as
    ``{"section.key": value}`` (flags the user passed; ``None`` values are ignored).

    >>> load_recipe(None, {"stage.wbits": 2, "train.epochs": 3}).stage.wbits
    2
    """
    raw = read_toml(path) if path is not None else {}
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise QCompileError(f"{path}: '{section}' must be a table ([{section}])")
        table[key] = value
    return from_dict(raw, str(path) if path is not None else "recipe")
