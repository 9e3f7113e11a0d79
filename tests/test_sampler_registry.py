"""The sampler registry: options are the samplers' own keyword parameters, --opt KEY=VALUE
reaches the sampler, bad options are one-line errors, and every sampler has an oracle test."""

import inspect
import json
import re

import numpy as np
import pytest
import torch

from scorelab import make_schedule, sample
from scorelab.cli import main
from scorelab.errors import ScorelabError
from scorelab.samplers import (
    REGISTRY,
    SAMPLER_INFO,
    SAMPLERS,
    Option,
    parse_options,
    register_sampler,
    validate_options,
)
from scorelab.samplers import registry as registry_module
from scorelab.samplers.registry import RESERVED, positive
from tests.helpers import cli_fails
from tests.test_samplers_all import ORACLE_TESTED

TINY = [
    *("--steps", "30", "--batch-size", "64", "--width", "16", "--depth", "1"),
    *("--n-data", "500", "--log-every", "10", "--no-progress"),
]


def _cli_text(value) -> str:
    """A default as a command-line value."""
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


# --- the registry against the functions ---------------------------------------------------


@pytest.mark.parametrize("name", list(REGISTRY))
def test_options_are_exactly_the_keyword_only_parameters(name):
    spec = REGISTRY[name]
    params = inspect.signature(spec.fn).parameters
    keyword = {k: p for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(RESERVED) <= set(keyword)  # sample() passes generator and callback itself
    assert set(keyword) - set(RESERVED) == set(spec.options)  # none undeclared, none extra
    for key, opt in spec.options.items():
        assert keyword[key].default == opt.default or keyword[key].default is opt.default, key
        if opt.cli:  # every default is a valid command-line value, and round-trips
            assert opt.type in (float, int, str, bool)
            parsed = parse_options(name, [f"{key}={_cli_text(opt.default)}"])
            assert parsed == {key: opt.default}
    assert SAMPLERS[name] is spec.fn
    info = SAMPLER_INFO[name]
    assert (info.summary, info.paper, info.nfe, info.spacing) == (
        spec.summary,
        spec.paper,
        spec.nfe,
        spec.spacing,
    )
    assert not re.search(r"seed \d{3}", info.paper)  # real citations


def test_citations():
    assert SAMPLER_INFO["ddpm-score"].paper == (
        "Ho et al. 2020, Algorithm 2, written as A_t x + B_t score + sqrt(C_t) z "
        "(docs/theory.md §8)"
    )
    assert SAMPLER_INFO["langevin"].paper == "Roberts & Tweedie 1996; Song & Ermon 2019"


def test_every_registered_sampler_has_an_exact_oracle_accuracy_test():
    """tests/test_samplers_all.py's ORACLE_TESTED drives its oracle tests (GENEROUS against
    the 3-mode mixture, ONE_GAUSSIAN for Langevin): a new sampler must be added there."""
    assert set(ORACLE_TESTED) == set(SAMPLERS)


def _toy(eps_fn, x, schedule, timesteps, *, scale=1.0, generator=None, callback=None):
    return x * scale


def test_registration_checks_the_options_and_the_views_follow_it():
    with pytest.raises(TypeError, match="keyword-only"):
        register_sampler("toy", summary="s", paper="p", nfe="0")(_toy)  # scale undeclared
    with pytest.raises(TypeError, match="defaults to"):
        register_sampler(
            "toy", summary="s", paper="p", nfe="0", options={"scale": Option(float, 2.0, "h")}
        )(_toy)
    assert "toy" not in SAMPLERS
    try:
        fn = register_sampler(
            "toy",
            summary="s",
            paper="p",
            nfe="0",
            options={"scale": Option(float, 1.0, "a factor", check=positive)},
        )(_toy)
        assert fn is _toy and SAMPLERS["toy"] is _toy and SAMPLER_INFO["toy"].nfe == "0"
        with pytest.raises(TypeError, match="already registered"):
            register_sampler("toy", summary="s", paper="p", nfe="0")(lambda *a, **k: None)
        x_T = torch.ones(3, 2)
        out = sample(lambda x, t: x, (3, 2), make_schedule(), "toy", 2, x_T=x_T, scale=3.0)
        assert torch.equal(out.x, 3 * x_T) and out.nfe == 0
        with pytest.raises(ScorelabError, match="scale must be > 0"):
            sample(lambda x, t: x, (3, 2), make_schedule(), "toy", 2, scale=-1.0)
    finally:
        registry_module._specs.pop("toy", None)
    assert "toy" not in SAMPLERS


# --- parse_options and validate_options ---------------------------------------------------


def test_parse_options_converts_types():
    assert parse_options("pc", ["snr=0.2", "n_corrector=2"]) == {"snr": 0.2, "n_corrector": 2}
    assert type(parse_options("pc", ["n_corrector=3"])["n_corrector"]) is int
    assert type(parse_options("pc", ["snr=1"])["snr"]) is float
    assert parse_options("ode-rk45", ["rtol=1e-3", "atol = 1e-3"]) == {"rtol": 1e-3, "atol": 1e-3}
    assert parse_options("ddpm", ["variance=analytic"]) == {"variance": "analytic"}
    assert parse_options("dpm-solver++", ["order=3"]) == {"order": 3}
    assert parse_options("annealed-langevin", ["snr=none", "step_size=1e-3", "denoise=false"]) == {
        "snr": None,
        "step_size": 1e-3,
        "denoise": False,
    }
    assert parse_options("heun-edm", ["s_tmax=inf"]) == {"s_tmax": float("inf")}
    assert parse_options("ode-euler", []) == {}


@pytest.mark.parametrize(
    "name, items, pattern",
    [
        (
            "pc",
            ["bogus=1"],
            "unknown option 'bogus': sampler pc takes: n_corrector (int >= 0), snr (float > 0)",
        ),  # fmt: skip
        ("ode-euler", ["snr=1"], "sampler ode-euler takes no options"),
        ("pc", ["snr"], "--opt must look like KEY=VALUE, got 'snr'; sampler pc takes: n_corrector"),
        ("pc", ["=1"], "KEY=VALUE"),
        ("pc", ["snr=abc"], "snr must be a number, got 'abc' (sampler pc)"),
        ("pc", ["n_corrector=1.5"], "n_corrector must be an integer, got '1.5'"),
        ("pc", ["snr=-1"], "snr must be > 0, got -1.0"),
        ("pc", ["snr=nan"], "snr must be > 0"),
        ("pc", ["snr=none"], "snr must be a number, got 'none'"),  # pc's snr is not nullable
        ("ddim", ["eta=3"], "eta must be in [0, 1], got 3.0"),
        ("dpm-solver++", ["order=4"], "order must be one of 1, 2, 3, got 4"),
        ("ddpm-score", ["variance=analytic"], "variance must be one of beta, beta_tilde"),
        ("annealed-langevin", ["denoise=maybe"], "denoise must be true or false"),
        ("ddpm", ["gamma=1"], "gamma is a tensor: set it from Python"),
        ("pc", ["snr=0.1", "snr=0.2"], "--opt snr is given twice"),
        ("nope", [], "unknown sampler 'nope'"),
    ],
)
def test_parse_options_errors_are_one_line(name, items, pattern):
    with pytest.raises(ScorelabError) as e:
        parse_options(name, items)
    assert pattern in str(e.value) and "\n" not in str(e.value)


def test_the_python_api_rejects_unknown_and_mistyped_options():
    schedule = make_schedule("linear", T=20)
    eps_fn = lambda x, t: 0.5 * x  # noqa: E731
    with pytest.raises(ScorelabError, match="unknown option 'bogus': sampler pc takes: "):
        sample(eps_fn, (4, 2), schedule, "pc", 5, bogus=1)
    with pytest.raises(ScorelabError, match="unknown option 'eta': sampler ddpm takes: variance"):
        sample(eps_fn, (4, 2), schedule, "ddpm", 5, eta=0.5)
    with pytest.raises(ScorelabError, match="snr must be a float > 0, got 'x'"):
        sample(eps_fn, (4, 2), schedule, "pc", 5, snr="x")
    with pytest.raises(ScorelabError, match="n_corrector must be an int >= 0, got 1.5"):
        sample(eps_fn, (4, 2), schedule, "pc", 5, n_corrector=1.5)
    with pytest.raises(ScorelabError, match="denoise must be a bool"):
        validate_options("annealed-langevin", {"denoise": 1})
    # what the samplers take from Python: ints for floats, None where nullable, tensors, and
    # a learned variance function for ddpm
    validate_options("pc", {"snr": 1, "n_corrector": np.int64(2)})
    validate_options("langevin", {"t": None, "snr": 0.1, "step_size": None})
    validate_options("ddpm", {"variance": lambda x, t: x, "gamma": torch.ones(3), "data": None})
    out = sample(eps_fn, (4, 2), schedule, "pc", 5, snr=0.2, n_corrector=2)
    assert out.nfe == 5 + 2 * 4


# --- the command line ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "ring"
    assert main(["train", "--data", "ring", "--out", str(run), *TINY]) == 0
    return run


def _sample(run, out, capsys, *extra):
    argv = ["sample", str(run), "--n", "64", "--steps", "8", "--out", str(out), *extra]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    nfe = int(re.search(r"\((\d+) NFE", printed).group(1))
    return np.load(out), nfe


def test_opt_reaches_the_sampler(ring_run, tmp_path, capsys):
    default, nfe = _sample(ring_run, tmp_path / "a.npy", capsys, "--sampler", "pc")
    assert nfe == 8 + 7  # one corrector step at each positive time
    same, _ = _sample(ring_run, tmp_path / "b.npy", capsys, "--sampler", "pc", "--opt", "snr=0.16")
    np.testing.assert_array_equal(same, default)  # the default given explicitly
    snr, nfe = _sample(ring_run, tmp_path / "c.npy", capsys, "--sampler", "pc", "--opt", "snr=0.2")
    assert nfe == 15 and not np.array_equal(snr, default)
    both, nfe = _sample(
        ring_run, tmp_path / "d.npy", capsys,
        "--sampler", "pc", "--opt", "snr=0.2", "--opt", "n_corrector=2",
    )  # fmt: skip
    assert nfe == 8 + 2 * 7 and both.shape == (64, 2) and np.isfinite(both).all()
    assert not np.array_equal(both, default)


def test_opt_sets_the_tolerances_of_ode_rk45(ring_run, tmp_path, capsys):
    tight, nfe_tight = _sample(ring_run, tmp_path / "a.npy", capsys, "--sampler", "ode-rk45")
    loose, nfe_loose = _sample(
        ring_run, tmp_path / "b.npy", capsys,
        "--sampler", "ode-rk45", "--opt", "rtol=1e-3", "--opt", "atol=1e-3",
    )  # fmt: skip
    assert loose.shape == (64, 2) and np.isfinite(loose).all()
    assert nfe_loose < nfe_tight and not np.array_equal(loose, tight)


def test_shortcut_flags_are_opt(ring_run, tmp_path, capsys):
    flag, _ = _sample(ring_run, tmp_path / "a.npy", capsys, "--sampler", "ddim", "--eta", "0.5")
    opt, _ = _sample(ring_run, tmp_path / "b.npy", capsys, "--sampler", "ddim", "--opt", "eta=0.5")
    np.testing.assert_array_equal(flag, opt)


@pytest.mark.parametrize(
    "extra, pattern",
    [
        (
            ["--sampler", "pc", "--opt", "bogus=1"],
            "unknown option 'bogus': sampler pc takes: n_corrector (int >= 0), snr (float > 0)",
        ),  # fmt: skip
        (["--sampler", "pc", "--opt", "snr=abc"], "snr must be a number, got 'abc' (sampler pc)"),
        (["--sampler", "pc", "--opt", "snr"], "--opt must look like KEY=VALUE"),
        (["--sampler", "pc", "--opt", "n_corrector=-1"], "n_corrector must be >= 0, got -1"),
        (["--sampler", "ddpm", "--opt", "eta=0.5"], "unknown option 'eta': sampler ddpm takes"),
        (["--sampler", "pc", "--eta", "0.5"], "--eta does not apply to sampler pc"),
        (["--sampler", "ddim", "--eta", "0.5", "--opt", "eta=0.1"], "give --eta or --opt eta"),
        (["--sampler", "ddim", "--eta", "3"], "eta must be in [0, 1]"),
        (["--sampler", "ddpm-score", "--variance", "analytic"], "variance must be one of beta"),
    ],
)
def test_bad_options_are_one_line_errors(ring_run, tmp_path, capsys, extra, pattern):
    err = cli_fails(
        ["sample", str(ring_run), "--out", str(tmp_path / "x.npy"), *extra], capsys, pattern
    )
    assert err.startswith("scorelab sample: error: ")


def test_samplers_lists_every_option(capsys):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    for name, spec in REGISTRY.items():
        assert name in out and spec.paper in out
        for key, opt in spec.options.items():
            assert re.search(rf"{key}\s+{re.escape(opt.describe())}, default ", out), key
    assert "n_corrector  int >= 0, default 1: " in out and "--opt KEY=VALUE" in out
    assert main(["samplers", "--format", "json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert list(listed) == list(REGISTRY)
    assert listed["pc"]["options"]["snr"] == {
        "type": "float",
        "default": 0.16,
        "help": "target signal-to-noise ratio of the corrector",
        "choices": None,
        "range": "> 0",
        "nullable": False,
        "cli": True,
    }
    assert listed["heun-edm"]["options"]["s_tmax"]["default"] == "inf"  # JSON has no inf
    assert listed["ddpm"]["options"]["gamma"]["cli"] is False


def test_sample_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--opt KEY=VALUE" in out and "scorelab samplers" in out
    assert "pc: n_corrector, snr" in out and "ode-rk45: rtol, atol, t_end" in out
    for flag in ("--variance", "--eta", "--order", "--churn"):
        assert flag in out
