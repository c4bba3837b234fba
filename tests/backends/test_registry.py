"""The backend registry: every target profile finds its backend, each entry names a pipeline
declared in passes/pipelines.py and functions that exist, looking backends up imports
neither torch nor a backend's heavy dependencies, and the estimate before export is the one
the fpga manifest holds."""

from __future__ import annotations

import importlib
import subprocess
import sys

from qcompile.backends.hls4ml.estimate import estimate
from qcompile.backends.hls4ml.export import options
from qcompile.backends.registry import BACKENDS, artifact_kind, backend, preview
from qcompile.backends.targets import available, load_target
from qcompile.passes import pipelines
from tests.backends.hls4ml.test_fpga_estimate import one_layer


def test_every_profile_has_a_backend_with_a_declared_pipeline():
    kinds = {artifact_kind(load_target(name)) for name in available()}
    assert kinds == set(BACKENDS) == {"fpga", "rtl", "cpu", "arm", "gpu"}
    declared = {v for k, v in vars(pipelines).items() if k.isupper()}
    for b in BACKENDS.values():
        assert b.pipeline in declared, b.kind
    assert backend("rtl").pipeline is pipelines.RTL
    assert backend("fpga").pipeline is pipelines.FPGA


def test_rtl_entry_names_functions_that_exist():
    for what in ("export", "runner", "describe"):
        module, _, name = getattr(backend("rtl"), what).partition(":")
        assert callable(getattr(importlib.import_module(module), name)), what


def test_looking_backends_up_imports_no_torch_and_no_backend():
    code = (
        "import sys\n"
        "from qcompile.backends.registry import BACKENDS, backend\n"
        "[backend(k) for k in BACKENDS]\n"
        "import qcompile.backends.rtl.export, qcompile.backends.rtl.runner\n"
        "heavy = {'torch', 'tvm', 'hls4ml', 'da4ml'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_preview_is_the_fpga_manifest_estimate_and_rtl_has_none():
    t = load_target("zcu104")
    est, text = preview(one_layer(), t)
    assert est == estimate(one_layer(), options(t, one_layer()))
    assert "zcu104" in text and "LUT" in text
    assert preview(one_layer(), load_target("rtl")) is None
