"""Artifact directories: written whole into a temporary sibling, then renamed into place.

A failure leaves no partial artifact, and an existing directory is replaced only when asked
(and only if it is an artifact or empty). The manifest records the SHA-256 of every file the
artifact holds (``files``), and :func:`open_artifact` refuses an artifact whose files no
longer match it before anything of it runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from qcompile.backends.manifest import FORMAT, MANIFEST
from qcompile.errors import QCompileError, clip
from qcompile.fileio import check_writable, clean_stale, sha256_file, temp_prefix, writing

# Manifest fields that name a file the artifact's code reads or runs.
FILE_FIELDS = ("qir", "library", "weights", "runner")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def write_artifact(out: Path, force: bool, fill: Callable[[Path], None]) -> None:
    """Call ``fill(tmp_dir)``, record its files' hashes in its manifest; on success
    ``tmp_dir`` becomes ``out``."""
    out = Path(out)
    check_output(out, force)
    parent = out.resolve().parent
    with writing(out):
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale(parent)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), dir=parent))
        try:
            fill(tmp)
            seal(tmp)
            old = None
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name, "old"), dir=parent))
                os.replace(out, old / out.name)  # clean_stale puts it back if we die here
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_output(out: Path, force: bool) -> None:
    """Refuse, before any work, an artifact path that cannot be written or must not be
    replaced: the current directory or a parent of it, an existing path without --force, a
    file, a directory that is neither an artifact nor empty (--force never deletes a
    user's directory)."""
    out = Path(out)
    check_writable(out, "artifact")  # first: a name too long makes out.exists() raise
    _check_replaceable(out, force)


def _check_replaceable(out: Path, force: bool) -> None:
    shown = clip(str(out))
    here = Path.cwd().resolve()
    full = out.resolve()
    if full == here or full in here.parents:
        raise QCompileError(
            f"-o {shown} is the current directory or one of its parents; "
            "name a new directory for the artifact"
        )
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():  # --force would not help: never suggest it
        kind = "a link" if out.is_symlink() else "a file"
        raise QCompileError(
            f"{shown} is {kind}, not an artifact directory; remove it or choose another -o"
        )
    if not force:
        raise QCompileError(f"{shown} already exists; pass --force to replace it")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise QCompileError(
            f"{shown} is not a qcompile artifact (no {MANIFEST}); --force replaces only an "
            "artifact or an empty directory"
        )


def seal(directory: Path) -> None:
    """Add ``files`` (relative path -> SHA-256 of every file but the manifest) to the
    manifest in ``directory``."""
    m = directory / MANIFEST
    info = json.loads(m.read_text())
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p != m)
    info["files"] = {p.relative_to(directory).as_posix(): sha256_file(p) for p in files}
    m.write_text(json.dumps(info, indent=2) + "\n")


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of artifact ``path`` as written (no file checks: see open_artifact)."""
    m = Path(path) / MANIFEST
    if not m.is_file():
        raise QCompileError(
            f"{clip(str(path))} is not a qcompile artifact (no {MANIFEST}); "
            "export one with `qcompile export`"
        )
    try:
        data = json.loads(m.read_text())
    except (OSError, ValueError) as e:
        raise QCompileError(f"{clip(str(m))} is unreadable: {clip(str(e))}") from None
    if not isinstance(data, dict) or not isinstance(data.get("target"), str):
        raise QCompileError(f"{clip(str(m))} is not a qcompile manifest")
    return data


def open_artifact(path: Path) -> dict[str, Any]:
    """The manifest of artifact ``path`` once every file it lists matches its SHA-256 and
    every file it names is one of them: nothing of a modified artifact runs."""
    info = read_manifest(path)
    where = clip(str(path))
    redo = "re-export it with `qcompile export`"
    files = info.get("files")
    if (
        info.get("format") != FORMAT
        or not isinstance(files, dict)
        or not files
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise QCompileError(
            f"{where}: its manifest lists no file hashes (exported by an older qcompile, "
            f"or edited); {redo}"
        )
    for rel in files:
        if not _inside(rel):
            raise QCompileError(f"{where}: its manifest names a file outside it: {clip(rel)!r}")
    for field in FILE_FIELDS:
        name = info.get(field)
        if field in info and (not isinstance(name, str) or name not in files):
            raise QCompileError(
                f"{where}: manifest field '{field}' names {clip(repr(name))}, which is not "
                f"one of its hashed files; {redo}"
            )
    if "qir" in info and files[info["qir"]] != info.get("qir_sha256"):
        raise QCompileError(f"{where}: manifest's qir_sha256 disagrees with its files; {redo}")
    if "project" in info and not IDENTIFIER.fullmatch(str(info["project"])):
        raise QCompileError(
            f"{where}: manifest's project name {clip(repr(info['project']))} is invalid"
        )
    for rel, digest in sorted(files.items()):
        f = Path(path) / rel
        if not f.is_file():
            raise QCompileError(f"{where}: {clip(rel)} is missing; {redo}")
        try:
            actual = sha256_file(f)
        except OSError as e:
            raise QCompileError(f"{where}: cannot read {clip(rel)}: {e.strerror or e}") from None
        if actual != digest:
            raise QCompileError(
                f"{where}: {clip(rel)} does not match its SHA-256 in {MANIFEST} (modified or "
                f"damaged since export); {redo}"
            )
    return info


def _inside(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel
