"""Every zoo model, frozen after calibration, exports to QONNX that qonnx's executor runs
bit for bit (bench/qonnx_exact.py does the same for trained demo, DQA, DDQ and DMBQ models)."""

from __future__ import annotations

import pytest

from tests.backends.helpers import ZOO, zoo_graph
from tests.interop.helpers import assert_export_exact, float_inputs

FAST = ("mlp", "lenet")
CASES = [pytest.param(*z, marks=() if z[0] in FAST else pytest.mark.slow) for z in ZOO]


@pytest.mark.parametrize(("name", "shape", "opts"), CASES, ids=[z[0] for z in ZOO])
def test_zoo_model_exports_exactly(name, shape, opts) -> None:
    graph = zoo_graph(name, shape, opts)
    assert_export_exact(graph, float_inputs(shape, 16, seed=3), batch=8)
