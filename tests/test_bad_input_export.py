"""Bad input to `qcompile export`: target profiles with missing keys or values of the wrong
type, and output paths that cannot or must not be written (issue 13, part 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs import Fixtures, assert_refused, listing, run_main

FPGA = 'kind = "fpga"\npart = "xc7z020clg400-1"\n'
CPU = 'kind = "cpu"\n'

# (profile text, words the error must contain): each written to TMP/t.toml.
PROFILES = [
    ('kind = "fpga"', ["missing key 'part'", 'part = "xc7z020clg400-1"']),
    ('kind = "fpga"\npart = 5', ["'part' must be a string, got 5"]),
    ('kind = "fpga"\npart = ""', ["part '' must be 1-64 letters"]),
    ('kind = "fpga"\npart = "xc7 z020"', ["part 'xc7 z020' must be"]),
    ('kind = "fpga"\npart = "x\\"; exec rm -rf /; \\""', ["part", "must be 1-64 letters"]),
    ('kind = "fpga"\npart = ["a"]', ["'part' must be a string"]),
    (FPGA + "clock_period = -1", ["clock_period must be a finite number > 0"]),
    (FPGA + "clock_period = 0", ["clock_period must be a finite number > 0"]),
    (FPGA + "clock_period = nan", ["clock_period must be a finite number > 0"]),
    (FPGA + "clock_period = inf", ["clock_period must be a finite number > 0"]),
    (FPGA + 'clock_period = "fast"', ["'clock_period' must be a number"]),
    (FPGA + "clock_period = true", ["'clock_period' must be a number"]),
    (FPGA + "reuse_factor = 0", ['reuse_factor must be an integer >= 1 or "auto", got 0']),
    (FPGA + "reuse_factor = 1.5", ["'reuse_factor' must be an integer or \"auto\", got 1.5"]),
    (FPGA + "reuse_factor = true", ["'reuse_factor' must be an integer or \"auto\", got True"]),
    (FPGA + 'reuse_factor = "4"', ["reuse_factor must be an integer >= 1 or \"auto\", got '4'"]),
    (FPGA + 'reuse_factor = "Auto"', ['reuse_factor must be an integer >= 1 or "auto"']),
    (FPGA + 'backend = "Quartus"', ["backend must be one of Vitis, Vivado"]),
    (FPGA + "backend = 1", ["'backend' must be a string"]),
    (FPGA + "strategy = 5", ["'strategy' must be a string"]),
    (FPGA + 'strategy = "Fast"', ["strategy must be one of"]),
    (FPGA + 'io_type = "io_magic"', ["io_type must be one of"]),
    (FPGA + 'kind2 = "x"', ["unknown key 'kind2'"]),
    (FPGA + "clock = 5", ["unknown key 'clock'", "did you mean 'clock_period'"]),
    (FPGA + 'name = "x"', ["unknown key 'name'"]),
    ('part = "x"', ["kind None is not supported", 'kind = "fpga"']),
    ('kind = 5\npart = "x"', ["kind 5 is not supported"]),
    ('kind = "npu"', ["kind 'npu' is not supported"]),
    ('kind = ["fpga"]', ["kind ['fpga'] is not supported"]),
    (CPU + 'mattr = "+neon"', ["'mattr' must be a list of strings"]),
    (CPU + "mattr = [5]", ["'mattr' must be a list of strings"]),
    (CPU + 'mattr = ["neon"]', ['mattr entries look like "+neon"']),
    (CPU + 'mattr = ["+ne on"]', ['mattr entries look like "+neon"']),
    (CPU + "mcpu = 5", ["'mcpu' must be a string"]),
    (CPU + 'mcpu = "cortex a72"', ["mcpu 'cortex a72' must be"]),
    (CPU + 'mtriple = "aarch64 linux"', ["mtriple 'aarch64 linux' must be"]),
    (CPU + "mtriple = true", ["'mtriple' must be a string"]),
    (CPU + 'part = "x"', ["unknown key 'part'"]),
    ('kind = "gpu"\narch = "90"', ["arch must look like sm_90"]),
    ('kind = "gpu"\narch = 90', ["'arch' must be a string"]),
    ('kind = "gpu"\narch = "sm_٩٠"', ["arch must look like sm_90"]),
    ('kind = "gpu"\narch = "sm_"', ["arch must look like sm_90"]),
    ("kind = ", ["target file", "t.toml"]),
    ("[fpga]\npart = 1", ["kind None is not supported"]),
    ('kind = "fpga"\n' + "part = '" + "p" * 5000 + "'", ["must be 1-64 letters", "more char"]),
]


@pytest.mark.parametrize(("text", "needles"), PROFILES, ids=lambda v: str(v)[:40])
def test_bad_target_profile(text: str, needles: list[str], tmp_path: Path, bad: Fixtures) -> None:
    (tmp_path / "t.toml").write_text(text + "\n")
    r = run_main(["export", bad.qir, "--target", tmp_path / "t.toml", "-o", tmp_path / "art"])
    assert_refused(r, *needles, "t.toml")
    assert listing(tmp_path) == {"t.toml"}


@pytest.mark.parametrize(
    ("target", "needles"),
    [
        ("zcu105", ["unknown target 'zcu105'", "did you mean 'zcu104'"]),
        ("../targets/host", ["unknown target '../targets/host'"]),
        ("/etc/passwd", ["unknown target '/etc/passwd'"]),
        ("README", ["unknown target 'README'"]),
        ("missing.toml", ["--target missing.toml: no such file"]),
        ("/dev/zero/x.toml", ["--target /dev/zero/x.toml"]),
        ("t" * 300 + ".toml", ["cannot use this path"]),
        ("", ["unknown target ''"]),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_target_name(target: str, needles: list[str], tmp_path: Path, bad: Fixtures) -> None:
    r = run_main(["export", bad.qir, "--target", target, "-o", tmp_path / "art"])
    assert_refused(r, *needles)
    assert listing(tmp_path) == set()


def test_profile_not_utf8(tmp_path: Path, bad: Fixtures) -> None:
    (tmp_path / "t.toml").write_bytes(b'kind = "fpga"\npart = "\xff"\n')
    r = run_main(["export", bad.qir, "--target", tmp_path / "t.toml", "-o", tmp_path / "a"])
    assert_refused(r, "target file", "t.toml")


# (-o relative to the case's directory, extra flags, words). The case directory holds
# a-file, mine/keep.txt (a user's directory) and an empty directory.
OUTPUTS = [
    ("a-file/art", [], ["a-file is a file, not a directory"]),
    ("a" * 300, [], ["longer than the 255 its filesystem allows"]),
    ("sub/" + "a" * 300 + "/art", [], ["longer than the 255"]),
    ("/proc/qcompile-art", [], ["/proc takes no new files"]),
    ("/sys/qcompile-art", [], ["/sys takes no new files"]),
    ("mine", [], ["already exists; pass --force"]),
    ("mine", ["--force"], ["is not a qcompile artifact", "--force replaces only"]),
    ("a-file", [], ["is a file"]),
    (".", ["--force"], ["is the current directory or one of its parents"]),
    ("..", ["--force"], ["is the current directory or one of its parents"]),
    ("/", ["--force"], ["is the current directory or one of its parents"]),
    ("mine/..", ["--force"], ["is the current directory or one of its parents"]),
]


@pytest.mark.parametrize(("out", "flags", "needles"), OUTPUTS, ids=lambda v: str(v)[:30])
@pytest.mark.parametrize("target", ["fpga", "cpu"])
def test_unwritable_artifact_output(
    target: str, out: str, flags: list[str], needles: list[str], tmp_path: Path, bad, monkeypatch
) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    r = run_main(["export", bad.qir, "--target", target, "-o", out, *flags])
    assert_refused(r, *needles)
    assert listing(tmp_path) == before  # no temporary, no `..old.*` directory


def test_force_replaces_an_empty_directory(tmp_path: Path, bad: Fixtures) -> None:
    (tmp_path / "empty").mkdir()
    r = run_main(["export", bad.qir, "--target", "fpga", "-o", tmp_path / "empty", "--force"])
    assert r.code == 0, r.stderr
    assert (tmp_path / "empty" / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
