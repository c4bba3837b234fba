"""Optional compiled kernels: off by environment, a failing compiler falls back to the eager
path with one line on stderr, and where Inductor works the compiled activation mixture gives
the eager values (bit for bit) and gradients (x bit for bit, sums to float rounding)."""

from __future__ import annotations

import pytest
import torch

from qcompile.quant import PACT, compiled
from qcompile.quant.dqa import Mixture


@pytest.fixture
def fresh_state(monkeypatch):
    """Each test starts with compiling allowed and no failure recorded."""
    monkeypatch.setitem(compiled._state, "broken", None)
    monkeypatch.delenv(compiled.ENV, raising=False)


def test_environment_switch_turns_compiling_off(fresh_state, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile must not be called")

    monkeypatch.setattr(torch, "compile", refuse)
    monkeypatch.setenv(compiled.ENV, "0")
    assert not compiled.enabled()
    kernel = compiled.Kernel(lambda x: x * 2)
    assert torch.equal(kernel(torch.ones(3)), torch.full((3,), 2.0))


def test_a_failing_compiler_falls_back_with_one_line(fresh_state, monkeypatch, capsys) -> None:
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler\nsecond line of a long trace")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    kernel = compiled.Kernel(lambda x: x + 1)
    assert torch.equal(kernel(torch.zeros(2)), torch.ones(2))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch.compile failed" in err[0] and "no C++ compiler" in err[0]
    assert not compiled.enabled()  # the eager path from then on, without trying again
    assert torch.equal(kernel(torch.zeros(2)), torch.ones(2))
    assert capsys.readouterr().err == ""


def test_small_tensors_stay_eager() -> None:
    assert not compiled.worth_it(torch.zeros(compiled.MIN_NUMEL - 1))
    assert compiled.worth_it(torch.zeros(compiled.MIN_NUMEL))
    assert not compiled.worth_it(torch.zeros(compiled.MIN_NUMEL, dtype=torch.float64))


def run_mixture(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    m = Mixture([PACT(2), PACT(4, 2.0), PACT(8, 2.5)])
    m.temperature.fill_(3.0)
    x = x.clone().requires_grad_(True)
    y = m(x)
    y.backward(g)
    return y.detach(), x.grad, m.alpha.grad, torch.cat([p.alpha.grad for p in m.members])


@pytest.mark.slow
def test_compiled_mixture_matches_the_eager_one(fresh_state, monkeypatch) -> None:
    x = torch.randn(4, 8, 48, 48, generator=torch.Generator().manual_seed(1)) * 2
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert compiled.worth_it(x)
    got = run_mixture(x, g)
    if not compiled.enabled():
        pytest.skip(f"torch.compile does not work here: {compiled._state['broken']}")
    monkeypatch.setenv(compiled.ENV, "0")
    eager = run_mixture(x, g)
    assert torch.equal(got[0], eager[0]) and torch.equal(got[1], eager[1])
    for a, b in zip(got[2:], eager[2:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def run_pact(x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    q = PACT(2, 1.5)
    x = x.clone().requires_grad_(True)
    y = q(x)
    y.backward(g)
    return y.detach(), x.grad, q.alpha.grad


@pytest.mark.slow
def test_compiled_pact_matches_the_eager_one(fresh_state, monkeypatch) -> None:
    """A single PACT on a large activation (resnet20's first stage): values and dx bit for
    bit; the clip's gradient, a sum over half a million elements, against the exact sum in
    float64 (the eager path takes it as the difference of two large sums, which cancels:
    there its error reaches 3e-4 relative, the compiled single sum's stays under 1e-5)."""
    x = torch.randn(8, 16, 64, 64, generator=torch.Generator().manual_seed(3)) * 2
    x.view(-1)[:2] = torch.tensor([0.0, 1.5])  # exactly on both bounds
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    assert compiled.worth_it(x, compiled.PACT_MIN_NUMEL)
    got = run_pact(x, g)
    if not compiled.enabled():
        pytest.skip(f"torch.compile does not work here: {compiled._state['broken']}")
    monkeypatch.setenv(compiled.ENV, "0")
    eager = run_pact(x, g)
    assert torch.equal(got[0], eager[0]) and torch.equal(got[1], eager[1])
    exact = g.double()[x >= 1.5].sum().reshape(1)
    torch.testing.assert_close(got[2].double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eager[2].double(), exact, rtol=1e-3, atol=1e-3)
