"""Schedules: alpha_bar = cumprod(1 - beta), the DDPM constants, real-valued time, log-SNR."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab.errors import ScorelabError
from scorelab.processes import SCHEDULES, DiscreteSchedule, make_schedule

names = st.sampled_from(sorted(SCHEDULES))
Ts = st.integers(min_value=2, max_value=2000)


@given(names, Ts)
def test_alpha_bar_is_cumprod_of_one_minus_beta(name, T):
    s = make_schedule(name, T=T)
    expected = torch.cumprod(1 - s.betas, 0)
    assert torch.allclose(s.alpha_bar_table[1:], expected, rtol=1e-12, atol=0)
    assert s.alpha_bar_table[0] == 1
    t = torch.arange(T + 1, dtype=torch.float64)
    assert torch.allclose(s.alpha_bar(t), s.alpha_bar_table, rtol=1e-12, atol=0)


def test_linear_is_ddpm():
    s = make_schedule("linear")
    assert s.T == 1000
    assert s.beta(1) == pytest.approx(1e-4, rel=1e-12)
    assert s.beta(1000) == pytest.approx(0.02, rel=1e-12)
    assert torch.allclose(
        s.betas[1:] - s.betas[:-1], torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64)
    )


def test_cosine_matches_its_closed_form_where_unclipped():
    T, s_off = 1000, 0.008
    sched = make_schedule("cosine", T=T)
    t = torch.arange(0, 900, dtype=torch.float64)
    f = lambda u: torch.cos((u / T + s_off) / (1 + s_off) * math.pi / 2) ** 2  # noqa: E731
    assert torch.allclose(
        sched.alpha_bar(t), f(t) / f(torch.zeros(1, dtype=torch.float64)), rtol=1e-10
    )


@given(names, Ts, st.floats(0, 1), st.floats(0, 1))
def test_alpha_bar_of_real_time_is_monotone_and_interpolates(name, T, u, v):
    s = make_schedule(name, T=T)
    a, b = sorted((u * T, v * T))
    ta = torch.tensor([a, b], dtype=torch.float64)
    ab = s.alpha_bar(ta)
    assert ab[0] >= ab[1]
    # between integers, log alpha_bar is the linear interpolation of its neighbours
    i = math.floor(a) if a < T else T - 1
    lo, hi = s.alpha_bar_table[i].log(), s.alpha_bar_table[i + 1].log()
    assert torch.isclose(ab[0].log(), lo + (a - i) * (hi - lo), rtol=1e-9, atol=1e-12)


@given(names, st.integers(min_value=2, max_value=1000))
def test_log_snr_strictly_decreasing_and_consistent(name, T):
    s = make_schedule(name, T=T)
    t = torch.linspace(0.5, T, 4 * T, dtype=torch.float64)
    lam = s.log_snr(t)
    assert (lam[1:] < lam[:-1]).all()
    ab = s.alpha_bar(t)
    assert torch.allclose(lam, torch.log(ab / (1 - ab)), rtol=1e-9, atol=1e-9)
    assert torch.allclose(s.sigma(t) ** 2 + ab, torch.ones_like(ab), atol=1e-12)


def test_timesteps_grid():
    s = make_schedule("linear", T=1000)
    assert torch.equal(s.timesteps(), torch.arange(1000, -1, -1, dtype=torch.float64))
    g = s.timesteps(10)
    assert g[0] == 1000 and g[-1] == 0 and len(g) == 11 and (g[1:] < g[:-1]).all()
    with pytest.raises(ScorelabError):
        s.timesteps(0)


def test_bad_schedules_raise_clear_errors():
    with pytest.raises(ScorelabError, match="unknown schedule 'nope'; choose one of"):
        make_schedule("nope")
    with pytest.raises(ScorelabError):
        DiscreteSchedule(torch.tensor([0.1, 1.5]))
    with pytest.raises(ScorelabError):
        make_schedule("linear", T=0)
