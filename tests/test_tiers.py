"""tests/tiers.py names tests by their ids: a renamed test must not silently leave a tier
(a slow test in the unit tier) or lose its early start."""

from __future__ import annotations

import importlib

import pytest

from tests.tiers import GPU_TESTS, LONGEST_FIRST, SLOW_TESTS, SWEEPS


@pytest.mark.parametrize(
    "test", sorted(set(LONGEST_FIRST) | SLOW_TESTS | GPU_TESTS | set(SWEEPS)), ids=str
)
def test_every_named_test_exists(test):
    path, _, name = test.partition("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert callable(getattr(module, name, None)), f"tests/tiers.py names {test}: no such test"
