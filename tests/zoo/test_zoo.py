"""Model zoo: every architecture builds for every dataset shape; user factories; errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from qcompile.errors import QCompileError
from qcompile.zoo import MODELS, build_model
from qcompile.zoo.resnet import BasicBlock

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
BIG = {"resnet18", "vgg_small", "mobilenetv2"}


def _options(name: str) -> dict[str, float]:
    return {"width": 0.25} if name in BIG else {}


@pytest.mark.parametrize("in_shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_for_every_shape(name: str, in_shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_shape, 7, **_options(name))
    assert isinstance(model, nn.Module)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *in_shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_resnet20_parameter_count() -> None:
    model = build_model("resnet20", (3, 32, 32), 10)
    # 269,722 of the classic option-A ResNet-20 plus the two strided 1x1 conv + BN shortcuts
    # (16*32 + 2*32) + (32*64 + 2*64) = 2,752.
    assert sum(p.numel() for p in model.parameters()) == 272_474


def test_width_scales_channels() -> None:
    small = build_model("resnet20", (3, 32, 32), 10, width=0.5)
    full = build_model("resnet20", (3, 32, 32), 10)
    n_small = sum(p.numel() for p in small.parameters())
    n_full = sum(p.numel() for p in full.parameters())
    assert n_small < n_full / 3


@pytest.mark.parametrize("name", ["lenet", "resnet20", "resnet18", "vgg_small", "mobilenetv2"])
@pytest.mark.parametrize("width", [0, -1, float("nan"), float("inf"), True, "0.5"])
def test_width_must_be_a_positive_number(name: str, width: object) -> None:
    with pytest.raises(QCompileError, match="width must be a finite number > 0"):
        build_model(name, (3, 32, 32), 10, width=width)


def test_width_is_never_clamped_to_one_channel() -> None:
    """Before, max(1, round(n * width)) built a 1-channel network from width = 1e-9."""
    with pytest.raises(QCompileError, match=r"leaves lenet's 6-channel layer with none"):
        build_model("lenet", (1, 8, 8), 10, width=0.05)
    assert build_model("lenet", (1, 8, 8), 10, width=1 / 6).features[0][0].out_channels == 1


@pytest.mark.parametrize("hidden", [[0], [-5], [1.5], [True], 5, "64", [1 << 20]])
def test_mlp_hidden_sizes_are_checked(hidden: object) -> None:
    with pytest.raises(QCompileError, match="hidden"):
        build_model("mlp", (1, 8, 8), 10, hidden=hidden)


def test_a_failing_user_factory_is_one_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.py"
    f.write_text("def make(in_shape, num_classes):\n    raise KeyError('oops')\n")
    with pytest.raises(QCompileError, match="raised KeyError"):
        build_model(f"{f}:make", (1, 8, 8), 10)


def test_mobilenetv2_has_depthwise_convs_and_relu6() -> None:
    model = build_model("mobilenetv2", (3, 32, 32), 10, width=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 17  # one per inverted residual block (1+2+3+4+3+3+1)
    for conv in depthwise:
        assert conv.groups == conv.in_channels == conv.out_channels
        assert conv.kernel_size == (3, 3)
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert not any(type(m) is nn.ReLU for m in model.modules())


@pytest.mark.parametrize(("name", "n_blocks"), [("resnet20", 9), ("resnet18", 8)])
def test_resnets_are_built_from_basic_blocks(name: str, n_blocks: int) -> None:
    model = build_model(name, (3, 32, 32), 10, **_options(name))
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == n_blocks
    identity = [b for b in blocks if isinstance(b.shortcut, nn.Identity)]
    projected = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert identity and projected
    for b in projected:
        assert isinstance(b.shortcut[0], nn.Conv2d)
        assert b.shortcut[0].kernel_size == (1, 1)


def test_basic_block_adds_the_shortcut() -> None:
    block = BasicBlock(4, 4).eval()
    # Silence the body: with the last BN's scale and shift at 0, the block is relu(x).
    last_bn = block.body[1][1]
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(block(x), torch.relu(x))


def _write(path: Path, source: str) -> str:
    path.write_text(source)
    return str(path)


FACTORY_SOURCE = """
from torch import nn


def make(in_shape, num_classes, hidden=16):
    c, h, w = in_shape
    net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
                        nn.Linear(hidden, num_classes))
    net.received = (in_shape, num_classes, hidden)
    return net


def not_a_model(in_shape, num_classes):
    return 42


def helper_value():
    return 1
"""


def test_user_factory_is_loaded_and_called(tmp_path: Path) -> None:
    file = _write(tmp_path / "mynet.py", FACTORY_SOURCE)
    model = build_model(f"{file}:make", (1, 8, 8), 3, hidden=5)
    assert isinstance(model, nn.Sequential)
    assert model[1].in_features == 64 and model[1].out_features == 5
    assert model[3].out_features == 3
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_user_factory_receives_in_shape_and_num_classes(tmp_path: Path) -> None:
    file = _write(tmp_path / "mynet.py", FACTORY_SOURCE)
    model = build_model(f"{file}:make", [3, 4, 6], 9)  # type: ignore[arg-type]
    assert model.received == ((3, 4, 6), 9, 16)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(QCompileError, match="unknown model 'resnet21'") as info:
        build_model("resnet21", (3, 32, 32), 10)
    msg = str(info.value)
    assert "did you mean 'resnet20'" in msg
    for name in MODELS:
        assert name in msg


def test_user_factory_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(QCompileError, match="no such file") as info:
        build_model(f"{missing}:make", (1, 8, 8), 10)
    assert str(missing) in str(info.value)


def test_user_factory_missing_attribute(tmp_path: Path) -> None:
    file = _write(tmp_path / "mynet.py", FACTORY_SOURCE)
    with pytest.raises(QCompileError, match="has no callable 'mkae'") as info:
        build_model(f"{file}:mkae", (1, 8, 8), 10)
    assert "did you mean 'make'" in str(info.value)


def test_user_factory_returning_non_module(tmp_path: Path) -> None:
    file = _write(tmp_path / "mynet.py", FACTORY_SOURCE)
    with pytest.raises(QCompileError, match=r"returned int, not an nn\.Module"):
        build_model(f"{file}:not_a_model", (1, 8, 8), 10)


def test_user_factory_file_raising_on_import(tmp_path: Path) -> None:
    file = _write(tmp_path / "broken.py", "import torch\nraise RuntimeError('boom at import')\n")
    with pytest.raises(QCompileError, match=r"importing .*broken\.py failed") as info:
        build_model(f"{file}:make", (1, 8, 8), 10)
    assert "RuntimeError: boom at import" in str(info.value)


def test_user_factory_bad_arguments(tmp_path: Path) -> None:
    file = _write(tmp_path / "mynet.py", FACTORY_SOURCE)
    with pytest.raises(QCompileError, match="unexpected keyword argument 'depth'"):
        build_model(f"{file}:make", (1, 8, 8), 10, depth=3)


def test_unknown_model_option_suggests_closest() -> None:
    with pytest.raises(QCompileError) as info:
        build_model("resnet20", (3, 32, 32), 10, widht=0.5)
    msg = str(info.value)
    assert "no option 'widht'" in msg
    assert "did you mean 'width'" in msg
    assert "valid: width" in msg


def test_too_small_input_is_a_user_error() -> None:
    with pytest.raises(QCompileError, match="at least 8x8"):
        build_model("vgg_small", (3, 4, 4), 10)
