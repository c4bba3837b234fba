"""User files. Inputs: a path that is missing, not a regular file or unusable (a name too
long) is one clear line (:func:`input_file`). Outputs: checked before work starts, written
whole or not at all, and the temporaries of killed writers cleaned by the next writer.

Every output (a checkpoint, a .qir, an artifact directory) is written into a hidden temporary
beside its final path and renamed into place. A temporary's name carries its writer's host
and process id (``.NAME.qctmp-HOST-PID-XXXXXXXX``), so whoever writes next into the same
directory removes those whose writer has died (a SIGKILL runs no cleanup code):

>>> temp_prefix("model.qir").startswith(".model.qir.qctmp-")
True

Operating-system failures (a parent that is a file, a name longer than the filesystem
allows, a read-only or virtual filesystem, a full disk) become one :class:`QCompileError`
line naming the path: :func:`check_writable` says so before any work, :func:`writing` when
it happens anyway.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from qcompile.errors import QCompileError, clip

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
TEMP_RE = re.compile(r"^\..*\.qc(tmp|old)-([0-9a-f]{8})-([0-9]+)-[^/]*$")
REASONS = {
    errno.ENOTDIR: "a parent is a file, not a directory",
    errno.ENAMETOOLONG: "a name is longer than the filesystem allows",
    errno.EROFS: "the filesystem is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a directory",
}


def input_file(path: Path | str, what: str) -> Path:
    """``path`` if it names a readable regular file; else one :class:`QCompileError` that
    says ``what`` it should have been (a device like /dev/zero would never end)."""
    p = Path(path)
    shown = clip(str(path))
    try:
        if not p.exists():
            raise QCompileError(f"{what} {shown}: no such file")
        if p.is_dir():
            raise QCompileError(f"{what} {shown}: no such file; it is a directory")
        if not p.is_file():
            raise QCompileError(f"{what} {shown}: not a regular file (a device or a pipe)")
        if not os.access(p, os.R_OK):
            raise QCompileError(f"{what} {shown}: cannot read it (permission denied)")
    except OSError as e:  # a name too long, a loop of symlinks, ...
        raise QCompileError(f"{what} {shown}: cannot use this path ({e.strerror or e})") from None
    return p


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:  # a name too long: the length check below names it
        return False


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _short(name: str) -> str:
    """``name`` if short, else a digest of it: temporary names must stay under NAME_MAX."""
    if len(os.fsencode(name)) <= 64:
        return name
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


def temp_prefix(name: str, kind: str = "tmp") -> str:
    """Prefix of this process's temporaries for output ``name`` (``kind``: tmp or old)."""
    return f".{_short(name)}.qc{kind}-{HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process: alive; junk: keep
        return True
    return True


def clean_stale(parent: Path) -> None:
    """Remove temporaries in ``parent`` left by dead writers on this host. A displaced old
    artifact (``.qcold-``) whose final path is still empty is put back instead: its writer
    died between moving it aside and renaming the new one into place."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        m = TEMP_RE.match(entry.name)
        if m is None or m.group(2) != HOST or _alive(int(m.group(3))):
            continue
        path = Path(entry.path)
        if m.group(1) == "old" and path.is_dir():
            for kept in path.iterdir():
                if not (parent / kept.name).exists():
                    os.replace(kept, parent / kept.name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def describe(path: Path | str, e: OSError) -> str:
    """One line for an OSError met while writing ``path``."""
    reason = REASONS.get(e.errno or 0, e.strerror or type(e).__name__)
    return f"cannot write {clip(str(path))}: {reason}"


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an OSError raised inside the block into a one-line :class:`QCompileError`."""
    try:
        yield
    except OSError as e:
        raise QCompileError(describe(path, e)) from None


def check_writable(path: Path | str, what: str = "output", directory: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be created: an ancestor that is a
    file, a name too long for its filesystem, a directory that takes no new files (read-only,
    virtual like /proc). ``directory``: the output is a directory whose contents are written
    (a run directory), not an entry renamed into its parent. Creates nothing that outlives
    the call."""
    p = Path(os.path.abspath(path))
    base, names = (p, []) if directory else (p.parent, [p.name])
    while not _exists(base) and base != base.parent:
        names.append(base.name)
        base = base.parent
    shown = clip(str(path))
    if not base.is_dir():
        raise QCompileError(
            f"cannot write {what} {shown}: {clip(str(base))} is a file, not a directory"
        )
    try:
        limit = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for name in names:
        size = len(os.fsencode(name))
        if size > limit:
            raise QCompileError(
                f"cannot write {what} {shown}: the name {clip(name, 40)!r} is {size} bytes, "
                f"longer than the {limit} its filesystem allows"
            )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=temp_prefix("probe"), dir=base))
    except OSError as e:
        reason = REASONS.get(e.errno or 0, e.strerror or type(e).__name__)
        raise QCompileError(
            f"cannot write {what} {shown}: {clip(str(base))} takes no new files ({reason})"
        ) from None


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers see the old or the new file,
    never half of one (a killed run leaves its previous file intact, and its temporary is
    removed by the next write into the same directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
