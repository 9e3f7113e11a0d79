"""A known score as the training target: load it, check it, and sample it by Langevin.

`--target module:function` names a function taking a float tensor (n, d) and returning
∇log p_0 at those points, (n, d). Without data, samples come from unadjusted Langevin
dynamics on that score (Roberts & Tweedie 1996): x <- x + delta s(x) + sqrt(2 delta) z. Its
mixing is reported with the split potential scale reduction R-hat of Gelman et al. (2013) over
traced chains; R-hat near 1 is necessary, not sufficient: chains that all sit in one basin of a
multimodal p agree with each other and still give the wrong mode weights.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scorelab._tensor import randn, randn_like
from scorelab.errors import ScorelabError

TargetScore = Callable[[Tensor], Tensor]


def load_target(spec: str) -> TargetScore:
    """Import 'module:function' from the Python path."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ScorelabError(f"--target must look like module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ScorelabError(f"--target: cannot import module {module_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ScorelabError(f"--target: module {module_name!r} has no function {attr!r}")
    return fn


def checked(fn: TargetScore, name: str = "target") -> TargetScore:
    """fn, raising a one-line error on a wrong output shape or a non-finite value."""

    def score(x: Tensor) -> Tensor:
        try:
            out = fn(x)
        except Exception as e:  # the user's function: report, do not trace back into it
            raise ScorelabError(f"{name} failed on input of shape {tuple(x.shape)}: {e}") from None
        if not isinstance(out, Tensor):
            raise ScorelabError(f"{name} must return a tensor, got {type(out).__name__}")
        if out.shape != x.shape:
            raise ScorelabError(
                f"{name} must return the input's shape {tuple(x.shape)}, got {tuple(out.shape)}"
            )
        if not torch.isfinite(out).all():
            raise ScorelabError(f"{name} returned non-finite values (nan or inf)")
        return out.to(x.dtype)

    return score


@dataclass
class LangevinResult:
    """Samples (n, d), and the mixing diagnostics of the traced chains."""

    x: Tensor
    rhat: float
    steps: int
    step_size: float

    def report(self) -> str:
        verdict = "mixed within the basins they visit" if self.rhat < 1.1 else "NOT mixed"
        return (
            f"langevin: {self.x.shape[0]} chains x {self.steps} steps, step size "
            f"{self.step_size:g}; split R-hat (max over dims) {self.rhat:.3f}: chains {verdict}. "
            "Langevin alone can get the weights of well-separated modes wrong."
        )


def split_rhat(trace: Tensor) -> float:
    """Split R-hat of a trace (steps, chains, d), max over d (Gelman et al. 2013, 11.4)."""
    n = trace.shape[0] // 2
    if n < 2:
        raise ScorelabError("too few Langevin steps to judge mixing")
    halves = torch.cat([trace[:n], trace[n : 2 * n]], dim=1).double()  # (n, 2 chains, d)
    w = halves.var(0).mean(0)
    b = n * halves.mean(0).var(0)
    var_plus = (n - 1) / n * w + b / n
    return float((var_plus / w.clamp_min(1e-300)).sqrt().max())


def langevin_samples(
    score: TargetScore,
    n: int,
    dim: int,
    *,
    steps: int = 2000,
    step_size: float = 2e-3,
    init_std: float = 1.0,
    traced: int = 64,
    generator: torch.Generator | None = None,
) -> LangevinResult:
    """n unadjusted Langevin chains from N(0, init_std² I); R-hat over the second half."""
    if steps < 4 or step_size <= 0 or not math.isfinite(step_size):
        raise ScorelabError("Langevin needs steps >= 4 and a finite step size > 0")
    x = randn((n, dim), generator=generator) * init_std
    burn = steps // 2
    trace = []
    for i in range(steps):
        x = x + step_size * score(x) + math.sqrt(2 * step_size) * randn_like(x, generator)
        if not torch.isfinite(x).all():
            raise ScorelabError(
                f"Langevin diverged at step {i + 1} (non-finite samples): lower the step size"
            )
        if i >= burn:
            trace.append(x[:traced].clone())
    return LangevinResult(x, split_rhat(torch.stack(trace)), steps, step_size)


__all__ = ["LangevinResult", "checked", "langevin_samples", "load_target", "split_rhat"]
