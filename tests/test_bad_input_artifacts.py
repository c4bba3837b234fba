"""`qcompile simulate` of exported artifacts: an artifact whose files do not match its
manifest is refused before anything of it runs (exit 2); a forged artifact whose files match
but whose implementations disagree exits 1 and says where (issue 13, part 4)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bad_inputs import Fixtures, assert_refused, resign_artifact, run_main
from tests.conftest import NEEDS_GXX

Edit = Callable[[Path, Fixtures], None]


def _manifest(edit: Callable[[dict], None], reseal: bool = False) -> Edit:
    def apply(art: Path, bad: Fixtures) -> None:
        m = json.loads((art / "manifest.json").read_text())
        edit(m)
        (art / "manifest.json").write_text(json.dumps(m))
        if reseal:
            resign_artifact(art)

    return apply


def _file(name: str, data: Callable[[Path, Fixtures], bytes], reseal: bool = False) -> Edit:
    def apply(art: Path, bad: Fixtures) -> None:
        (art / name).write_bytes(data(art, bad))
        if reseal:
            resign_artifact(art)

    return apply


def _drop(name: str) -> Edit:
    return lambda art, bad: (art / name).unlink()


def _put(key: str, value: object) -> Callable[[dict], None]:
    return lambda m: m.__setitem__(key, value)


def _plant_outside(art: Path, bad: Fixtures) -> None:
    """The manifest points its library at a planted .so beside the artifact, hashed."""
    from qcompile.fileio import sha256_file

    shutil.copy(bad.evil / "evil.so", art.parent / "evil.so")
    m = json.loads((art / "manifest.json").read_text())
    m["library"] = "../evil.so"
    m["files"]["../evil.so"] = sha256_file(art.parent / "evil.so")
    (art / "manifest.json").write_text(json.dumps(m))


EVIL_SO = lambda art, bad: (bad.evil / "evil.so").read_bytes()  # noqa: E731
OTHER_QIR = lambda art, bad: bad.other_qir.read_bytes()  # noqa: E731

COMMON: dict[str, tuple[Edit, list[str]]] = {
    "no-manifest": (_drop("manifest.json"), ["not a qcompile artifact (no manifest.json)"]),
    "manifest-not-json": (_file("manifest.json", lambda a, b: b"{"), ["is unreadable"]),
    "manifest-a-list": (_file("manifest.json", lambda a, b: b"[]"), ["not a qcompile manifest"]),
    "target-not-text": (_manifest(_put("target", 5)), ["not a qcompile manifest"]),
    "no-file-hashes": (_manifest(lambda m: m.pop("files")), ["lists no file hashes"]),
    "hashes-not-a-map": (_manifest(_put("files", ["model.qir"])), ["lists no file hashes"]),
    "no-format": (_manifest(lambda m: m.pop("format")), ["lists no file hashes"]),
    "qir-swapped": (_file("model.qir", OTHER_QIR), ["model.qir does not match its SHA-256"]),
    "qir-truncated": (_file("model.qir", lambda a, b: b"\x08"), ["model.qir does not match"]),
    "qir-missing": (_drop("model.qir"), ["model.qir is missing"]),
    "qir-sha-wrong": (_manifest(_put("qir_sha256", "0" * 64)), ["qir_sha256 disagrees"]),
    "qir-elsewhere": (_manifest(_put("qir", "/etc/hostname")), ["field 'qir' names"]),
    "qir-not-text": (_manifest(_put("qir", 7)), ["field 'qir' names 7"]),
    "file-outside": (_manifest(lambda m: m["files"].update({"/etc/hostname": "0"})), ["outside"]),
    "file-upward": (_manifest(lambda m: m["files"].update({"../x": "0"})), ["outside it"]),
    "target-unknown": (
        _manifest(_put("target", "npu"), reseal=True),
        ["artifacts for target 'npu' are not supported"],
    ),
}
CPU: dict[str, tuple[Edit, list[str]]] = {
    "weights-truncated": (
        _file("weights.npz", lambda a, b: (a / "weights.npz").read_bytes()[:300]),
        ["weights.npz does not match its SHA-256", "re-export"],
    ),
    "weights-missing": (_drop("weights.npz"), ["weights.npz is missing"]),
    "library-planted": (_file("model.so", EVIL_SO), ["model.so does not match"]),
    "library-outside": (_plant_outside, ["names a file outside it"]),
    "library-absolute": (_manifest(_put("library", "/tmp/evil.so")), ["field 'library'"]),
    "library-unhashed": (
        _manifest(lambda m: m["files"].pop("model.so")),
        ["field 'library' names 'model.so', which is not one of its hashed files"],
    ),
    "weights-field-unhashed": (_manifest(_put("weights", "w2.npz")), ["field 'weights'"]),
}
FPGA: dict[str, tuple[Edit, list[str]]] = {
    "build-script": (
        lambda art, bad: (art / "build_lib.sh").write_text(f"touch {bad.marker}\n"),
        ["build_lib.sh does not match"],
    ),
    "firmware-edited": (
        lambda art, bad: (art / "firmware" / "myproject.cpp").write_text("int x;\n"),
        ["firmware/myproject.cpp does not match"],
    ),
    "project-name": (
        _manifest(_put("project", "p; touch x"), reseal=True),
        ["project name", "is invalid"],
    ),
}
CASES = [("cpu", k, *v) for k, v in {**COMMON, **CPU}.items()] + [
    ("fpga", k, *v) for k, v in {**COMMON, **FPGA}.items()
]


@pytest.mark.parametrize(("kind", "case", "edit", "needles"), CASES, ids=lambda v: str(v)[:24])
def test_modified_artifact_is_refused_before_it_runs(
    kind: str, case: str, edit: Edit, needles: list[str], tmp_path: Path, bad: Fixtures
) -> None:
    art = tmp_path / kind
    shutil.copytree(getattr(bad, kind), art)
    edit(art, bad)
    r = run_main(["simulate", art, "--inputs", bad.inputs])
    assert_refused(r, *needles)
    assert r.stdout == "" and not bad.marker.exists()


def test_intact_artifact_agrees(bad: Fixtures) -> None:
    r = run_main(["simulate", bad.cpu, "--inputs", bad.inputs, "--json"])
    assert r.code == 0, r.stderr
    res = json.loads(r.stdout.splitlines()[-1])
    assert res["exact"] == 1.0 and res["mismatch"] == {} and "tvm_cpu" in res["compared"]


@pytest.mark.parametrize(
    ("kind", "impl"),
    [("cpu", "tvm_cpu"), pytest.param("fpga", "fpga_csim", marks=[pytest.mark.slow, NEEDS_GXX])],
)
def test_disagreement_exits_1_and_says_where(
    kind: str, impl: str, tmp_path: Path, bad: Fixtures
) -> None:
    """Another model's .qir copied into the artifact and the manifest re-hashed to match (a
    forgery the file check cannot see): the artifact still computes the old model, so it
    disagrees with the simulator, and simulate must not report success."""
    art = tmp_path / kind
    shutil.copytree(getattr(bad, kind), art)
    shutil.copy(bad.other_qir, art / "model.qir")
    resign_artifact(art)
    r = run_main(["simulate", art, "--inputs", bad.inputs, "--json"])
    assert_refused(r, f"{impl} on ", " of 8 inputs", "(first: input ", "exact ", code=1)
    res = json.loads(r.stdout.splitlines()[-1])  # the figures are still printed
    assert res["exact"] < 1.0 and set(res["mismatch"]) == {impl}
    assert res["mismatch"][impl]["inputs"] == round((1 - res["exact"]) * 8)
