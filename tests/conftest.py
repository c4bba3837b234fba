"""Shared helpers: run the CLI in a subprocess the way a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
