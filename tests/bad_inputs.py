"""Helpers for the bad-input tables: the CLI run in-process, the checks every bad input must
pass, and the small models, checkpoints and artifacts they start from (built once a session
by ``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from qcompile.cli import main

MARKER = "PLANTED_CODE_RAN"


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def run_main(args: Iterable[str]) -> Outcome:
    """``qcompile ARGS`` in this process: the exit status main() gives, and what it printed.
    Any exception that escapes main() is a traceback a user would see: it fails the test."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_refused(r: Outcome, *needles: str, code: int = 2) -> None:
    """Non-zero exit ``code``, exactly one line on stderr (a click usage error may keep its
    block), no traceback, and each needle in that line."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.code == code, (r.code, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    if lines and lines[0].startswith("Usage:"):
        text = r.stderr  # click's own usage block
    else:
        assert len(lines) == 1, r.stderr
        text = lines[0]
    for n in needles:
        assert n in text, (n, text)


def listing(directory: Path) -> set[str]:
    """Every path under ``directory`` (hidden ones too), relative."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def run_subprocess(args: list[str], cwd: Path | None = None) -> subprocess.Popen:
    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "qcompile", *args], cwd=cwd or ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@dataclass
class Fixtures:
    """Paths of the session's small inputs (read-only for the tests)."""

    root: Path
    ckpt: Path  # lenet on digits, W4A4, one epoch
    qir: Path  # its frozen model
    inputs: Path  # 8 digits images as a .npy
    cpu: Path  # the model exported for this CPU (TVM)
    fpga: Path  # the model exported for the pynq-z2 (hls4ml project)
    other_qir: Path  # the same architecture with other weights
    evil: Path  # a directory of planted code: evil.py, a cifar10 dir of pickles, evil.so
    marker: Path  # what any planted code creates when it runs
    extra: dict[str, Path] = field(default_factory=dict)


def resign_artifact(art: Path) -> None:
    """Recompute an artifact's manifest hashes after a deliberate edit (a forged artifact)."""
    import hashlib

    from qcompile.backends.artifact import seal

    m = json.loads((art / "manifest.json").read_text())
    m["qir_sha256"] = hashlib.sha256((art / m["qir"]).read_bytes()).hexdigest()
    (art / "manifest.json").write_text(json.dumps(m))
    seal(art)


Setup = Callable[[Path, Fixtures], None]


EVIL_PY = """
from pathlib import Path
Path({marker!r}).write_text("imported")
def make(in_shape, num_classes):
    Path({marker!r}).write_text("called")
    raise SystemExit("planted factory ran")
"""
EVIL_C = """
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {{
    FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("loaded", f); fclose(f); }}
}}
int main_entry(void) {{ return 0; }}
"""


class Planted:
    """Pickles into a call that creates the marker: what a hostile pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (os.mkdir, (self.marker,))


def build_fixtures(root: Path) -> Fixtures:
    """Train, freeze and export the small model once; plant the hostile files."""
    import shutil

    import numpy as np
    import pytest
    import torch

    from qcompile.backends.registry import deploy
    from qcompile.backends.targets import load_target
    from qcompile.data import load_dataset
    from qcompile.freeze import freeze_checkpoint, freeze_model
    from qcompile.ir import qir
    from qcompile.recipe import load_recipe
    from qcompile.stages import quantize
    from qcompile.train import train
    from qcompile.zoo import build_model

    if not any(shutil.which(cc) for cc in ("g++", "gcc", "c++", "cc", "clang")):
        pytest.skip("needs g++ to link the cpu artifact (apt-get install g++; `make test` does)")
    recipe = load_recipe(None, {"model.name": "lenet", "data.name": "digits", "train.epochs": 1})
    train(recipe, root / "run", progress=False, log=lambda m: None)
    ckpt = root / "run" / "checkpoint.pt"
    graph = freeze_checkpoint(ckpt)
    qir.save(graph, root / "m.qir")
    np.save(root / "x.npy", load_dataset("digits").test_x[:8].numpy())
    deploy(graph, load_target("cpu"), root / "cpu")
    deploy(graph, load_target("fpga"), root / "fpga")
    torch.manual_seed(1)
    q = quantize(build_model("lenet", (1, 8, 8), 10), wbits=4, abits=4)
    q.train()
    q(torch.randn(8, 1, 8, 8))
    qir.save(freeze_model(q.eval(), (1, 8, 8), "lenet", {"data": "digits"}), root / "other.qir")

    evil, marker = root / "evil", root / MARKER
    (evil / "cifar").mkdir(parents=True)
    (evil / "evil.py").write_text(EVIL_PY.format(marker=str(marker)))
    import pickle

    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        (evil / "cifar" / name).write_bytes(pickle.dumps(Planted(marker)))
    if shutil.which("gcc"):
        (evil / "evil.c").write_text(EVIL_C.format(marker=str(marker)))
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(evil / "evil.so"), str(evil / "evil.c")],
            check=True, capture_output=True,
        )  # fmt: skip
    return Fixtures(root, ckpt, root / "m.qir", root / "x.npy", root / "cpu", root / "fpga",
                    root / "other.qir", evil, marker)  # fmt: skip
