"""A cpu profile's mtriple, mcpu and mattr are checked with LLVM before TVM sees them: each
mistake is one line naming the file and the field, and no artifact is written (an unknown
triple used to crash the export; an unknown CPU was only logged and built for generic)."""

from __future__ import annotations

import pytest

from qcompile.backends.targets import load_target
from qcompile.backends.tvm.llvm_check import check_llvm_target
from qcompile.errors import QCompileError
from qcompile.ir import qir
from tests.backends.helpers import zoo_graph
from tests.conftest import run_cli

PROFILES = ["cpu", "x86-64-v3", "x86-64-v4", "rpi4", "rpi5", "jetson-orin"]


@pytest.mark.parametrize("name", PROFILES)
def test_shipped_cpu_profiles_pass(name):
    check_llvm_target(load_target(name))


def test_bad_fields_are_one_line_errors(tmp_path):
    model = tmp_path / "mlp.qir"
    qir.save(zoo_graph("mlp", (1, 8, 8), {}), model)
    cases = {
        "triple": ('mtriple = "nosuch-triple"', "mtriple 'nosuch-triple' is not a target triple"),
        "cpu": ('mcpu = "nosuchcpu"', "mcpu 'nosuchcpu' is not a CPU LLVM knows"),
        "typo": ('mcpu = "skylake-avx51"', "(did you mean 'skylake-avx512'?)"),
        "feature": ('mtriple = "x86_64-linux-gnu"\nmattr = ["+avx2", "+avx513f"]', "'+avx513f'"),
        "arm_feature": ('mtriple = "aarch64-linux-gnu"\nmattr = ["+avx2"]', "'+avx2' is not"),
        "riscv": ('mtriple = "riscv64-linux-gnu"', "qcompile builds for x86_64 and aarch64"),
    }
    for name, (fields, msg) in cases.items():
        toml = tmp_path / f"{name}.toml"
        toml.write_text(f'kind = "cpu"\n{fields}\n')
        out = tmp_path / f"out-{name}"
        r = run_cli("export", str(model), "--target", str(toml), "-o", str(out))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (name, r.stderr)
        assert lines[0].startswith(f"error: target file {toml}: ") and msg in lines[0], name
        assert not out.exists()


def test_in_process_check_names_the_field():
    from qcompile.backends.targets import CpuTarget

    with pytest.raises(QCompileError, match=r"^target file t.toml: mtriple 'nosuch-triple'"):
        check_llvm_target(CpuTarget("t", mtriple="nosuch-triple", path="t.toml"))
