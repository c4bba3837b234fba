"""The CPU's real features, the host target built from them, and artifacts refused where this
CPU lacks what their code needs (a CPU without AVX-512 is simulated with
$QCOMPILE_CPU_FEATURES, so these run on any x86-64 machine)."""

from __future__ import annotations

import numpy as np
import pytest

from qcompile.backends import cpu_features as cf
from qcompile.backends.artifact import read_manifest
from qcompile.backends.registry import deploy
from qcompile.backends.targets import load_target
from qcompile.backends.tvm import TvmRunner
from qcompile.errors import QCompileError
from qcompile.sim import Simulator
from tests.backends.helpers import random_inputs, zoo_graph
from tests.bad_inputs import run_main
from tests.conftest import NEEDS_GXX

pytestmark = pytest.mark.skipif(not cf.is_x86_64(), reason="x86-64 features: this is not x86-64")

# /proc/cpuinfo of a 2-core AMD EPYC (Zen 4) cloud VM whose hypervisor masks AVX-512: LLVM's
# host CPU name there is znver4, which promises AVX-512.
EPYC_VM = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
    "clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc "
    "rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 "
    "pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm "
    "cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch topoext fsgsbase bmi1 avx2 "
    "smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 "
    "xsaves clzero rdpru wbnoinvd arat umip pku ospke vaes vpclmulqdq rdpid fsrm\n"
)
AVX2_VM = ",".join(sorted(cf.os_features(EPYC_VM) or ()))


def test_levels_are_llvms():
    import tvm
    from tvm.target import codegen

    for level, feats in cf.LEVELS.items():
        t = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": level})
        assert set(codegen.llvm_get_cpu_features(t)) & cf.KNOWN == feats, level


def test_os_features_of_a_vm_without_avx512():
    feats = cf.os_features(EPYC_VM)
    assert feats is not None and cf.level_of(feats) == "x86-64-v3"
    assert {"bmi", "lzcnt", "sse3", "sahf", "pclmul", "sha", "prfchw"} <= feats  # renamed
    assert not any(f.startswith("avx512") for f in feats)
    assert cf.os_features("processor\t: 0\n") is None


def test_override_replaces_what_the_os_reports(monkeypatch):
    monkeypatch.setenv(cf.ENV, "x86-64-v3 avxvnni")
    assert cf.running_features() == cf.LEVELS["x86-64-v3"] | {"avxvnni"}
    monkeypatch.setenv(cf.ENV, "avx2,avx-512")
    with pytest.raises(QCompileError, match=r"QCOMPILE_CPU_FEATURES: unknown feature 'avx-512'"):
        cf.running_features()


def test_host_target_is_a_level_plus_the_real_features():
    from tvm.target import codegen

    host = load_target("cpu").tvm_target()
    assert host["mcpu"] in cf.LEVELS and host["mcpu"] != str(codegen.llvm_get_system_cpu())
    real = cf.running_features()  # /proc/cpuinfo, or $QCOMPILE_CPU_FEATURES if set
    assert cf.target_isa(host) <= real
    assert cf.level_of(real) == host["mcpu"]  # the highest level the CPU reaches


def test_host_target_on_a_vm_without_avx512(monkeypatch):
    monkeypatch.setenv(cf.ENV, AVX2_VM)
    host = load_target("cpu").tvm_target()
    assert host["mcpu"] == "x86-64-v3"
    assert cf.target_isa(host) <= cf.os_features(EPYC_VM)
    assert not any(f.startswith("avx512") for f in cf.target_isa(host))


@pytest.fixture(scope="module")
def levels(tmp_path_factory):
    """A small model exported for x86-64-v3 and x86-64-v4, and inputs on disk."""
    root = tmp_path_factory.mktemp("levels")
    graph = zoo_graph("mlp", (1, 8, 8), {})
    for level in ("x86-64-v3", "x86-64-v4"):
        deploy(graph, load_target(level), root / level)
    np.save(root / "x.npy", np.random.default_rng(0).normal(size=(8, 1, 8, 8)).astype("f4"))
    return root, graph


@NEEDS_GXX
def test_manifests_record_the_level_features(levels):
    root, _ = levels
    for level in ("x86-64-v3", "x86-64-v4"):
        assert read_manifest(root / level)["isa_features"] == sorted(cf.LEVELS[level])


@NEEDS_GXX
def test_v4_artifact_is_refused_on_a_cpu_without_avx512(levels, monkeypatch):
    root, graph = levels
    monkeypatch.setenv(cf.ENV, AVX2_VM)
    with pytest.raises(QCompileError, match="avx512bw"):
        TvmRunner(root / "x86-64-v4", graph, read_manifest(root / "x86-64-v4"))
    r = run_main(["simulate", str(root / "x86-64-v4"), "--inputs", str(root / "x.npy")])
    lines = r.stderr.strip().splitlines()
    assert r.code == 2 and len(lines) == 1, r.stderr
    assert lines[0] == (
        f"error: {root / 'x86-64-v4'} needs avx512bw, avx512cd, avx512dq, avx512f, avx512vl, "
        "which this CPU lacks (CPU features from $QCOMPILE_CPU_FEATURES): export it with "
        "--target x86-64-v3 or --target cpu on this machine"
    )


@NEEDS_GXX
def test_v3_artifact_runs_exactly_on_a_cpu_without_avx512(levels, monkeypatch):
    root, graph = levels
    monkeypatch.setenv(cf.ENV, AVX2_VM)
    x = random_inputs(graph, 64)
    got = TvmRunner(root / "x86-64-v3", graph, read_manifest(root / "x86-64-v3"))(x)
    assert np.array_equal(got, Simulator(graph).run(x)[graph.outputs[0]])


@pytest.mark.skipif(
    not cf.LEVELS["x86-64-v4"] <= cf.running_features(), reason="this CPU lacks AVX-512"
)
@NEEDS_GXX
def test_v4_artifact_runs_exactly_where_avx512_is(levels):
    root, graph = levels
    x = random_inputs(graph, 64)
    got = TvmRunner(root / "x86-64-v4", graph, read_manifest(root / "x86-64-v4"))(x)
    assert np.array_equal(got, Simulator(graph).run(x)[graph.outputs[0]])
