"""Bad input to `qcompile freeze`, `inspect`, `simulate` and `export`: files that are
missing, damaged, of the wrong kind or hostile; outputs that cannot be written; target
profiles with wrong values. Each is one line and leaves nothing behind (issue 13, part 2)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qcompile.checkpoint import save_checkpoint
from tests.bad_inputs import Fixtures, assert_refused, listing, run_main

Make = Callable[[Path, Fixtures], Path]


def _write(name: str, data: bytes) -> Make:
    def make(tmp: Path, bad: Fixtures) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _cut(which: str, size: int) -> Make:
    def make(tmp: Path, bad: Fixtures) -> Path:
        src = getattr(bad, which)
        (tmp / src.name).write_bytes(src.read_bytes()[:size])
        return tmp / src.name

    return make


def _ckpt_edit(edit: Callable[[dict], None]) -> Make:
    """A copy of the session's checkpoint with its payload edited (still weights-only)."""

    def make(tmp: Path, bad: Fixtures) -> Path:
        payload = torch.load(bad.ckpt, weights_only=True)
        edit(payload)
        save_checkpoint(tmp / "c.pt", {k: v for k, v in payload.items() if k != "version"})
        return tmp / "c.pt"

    return make


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(payload: dict) -> None:
        keys = path.split(".")
        d = payload
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return edit


def _zip(tmp: Path, bad: Fixtures) -> Path:
    with zipfile.ZipFile(tmp / "z.pt", "w") as z:
        z.writestr("hello.txt", "not a checkpoint")
    return tmp / "z.pt"


# Paths any file argument may be given, and what every command must say about them (the
# contents-based ones are added per kind of file below).
GIVEN: dict[str, tuple[Make, str]] = {
    "missing": (lambda tmp, bad: tmp / "missing.bin", "no such file"),
    "device": (lambda tmp, bad: Path("/dev/zero"), "not a regular file"),
    "long-name": (lambda tmp, bad: tmp / ("n" * 300), "cannot use this path"),
}
GARBAGE: dict[str, Make] = {
    "empty": _write("empty.bin", b""),
    "random": _write("random.bin", np.random.default_rng(0).bytes(4096)),
    "text": _write("text.bin", b"hello, world\n"),
}

CKPTS: dict[str, tuple[Make, list[str]]] = {
    **{k: (m, ["checkpoint", n]) for k, (m, n) in GIVEN.items()},
    **{k: (m, ["not a zip archive"]) for k, m in GARBAGE.items()},
    "directory": (lambda tmp, bad: tmp, ["is a directory"]),
    "truncated": (_cut("ckpt", 1000), ["corrupt"]),
    "half": (lambda tmp, bad: _cut("ckpt", bad.ckpt.stat().st_size // 2)(tmp, bad), ["corrupt"]),
    "a-qir": (lambda tmp, bad: bad.qir, ["not a zip archive"]),
    "a-zip": (_zip, ["corrupt"]),
    "recipe-string": (_ckpt_edit(_set("recipe", "lenet")), ["'recipe' is a str, not a dict"]),
    "recipe-model-string": (_ckpt_edit(_set("recipe.model", "x")), ["'model' must be a table"]),
    "recipe-lr-nan": (_ckpt_edit(_set("recipe.train.lr", float("nan"))), ["'lr' must be"]),
    "recipe-width": (_ckpt_edit(_set("recipe.model.width", 0.5)), ["does not fit the model"]),
    "recipe-model": (_ckpt_edit(_set("recipe.model.name", "nope")), ["unknown model 'nope'"]),
    "epoch-type": (_ckpt_edit(_set("epoch", "one")), ["'epoch' is a str, not a int"]),
    "model-type": (_ckpt_edit(_set("model", [1, 2])), ["'model' is a list, not a dict"]),
    "no-model": (_ckpt_edit(lambda p: p.pop("model")), ["lacks 'model'"]),
    "future": (_ckpt_edit(_set("format", "other")), ["not a qcompile checkpoint"]),
    "float-model": (
        _ckpt_edit(lambda p: p["recipe"]["stage"].update(wbits=32, abits=32)),
        ["does not fit the model"],
    ),
}


@pytest.mark.parametrize("case", sorted(CKPTS))
def test_freeze_bad_checkpoint(case: str, tmp_path: Path, bad: Fixtures) -> None:
    make, needles = CKPTS[case]
    ckpt = make(tmp_path, bad)
    before = listing(tmp_path)
    r = run_main(["freeze", ckpt, "-o", tmp_path / "out" / "m.qir"])
    assert_refused(r, *needles)
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    ("out", "needles"),
    [
        ("a-file/m.qir", ["a-file is a file, not a directory"]),
        ("m" * 300 + ".qir", ["longer than the 255"]),
        ("/proc/m.qir", ["/proc takes no new files"]),
        ("/sys/m.qir", ["/sys takes no new files"]),
        ("/dev/null/m.qir", ["/dev/null is a file, not a directory"]),
    ],
    ids=["parent-is-file", "name-too-long", "proc", "sys", "devnull"],
)
def test_freeze_unwritable_output(out: str, needles: list[str], tmp_path: Path, bad) -> None:
    (tmp_path / "a-file").write_text("mine")
    r = run_main(["freeze", bad.ckpt, "-o", tmp_path / out])
    assert_refused(r, *needles, "cannot write model")
    assert listing(tmp_path) == {"a-file"}


def test_freeze_output_is_a_directory(tmp_path: Path, bad: Fixtures) -> None:
    assert_refused(run_main(["freeze", bad.ckpt, "-o", tmp_path]), "is a directory")


QIRS: dict[str, tuple[Make, list[str]]] = {
    **{k: (m, ["model", n]) for k, (m, n) in GIVEN.items()},
    **{k: (m, ["not a .qir file"]) for k, m in GARBAGE.items()},
    "truncated": (_cut("qir", 500), ["truncated or corrupt"]),
    "cut-end": (lambda tmp, bad: _cut("qir", bad.qir.stat().st_size - 1)(tmp, bad), ["m.qir"]),
    "a-checkpoint": (lambda tmp, bad: bad.ckpt, ["not a .qir file"]),
    "a-npy": (lambda tmp, bad: bad.inputs, ["not a .qir file"]),
}


@pytest.mark.parametrize("command", ["inspect", "simulate", "export"])
@pytest.mark.parametrize("case", sorted(QIRS))
def test_bad_model_file(command: str, case: str, tmp_path: Path, bad: Fixtures) -> None:
    make, needles = QIRS[case]
    model = make(tmp_path, bad)
    before = listing(tmp_path)
    extra = ["--target", "fpga", "-o", tmp_path / "art"] if command == "export" else []
    assert_refused(run_main([command, model, *extra]), *needles)
    assert listing(tmp_path) == before


def _npy(name: str, array: object, **kw: object) -> Make:
    def make(tmp: Path, bad: Fixtures) -> Path:
        np.save(tmp / name, array, **kw)  # type: ignore[arg-type]
        return tmp / name

    return make


def _huge_header(tmp: Path, bad: Fixtures) -> Path:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1, 8, 8), }"
    header += " " * (118 - len(header)) + "\n"
    (tmp / "h.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                                + header.encode() + bytes(1024))  # fmt: skip
    return tmp / "h.npy"


def _npz(tmp: Path, bad: Fixtures) -> Path:
    np.savez(tmp / "a.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    return tmp / "a.npz"


def _truncated_npy(tmp: Path, bad: Fixtures) -> Path:
    (tmp / "t.npy").write_bytes(bad.inputs.read_bytes()[:300])
    return tmp / "t.npy"


X = np.zeros((2, 1, 8, 8), np.float32)
INPUTS: dict[str, tuple[Make, list[str]]] = {
    **{k: (m, ["--inputs", n]) for k, (m, n) in GIVEN.items()},
    **{k: (m, ["is not a .npy file"]) for k, m in GARBAGE.items()},
    "directory": (lambda tmp, bad: tmp, ["is a directory"]),
    "empty-array": (_npy("e.npy", np.zeros((0, 1, 8, 8), np.float32)), ["holds no inputs"]),
    "npz": (_npz, ["is an .npz archive", "'x'"]),
    "huge-header": (_huge_header, ["header claims 1000000000000 inputs", "truncated"]),
    "truncated": (_truncated_npy, ["header claims 8 inputs"]),
    "complex": (_npy("c.npy", X.astype(np.complex64)), ["holds complex numbers"]),
    "strings": (_npy("s.npy", np.full((2, 1, 8, 8), "a")), ["holds dtype <U1"]),
    "bool": (_npy("b.npy", X.astype(bool)), ["holds dtype bool"]),
    "structured": (_npy("r.npy", np.zeros((2, 1, 8, 8), [("a", "f4"), ("b", "f4")])), ["dtype"]),
    "object": (_npy("o.npy", np.array([object()] * 2), allow_pickle=True), ["dtype object"]),
    "wrong-shape": (_npy("w.npy", np.zeros((3, 2, 2), np.float32)), ["the model takes"]),
    "wrong-rank": (_npy("k.npy", np.zeros((1, 8, 8), np.float32)), ["the model takes"]),
    "scalar": (_npy("0.npy", np.float32(1)), ["the model takes"]),
    "nan": (_npy("n.npy", np.full((2, 1, 8, 8), np.nan, np.float32)), ["finite numbers"]),
    "inf": (_npy("i.npy", np.full((2, 1, 8, 8), -np.inf)), ["finite numbers"]),
    "beyond-float32": (_npy("f.npy", np.full((2, 1, 8, 8), 1e300)), ["float32's range"]),
}


@pytest.mark.parametrize("case", sorted(INPUTS))
def test_simulate_bad_inputs(case: str, tmp_path: Path, bad: Fixtures) -> None:
    make, needles = INPUTS[case]
    x = make(tmp_path, bad)
    assert_refused(run_main(["simulate", bad.qir, "--inputs", x]), *needles)


SIMULATE_FLAGS: list[tuple[list[str], list[str]]] = [
    (["--data", "nosuch"], ["unknown dataset 'nosuch'"]),
    (["--data", "mnist5k"], ["the model takes [1, 8, 8]"]),
    (["--data", "cifar10"], ["cifar10 needs --data-dir"]),
    (["--data", "imagefolder"], ["imagefolder needs --data-dir"]),
    (["--data", "digits", "--inputs", "{inputs}"], ["not both"]),
    (["--n", "0"], ["Invalid value for '--n'"]),
    (["--n", "-5"], ["Invalid value for '--n'"]),
    (["--n", "many"], ["Invalid value for '--n'"]),
    (["--model", "lenet"], ["--model only applies with --checkpoint"]),
    (["--checkpoint", "{tmp}/missing.pt"], ["--checkpoint", "no such file"]),
    (["--checkpoint", "{inputs}"], ["not the checkpoint this model was frozen from"]),
    (["--checkpoint", "/dev/zero"], ["not a regular file"]),
    (["--checkpoint", "{tmp}/" + "c" * 300], ["cannot use this path"]),
    (["--json", "--data", "nosuch"], ["unknown dataset"]),
]


@pytest.mark.parametrize(("flags", "needles"), SIMULATE_FLAGS, ids=lambda v: str(v)[:40])
def test_simulate_bad_flags(flags, needles, tmp_path: Path, bad: Fixtures) -> None:
    args = [f.format(tmp=tmp_path, inputs=bad.inputs) for f in flags]
    r = run_main(["simulate", bad.qir, *args])
    assert_refused(r, *needles)
    assert r.stdout == ""  # nothing was compared, so no figures


def test_checkpoint_of_another_model_is_refused(tmp_path: Path, bad: Fixtures) -> None:
    """other.qir was not frozen from a checkpoint: no hash to compare with."""
    r = run_main(["simulate", bad.other_qir, "--checkpoint", bad.ckpt])
    assert_refused(r, "records no checkpoint hash", "re-freeze")


def test_fake_quant_only_with_the_frozen_checkpoint(bad: Fixtures) -> None:
    """The right checkpoint, named by the user, gives the fake-quant figure; without it the
    figure is absent (the checkpoint path inside the .qir is not followed)."""
    import json

    r = run_main(["simulate", bad.qir, "--n", "50", "--checkpoint", bad.ckpt, "--json"])
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["acc_fakequant"] is not None
    r = run_main(["simulate", bad.qir, "--n", "50", "--json"])
    assert r.code == 0 and json.loads(r.stdout.splitlines()[-1])["acc_fakequant"] is None


def test_longest_name_the_filesystem_allows_is_written(tmp_path: Path, bad: Fixtures) -> None:
    """A 255-byte name is valid: the hidden temporary beside it must not be what fails."""
    out = tmp_path / ("m" * 251 + ".qir")
    r = run_main(["freeze", bad.ckpt, "-o", out])
    assert r.code == 0, r.stderr
    assert listing(tmp_path) == {out.name}
