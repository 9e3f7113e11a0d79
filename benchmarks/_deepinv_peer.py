"""deepinv's posterior samplers (DPS, DiffPIR) on an exact Gaussian-mixture prior, for
benchmarks/posterior.py.

deepinv imports torchvision at import time (image transforms, plotting, data sets), and no
torchvision wheel loads next to this project's CPU torch 2.13.0 (0.28 fails to register its
operators, 0.29 needs torch >= 2.14). Its samplers do not use torchvision, so when the real one
cannot be imported, `load()` puts a stand-in module on the import path that answers every
attribute with an inert object, and imports deepinv on top of it. The stand-in is only ever
installed by this benchmark, never by scorelab.

deepinv works on images in [0, 1]; its diffusions run on z = 2 u - 1 in [-1, 1] and call the
denoiser D(u, sigma_u) in the [0, 1] units. The 16-D (and 2-D) vectors x are mapped to
z = x / scale, shaped (n, 1, 1, d); the denoiser is the prior's exact E[x | x + sigma_x n]
(from `GaussianMixture.score`) at sigma_x = 2 scale sigma_u; the operator acts on x's d
coordinates and y is mapped to y_u = (y + scale A 1) / (2 scale) = A u + sigma_y / (2 scale) n.
Every denoiser call is counted: that count is the peer's NFE.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

import torch
from torch import Tensor

_STUB = "scorelab-benchmark torchvision stand-in"


class _Inert:
    """Any attribute, call or base class: what deepinv's import-time torchvision uses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __getattr__(self, name: str) -> _Inert:
        return _Inert()

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)


class _InertModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert()


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _InertModule(spec.name)
        module.__doc__ = _STUB
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []  # type: ignore[attr-defined]


def load() -> tuple[Any, str]:
    """(the deepinv module, a sentence on how it was imported); raises ImportError if absent."""
    try:
        import torchvision  # noqa: F401

        how = "with torchvision"
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _Finder())
        how = (
            "on a stand-in for torchvision (its wheels need another torch than this CPU build; "
            "deepinv's samplers do not use it)"
        )
    import deepinv

    return deepinv, f"deepinv {deepinv.__version__}, imported {how}"


class _Counter:
    def __init__(self) -> None:
        self.calls = 0


def _denoiser(dinv: Any, prior: Any, scale: float, counter: _Counter) -> Any:
    """deepinv's Denoiser: u_noisy (n, 1, 1, d) in [0, 1] units and sigma_u -> E[u | u_noisy]."""

    class ExactDenoiser(dinv.models.Denoiser):
        def forward(self, u: Tensor, sigma: Any, *args: Any, **kwargs: Any) -> Tensor:
            counter.calls += 1
            shape, n = u.shape, u.shape[0]
            sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
            sig_x = (2 * scale * sig).expand(n)[:, None]
            x_noisy = scale * (2 * u.reshape(n, -1).to(torch.float64) - 1)
            # x + s n  <->  VP x_t = (x + s n) / sqrt(1 + s^2), abar = 1 / (1 + s^2)
            c = torch.sqrt(1 + sig_x**2)
            score_vp = prior.score(x_noisy / c, (1 / c**2)[:, 0])
            x0 = x_noisy + sig_x**2 * score_vp / c
            return ((x0 / scale + 1) / 2).to(u.dtype).reshape(shape)

    return ExactDenoiser()


def _physics(dinv: Any, operator: Any, d: int, sigma_u: float) -> Any:
    def a(u: Tensor) -> Tensor:
        return operator.forward(u.reshape(u.shape[0], d).to(torch.float64)).to(u.dtype)

    def at(v: Tensor) -> Tensor:
        return operator.transpose(v.to(torch.float64)).reshape(v.shape[0], 1, 1, d).to(v.dtype)

    noise = dinv.physics.GaussianNoise(sigma=sigma_u)
    return dinv.physics.LinearPhysics(A=a, A_adjoint=at, noise_model=noise)


def run(
    dinv: Any,
    method: str,
    prior: Any,
    operator: Any,
    y: Tensor,
    sigma_y: float,
    nfe: int,
    n: int,
    seed: int,
    scale: float,
) -> tuple[Tensor, int]:
    """n samples (n, d) in x units from deepinv's `method` ("dps" or "diffpir") with at most nfe
    denoiser calls, and the calls made."""
    d = prior.dim
    counter = _Counter()
    denoiser = _denoiser(dinv, prior, scale, counter)
    a1 = operator.forward(torch.ones(1, d, dtype=torch.float64))
    y_u = ((y.to(torch.float64) + scale * a1) / (2 * scale)).expand(n, -1).to(torch.float32)
    torch.manual_seed(seed)
    if method == "dps":
        # DPS as deepinv builds it (VP SDE, its DDPM solver, the residual-norm guidance with
        # weight 1), without the clip of D to [-1, 1]: x / scale is not an image
        rng = torch.Generator().manual_seed(seed)
        fidelity = dinv.sampling.DPSDataFidelity(denoiser=denoiser, clip=None, weight=1.0)
        steps = nfe + 1  # num_steps times: num_steps - 1 solver calls and the final denoising
        solver = dinv.sampling.DDPMSolver(
            timesteps=torch.linspace(1, 0, steps, dtype=torch.float64), rng=rng
        )
        sde = dinv.sampling.VariancePreservingDiffusion(alpha=1.0, dtype=torch.float64)
        model = dinv.sampling.PosteriorDiffusion(
            data_fidelity=fidelity, sde=sde, denoiser=denoiser, solver=solver,
            dtype=torch.float64,
        )  # fmt: skip
        physics = _physics(dinv, operator, d, sigma_y / (2 * scale))
        u = model(y_u, physics, x_init=(n, 1, 1, d), seed=seed)
    elif method == "diffpir":
        # DiffPIR clamps x0 to [-1, 1] and divides by the noise level: sigma_y = 0 runs at 1e-3
        sigma_u = max(sigma_y / (2 * scale), 1e-3)
        fidelity = dinv.optim.data_fidelity.L2()
        model = dinv.sampling.DiffPIR(denoiser, fidelity, sigma=sigma_u, max_iter=nfe)
        physics = _physics(dinv, operator, d, sigma_u)
        with torch.no_grad():
            u = model(y_u, physics, seed=seed)
    else:
        raise ValueError(method)
    x = scale * (2 * u.reshape(n, d).to(torch.float64) - 1)
    return x.detach(), counter.calls


METHODS = ("dps", "diffpir")
SCALES = (1.0, 2.0)  # x / scale is deepinv's [-1, 1] image; each cell keeps the better


def describe(how: str) -> str:
    return (
        f"{how}. Its DPS (VP SDE, DDPM solver, residual-norm guidance, weight 1, no clip) and "
        "DiffPIR (its defaults: lambda 7, zeta 0.1, the L2 data fidelity's proximal step; "
        "its x0 clamp to [-1, 1]) get the prior's exact denoiser in its [0, 1] image "
        "convention; x / scale is its [-1, 1] image, shaped "
        f"(n, 1, 1, d), and each cell keeps the best of scale {', '.join(map(str, SCALES))} "
        "(the scale moves its time grid against the data). NFE = denoiser calls, counted. "
        "DiffPIR divides by the noise level: at sigma_y = 0 it runs with 1e-3 (x units: "
        f"{2e-3:g} x scale)."
    )
