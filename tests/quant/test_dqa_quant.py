"""The fused min-max mixture computes what mixing its members one by one computes."""

from __future__ import annotations

import pytest
import torch

from qcompile.quant import Identity
from qcompile.quant.dqa import Mixture
from qcompile.quant.uniform import SAWB, MinMax


def _run(m: Mixture, w: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = w.clone().requires_grad_()
    m.zero_grad()
    y = m(w)
    (y * g).sum().backward()
    return y.detach(), w.grad, m.alpha.grad.clone()


@pytest.mark.parametrize(
    "members",
    [
        lambda: [MinMax(2), MinMax(4), MinMax(8)],
        lambda: [MinMax(1), MinMax(3), MinMax(5)],
        lambda: [MinMax(2, per_channel=False), Identity()],
    ],
)
def test_fused_minmax_mixture_matches_member_by_member(members) -> None:
    torch.manual_seed(0)
    fused = Mixture(members())
    assert fused._fused is not None
    fused.temperature.fill_(2.0)
    plain = Mixture(members())
    plain.load_state_dict(fused.state_dict())
    plain._fused = None  # the generic path: each member, then the weighted sum
    w, g = torch.randn(6, 4, 3, 3), torch.randn(6, 4, 3, 3)
    (y1, gw1, ga1), (y2, gw2, ga2) = _run(fused, w, g), _run(plain, w, g)
    assert torch.equal(y1, y2)
    torch.testing.assert_close(gw1, gw2)  # sum of a_k: rounding order differs
    torch.testing.assert_close(ga1, ga2, rtol=0, atol=0)


def test_other_members_take_the_generic_path() -> None:
    assert Mixture([SAWB(2), SAWB(4)])._fused is None
    assert Mixture([MinMax(2, per_channel=True), MinMax(4, per_channel=False)])._fused is None
