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
    # The Verilator builds' compiles go through ccache where it is installed: a cache of this
    # run's own (removed at its end), so a run reuses only what it compiled itself and leaves
    # nothing in the user's ~/.cache.
    os.environ["CCACHE_DIR"] = tempfile.mkdtemp(prefix="qc-ccache-")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """tests/tiers.py gives every test an xdist group, which pytest-xdist appends to its id
    (``nodeid@group``) for --dist loadgroup. Ids without it mean the groups were lost (as
    under pytest 9.2): every test would be scheduled alone and a shared fixture built once
    per worker, without a word; stop instead."""
    if node.config.getvalue("dist") == "loadgroup" and ids and not any("@" in i for i in ids):
        pytest.exit(
            f"pytest-xdist could not group the tests (--dist loadgroup) under pytest "
            f"{pytest.__version__}; install the pytest pyproject.toml names (make install)",
            returncode=4,
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker removes its directory when its tests are done (a serial run's is pytest's
    own, kept for the last three runs), and every run its ccache directory."""
    if os.environ.get("PYTEST_XDIST_WORKER") and session.config.option.basetemp:
        shutil.rmtree(session.config.option.basetemp, ignore_errors=True)
    shutil.rmtree(os.environ["CCACHE_DIR"], ignore_errors=True)


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


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tier and the pytest-xdist groups, from tests/tiers.py."""
    from tests.tiers import apply_tiers

    apply_tiers(items)
