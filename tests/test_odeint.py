"""The adaptive Dormand-Prince 5(4) integrator against exact solutions: accuracy at each
tolerance, the fifth order of one step, the fourth-order error estimate that sets the step
count, both directions, and its bookkeeping (calls, the first step, the step-size growth)."""

from __future__ import annotations

import math

import pytest
import torch

from scorelab.errors import ScorelabError
from scorelab.numerics.odeint import odeint_rk45

LOOSE = {"rtol": 1e10, "atol": 1e10}  # every step is accepted: the step size is the control


def exp_cos(x, t):
    """dx/dt = cos(t) x: x(t1) = x(t0) exp(sin t1 - sin t0), time-dependent, non-autonomous."""
    return math.cos(t) * x


def exact(x0, t0, t1):
    return x0 * math.exp(math.sin(t1) - math.sin(t0))


X0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)


def test_rk45_on_a_linear_ode():
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    y, _ = odeint_rk45(lambda v, t: -0.5 * v, x, 0.0, 3.0, rtol=1e-9, atol=1e-12)
    assert torch.allclose(y, x * math.exp(-1.5), rtol=1e-8)


@pytest.mark.parametrize("t0,t1", [(0.0, 2.5), (2.5, 0.0), (-1.0, 1.0)])
def test_tight_tolerance_gives_the_exact_solution_in_either_direction(t0, t1):
    y, nfe = odeint_rk45(exp_cos, X0, t0, t1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y, exact(X0, t0, t1), rtol=1e-8, atol=0)
    assert nfe > 7  # several steps: the tolerance, not the span, set them


def test_the_error_follows_the_tolerance():
    errors = []
    for tol in (1e-4, 1e-7, 1e-10):
        y, _ = odeint_rk45(exp_cos, X0, 0.0, 3.0, rtol=tol, atol=tol)
        errors.append(float((y - exact(X0, 0.0, 3.0)).abs().max()))
    assert errors[0] < 3e-3 and errors[1] < 3e-6 and errors[2] < 3e-9
    assert errors[0] > 10 * errors[1] > 100 * errors[2]


def test_one_step_is_fifth_order():
    """One accepted step of size h has local error C h^6: halving h divides it by 2^6 = 64
    (a wrong tableau weight or node drops the order and the ratio)."""

    def one_step_error(h):
        y, nfe = odeint_rk45(exp_cos, X0, 0.3, 0.3 + h, first_step=h, **LOOSE)
        assert nfe == 7  # one step: 7 stages, the first of the next step's kept (FSAL)
        return float((y - exact(X0, 0.3, 0.3 + h)).abs().max())

    e1, e2 = one_step_error(0.4), one_step_error(0.2)
    assert 40 < e1 / e2 < 100, e1 / e2


def test_the_embedded_estimate_sets_the_steps_as_a_fourth_order_method():
    """The step count grows like tol^(-1/5) (the error estimate x5 - x4 is O(h^5) per step):
    10^5 tighter tolerance costs about 10x the calls, not the 10^5 x of a first-order one."""
    calls = [odeint_rk45(exp_cos, X0, 0.0, 3.0, rtol=tol, atol=tol)[1] for tol in (1e-5, 1e-10)]
    assert 4 < calls[1] / calls[0] < 25, calls


def test_step_size_grows_fivefold_from_a_twentieth_of_the_span():
    """With every step accepted: h = 0.05, then 0.25, then the 0.7 left (1.25 capped)."""
    times = []

    def f(x, t):
        times.append(t)
        return torch.zeros_like(x)

    _, nfe = odeint_rk45(f, X0, 0.0, 1.0, **LOOSE)
    assert nfe == 1 + 6 * 3
    # the first step's stages lie in [0, 0.05], the second's in [0.05, 0.3], the last's to 1
    assert max(times[:7]) == pytest.approx(0.05) and max(times[:13]) == pytest.approx(0.3)
    assert max(times) == pytest.approx(1.0)


def test_a_zero_span_returns_the_start_without_calls_and_a_step_limit_raises():
    calls = []
    y, nfe = odeint_rk45(lambda x, t: calls.append(t) or x, X0, 1.0, 1.0)
    assert nfe == 0 and not calls and y is X0
    with pytest.raises(ScorelabError, match="more than 3 steps"):
        odeint_rk45(exp_cos, X0, 0.0, 3.0, rtol=1e-12, atol=1e-12, max_steps=3)


def test_a_rejected_step_is_retried_smaller_and_leaves_x_unchanged():
    """A first step far too large for the tolerance is rejected: the answer is still
    accurate, and it took more than the one step that a loose tolerance takes."""
    y, nfe = odeint_rk45(exp_cos, X0, 0.0, 3.0, rtol=1e-8, atol=1e-8, first_step=3.0)
    torch.testing.assert_close(y, exact(X0, 0.0, 3.0), rtol=1e-6, atol=0)
    assert nfe > 7


def test_default_tolerances_are_tight():
    """rtol = atol = 1e-5 by default: the error of a smooth problem is far below 1e-4."""
    y, _ = odeint_rk45(exp_cos, X0, 0.0, 3.0)
    assert float((y - exact(X0, 0.0, 3.0)).abs().max()) < 1e-4


def test_relative_error_control_is_scale_invariant():
    """With atol = 0 the error is measured relative to |x|: the linear ODE from 1e4 x takes
    the same steps as from x and ends at exactly 1e4 times its end."""
    small, nfe_small = odeint_rk45(exp_cos, X0, 0.0, 3.0, rtol=1e-6, atol=0.0)
    big, nfe_big = odeint_rk45(exp_cos, 1e4 * X0, 0.0, 3.0, rtol=1e-6, atol=0.0)
    assert nfe_small == nfe_big
    torch.testing.assert_close(big, 1e4 * small, rtol=1e-12, atol=0)
