"""Recipes: the shipped TOML files, round trips, overrides and error messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qcompile.data import DATASETS
from qcompile.errors import QCompileError
from qcompile.recipe import Recipe, from_dict, load_recipe
from qcompile.zoo import MODELS

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
RECIPES = sorted(MODELS_DIR.glob("*.toml"))


def test_recipes_are_found() -> None:
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_parses(path: Path) -> None:
    recipe = load_recipe(path, {})
    assert isinstance(recipe, Recipe)
    assert recipe.model.name in MODELS
    assert recipe.data.name in DATASETS
    # File names read <model>_<dataset>_<precision>.toml.
    assert path.stem.startswith(f"{recipe.model.name}_{recipe.data.name}_")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_round_trip_through_dict(path: Path) -> None:
    recipe = load_recipe(path, {})
    again = from_dict(recipe.to_dict())
    assert again == recipe
    assert again.to_dict() == recipe.to_dict()


def test_resnet20_recipe_values() -> None:
    r = load_recipe(MODELS_DIR / "resnet20_cifar10_w4a4.toml", {})
    assert (r.stage.wbits, r.stage.abits, r.stage.weight_quant) == (4, 4, "sawb")
    assert r.train.optimizer == "sgd" and r.train.schedule == "step"
    assert r.train.milestones == (0.3333, 0.6667)
    assert isinstance(r.train.lr, float)


def test_model_options_are_kept() -> None:
    r = load_recipe(MODELS_DIR / "mobilenetv2_cifar10_w8a8.toml", {})
    assert r.model.options == {"width": 0.5}
    assert r.to_dict()["model"] == {"name": "mobilenetv2", "width": 0.5}


def test_defaults_without_file() -> None:
    r = load_recipe(None, {})
    assert (r.model.name, r.data.name, r.method) == ("lenet", "digits", "uniform")
    assert r.train.epochs == 15


def test_overrides_apply_and_none_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text("[stage]\nwbits = 2\n[train]\nepochs = 7\nlr = 0.5\n")
    r = load_recipe(
        path,
        {"stage.wbits": None, "train.epochs": 3, "model.name": "mlp", "data.dir": None},
    )
    assert r.stage.wbits == 2  # None leaves the file's value
    assert r.train.epochs == 3  # the flag wins over the file
    assert r.train.lr == 0.5
    assert r.model.name == "mlp"
    assert r.data.dir == ""


def test_int_is_accepted_for_float() -> None:
    r = load_recipe(None, {"train.lr": 1})
    assert r.train.lr == 1.0 and isinstance(r.train.lr, float)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def test_unknown_table(tmp_path: Path) -> None:
    path = _write(tmp_path, '[modle]\nname = "lenet"\n')
    with pytest.raises(QCompileError) as info:
        load_recipe(path, {})
    msg = str(info.value)
    assert "unknown table [modle]" in msg
    assert "did you mean 'model'" in msg
    assert str(path) in msg


@pytest.mark.parametrize(
    ("table", "key", "suggestion"),
    [("stage", "wbit", "wbits"), ("train", "epoch", "epochs"), ("data", "dri", "dir")],
)
def test_unknown_key_suggests_closest(
    tmp_path: Path, table: str, key: str, suggestion: str
) -> None:
    path = _write(tmp_path, f"[{table}]\n{key} = 1\n")
    with pytest.raises(QCompileError) as info:
        load_recipe(path, {})
    msg = str(info.value)
    assert f"[{table}]" in msg
    assert f"unknown key '{key}'" in msg
    assert f"did you mean '{suggestion}'" in msg


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[train]\nepochs = "ten"\n', "epochs", "an integer"),
        ("[train]\nepochs = true\n", "epochs", "an integer"),
        ('[train]\nlr = "fast"\n', "lr", "a number"),
        ("[train]\nmilestones = 0.5\n", "milestones", "a list"),
        ("[stage]\nper_channel = 1\n", "per_channel", "true or false"),
        ("[data]\ndir = 3\n", "dir", "a string"),
    ],
)
def test_wrong_type_names_key(tmp_path: Path, text: str, key: str, expected: str) -> None:
    with pytest.raises(QCompileError) as info:
        load_recipe(_write(tmp_path, text), {})
    assert f"'{key}' must be {expected}" in str(info.value)


def test_bad_optimizer_choice(tmp_path: Path) -> None:
    path = _write(tmp_path, '[train]\noptimizer = "adamw"\n')
    with pytest.raises(QCompileError) as info:
        load_recipe(path, {})
    msg = str(info.value)
    assert "[train]" in msg
    assert "optimizer must be one of sgd, adam" in msg


def test_bad_value_from_override() -> None:
    with pytest.raises(QCompileError, match="epochs must be >= 1"):
        load_recipe(None, {"train.epochs": 0})


def test_unknown_method() -> None:
    with pytest.raises(QCompileError, match="unknown method 'unifrom'"):
        load_recipe(None, {"stage.method": "unifrom"})


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[train\nepochs = 3\n")
    with pytest.raises(QCompileError, match="not valid TOML") as info:
        load_recipe(path, {})
    assert str(path) in str(info.value)


def test_missing_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(QCompileError, match="no such file") as info:
        load_recipe(path, {})
    assert str(path) in str(info.value)


def test_table_that_is_not_a_table(tmp_path: Path) -> None:
    path = _write(tmp_path, 'model = "lenet"\n')
    with pytest.raises(QCompileError, match=r"'model' must be a table"):
        load_recipe(path, {})


def test_table_that_is_not_a_table_with_override(tmp_path: Path) -> None:
    path = _write(tmp_path, 'model = "lenet"\n')
    with pytest.raises(QCompileError, match=r"'model' must be a table"):
        load_recipe(path, {"model.name": "mlp"})


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("lr", float("nan"), "lr must be a finite number > 0"),
        ("lr", float("inf"), "lr must be a finite number > 0"),
        ("momentum", -3.0, "momentum must be in [0, 1)"),
        ("momentum", float("nan"), "momentum must be in [0, 1)"),
        ("weight_decay", -1.0, "weight_decay must be a finite number >= 0"),
        ("weight_decay", float("inf"), "weight_decay must be a finite number >= 0"),
        ("gamma", 0.0, "gamma must be a finite number > 0"),
        ("milestones", (0.5, float("nan")), "milestones must be finite numbers > 0"),
        ("seed", -1, "seed must be 0.."),
        ("seed", 2**63, "seed must be 0.."),
    ],
)
def test_train_spec_validates_itself(field: str, value: object, words: str) -> None:
    """The dataclass refuses what the optimizer would choke on (or train to NaN with), so
    recipes, flags and checkpoints all get the same check."""
    from qcompile.recipe import TrainSpec

    with pytest.raises(ValueError, match=re.escape(words)):
        TrainSpec(**{field: value})


def test_stage_options_must_be_finite() -> None:
    from qcompile.stages.dqa import DQAConfig

    with pytest.raises(ValueError, match="t0 must be finite"):
        DQAConfig(wbits=2, t0=float("inf"))


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("lenet", "a recipe is a table of tables"),
        (["model"], "a recipe is a table of tables"),
        ({"epochs": 3}, "key 'epochs' is outside any table; put it under [train]"),
        ({"x": 1}, "unknown key 'x' outside any table"),
        ({"model": {"name": "lenett"}}, "[model]: unknown model 'lenett'"),
        ({"data": {"name": "mnist"}}, "[data]: unknown dataset 'mnist'"),
        ({"stage": {"method": "magic"}}, "[stage]: unknown method 'magic'"),
    ],
)
def test_recipe_shape_errors_name_the_source(raw: object, words: str) -> None:
    with pytest.raises(QCompileError) as info:
        from_dict(raw, "ckpt.pt")  # type: ignore[arg-type]
    assert words in str(info.value) and str(info.value).startswith("ckpt.pt")
