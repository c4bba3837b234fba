"""The stage interface: the base class pins the first and last layers, stages never guess."""

from __future__ import annotations

import pytest
import torch

from qcompile.quant.uniform import MinMax
from qcompile.stages import STAGES, quantize
from qcompile.zoo import build_model

# Options under which the first/last layers have the same width as the learned ones (8 bits;
# DMBQ's levels go to 4), so a stage that told them apart by width would learn there.
SAME_WIDTH = {
    "uniform": {"wbits": 8},
    "br": {"wbits": 8},
    "dqa": {"wbits": 8},
    "ddq": {"wbits": 8},
    "dmbq": {"wbits": 4, "first_last_wbits": 4, "target_bits": 3.0},
    "sdq": {"wbits": 8, "target_bits": 6.0},
}


@pytest.mark.parametrize("method", sorted(STAGES))
def test_first_and_last_layers_are_fixed_even_at_the_learned_width(method: str) -> None:
    torch.manual_seed(0)
    net = build_model("lenet", (1, 8, 8), 10)
    options = {"first_last_wbits": 8, **SAME_WIDTH[method]}
    model = quantize(net, method=method, **options)
    layers = model.weight_layers()
    first, *middle, last = layers
    for name in (first, last):
        assert type(layers[name].weight_quant) is MinMax, (method, name)
    learned = {type(layers[n].weight_quant) for n in middle}
    assert learned == {MinMax} if method == "uniform" else MinMax not in learned, (method, learned)
    bits = options["first_last_wbits"]
    assert model.weight_bits()[first] == model.weight_bits()[last] == bits
