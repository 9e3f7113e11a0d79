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


def test_betas_become_a_flat_float64_table_and_are_validated():
    """A Python list is read in float64 (0.1 stays 0.1, not float32's 0.10000000149), a
    single beta is a schedule of one step, and betas outside (0, 1), NaN or none at all are
    refused with one message."""
    s = DiscreteSchedule([0.1, 0.2])
    assert isinstance(s.betas, torch.Tensor) and s.betas.dtype == torch.float64
    assert s.betas.tolist() == [0.1, 0.2] and s.T == 2
    assert s.alpha_bar_table.tolist() == pytest.approx([1.0, 0.9, 0.72], rel=1e-15)
    one = DiscreteSchedule(torch.tensor([0.5]))
    assert one.T == 1 and one.alpha_bar_table.tolist() == pytest.approx([1.0, 0.5], rel=1e-15)
    message = r"^betas must be a non-empty sequence of numbers in \(0, 1\)$"
    for bad in ([], [0.0, 0.1], [-0.1, 0.1], [0.1, 1.0], [0.1, 1.5], [float("nan"), 0.1]):
        with pytest.raises(ScorelabError, match=message):
            DiscreteSchedule(torch.tensor(bad, dtype=torch.float64))


def test_log_alpha_bar_dtypes_devices_and_clamped_times():
    """The output has t's floating dtype (float32 for integer times, with the exact value), the
    device of t (meta: a second device without an accelerator), and times outside [0, T] are
    clamped to it: alpha_bar(-0.5) = 1, alpha_bar(T + 0.5) = alpha_bar_T."""
    s = DiscreteSchedule([0.1, 0.2, 0.3])
    table = [0.0, math.log(0.9), math.log(0.9 * 0.8), math.log(0.9 * 0.8 * 0.7)]
    got32 = s.log_alpha_bar(torch.tensor([1.5, 3.0]))
    assert got32.dtype == torch.float32
    expected = [(table[1] + table[2]) / 2, table[3]]
    assert got32.tolist() == pytest.approx(expected, rel=1e-6)
    got_int = s.log_alpha_bar(torch.tensor([2, 3]))
    assert got_int.dtype == torch.float32
    assert got_int.tolist() == pytest.approx(table[2:], rel=1e-6)
    got64 = s.log_alpha_bar(torch.tensor([-0.5, 0.0, 3.0, 3.5], dtype=torch.float64))
    assert got64.dtype == torch.float64
    assert got64.tolist() == pytest.approx([0.0, 0.0, table[3], table[3]], abs=1e-15)
    assert s.log_alpha_bar(torch.tensor([1.5], device="meta")).device.type == "meta"
    assert s.beta(torch.tensor([2, 3], device="meta")).device.type == "meta"
    assert s.beta(torch.tensor([2, 3])).tolist() == [0.2, 0.3]


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_one_time_repeated_over_the_batch_is_computed_once(batch):
    """A (B,) time expanded from one value (stride 0, as samplers pass it) gives the values of
    the materialized times, as a stride-0 view of a single computation."""
    s = make_schedule("cosine", T=50)
    t = torch.tensor(17.25, dtype=torch.float64).expand(batch)
    got = s.log_alpha_bar(t)
    assert got.shape == (batch,)
    torch.testing.assert_close(got, s.log_alpha_bar(t.contiguous()), rtol=0, atol=0)
    if batch > 1:
        assert got.stride() == (0,)


def test_timesteps_edges_dtype_and_message():
    s = make_schedule("linear", T=1000)
    one = s.timesteps(1)
    assert one.dtype == torch.float64 and one.tolist() == [1000.0, 0.0]
    assert s.timesteps(4).tolist() == [1000.0, 750.0, 500.0, 250.0, 0.0]
    for steps in (0, 1001):
        with pytest.raises(ScorelabError, match=rf"^steps must be in 1\.\.1000, got {steps}$"):
            s.timesteps(steps)


def test_input_scale_is_one_in_the_dtype_of_t():
    s = make_schedule("linear", T=10)
    for t, dtype in (
        (torch.tensor([3.0, 4.0], dtype=torch.float64), torch.float64),
        (torch.tensor([3.0, 4.0]), torch.float32),
        (torch.tensor([3, 4]), torch.float32),
    ):
        got = s.input_scale(t)
        assert got.dtype == dtype and got.tolist() == [1.0, 1.0]


def test_quadratic_and_sigmoid_against_their_formulas():
    """Written out in Python floats at T = 1000 and T = 250 (both ends times 1000 / T):
    quadratic, beta_i = (sqrt(b0) + (sqrt(b1) - sqrt(b0)) i / (T - 1))^2 (the DDPM code
    release); sigmoid, beta_i = (b0 + (b1 - b0) / (1 + exp(-x_i))) with x_i from -6 to 6."""
    for T in (1000, 250):
        k = 1000 / T
        b0, b1 = 1e-4 * k, 0.02 * k
        root0, root1 = math.sqrt(b0), math.sqrt(b1)
        quad = [(root0 + (root1 - root0) * i / (T - 1)) ** 2 for i in range(T)]
        # float64 throughout (a float32 linspace of the roots was off by 3e-7 relative)
        torch.testing.assert_close(
            make_schedule("quadratic", T=T).betas,
            torch.tensor(quad, dtype=torch.float64),
            rtol=1e-12,
            atol=0,
        )
        x = [-6 + 12 * i / (T - 1) for i in range(T)]
        sig = [b0 + (b1 - b0) / (1 + math.exp(-v)) for v in x]
        torch.testing.assert_close(
            make_schedule("sigmoid", T=T).betas,
            torch.tensor(sig, dtype=torch.float64),
            rtol=1e-12,
            atol=0,
        )


def test_cosine_clips_its_betas_from_below_and_above():
    """max_beta caps the betas (0.5 here: the last steps of the closed form exceed it); with
    offset s = 0 and T = 20,000 the first closed-form beta, sin^2(pi / (2T)) = 6.2e-9, is
    raised to the floor 1e-8 (keeps every beta positive); the rest are the closed form."""
    T = 20
    s = make_schedule("cosine", T=T, max_beta=0.5)
    f = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
    closed = [min(1 - f[t] / f[t - 1], 0.5) for t in range(1, T + 1)]
    assert closed[-1] == 0.5 and closed[0] < 0.5
    torch.testing.assert_close(s.betas, torch.tensor(closed, dtype=torch.float64))
    T = 20_000
    s = make_schedule("cosine", T=T, s=0.0)
    first = math.sin(math.pi / (2 * T)) ** 2
    assert first < 1e-8 and float(s.betas[0]) == 1e-8
    second = 1 - (math.cos(2 / T * math.pi / 2) / math.cos(1 / T * math.pi / 2)) ** 2
    assert float(s.betas[1]) == pytest.approx(second, rel=1e-6)


def test_make_schedule_defaults_parameters_and_round_trip():
    """make_schedule() is DDPM's linear schedule at T = 1000; parameters reach the schedule
    and its to_dict, which rebuilds it; T = 1 is a schedule; bad T, names and parameters are
    refused with messages that say what is wrong."""
    default = make_schedule()
    assert default.name == "linear" and default.T == 1000
    assert float(default.betas[0]) == pytest.approx(1e-4, rel=1e-12)
    s = make_schedule("sigmoid", T=30, beta_start=2e-4, beta_end=0.01)
    assert s.name == "sigmoid"
    assert s.to_dict() == {"name": "sigmoid", "T": 30, "beta_start": 2e-4, "beta_end": 0.01}
    k = 1000 / 30
    assert float(s.betas[0]) == pytest.approx((2e-4 + 9.8e-3 / (1 + math.exp(6))) * k)
    assert torch.equal(make_schedule(**s.to_dict()).betas, s.betas)
    one = make_schedule("cosine", T=1)
    assert one.T == 1 and one.betas.tolist() == [0.999]  # alpha_bar_1 = cos^2(pi / 2) = 0
    with pytest.raises(
        ScorelabError,
        match=r"^unknown schedule 'nope'; choose one of: linear, cosine, quadratic, sigmoid$",
    ):
        make_schedule("nope")
    for T in (0, 2.5):
        with pytest.raises(ScorelabError, match=rf"^T must be a positive integer, got {T}$"):
            make_schedule("linear", T=T)
    with pytest.raises(ScorelabError, match=r"^bad parameters for schedule 'linear': .*bogus"):
        make_schedule("linear", bogus=1.0)


def test_beta_rate_integrates_to_log_alpha_bar():
    """int_0^t beta(u) du = -log alpha_bar(t): the VP-SDE this schedule defines."""
    s = make_schedule("cosine")
    u = torch.arange(0, 1000, dtype=torch.float64) + 0.5
    integral = torch.cumsum(s.beta_rate(u), 0)
    assert torch.allclose(integral, -torch.log(s.alpha_bar_table[1:]), rtol=1e-9)


def test_beta_rate_is_constant_on_each_segment_and_takes_the_one_below_an_integer():
    """beta(t) = -log(1 - beta_i) on (i - 1, i]: t = 1 and 2 belong to the segments below
    them (the ones a reverse step from there crosses), t = 0 to the first; float32 and integer
    times give float32, and one time repeated over a batch gives the same values."""
    betas = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    s = DiscreteSchedule(betas)
    t = torch.tensor([0.0, 0.5, 1.0, 1.2, 2.0, 2.7, 3.0], dtype=torch.float64)
    segment = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    expected = -torch.log1p(-betas[segment])
    torch.testing.assert_close(s.beta_rate(t), expected, rtol=1e-15, atol=0)
    assert s.beta_rate(t.float()).dtype == torch.float32
    torch.testing.assert_close(s.beta_rate(t.float()), expected.float())
    ints = s.beta_rate(torch.tensor([1, 2, 3]))
    assert ints.dtype == torch.float32
    torch.testing.assert_close(ints, expected[[2, 4, 6]].float())
    same = s.beta_rate(torch.tensor(2.7, dtype=torch.float64).expand(4))  # a broadcast time
    torch.testing.assert_close(same, expected[5].expand(4))
    past = s.beta_rate(torch.tensor([3.5, 9.0], dtype=torch.float64))  # past T: the last one
    torch.testing.assert_close(past, expected[[6, 6]])
    torch.testing.assert_close(s.beta_rate(2.7), expected[5].float())  # a float: float32
