"""Shared helpers: run the CLI in a subprocess the way a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
