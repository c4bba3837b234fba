"""Run an artifact's native code in a child process: a crash in it is reported, not inherited.

A compiled model that executes an illegal instruction, dereferences a bad pointer or aborts
kills the process it runs in. So the tool never loads one into its own process:
``Worker(name)`` starts ``python -m qcompile.backends.worker`` at once (its imports overlap
with the caller's own work), ``open(kind, **args)`` has it load an artifact with one of the
LOADERS, and each call sends one batch and gets the outputs back. The two talk over a pair
of pipes of their own, so whatever native code prints on stdout or stderr cannot corrupt
them. A child killed by a signal becomes one :class:`NativeCrash` line naming the artifact
and the signal; a QCompileError the loader raises comes back as itself.

>>> describe_exit(-4)
'SIGILL (Illegal instruction)'
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from qcompile.errors import QCompileError

LOADERS = {
    "tvm": "qcompile.backends.tvm.runner:TvmLibrary",
    "csim": "qcompile.backends.hls4ml.csim:CSimLibrary",
    "rtl": "qcompile.backends.rtl.runner:RtlLibrary",
}
# One frame: a tag byte, the payload length (uint64 LE), the payload.
OPEN, ARRAY, READY, ERROR, BUG = b"O", b"A", b"R", b"E", b"B"
HEAD = struct.Struct("<cQ")


class NativeCrash(QCompileError):
    """An artifact's native code died (a signal or an unexpected exit) while running."""


def describe_exit(returncode: int) -> str:
    """``-4`` -> ``SIGILL (Illegal instruction)``; a positive code -> ``exit status N``."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"signal {-returncode}"
    return f"{sig.name} ({signal.strsignal(sig) or 'unknown'})"


def _send(f: IO[bytes], tag: bytes, payload: bytes = b"") -> None:
    f.write(HEAD.pack(tag, len(payload)) + payload)
    f.flush()


def _recv(f: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next frame, or None at end of stream (the other side is gone)."""
    head = f.read(HEAD.size)
    if len(head) < HEAD.size:
        return None
    tag, size = HEAD.unpack(head)
    payload = f.read(size)
    return None if len(payload) < size else (tag, payload)


def _pack(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _unpack(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


class Worker:
    """A child process that loads one artifact and runs batches through it.

    ``name`` (the artifact's path) is what error lines call it."""

    def __init__(self, name: str) -> None:
        self.name = name
        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        # the child's stdout and stderr, whose last line an unexpected exit reports
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the child)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(from_parent), str(to_parent)],
            pass_fds=(from_parent, to_parent),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        os.close(from_parent)
        os.close(to_parent)
        self._out = os.fdopen(to_child, "wb")
        self._in = os.fdopen(from_child, "rb")
        self._opening = False

    def open(self, kind: str, **args: Any) -> None:
        """Have the child load an artifact with ``LOADERS[kind](**args)``; the answer is
        awaited by the first call, so loading overlaps with the caller's work."""
        self._request(OPEN, json.dumps({"kind": kind, "args": args}).encode())
        self._opening = True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._opening:
            self._opening = False
            self._expect(READY)
        self._request(ARRAY, _pack(x))
        return _unpack(self._expect(ARRAY))

    def _request(self, tag: bytes, payload: bytes) -> None:
        try:
            _send(self._out, tag, payload)
        except (BrokenPipeError, ValueError):  # ValueError: already closed
            raise self._died() from None

    def _expect(self, tag: bytes) -> bytes:
        frame = _recv(self._in)
        if frame is None:
            raise self._died()
        got, payload = frame
        if got == ERROR:
            raise QCompileError(payload.decode())
        if got == BUG:
            raise RuntimeError(f"{self.name}: the worker process failed:\n{payload.decode()}")
        if got != tag:
            raise RuntimeError(f"{self.name}: the worker sent {got!r}, expected {tag!r}")
        return payload

    def _died(self) -> NativeCrash:
        rc = self.proc.wait()
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace").strip().splitlines()[-1:]
        self.close()
        if rc < 0:
            return NativeCrash(f"{self.name}: the compiled model crashed with {describe_exit(rc)}")
        return NativeCrash(
            f"{self.name}: the process running the compiled model ended with "
            f"{describe_exit(rc)}{': ' + tail[0] if tail else ''}"
        )

    def close(self) -> None:
        """End the child (it exits when its input closes) and release the pipes."""
        for name in ("_out", "_in", "_log"):
            with contextlib.suppress(OSError, AttributeError):
                getattr(self, name).close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __del__(self) -> None:
        if hasattr(self, "proc"):
            self.close()


class BuiltRunner:
    """A runner that builds a copy of its artifact in a temporary directory (``_dir``) and
    runs the result in a :class:`Worker`, started at once so its start-up overlaps the build;
    ``close`` stops the worker and removes the directory (the C simulation, Verilator)."""

    def __init__(self, artifact: Path, prefix: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.worker = Worker(str(artifact))

    def close(self) -> None:
        self.worker.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self) -> None:
        if hasattr(self, "worker"):
            self.close()


def _loader(kind: str) -> Callable[..., Callable[[np.ndarray], np.ndarray]]:
    module, _, name = LOADERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The child's loop: an OPEN frame loads the artifact, each ARRAY frame is one batch."""
    fn: Callable[[np.ndarray], np.ndarray] | None = None
    while (frame := _recv(inp)) is not None:
        tag, payload = frame
        try:
            if tag == OPEN:
                req = json.loads(payload)
                fn = _loader(req["kind"])(**req["args"])
                _send(out, READY)
            elif tag == ARRAY and fn is not None:
                _send(out, ARRAY, _pack(fn(_unpack(payload))))
            else:
                _send(out, BUG, f"unexpected frame {tag!r}".encode())
        except QCompileError as e:
            _send(out, ERROR, str(e).encode())
        except Exception:
            _send(out, BUG, traceback.format_exc().encode())


if __name__ == "__main__":
    serve(os.fdopen(int(sys.argv[1]), "rb"), os.fdopen(int(sys.argv[2]), "wb"))
