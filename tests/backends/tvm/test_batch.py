"""The image-by-image function: each loop nest of the graph a function of its own."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from qcompile.passes import run_pipeline
from tests.backends.helpers import conv_geometries
from tests.backends.tvm.test_tvm_vector import TARGETS, _run
from tests.conftest import NEEDS_ARM

NM = shutil.which("nm")


@pytest.mark.skipif(NM is None, reason="needs nm (binutils)")
@pytest.mark.parametrize("target", TARGETS[:2])
def test_each_nest_but_the_last_is_outlined_and_the_model_stays_exact(tmp_path, target):
    graph = run_pipeline(conv_geometries("uniform"))
    _run(graph, target, tmp_path / "g", (2, 3))
    text = subprocess.run([NM, str(tmp_path / "g" / "model.so")], capture_output=True, text=True)
    nests = re.findall(r"\bnest(\d+)_(\w+)_compute_\b", text.stdout)
    names = {name for _, name in nests}
    # every conv's GEMM runs in a function of its own (LLVM allocates its registers alone)
    assert {f"{c}_acc_gemm" for c in ("s2", "d2", "k53", "pw")} <= names
    numbers = sorted(int(k) for k, _ in nests)
    assert numbers == list(range(len(numbers)))  # one per nest, the last one inline
    assert "output_i64" not in names


@NEEDS_ARM
@pytest.mark.skipif(NM is None, reason="needs nm (binutils)")
def test_aarch64_objects_keep_the_image_in_one_function(tmp_path):
    # aarch64 has 32 vector registers, and bench.arm_insns measured it with one function
    graph = run_pipeline(conv_geometries("uniform"))
    _run(graph, "rpi5", tmp_path / "g", (2,))
    text = subprocess.run([NM, str(tmp_path / "g" / "model.o")], capture_output=True, text=True)
    assert "main_compute_" in text.stdout and "nest0_" not in text.stdout
