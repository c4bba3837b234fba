"""Shared helpers: run the CLI in a subprocess the way a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One OpenMP thread per test process, and for the CLI runs it starts (they inherit the
# environment); set before torch is imported. `make test` runs one pytest worker per core
# (pytest-xdist), so more threads only queue; and on a loaded machine a 2-thread parallel
# region waits for its descheduled sibling: a DMBQ mlp/digits test run took 60 s with torch's
# default of 2 threads under a load of 8, 25 s with one. Tests that compare runs make them
# all under this one setting. Set OMP_NUM_THREADS to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path factory reads the option
def pytest_configure(config: pytest.Config) -> None:
    """A pytest-xdist worker keeps its temporary files in a short directory of its own.

    Error messages clip user paths at 80 characters (``qcompile.errors.clip``), and tests
    look for a file's name in them; xdist's default, ``/tmp/pytest-of-USER/pytest-N/
    popen-gwK/``, is long enough to clip the name away where a serial run's is not.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        config.option.basetemp = Path(tempfile.gettempdir()) / f"qc-{worker}-{os.getpid()}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker removes its directory when its tests are done (a serial run's is pytest's
    own, kept for the last three runs)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and session.config.option.basetemp:
        shutil.rmtree(session.config.option.basetemp, ignore_errors=True)


def needs_tools(*tools: str, install: str) -> pytest.MarkDecorator:
    """Skip, saying what to install, where one of ``tools`` is not on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"needs {', '.join(missing)} (apt-get install {install}; `make test` installs it)",
    )


# g++ builds the FPGA C simulation and links TVM's host libraries (model.so); the ARM
# artifacts need the cross compiler and qemu's user-mode emulator.
NEEDS_GXX = needs_tools("g++", install="g++")
NEEDS_ARM = needs_tools(
    "aarch64-linux-gnu-gcc", "qemu-aarch64", install="gcc-aarch64-linux-gnu qemu-user"
)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "qcompile", *args],
        cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def bad(tmp_path_factory):
    """The bad-input tables' starting points (tests/bad_inputs.py), built once a session."""
    from tests.bad_inputs import build_fixtures

    return build_fixtures(tmp_path_factory.mktemp("bad-input"))


# Exhaustive sweeps (every zoo model, every width, every kernel variant): `make test` runs
# every case, `make test-fast` (-m "not slow") only the representatives named here, which
# reach the same code paths on the smallest input. Kept here rather than as marks in each
# file so that the tier of a case is decided in one table.
# "file::test" -> the parametrize ids that stay in the fast tier.
SWEEPS: dict[str, set[str]] = {
    "tests/freeze/test_freeze.py::test_zoo_model_frozen_is_bit_exact": {"lenet-8"},
    "tests/backends/test_fpga.py::test_zoo_model_csim_is_bit_exact": {"lenet"},
    "tests/backends/test_fpga.py::test_io_stream_csim_is_bit_exact": {"lenet"},
    # affine levels here, int8 tables in the per-channel case: both kinds stay fast
    "tests/backends/test_fpga.py::test_every_weight_bitwidth_and_lut_kind_is_exact": {"uniform"},
    "tests/backends/test_fpga.py::test_per_channel_widths_are_exact_and_stored_at_their_own_widths": {  # noqa: E501
        "nonuniform"
    },
    "tests/backends/test_tvm.py::test_zoo_model_is_bit_exact": {"lenet-cpu", "lenet-arm"},
    # each level kind on each target once over the two tests
    "tests/backends/test_tvm.py::test_every_weight_bitwidth_and_lut_kind_is_exact": {
        "uniform-cpu",
        "nonuniform-arm",
    },
    "tests/backends/test_tvm.py::test_per_channel_widths_are_exact_and_stored_at_their_own_widths": {  # noqa: E501
        "nonuniform-cpu",
        "uniform-arm",
    },
    "tests/backends/test_tvm_avx512.py::test_dense_takes_the_avx512_kernel_and_is_exact": {
        "int8_inputs-4",
        "int16_inputs-1",
    },
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every case of a sweep but its representatives ``slow``. Where more cases than
    representatives were collected (a whole file, not a hand-picked case), a representative
    that is not among them is an error: a renamed case cannot leave a sweep with no fast case."""
    seen: dict[str, set[str]] = {}
    for item in items:
        test, _, case = item.nodeid.partition("[")
        keep = SWEEPS.get(test)
        if keep is None or not case:
            continue
        case = case.rstrip("]")
        seen.setdefault(test, set()).add(case)
        if case not in keep:
            item.add_marker(pytest.mark.slow)
    for test, cases in seen.items():
        missing = SWEEPS[test] - cases
        if missing and len(cases) > len(SWEEPS[test]):
            raise pytest.UsageError(f"conftest SWEEPS: {test} has no case {sorted(missing)}")
