"""The uniform stage and the QuantLayer interface it shares with every later stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import qcompile
from qcompile.errors import QCompileError
from qcompile.quant import SAWB, MinMax
from qcompile.stages import QuantAct, QuantConv2d, QuantLinear, make_stage, quantize
from qcompile.zoo import build_model


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU6(),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 3),
    )  # fmt: skip


def test_wrap_swaps_layers_and_leaves_the_original_alone() -> None:
    net = small_net()
    q = quantize(net, wbits=2, abits=4)
    assert type(net[0]) is nn.Conv2d and type(net[2]) is nn.ReLU
    assert isinstance(q.net[0], QuantConv2d) and isinstance(q.net[8], QuantLinear)
    assert isinstance(q.net[2], QuantAct) and q.net[2].fn_name == "relu"
    assert q.net[4].fn_name == "relu6"
    assert q.weight_bits() == {"0": 8, "3": 2, "6": 2, "8": 8}
    assert q.act_bits() == {"input": 8, "2": 4, "4": 4, "7": 4}
    x = torch.randn(5, 1, 8, 8)
    assert q(x).shape == (5, 3)


@pytest.mark.parametrize(
    ("options", "bits"),
    [
        ({"wbits": 3, "first_last_wbits": "same"}, {"0": 3, "3": 3, "6": 3, "8": 3}),
        ({"wbits": 3, "first_last_wbits": 6}, {"0": 6, "3": 3, "6": 3, "8": 6}),
        ({"wbits": 32, "abits": 4}, {"0": 32, "3": 32, "6": 32, "8": 32}),
    ],
)
def test_first_last_policy(options: dict, bits: dict) -> None:
    assert quantize(small_net(), **options).weight_bits() == bits


def test_float_activations_leave_relus_and_float_everything_skips_the_input_quantizer() -> None:
    q = quantize(small_net(), wbits=4, abits=32)
    assert type(q.net[2]) is nn.ReLU and q.input_quant is not None
    f = quantize(small_net(), wbits=32, abits=32)
    assert f.input_quant is None
    x = torch.randn(3, 1, 8, 8)
    net = small_net().eval()
    assert torch.equal(f.eval()(x), net(x))


def test_weight_quantizer_choice_and_per_channel() -> None:
    q = quantize(small_net(), wbits=4, weight_quant="sawb", per_channel=False)
    assert isinstance(q.net[3].weight_quant, SAWB) and not q.net[3].weight_quant.per_channel
    # The 8-bit first layer of a BWN network falls back to min-max.
    b = quantize(small_net(), wbits=1, weight_quant="bwn")
    assert isinstance(b.net[0].weight_quant, MinMax) and b.net[3].weight_quant.bits == 1


def test_weight_export_decodes_to_the_weights_used_in_forward() -> None:
    q = quantize(small_net(), wbits=3, abits=4)
    for name, layer in q.weight_layers().items():
        e = layer.export()
        assert e.bits == layer.weight_quant.bits and e.uniform
        assert e.weight.codes.shape == layer.weight.shape, name
        assert int(e.weight.codes.max()) < 2**e.bits
        assert torch.equal(e.weight.decode(), layer.weight_quant(layer.weight).detach()), name
        assert (e.bias is None) == (layer.bias is None)


def test_act_export_is_the_pact_grid() -> None:
    q = quantize(small_net(), wbits=4, abits=3, pact_init=2.1)
    e = q.net[2].export()
    assert (e.bits, e.lo, e.fn) == (3, 0.0, "relu")
    assert e.step == pytest.approx(2.1 / 7)
    x = torch.linspace(-1, 3, 50)
    codes = torch.clamp(torch.round(torch.relu(x) / e.step), 0, 7)
    assert torch.equal(q.net[2](x), codes * torch.tensor(e.step))
    inp = q.input_quant.export()
    assert inp.bits == 8 and inp.fn == "none"


def test_quantized_model_trains() -> None:
    torch.manual_seed(0)
    q = quantize(small_net(), wbits=2, abits=2)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = nn.functional.cross_entropy(q(x), y)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    alphas = [m.quant.alpha for m in q.modules() if isinstance(m, QuantAct) and m.fn_name != "none"]
    assert any(float(a.detach()) != 3.0 for a in alphas)  # PACT clips learn


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet20", "mobilenetv2"])
def test_zoo_models_wrap(name: str) -> None:
    net = build_model(name, (3, 16, 16), 5, **({"width": 0.25} if name == "mobilenetv2" else {}))
    q = quantize(net, wbits=4, abits=4)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(q.weight_layers()) == len(convs)
    assert q(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_options_are_validated() -> None:
    with pytest.raises(QCompileError, match="did you mean 'wbits'"):
        make_stage("uniform", wbitz=3)
    with pytest.raises(QCompileError, match=r"wbits must be 1\.\.8 or 32"):
        make_stage("uniform", wbits=9)
    with pytest.raises(QCompileError, match="valid: br, ddq, dmbq, dqa, sdq, uniform"):
        make_stage("nope")


def test_readme_example_runs() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    )  # fmt: skip
    qnet = qcompile.quantize(net, method="uniform", wbits=4, abits=4)
    loss = nn.functional.cross_entropy(qnet(torch.randn(16, 1, 8, 8)), torch.randint(0, 10, (16,)))
    loss.backward()
    assert qnet.weight_bits() == {"0": 8, "4": 8}
    assert qnet.net[0].export().weight.codes.shape == (8, 1, 3, 3)


def test_skipping_the_relu_before_pact_changes_nothing() -> None:
    from qcompile.quant import make_act_quantizer

    q = make_act_quantizer("pact", 3, 2.0)
    x = torch.linspace(-3, 3, 97, requires_grad=True)  # holds 0 and the clip 2.0 exactly
    layer = QuantAct(nn.ReLU(), q)
    g = torch.randn(97)
    (layer(x) * g).sum().backward()
    skipped = x.grad.clone()
    x.grad = None
    (q(torch.relu(x)) * g).sum().backward()
    assert layer._skip_fn
    assert torch.equal(layer(x), q(torch.relu(x)))
    assert torch.equal(skipped, x.grad)
