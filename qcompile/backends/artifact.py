"""Artifact directories: written whole into a temporary sibling, then renamed into place.

A failure leaves no partial artifact, and an existing directory is replaced only when asked.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qcompile.errors import QCompileError

MANIFEST = "manifest.json"


def write_artifact(out: Path, force: bool, fill: Callable[[Path], None]) -> None:
    """Call ``fill(tmp_dir)``; on success ``tmp_dir`` becomes ``out``."""
    out = Path(out)
    if out.exists() and not force:
        raise QCompileError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise QCompileError(f"{out} exists and is not a directory")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as e:
        raise QCompileError(f"cannot write {out}: {e.strerror or e}") from None
    try:
        fill(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            os.replace(out, old / "x")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(path: Path) -> dict[str, Any]:
    m = Path(path) / MANIFEST
    if not m.is_file():
        raise QCompileError(
            f"{path} is not a qcompile artifact (no {MANIFEST}); export one with `qcompile export`"
        )
    try:
        data = json.loads(m.read_text())
    except (OSError, ValueError) as e:
        raise QCompileError(f"{m} is unreadable: {e}") from None
    if not isinstance(data, dict) or "target" not in data:
        raise QCompileError(f"{m} is not a qcompile manifest")
    return data
