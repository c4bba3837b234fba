"""Bad input to `qcompile train`: flags and recipe files a user gets wrong. Each is refused
before anything is trained or written, as one line (issue 13's table, part 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs import assert_refused, listing, run_main

# (flags, words the one error line must contain); run as `train --epochs 1 --out TMP/o FLAGS`.
FLAGS = [
    (["--lr", "nan"], ["'lr' must be a finite number"]),
    (["--lr", "inf"], ["'lr' must be a finite number"]),
    (["--lr", "-inf"], ["'lr' must be a finite number"]),
    (["--lr", "0"], ["lr must be a finite number > 0"]),
    (["--lr", "-0.1"], ["lr must be a finite number > 0"]),
    (["--lr", "fast"], ["Invalid value for '--lr'"]),
    (["--epochs", "0"], ["epochs must be >= 1"]),
    (["--epochs", "-3"], ["epochs must be >= 1"]),
    (["--epochs", "1.5"], ["Invalid value for '--epochs'"]),
    (["--batch-size", "1"], ["batch_size must be >= 2"]),
    (["--batch-size", "0"], ["batch_size must be >= 2"]),
    (["--seed", "-1"], ["seed must be 0.."]),
    (["--seed", str(2**64)], ["seed must be 0.."]),
    (["--seed", str(10**30)], ["seed must be 0.."]),
    (["--wbits", "0"], ["wbits must be 1..8 or 32"]),
    (["--wbits", "9"], ["wbits must be 1..8 or 32"]),
    (["--wbits", "-4"], ["wbits must be 1..8 or 32"]),
    (["--wbits", str(10**30)], ["wbits must be 1..8 or 32"]),
    (["--abits", "33"], ["abits must be 1..8 or 32"]),
    (["--method", "sdq", "--target-bits", "nan"], ["target_bits"]),
    (["--method", "sdq", "--target-bits", "inf"], ["target_bits"]),
    (["--method", "ddq", "--target-bits", "0.5"], ["target_bits must be 1..8"]),
    (["--method", "dmbq", "--target-bits", "9"], ["target_bits must be 1..8"]),
    (["--model", "lenett"], ["unknown model 'lenett'", "did you mean 'lenet'"]),
    (["--model", "x" * 5000], ["unknown model", "more characters"]),
    (["--model", "nofile.py:make"], ["no such file nofile.py"]),
    (["--model", "a\nb"], ["unknown model", "a\\nb"]),
    (["--data", "mnist"], ["unknown dataset 'mnist'"]),
    (["--data", "cifar10"], ["cifar10 needs --data-dir"]),
    (["--data", "cifar10", "--data-dir", "/nonexistent"], ["data_batch_1"]),
    (["--data", "cifar10", "--data-dir", "d" * 300], ["cifar10"]),
    (["--data", "imagefolder"], ["imagefolder needs --data-dir"]),
    (["--data", "imagefolder", "--data-dir", "/nonexistent"], ["not a directory"]),
    (["--method", "magic"], ["unknown method 'magic'"]),
    (["--method", ""], ["unknown method ''"]),
    (["--unknown-flag"], ["No such option"]),
]


@pytest.mark.parametrize(("flags", "needles"), FLAGS, ids=lambda v: str(v)[:40])
def test_bad_flags(flags: list[str], needles: list[str], tmp_path: Path) -> None:
    r = run_main(["train", "--epochs", "1", "--out", tmp_path / "o", *flags])
    assert_refused(r, *needles)
    assert listing(tmp_path) == set()


# (recipe text, words); the recipe is the only argument besides --out.
RECIPES = [
    # [train]: every number finite and in range
    ("[train]\nlr = nan", ["'lr' must be a finite number"]),
    ("[train]\nlr = inf", ["'lr' must be a finite number"]),
    ("[train]\nlr = -inf", ["'lr' must be a finite number"]),
    ("[train]\nlr = 0", ["lr must be a finite number > 0"]),
    ("[train]\nlr = 1e400", ["'lr' must be a finite number"]),
    ('[train]\noptimizer = "sgd"\nmomentum = -3.0', ["momentum must be in [0, 1)"]),
    ("[train]\nmomentum = 1.0", ["momentum must be in [0, 1)"]),
    ("[train]\nmomentum = nan", ["'momentum' must be a finite number"]),
    ("[train]\nweight_decay = -1", ["weight_decay must be a finite number >= 0"]),
    ("[train]\nweight_decay = inf", ["'weight_decay' must be a finite number"]),
    ("[train]\ngamma = 0", ["gamma must be a finite number > 0"]),
    ("[train]\ngamma = -0.1", ["gamma must be a finite number > 0"]),
    ("[train]\nmilestones = [nan]", ["'milestones' must be"]),
    ("[train]\nmilestones = [-1]", ["milestones must be finite numbers > 0"]),
    ("[train]\nmilestones = 0.5", ["'milestones' must be a list"]),
    ("[train]\nseed = -1", ["seed must be 0.."]),
    ("[train]\nepochs = 0", ["epochs must be >= 1"]),
    ('[train]\nepochs = "ten"', ["'epochs' must be an integer"]),
    ("[train]\nepochs = true", ["'epochs' must be an integer"]),
    ("[train]\nbatch_size = 1", ["batch_size must be >= 2"]),
    ('[train]\noptimizer = "adamw"', ["optimizer must be one of"]),
    ('[train]\nschedule = "linear"', ["schedule must be one of"]),
    ("[train]\nepochz = 3", ["unknown key 'epochz'", "did you mean 'epochs'"]),
    # [model]: architecture options are checked, never clamped
    ("[model]\nwidth = -1", ["width must be a finite number > 0"]),
    ("[model]\nwidth = 0", ["width must be a finite number > 0"]),
    ("[model]\nwidth = nan", ["width must be a finite number > 0"]),
    ("[model]\nwidth = inf", ["width must be a finite number > 0"]),
    ("[model]\nwidth = 1e-9", ["leaves lenet's 6-channel layer with none"]),
    ("[model]\nwidth = 1e9", ["(at most 65536)"]),
    ('[model]\nwidth = "wide"', ["width must be a finite number > 0"]),
    ("[model]\nwidth = true", ["width must be a finite number > 0"]),
    ('[model]\nname = "resnet20"\nwidth = -0.5', ["width must be a finite number > 0"]),
    ('[model]\nname = "resnet20"\nwidth = 0.001', ["leaves resnet20's"]),
    ('[model]\nname = "vgg_small"\nwidth = 0', ["width must be a finite number > 0"]),
    ('[model]\nname = "mobilenetv2"\nwidth = -2', ["width must be a finite number > 0"]),
    ('[model]\nname = "mobilenetv2"\nwidth = 1e6', ["too large"]),
    ('[model]\nname = "resnet18"\nwidth = nan', ["width must be a finite number > 0"]),
    ('[model]\nname = "mlp"\nhidden = [-5]', ["hidden sizes must be integers 1..65536"]),
    ('[model]\nname = "mlp"\nhidden = [0]', ["hidden sizes must be integers 1..65536"]),
    ('[model]\nname = "mlp"\nhidden = [10000000000]', ["hidden sizes must be integers"]),
    ('[model]\nname = "mlp"\nhidden = [1.5]', ["hidden sizes must be integers"]),
    ('[model]\nname = "mlp"\nhidden = 5', ["hidden must be a list of integers"]),
    ('[model]\nname = "mlp"\nhidden = "wide"', ["hidden must be a list of integers"]),
    ("[model]\nname = 5", ["'name' must be a string"]),
    ('[model]\nname = "lenet"\ndepth = 3', ["model 'lenet' has no option 'depth'"]),
    (f'[model]\nname = "{"m" * 5000}"', ["unknown model", "more characters"]),
    # [data]
    ('[data]\nname = "digits"\nimage_size = 0', ["image_size must be 1..4096"]),
    ("[data]\nimage_size = 100000", ["image_size must be 1..4096"]),
    ("[data]\ndir = 5", ["'dir' must be a string"]),
    ('[data]\nname = "imagefolder"', ["imagefolder needs --data-dir"]),
    ('[data]\nname = "nope"', ["unknown dataset 'nope'"]),
    # [stage]: the shared options and each method's, none NaN or infinite
    ("[stage]\nwbits = 0", ["wbits must be 1..8 or 32"]),
    ("[stage]\nabits = -1", ["abits must be 1..8 or 32"]),
    ("[stage]\ninput_bits = 1", ["input_bits must be 2..8"]),
    ("[stage]\npact_init = nan", ["'pact_init' must be a finite number"]),
    ("[stage]\npact_init = -1", ["pact_init must be positive"]),
    ('[stage]\nweight_quant = "magic"', ["weight_quant"]),
    ('[stage]\nmethod = "dqa"\nt0 = nan', ["'t0' must be a finite number"]),
    ('[stage]\nmethod = "dqa"\nlam = inf', ["'lam' must be a finite number"]),
    ('[stage]\nmethod = "dqa"\nt_end = 0', ["need 0 < t_end <= t0"]),
    ('[stage]\nmethod = "dqa"\npenalty = [nan]', ["'penalty' must be"]),
    ('[stage]\nmethod = "br"\nomega_growth = 0.5', ["omega_growth must be >= 1"]),
    ('[stage]\nmethod = "sdq"\ntarget_bits = nan', ["'target_bits' must be a finite number"]),
    ('[stage]\nmethod = "ddq"\nlam = -1', ["lam must be >= 0"]),
    ('[stage]\nmethod = "dmbq"\nmomentum = 2', ["momentum must be in [0, 1)"]),
    ('[stage]\nmethod = "dmbq"\nwbits = 8', ["wbits must be 1..4"]),
    ("[stage]\nmethod = 5", ["'method' must be a string"]),
    ('[stage]\nmethod = "nope"', ["unknown method 'nope'"]),
    ("[stage]\nwbit = 2", ["unknown key 'wbit'", "did you mean 'wbits'"]),
    # the file's structure
    ('x = "lenet"', ["unknown key 'x' outside any table"]),
    ("epochs = 3", ["key 'epochs' is outside any table; put it under [train]"]),
    ("wbits = 2", ["put it under [stage]"]),
    ('model = "lenet"', ["'model' must be a table"]),
    ("[modle]\nname = 'lenet'", ["unknown table [modle]", "did you mean 'model'"]),
    ('"lenet"', ["not valid TOML"]),
    ("[train\nepochs = 1", ["not valid TOML"]),
    ("[model.name]\nx = 1", ["'name' must be a string"]),
]


@pytest.mark.parametrize(("text", "needles"), RECIPES, ids=lambda v: str(v)[:40])
def test_bad_recipe(text: str, needles: list[str], tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(text + "\n")
    r = run_main(["train", recipe, "--out", tmp_path / "o"])
    assert_refused(r, *needles)
    # The recipe's file is named, except where the model or the data is built (the message
    # names the model and its option, or the dataset and what it needs, instead).
    built = ("error: model '", "error: imagefolder", "error: cifar10")
    assert "r.toml" in r.stderr or r.stderr.startswith(built), r.stderr
    assert listing(tmp_path) == {"r.toml"}


def _bytes_case(tmp: Path) -> Path:
    p = tmp / "r.toml"
    p.write_bytes(b"[train]\nepochs = \xff\xfe\n")
    return p


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (_bytes_case, ["not valid TOML"]),
        (lambda tmp: tmp / "missing.toml", ["no such file"]),
        (lambda tmp: tmp / ("n" * 300 + ".toml"), ["cannot use this path"]),
        (lambda tmp: Path("/dev/zero"), ["not a regular file"]),
    ],
    ids=["invalid-utf8", "missing", "name-too-long", "device"],
)
def test_unreadable_recipe(make, needles: list[str], tmp_path: Path) -> None:
    recipe = make(tmp_path)
    before = listing(tmp_path)
    assert_refused(run_main(["train", recipe, "--out", tmp_path / "o"]), *needles)
    assert listing(tmp_path) == before


# (--out relative to the case's directory, words): nothing may be created anywhere.
OUTS = [
    ("a-file/run", ["a-file is a file, not a directory"]),
    ("a-file/deeper/run", ["a-file is a file, not a directory"]),
    ("r" * 300, ["is 300 bytes, longer than the 255 its filesystem allows"]),
    ("ok/" + "r" * 256 + "/run", ["longer than the 255"]),
    ("/proc/qcompile-run", ["/proc takes no new files"]),
    ("/sys/qcompile-run", ["/sys takes no new files"]),
]


@pytest.mark.parametrize(("out", "needles"), OUTS, ids=lambda v: str(v)[:30])
def test_unwritable_run_directory(out: str, needles: list[str], tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("mine")
    r = run_main(["train", "--epochs", "1", "--out", tmp_path / out])
    assert_refused(r, *needles, "cannot write run directory")
    assert listing(tmp_path) == {"a-file"}


def test_diverging_run_stops_before_writing(tmp_path: Path) -> None:
    """--lr 1e30 is a finite rate whose loss becomes NaN: the run stops with the epoch and
    step, and writes nothing (no checkpoint of NaN weights, no summary)."""
    r = run_main(["train", "--model", "mlp", "--lr", "1e30", "--epochs", "2", "--out",
                  tmp_path / "o"])  # fmt: skip
    assert_refused(r, "training diverged", "epoch 1", "lower the learning rate", "nothing")
    assert listing(tmp_path) == set()
