"""Negative log-likelihood of a trained run on data in the data's own units.

The model works on z = (x - shift) / scale (scorelab.data.Normalizer), so by the change of
variables  -log p_x(x) = -log p_z(z) + d log(scale):  every NLL here adds the log |det| of
the normalizer's affine map to what scorelab.likelihood computes in model units. Reported as
the mean over examples with its standard error, in nats per example and bits per dimension.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from scorelab.errors import ScorelabError
from scorelab.likelihood import LN2, default_t0, dequantize, ode_log_likelihood, vlb

METHODS = ("vlb", "ode")


@dataclass
class NLLReport:
    """Mean NLL and its standard error (nats per example, data units), with bits/dim."""

    method: str
    nll_nats: float
    stderr_nats: float
    n: int
    dim: int
    seconds: float
    nfe: int | None = None
    per_t_nats: list[float] | None = field(default=None, repr=False)
    settings: dict = field(default_factory=dict)

    @property
    def nll_bits_per_dim(self) -> float:
        return self.nll_nats / (self.dim * LN2)

    @property
    def stderr_bits_per_dim(self) -> float:
        return self.stderr_nats / (self.dim * LN2)

    def to_dict(self) -> dict:
        d = {
            "method": self.method,
            "nll_nats": self.nll_nats,
            "nll_bits_per_dim": self.nll_bits_per_dim,
            "stderr_nats": self.stderr_nats,
            "stderr_bits_per_dim": self.stderr_bits_per_dim,
            "n": self.n,
            "dim": self.dim,
            "seconds": self.seconds,
            **self.settings,
        }
        if self.nfe is not None:
            d["nfe"] = self.nfe
        return d


def _mean_stderr(nll: Tensor) -> tuple[float, float]:
    n = nll.numel()
    std = float(nll.std()) if n > 1 else float("nan")
    return float(nll.mean()), std / math.sqrt(n)


def evaluate_nll(
    run,
    data: Tensor,
    *,
    method: str = "vlb",
    seed: int = 0,
    divergence: str = "exact",
    probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t0: float | None = None,
    batch_size: int = 1000,
) -> NLLReport:
    """NLL of data (N, d) in data units under run (a scorelab.runs.Run), by "vlb" or "ode".

    Images (N, C, H, W) in [-1, 1]: the VLB with the discretized decoder (a discrete
    probability), or the ODE likelihood of uniformly dequantized data minus the bin's
    log-volume."""
    if method not in METHODS or not hasattr(run, "eps_and_variance"):  # not a diffusion run
        raise ScorelabError(
            f"--nll {method}: a diffusion run takes --nll vlb or ode, a VAE run elbo or iwae"
        )
    if method == "vlb" and run.config.sde is not None:
        raise ScorelabError(
            f"--nll vlb is the bound of a discrete DDPM schedule; this run is on the "
            f"{run.config.sde.name} SDE (continuous time): use --nll ode"
        )
    images = len(run.shape) == 3  # (C, H, W)
    if images:  # 8-bit images: the VLB's discretized decoder, or the ODE on dequantized data
        shape = tuple(run.shape)
        if tuple(data.shape[1:]) != shape:
            raise ScorelabError(
                f"the images have shape {tuple(data.shape[1:])}; the run's model makes {shape}"
            )
        dim = math.prod(shape)
    else:
        dim = run.config.model.dim
        if data.ndim != 2 or data.shape[1] != dim:
            raise ScorelabError(
                f"the data has {data.shape[1] if data.ndim == 2 else tuple(data.shape)} "
                f"features; the run's model has {dim}"
            )
    if not torch.isfinite(data).all():
        raise ScorelabError("the data holds NaN or infinite values")
    generator = torch.Generator().manual_seed(seed)
    z = run.normalizer.encode(data.to(torch.float32))
    log_det = dim * math.log(run.normalizer.scale)  # -log p_x = -log p_z + d log scale (0: images)
    eps_fn, variance = run.eps_and_variance()  # one network call per (x, t) for both
    start = time.perf_counter()
    nlls, terms, nfe = [], [], 0
    for chunk in z.split(batch_size):
        if method == "vlb":
            result = vlb(
                eps_fn,
                chunk,
                run.schedule,
                variance=variance,
                decoder="discretized" if images else "gaussian",
                generator=generator,
            )
            nlls.append(result.total)
            terms.append(result.terms)
        else:
            log_volume = torch.zeros(chunk.shape[0])
            if images:  # -log P(x) <= -log p(y) - log_volume, y uniform in x's bin
                chunk, log_volume = dequantize(chunk, generator=generator)
            result = ode_log_likelihood(
                eps_fn,
                chunk,
                run.schedule,
                divergence=divergence,
                probes=probes,
                generator=generator,
                t0=t0,
                rtol=rtol,
                atol=atol,
            )
            nlls.append(-result.log_prob - log_volume)
            nfe += result.nfe
    seconds = time.perf_counter() - start
    nll = torch.cat(nlls).to(torch.float64) + log_det
    if not torch.isfinite(nll).all():
        raise ScorelabError("the likelihood is not finite on this data (is the run diverged?)")
    mean, stderr = _mean_stderr(nll)
    settings: dict = {"variance": run.config.model.variance}
    if images:
        settings["likelihood"] = "discrete" if method == "vlb" else "dequantized"
    if method == "ode":
        settings.update(
            divergence=divergence,
            rtol=rtol,
            atol=atol,
            t0=default_t0(run.schedule) if t0 is None else float(t0),
        )
        if divergence == "hutchinson":
            settings["probes"] = probes
    per_t = None
    if terms:
        per_t = torch.cat(terms).to(torch.float64).mean(dim=0).tolist()
    return NLLReport(
        method,
        mean,
        stderr,
        nll.numel(),
        dim,
        seconds,
        nfe=nfe if method == "ode" else None,
        per_t_nats=per_t,
        settings=settings,
    )
