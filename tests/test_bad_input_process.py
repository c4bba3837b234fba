"""Bad input as a user's shell sees it (a subprocess: exit status, no signal, no traceback,
one line, no warnings), and outputs interrupted by SIGKILL (issue 13, part 6)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from qcompile.fileio import HOST, clean_stale
from tests.bad_inputs import Fixtures, listing, resign_artifact, run_main, run_subprocess


def _cases(tmp: Path, bad: Fixtures) -> list[tuple[list[str], int, str]]:
    """(arguments, exit status, words): one of each class of the in-process tables (each
    subprocess imports torch: a few seconds, so only a few)."""
    (tmp / "file").write_text("x")
    (tmp / "part.toml").write_text('kind = "fpga"\npart = 5\n')
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000000, 1, 8, 8), }"
    (tmp / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + (len(header) + 1).to_bytes(2, "little")
                                   + header.encode() + b"\n" + bytes(64))  # fmt: skip
    shutil.copytree(bad.cpu, tmp / "cpu")
    (tmp / "cpu" / "weights.npz").write_bytes(b"PK\x03\x04")
    shutil.copytree(bad.cpu, tmp / "forged")
    shutil.copy(bad.other_qir, tmp / "forged" / "model.qir")
    resign_artifact(tmp / "forged")
    return [
        (["train", "--lr", "nan", "--out", f"{tmp}/o"], 2, "'lr' must be a finite number"),
        (["freeze", str(bad.ckpt), "-o", f"{tmp}/file/m.qir"], 2, "is a file, not a directory"),
        (["simulate", str(bad.qir), "--inputs", f"{tmp}/huge.npy"], 2, "header claims"),
        (["simulate", f"{tmp}/cpu"], 2, "weights.npz does not match its SHA-256"),
        (["simulate", f"{tmp}/forged", "--inputs", str(bad.inputs)], 1, "tvm_cpu on 8 of 8"),
        (["export", str(bad.qir), "--target", f"{tmp}/part.toml", "-o", f"{tmp}/a"], 2,
         "'part' must be a string"),
    ]  # fmt: skip


def test_bad_input_in_a_shell(tmp_path: Path, bad: Fixtures) -> None:
    cases = _cases(tmp_path, bad)
    before = listing(tmp_path)
    procs = [(args, code, words, run_subprocess(args, cwd=tmp_path)) for args, code, words in cases]
    for args, code, words, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == code, (args, proc.returncode, err)  # negative: a signal
        assert "Traceback" not in err and "Warning" not in err, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (
            args,
            err,
        )
    assert listing(tmp_path) == before


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_killed_export_is_cleaned_by_the_next_write(tmp_path: Path, bad: Fixtures) -> None:
    """SIGKILL runs no cleanup: the export's hidden temporary stays beside the target until
    the next qcompile write into the same directory removes it (its writer is dead)."""
    left: list[Path] = []
    for attempt in range(3):  # the kill must land while the project is being written
        proc = run_subprocess(["export", str(bad.qir), "--target", "fpga", "-o",
                               str(tmp_path / f"art{attempt}")])  # fmt: skip
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            left = [p for p in tmp_path.iterdir() if p.name.startswith(f".art{attempt}.qctmp-")]
            if left and any(left[0].rglob("*")):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.communicate()
        if proc.returncode == -signal.SIGKILL:
            break
    assert proc.returncode == -signal.SIGKILL and left and left[0].is_dir()
    assert not (tmp_path / f"art{attempt}").exists()  # no half-written artifact
    r = run_main(["freeze", bad.ckpt, "-o", tmp_path / "m.qir"])
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_stale_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / f".m.qir.qctmp-{HOST}-{dead}-abc.tmp").write_text("half")
    (tmp_path / f".m.qir.qctmp-{HOST}-{alive}-def.tmp").write_text("being written")
    (tmp_path / f".m.qir.qctmp-00000000-{dead}-ghi.tmp").write_text("another host's")
    (tmp_path / f".art.qctmp-{HOST}-{dead}-jkl").mkdir()
    # died between moving the old artifact aside and renaming the new one in: put it back
    (tmp_path / f".kept.qcold-{HOST}-{dead}-mno" / "kept").mkdir(parents=True)
    (tmp_path / f".kept.qcold-{HOST}-{dead}-mno" / "kept" / "manifest.json").write_text("{}")
    (tmp_path / ".hidden-by-the-user").write_text("mine")
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f".m.qir.qctmp-{HOST}-{alive}-def.tmp", f".m.qir.qctmp-00000000-{dead}-ghi.tmp",
        ".hidden-by-the-user", "kept",
    ])  # fmt: skip
    assert json.loads((tmp_path / "kept" / "manifest.json").read_text()) == {}
