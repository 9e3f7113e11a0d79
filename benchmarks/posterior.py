"""Posterior sampling for linear inverse problems, judged against exact posteriors: DPS, PiGDM,
DDNM, RePaint and SDEdit with a Gaussian-mixture prior whose posterior is known in closed form,
then with a trained digits model.

What it measures
----------------
1. Exact priors (docs/theory.md §29, §31). Two Gaussian mixtures with full covariances: a 2-D
   one (3 unequal modes) and a 16-D one (5 modes, random eigenbases, unequal weights, seed 0).
   The prior's exact eps (`GaussianMixture.eps_fn`, DDPM linear schedule, T = 1000) stands in
   for the network, so only the method is judged. Operators: 16-D: a random half of the
   coordinates observed (`Mask.random`, sigma_y 0.05 and 0), a random projection with m = 8
   (`RandomProjection`, compressed sensing) and the identity (denoising), sigma_y 0.05; 2-D: the
   first coordinate observed (sigma_y 0.05 and 0) and a 1x2 random projection (sigma_y 0.05).
   Per (prior, operator) --obs observations y = A x + sigma_y n (x from the prior, fixed seeds);
   the exact posterior `prior.posterior(A, y, sigma_y)` of each; every method draws --n samples
   at each NFE (20, 50, 100, 250) with `scorelab.posterior.sample` (defaults: dps zeta 0.3,
   pigdm data_var 1, diffpir lam 7 and zeta 0.3 on its quadratic grid, repaint jump 5 x 2,
   sdedit t0 0.5; repaint's steps are the most whose NFE fits the column). Metrics, averaged
   over the observations, each with its floor:
   - SW2: `sliced_wasserstein` (512 directions) to --n exact posterior samples; floor: another
     --n exact samples against the same set;
   - mean error: ||sample mean - exact mean|| / sqrt(d); floor: its expected value for --n exact
     samples, sqrt(tr Cov / (n d)) (the exact covariance, not a draw);
   - mode TV: 0.5 sum_k |mean_i p(k | x_i) - w_k'| with p(k | x) the PRIOR's responsibilities
     (y is independent of k given x, so p(k | x, y) = p(k | x) and its posterior mean is
     exactly the posterior weight w_k'); floor: the same for --n exact samples;
   - coverage: per coordinate, the fraction of samples inside the exact posterior's 5%-95%
     interval (quantiles of 100,000 exact samples), averaged over the coordinates the posterior
     leaves uncertain (std > 1e-6; at sigma_y = 0 the observed ones are exact). 0.90 is
     calibrated, below over-dispersed or biased, above under-dispersed; reference: --n exact
     samples;
   - residual: mean ||A x - y||, next to sigma_y sqrt(m) and the exact samples' own.
   The oracle reference rows run the exact POSTERIOR mixture's eps through the plain samplers
   (`scorelab.samplers.sample`: ddim with eta = 1, the step every guided method takes, and
   dpm-solver++) at the same NFE: the discretization floor of a perfect method.
2. A trained digits model (8x8): the digits preset (benchmarks/digits.py run_config) trained
   --train-steps steps by `scorelab.runs.train` on every digit except the 200 restored (or
   --run DIR), then box inpainting (the centre 4x4 hidden) and 2x super-resolution
   (`AvgPool(2)`) of the first 200 of the held-out half of `split_reference`, sigma_y 0.05
   (seed 1), one restoration each, every method at NFE 50 and 100. Each method's registered
   function runs once for all 200 observations (y of shape (200, m); each sample sees its own
   y: the same code as `scorelab.posterior.sample`, which takes one y). FD of the
   restorations against the reference half in the digits classifier's features, the floor
   (the 200 originals against it) and A^+ y's; mean ||A x - y|| against the noise's own
   ||A x_true - y||. Pictures: posterior_inpaint.png and posterior_sr.png (rows: original,
   A^+ y, each method at NFE 100).
3. PiGDM with a trained network (docs/theory.md §31: d x0_hat / d x_t = (I - sigma_t d eps /
   d x_t) / a_t carries the network's Jacobian error times 1 / a_t, 160 at t = T) next to a
   variant written here, without touching src/: "pigdm, guidance from abar >= 0.01", the same
   exact-Bayes eps - sigma_t g (`pigdm_guided`), but g only where abar_t >= 0.01 (1 / a_t <= 10).
   For a Gaussian prior the exact d x0_hat / d x_t is a_t S (a_t^2 S + sigma_t^2 I)^-1 = O(a_t),
   so where the variant drops g the true guidance is small; the exact priors measure what
   dropping it costs.
4. Peer: deepinv's DPS and DiffPIR (benchmarks/_deepinv_peer.py) on the exact-prior problems,
   fed the prior's exact denoiser in deepinv's [0, 1] image convention (x / scale as its
   [-1, 1] image, each cell keeping the better of scale 1 and 2), at the same NFE (denoiser
   calls, counted), judged by the same Judge. deepinv imports torchvision, whose wheels need
   another torch than this project's CPU build; its samplers do not use it, so the benchmark
   imports deepinv on an inert stand-in when torchvision is missing. Install it without
   letting it touch torch: `pip install --no-deps deepinv torchmetrics lightning-utilities
   einops natsort h5py`. Without deepinv the peer's rows are left out and the report says why.

Run
---
    .venv/bin/python benchmarks/posterior.py           # about 10 minutes on one thread
    .venv/bin/python benchmarks/posterior.py --quick   # smaller n, NFE 20/100, short training
    .venv/bin/python benchmarks/posterior.py --run runs/digits   # reuse a trained digits run

Options: --n (samples per set, default 2000), --obs (observations per operator, default 3),
--train-steps (default 3000), --run DIR, --threads (default 1), --parts exact,digits, --out,
--no-peer (skip deepinv).
Needs scikit-learn (digits) and matplotlib. Writes benchmarks/results/posterior.md (or --out)
and the two pictures beside it.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _deepinv_peer  # noqa: E402
from _machine import cpu_model  # noqa: E402
from digits import run_config  # noqa: E402

from scorelab import posterior, samplers  # noqa: E402
from scorelab._tensor import randn  # noqa: E402
from scorelab.data import load_images  # noqa: E402
from scorelab.data.images import to_uint8  # noqa: E402
from scorelab.evaluation.features import classifier_features, load_or_train_classifier  # noqa: E402
from scorelab.evaluation.images import save_image_grid  # noqa: E402
from scorelab.evaluation.metrics import frechet_distance, sliced_wasserstein  # noqa: E402
from scorelab.operators import AvgPool, Identity, Mask, RandomProjection  # noqa: E402
from scorelab.oracle import GaussianMixture  # noqa: E402
from scorelab.posterior import pigdm_guided, repaint_path  # noqa: E402
from scorelab.processes.schedules import make_schedule  # noqa: E402
from scorelab.reports.metrics import split_reference  # noqa: E402
from scorelab.runs import load_run, train  # noqa: E402
from scorelab.samplers.ddim import sample_ddim  # noqa: E402
from scorelab.samplers.timesteps import make_timesteps  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NFES, QUICK_NFES = (20, 50, 100, 250), (20, 100)
DIGIT_NFES = (50, 100)
N_EXACT = 100_000  # exact posterior samples behind the coverage intervals
N_DIGITS = 200
SIGMA_Y = 0.05
PIGDM_CUT = 0.01  # abar_t below which "pigdm, guidance from abar >= 0.01" drops g
GOAL = 1.5  # the goal: SW2 within 1.5x of its floor on the 16-D problem at <= 100 NFE
# the methods' rows: (row name, registered method or None for a variant here, options)
METHODS = (
    ("dps", "dps", {}),
    ("pigdm", "pigdm", {}),
    ("pigdm, guidance from abar >= 0.01", None, {}),
    ("ddnm", "ddnm", {}),
    ("diffpir", "diffpir", {}),
    ("repaint", "repaint", {}),
    ("sdedit", "sdedit", {}),
)
PEER = "deepinv: "  # the prefix of the peer's rows
# the oracle's rows: (row name, sampler, options), run on the exact posterior's eps
ORACLES = (
    ("oracle: ddim, eta 1", "ddim", {"eta": 1.0}),
    ("oracle: dpm-solver++", "dpm-solver++", {}),
)


# ---------------------------------------------------------------- priors and operators


def mixture_2d() -> GaussianMixture:
    """3 unequal modes: two share the first coordinate, so observing it leaves two."""
    means = torch.tensor([[-1.2, -0.6], [0.9, 1.0], [0.7, -1.1]], dtype=torch.float64)
    stds = torch.tensor([[0.35, 0.25], [0.3, 0.4], [0.25, 0.3]], dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.2, 0.45, 0.35]), means, stds**2)


def mixture_16d(seed: int = 0) -> GaussianMixture:
    """5 full-covariance modes in 16-D: means N(0, 0.3^2 I), eigenvalues U(0.05, 0.65) in a
    random orthonormal basis each, weights 0.35, 0.25, 0.2, 0.12, 0.08. The modes overlap enough
    that half the coordinates (or 8 projections) leave 2-3 of them in the posterior."""
    g = torch.Generator().manual_seed(seed)
    d, k = 16, 5
    means = 0.3 * torch.randn(k, d, generator=g, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=torch.float64))[0]
    eig = 0.05 + 0.6 * torch.rand(k, d, generator=g, dtype=torch.float64)
    cov = basis @ torch.diag_embed(eig) @ basis.mT
    return GaussianMixture(torch.tensor([0.35, 0.25, 0.2, 0.12, 0.08]), means, cov)


def problems() -> list[tuple[str, GaussianMixture, list[tuple[str, object, float]]]]:
    """(name, prior, [(operator name, operator, sigma_y)])."""
    first = Mask(torch.tensor([1, 0]))
    half = Mask.random((16,), 0.5, generator=torch.Generator().manual_seed(1))
    cs = RandomProjection(8, 16, torch.Generator().manual_seed(2))
    return [
        ("16-D", mixture_16d(), [
            ("inpaint (random half)", half, SIGMA_Y),
            ("inpaint (random half)", half, 0.0),
            ("compressed sensing (m = 8)", cs, SIGMA_Y),
            ("denoise (identity)", Identity((16,)), SIGMA_Y),
        ]),
        ("2-D", mixture_2d(), [
            ("inpaint (x_1 observed)", first, SIGMA_Y),
            ("inpaint (x_1 observed)", first, 0.0),
            ("projection (1x2)", RandomProjection(1, 2, torch.Generator().manual_seed(2)), SIGMA_Y),
        ]),
    ]  # fmt: skip


# ---------------------------------------------------------------- the PiGDM variants


def sample_pigdm_cut(eps_fn, x, schedule, timesteps, operator, y, sigma_y, *, generator=None):
    """scorelab's pigdm (eps - sigma_t g, DDIM eta 1), with g only where abar_t >= PIGDM_CUT."""
    guided = pigdm_guided(eps_fn, schedule, operator, y, sigma_y)

    def eps(x: Tensor, t: Tensor) -> Tensor:
        ab = float(schedule.alpha_bar(t[:1].to(torch.float64)))
        return guided(x, t) if ab >= PIGDM_CUT else eps_fn(x, t)

    return sample_ddim(eps, x, schedule, timesteps, eta=1.0, generator=generator)


VARIANTS: dict[str, Callable[..., Tensor]] = {
    "pigdm, guidance from abar >= 0.01": sample_pigdm_cut,
}


def method_fn(row: str, method: str | None) -> Callable[..., Tensor]:
    return VARIANTS[row] if method is None else posterior.get_method(method).fn


def steps_for(method: str | None, nfe: int) -> int:
    """Grid intervals whose NFE fits nfe: repaint's jumps cost extra calls."""
    if method != "repaint":
        return nfe
    return max(k for k in range(1, nfe + 1) if len(repaint_path(k, 5, 2)) - 1 <= nfe)


def applies(method: str | None, operator) -> bool:
    return method != "repaint" or isinstance(operator, Mask)


def run_variant(fn, eps_fn, schedule, operator, y, sigma_y, steps, n, generator) -> Tensor:
    """A variant as posterior.sample runs a registered method (DDPM schedule: scale 1)."""
    timesteps = make_timesteps(schedule, steps, "uniform", t_min=schedule.sampling_t_min)
    x = randn((n, *operator.shape), generator=generator, dtype=torch.float32)
    return fn(eps_fn, x, schedule, timesteps, operator, y, sigma_y, generator=generator)


# ---------------------------------------------------------------- the exact-prior part


class Judge:
    """The metrics of a sample set against one exact posterior, and their floors."""

    def __init__(self, prior: GaussianMixture, post: GaussianMixture, operator, y, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.prior, self.post, self.operator, self.y = prior, post, operator, y
        self.ref, _ = post.sample(n, generator=g)
        big, _ = post.sample(N_EXACT, generator=g)
        q = torch.quantile(big, torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
        self.lo, self.hi = q[0], q[1]
        self.uncertain = big.std(0) > 1e-6
        w, mu = post.weights, post.means
        self.mean = (w[:, None] * mu).sum(0)
        second = (w[:, None, None] * (post.covariances + mu[:, :, None] * mu[:, None, :])).sum(0)
        cov = second - self.mean[:, None] * self.mean[None, :]
        d = prior.dim
        floor_set, _ = post.sample(n, generator=g)
        self.floor = self(floor_set)
        self.floor["mean_err"] = math.sqrt(float(cov.trace()) / (n * d))

    def __call__(self, x: Tensor) -> dict:
        x = x.to(torch.float64)
        if not torch.isfinite(x).all():
            nan = float("nan")
            return {"sw": nan, "mean_err": nan, "tv": nan, "coverage": nan, "residual": nan}
        g = torch.Generator().manual_seed(0)
        inside = ((x >= self.lo) & (x <= self.hi)).to(torch.float64).mean(0)
        resp = self.prior.responsibilities(x).mean(0)
        return {
            "sw": sliced_wasserstein(x, self.ref, generator=g),
            "mean_err": float((x.mean(0) - self.mean).norm()) / math.sqrt(x.shape[1]),
            "tv": 0.5 * float((resp - self.post.weights).abs().sum()),
            "coverage": float(inside[self.uncertain].mean()),
            "residual": float(posterior.residual(self.operator, x, self.y.to(x.dtype)).mean()),
        }


def observations(prior, operator, sigma_y, count, seed) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, _ = prior.sample(count, generator=g)
    noise = torch.randn(count, *operator.out_shape, generator=g, dtype=torch.float64)
    y = operator.forward(x) + sigma_y * noise
    return [y[i : i + 1] for i in range(count)]


def is_method(row: str) -> bool:
    """A scorelab method's row (not an oracle's, not the peer's)."""
    return not row.startswith(("oracle", PEER))


def peer_rows(dinv, prior, operator, y, sigma_y, nfes, n, seed, judge) -> dict:
    """(row, nfe) -> metrics of deepinv's methods; each keeps its best scale by SW2."""
    out = {}
    for method in _deepinv_peer.METHODS:
        for nfe in nfes:
            best = None
            for scale in _deepinv_peer.SCALES:
                t = time.perf_counter()
                x, calls = _deepinv_peer.run(dinv, method, prior, operator, y, sigma_y, nfe, n,
                                             seed, scale)  # fmt: skip
                m = judge(x)
                m.update(nfe=calls, seconds=time.perf_counter() - t, scale=scale)
                if best is None or nan_last(m["sw"]) < nan_last(best["sw"]):
                    best = m
            out[(PEER + method, nfe)] = best
    return out


def exact_part(args, nfes, dinv=None) -> list[dict]:
    """One entry per (problem, operator, sigma_y): rows of averaged metrics and floors; with
    dinv (the deepinv module) also the peer's rows."""
    schedule = make_schedule("linear", 1000)
    settings = []
    for p_index, (problem, prior, ops) in enumerate(problems()):
        eps_prior = prior.eps_fn(schedule)
        for o_index, (op_name, operator, sigma_y) in enumerate(ops):
            t0 = time.perf_counter()
            seed = 1000 * p_index + 10 * o_index
            ys = observations(prior, operator, sigma_y, args.obs, seed)
            per_obs: dict[tuple[str, int], list[dict]] = {}
            floors, weights = [], []
            for j, y in enumerate(ys):
                post = prior.posterior(operator, y[0], sigma_y)
                weights.append(post.weights)
                judge = Judge(prior, post, operator, y, args.n, seed + 100 + j)
                floors.append(judge.floor)
                y32 = y.float()
                for row, method, options in METHODS:
                    if not applies(method, operator):
                        continue
                    for nfe in nfes:
                        g = torch.Generator().manual_seed(seed + j)
                        steps = steps_for(method, nfe)
                        t = time.perf_counter()
                        if method is None:
                            x = run_variant(method_fn(row, None), eps_prior, schedule, operator,
                                            y32, sigma_y, steps, args.n, g)  # fmt: skip
                            calls = steps
                        else:
                            res = posterior.sample(eps_prior, schedule, operator, y32, sigma_y,
                                                   method, steps, n=args.n, generator=g,
                                                   **options)  # fmt: skip
                            x, calls = res.x, res.nfe
                        m = judge(x.detach())
                        m.update(nfe=calls, seconds=time.perf_counter() - t)
                        per_obs.setdefault((row, nfe), []).append(m)
                if dinv is not None:
                    rows = peer_rows(dinv, prior, operator, y, sigma_y, nfes, args.n, seed + j,
                                     judge)  # fmt: skip
                    for key, m in rows.items():
                        per_obs.setdefault(key, []).append(m)
                eps_post = post.eps_fn(schedule)
                for row, sampler, options in ORACLES:
                    for nfe in nfes:
                        g = torch.Generator().manual_seed(seed + j)
                        t = time.perf_counter()
                        res = samplers.sample(eps_post, (args.n, prior.dim), schedule, sampler,
                                              nfe, generator=g, **options)  # fmt: skip
                        m = judge(res.x)
                        m.update(nfe=res.nfe, seconds=time.perf_counter() - t)
                        per_obs.setdefault((row, nfe), []).append(m)
            rows = {key: average(ms) for key, ms in per_obs.items()}
            m = operator.out_shape[0]
            settings.append({
                "problem": problem, "operator": op_name, "sigma_y": sigma_y, "m": m,
                "d": prior.dim, "floor": average(floors), "rows": rows,
                "modes": [int((w > 0.05).sum()) for w in weights],
                "seconds": time.perf_counter() - t0,
            })  # fmt: skip
            best = min((r for k, r in rows.items() if is_method(k[0])),
                       key=lambda r: nan_last(r["sw"]))  # fmt: skip
            print(f"{problem} {op_name} sigma_y={sigma_y}: {time.perf_counter() - t0:.0f}s; "
                  f"floor SW2 {settings[-1]['floor']['sw']:.4f}, best method SW2 "
                  f"{best['sw']:.4f}", flush=True)  # fmt: skip
    return settings


def average(ms: list[dict]) -> dict:
    return {k: sum(m[k] for m in ms) / len(ms) for k in ms[0] if k != "scale"}


def nan_last(v: float) -> float:
    return v if math.isfinite(v) else float("inf")


# ---------------------------------------------------------------- the trained-model part


def digits_part(args, nfes, work: Path) -> dict:
    images = load_images("digits")
    reference, held_out, ref_labels, held_labels = split_reference(images.x, images.labels)
    originals = held_out[:N_DIGITS]
    info: dict = {}
    if args.run is None:
        # train on every digit but the restored ones (uint8, as `scorelab train --data X.npy`)
        path = work / "digits-train.npy"

        np.save(path, to_uint8(torch.cat([reference, held_out[N_DIGITS:]]))[..., 0])
        run_dir = work / "digits-run"
        t0 = time.perf_counter()
        train(run_config(str(path), args.train_steps), run_dir, progress=False,
              log=lambda m: None, pictures=False)  # fmt: skip
        info["train_seconds"] = time.perf_counter() - t0
        info["train_steps"] = args.train_steps
        print(f"digits: trained {args.train_steps} steps in {info['train_seconds']:.0f}s",
              flush=True)  # fmt: skip
    else:
        run_dir = args.run
    run = load_run(run_dir)
    classifier, cinfo = load_or_train_classifier(
        work, reference, ref_labels, held_out, held_labels, log=lambda m: None
    )
    features = classifier_features(classifier)
    f_ref = features(reference)
    info["accuracy"] = cinfo["test_accuracy"]
    info["floor"] = frechet_distance(features(originals), f_ref)
    shape = tuple(run.shape)
    norm, schedule = run.normalizer, run.schedule
    shift = norm.decode(torch.zeros(1, *shape))
    tasks = {
        "inpaint": ("box inpainting (centre 4x4 hidden)", Mask.box(shape, 2, 2, 4, 4)),
        "sr": ("2x super-resolution (AvgPool(2))", AvgPool(2, shape)),
    }
    out: dict = {"info": info, "tasks": {}}
    for key, (title, operator) in tasks.items():
        g = torch.Generator().manual_seed(1)
        noise = torch.randn(N_DIGITS, *operator.out_shape, generator=g)
        y = operator.forward(originals) + SIGMA_Y * noise
        y_model = (y - operator.forward(shift)) / norm.scale
        sigma_model = SIGMA_Y / norm.scale
        pinv = operator.pinv(y).clamp(-1, 1)
        rows = {}
        noise_norm = float(noise.reshape(N_DIGITS, -1).norm(dim=1).mean()) * SIGMA_Y
        pictures = [originals[:12], pinv[:12]]
        for row, method, options in METHODS:
            if not applies(method, operator):
                continue
            for nfe in nfes:
                steps = steps_for(method, nfe)
                timesteps = make_timesteps(schedule, steps, "uniform",
                                           t_min=schedule.sampling_t_min)  # fmt: skip
                gen = torch.Generator().manual_seed(2)
                x = randn((N_DIGITS, *shape), generator=gen, dtype=torch.float32)
                t0 = time.perf_counter()
                x = method_fn(row, method)(run.eps_fn, x, schedule, timesteps, operator, y_model,
                                           sigma_model, generator=gen, **options)  # fmt: skip
                seconds = time.perf_counter() - t0
                raw = norm.decode(x.detach())
                bad = int((~torch.isfinite(raw)).sum())
                shown = torch.nan_to_num(raw, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1, 1)
                resid = posterior.residual(operator, torch.nan_to_num(raw, nan=1e30), y)
                rows[(row, nfe)] = {
                    "fd": frechet_distance(features(shown), f_ref),
                    "residual": float(resid.mean()),
                    "residual_median": float(resid.median()),
                    "nonfinite": bad,
                    "seconds": seconds,
                }
                if nfe == max(nfes):
                    pictures.append(shown[:12])
                print(f"  digits {key} {row} @ {nfe}: FD {rows[(row, nfe)]['fd']:.3f}, "
                      f"||Ax - y|| {rows[(row, nfe)]['residual']:.4g}, {seconds:.0f}s",
                      flush=True)  # fmt: skip
        out["tasks"][key] = {
            "title": title,
            "m": math.prod(operator.out_shape),
            "rows": rows,
            "pinv_fd": frechet_distance(features(pinv), f_ref),
            "pinv_residual": float(posterior.residual(operator, pinv, y).mean()),
            "noise_norm": noise_norm,
            "picture_rows": ["original", "A^+ y"]
            + [r for r, m, _ in METHODS if applies(m, operator)],
        }
        picture = args.out.with_name(f"posterior_{key}.png")
        save_image_grid(torch.cat(pictures), picture, nrow=12)
        out["tasks"][key]["picture"] = picture.name
    return out


# ---------------------------------------------------------------- the peer


def load_peer() -> tuple[object | None, str]:
    """(the deepinv module or None, what the report says about the peer)."""
    try:
        dinv, how = _deepinv_peer.load()
    except Exception as e:  # not installed, or failing on import
        return None, (
            f"`import deepinv` fails here ({type(e).__name__}: {e}); install it with "
            "`pip install --no-deps deepinv torchmetrics lightning-utilities einops natsort "
            "h5py` (never letting it replace torch). The peer was not run."
        )
    return dinv, _deepinv_peer.describe(how)


# ---------------------------------------------------------------- the report


def fmt(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}g}" if math.isfinite(v) else "diverged"


def setting_title(s: dict) -> str:
    return f"{s['problem']} {s['operator']}, sigma_y = {s['sigma_y']:g}"


def goal_check(settings: list[dict]) -> tuple[list[str], bool]:
    lines, met_all = [], True
    for s in settings:
        if s["problem"] != "16-D" or not s["operator"].startswith(("inpaint", "compressed")):
            continue
        cands = [(k, r) for k, r in s["rows"].items() if is_method(k[0]) and k[1] <= 100]
        (row, nfe), best = min(cands, key=lambda kr: nan_last(kr[1]["sw"]))
        ratio = best["sw"] / s["floor"]["sw"]
        met = ratio <= GOAL
        met_all &= met
        lines.append(
            f"| {setting_title(s)} | {row} @ {nfe} | {best['sw']:.4f} | {s['floor']['sw']:.4f} "
            f"| {ratio:.2f} | {'met' if met else 'not met'} |"
        )
    return lines, met_all


def peer_check(settings: list[dict], nfes) -> tuple[list[str], int, int]:
    """Per 16-D setting and NFE: scorelab's best SW2 against deepinv's best (lines, wins,
    cells); no lines when the peer did not run."""
    lines, wins, cells = [], 0, 0
    for s in settings:
        if s["problem"] != "16-D":
            continue
        for nfe in nfes:
            ours = [(k[0], r) for k, r in s["rows"].items() if k[1] == nfe and is_method(k[0])]
            theirs = [(k[0], r) for k, r in s["rows"].items()
                      if k[1] == nfe and k[0].startswith(PEER)]  # fmt: skip
            if not theirs:
                continue
            on, o = min(ours, key=lambda kr: nan_last(kr[1]["sw"]))
            tn, t = min(theirs, key=lambda kr: nan_last(kr[1]["sw"]))
            win = nan_last(o["sw"]) < nan_last(t["sw"])
            wins, cells = wins + win, cells + 1
            lines.append(
                f"| {setting_title(s)} | {nfe} | {o['sw']:.4f} ({on}) | {fmt(t['sw'])} "
                f"({tn[len(PEER):]}, {t['nfe']:.0f} calls) | {nan_last(t['sw']) / o['sw']:.2f} "
                f"| {'scorelab' if win else 'deepinv'} |"
            )
    return lines, wins, cells


def report(args, nfes, settings, digits, peer, minutes) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = shlex.join([".venv/bin/python", "benchmarks/posterior.py", *sys.argv[1:]])
    lines = [
        "# Posterior sampling for inverse problems against exact posteriors",
        "",
        f"{now}; {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} thread"
        f"{'s' if torch.get_num_threads() > 1 else ''}, Python {platform.python_version()}; "
        f"{minutes:.1f} minutes. Command: `{command}`."
        + (
            " **A smoke run (--quick): smaller n, fewer NFE, short training.**"
            if args.quick
            else ""
        ),
        "",
        "Methods (`scorelab.posterior.sample`, defaults): dps (zeta 0.3), pigdm (data_var 1), "
        "ddnm, diffpir (lam 7, zeta 0.3, its quadratic grid), repaint (Mask only; jump 5, "
        "resample 2: its steps are the most whose NFE fits the column), sdedit (t0 0.5); a "
        "PiGDM variant written in the benchmark (not in scorelab): its guidance only where "
        "abar_t >= 0.01. Oracle rows: the "
        "exact posterior's eps through `scorelab.samplers.sample` (ddim eta 1; dpm-solver++): "
        "a perfect method's discretization error. The prior's exact eps stands in for the "
        "network; DDPM linear schedule, T = 1000. See the docstring of benchmarks/posterior.py "
        "for each metric's definition.",
        "",
    ]
    if settings:
        lines += exact_summary(args, nfes, settings)
        for s in settings:
            lines += setting_table(args, nfes, s)
    if digits:
        lines += digits_report(digits)
    lines += ["## Peer: deepinv", "", peer, ""]
    return "\n".join(lines)


def exact_summary(args, nfes, settings) -> list[str]:
    lines = [
        f"## Summary: best method per operator and NFE (SW2; n = {args.n}, mean of "
        f"{args.obs} observations)",
        "",
        "Each cell: the best scorelab method's SW2 (and which), the best oracle row's, and the "
        "floor (exact samples vs exact samples at the same n).",
        "",
        "| problem, operator | floor | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
        "|---|---:|" + "---|" * len(nfes),
    ]
    for s in settings:
        cells = []
        for nfe in nfes:
            meth = [(k[0], r) for k, r in s["rows"].items() if k[1] == nfe and is_method(k[0])]
            orac = [r for k, r in s["rows"].items() if k[1] == nfe and k[0].startswith("oracle")]
            name, best = min(meth, key=lambda kr: nan_last(kr[1]["sw"]))
            ob = min(r["sw"] for r in orac)
            cells.append(f"{best['sw']:.4f} ({name}); oracle {ob:.4f}")
        lines.append(f"| {setting_title(s)} | {s['floor']['sw']:.4f} | " + " | ".join(cells)
                     + " |")  # fmt: skip
    goal, met = goal_check(settings)
    lines += [
        "",
        f"**Goal check**: at least one scorelab method within {GOAL}x of the SW2 floor on the "
        "16-D problem at <= 100 NFE, for inpainting and compressed sensing (the best method "
        f"and NFE up to 100; oracle rows excluded): **{'met' if met else 'not met'}**.",
        "",
        "| problem, operator | best at <= 100 NFE | SW2 | floor | ratio | goal |",
        "|---|---|---:|---:|---:|---|",
        *goal,
        "",
    ]
    peer, wins, cells = peer_check(settings, nfes)
    if peer:
        lines += [
            f"**Against deepinv** (its DPS and DiffPIR, each at its best data scale; 16-D, "
            f"every NFE): scorelab's best method has the lower SW2 in **{wins} of {cells}** "
            "cells.",
            "",
            "| problem, operator | NFE | scorelab best SW2 | deepinv best SW2 | deepinv / "
            "scorelab | lower |",
            "|---|---:|---|---|---:|---|",
            *peer,
            "",
        ]
    return lines


def setting_table(args, nfes, s) -> list[str]:
    f = s["floor"]
    lines = [
        f"## {setting_title(s)} (d = {s['d']}, m = {s['m']})",
        "",
        f"Posterior modes with weight > 0.05 per observation: {s['modes']}; sigma_y sqrt(m) = "
        f"{s['sigma_y'] * math.sqrt(s['m']):.4g}; {s['seconds']:.0f} s.",
        "",
        "| method | NFE | SW2 | mean err | mode TV | coverage 90% | ||Ax - y|| | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| **floor** (exact samples) | | {f['sw']:.4f} | {f['mean_err']:.4f} | {f['tv']:.4f} "
        f"| {f['coverage']:.3f} | {f['residual']:.4g} | |",
    ]
    names = [r for r, *_ in METHODS] + [PEER + m for m in _deepinv_peer.METHODS]
    names += [r for r, *_ in ORACLES]
    for name in names:
        for nfe in nfes:
            r = s["rows"].get((name, nfe))
            if r is None:
                continue
            lines.append(
                f"| {name} | {r['nfe']:.0f} | {fmt(r['sw'])} | {fmt(r['mean_err'])} | "
                f"{fmt(r['tv'])} | {fmt(r['coverage'], 3)} | {fmt(r['residual'])} | "
                f"{r['seconds']:.1f} |"
            )
    lines.append("")
    return lines


def digits_report(digits: dict) -> list[str]:
    info = digits["info"]
    trained = (
        f"the digits preset trained {info['train_steps']} steps here ({info['train_seconds']:.0f}"
        f" s) on every digit but the {N_DIGITS} restored"
        if "train_steps" in info
        else "the given --run"
    )
    lines = [
        f"## Trained digits model: {N_DIGITS} held-out digits, sigma_y = {SIGMA_Y}",
        "",
        f"Prior: {trained}. One restoration per digit; FD in the digits classifier's features "
        f"against the reference half (classifier accuracy on the held-out half "
        f"{info['accuracy']:.3f}); floor: the {N_DIGITS} originals against it "
        f"(**{info['floor']:.3f}**). ||Ax - y||: mean over the digits, in data units; "
        "non-finite: pixels that were inf or NaN (shown and scored as clamped, NaN as 0).",
        "",
    ]
    for key, t in digits["tasks"].items():
        lines += [
            f"### {t['title']} (m = {t['m']})",
            "",
            f"The noise's own ||A x_true - y||: {t['noise_norm']:.4f} (sigma_y sqrt(m) = "
            f"{SIGMA_Y * math.sqrt(t['m']):.4f}). A^+ y: FD {t['pinv_fd']:.3f}, ||A A^+ y - y|| "
            f"{t['pinv_residual']:.4f}.",
            "",
            "| method | NFE | FD | FD / floor | mean ||Ax - y|| | median | non-finite | s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for (row, nfe), r in t["rows"].items():
            lines.append(
                f"| {row} | {nfe} | {r['fd']:.3f} | {r['fd'] / info['floor']:.2f} | "
                f"{fmt(r['residual'])} | {fmt(r['residual_median'])} | {r['nonfinite']} | "
                f"{r['seconds']:.0f} |"
            )
        lines += [
            "",
            f"![{key}]({t['picture']}) Rows: {', '.join(t['picture_rows'])} (NFE "
            f"{max(DIGIT_NFES)}); 12 digits.",
            "",
        ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per set (default 2000)")
    parser.add_argument("--obs", type=int, default=3, help="observations per operator (3)")
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--run", type=Path, default=None, help="a trained digits run: no training")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 1))
    parser.add_argument("--parts", default="exact,digits")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-peer", action="store_true", help="skip deepinv's rows")
    parser.add_argument("--out", type=Path, default=RESULTS / "posterior.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nfes = NFES
    if args.quick:
        args.n, args.obs, args.train_steps, nfes = 500, 1, 300, QUICK_NFES
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    started = time.perf_counter()
    dinv, peer = load_peer() if not args.no_peer else (None, "Not run (--no-peer).")
    print(peer, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = exact_part(args, nfes, dinv) if "exact" in parts else []
    digits = None
    if "digits" in parts:
        with tempfile.TemporaryDirectory(prefix="scorelab-posterior-") as tmp:
            digits = digits_part(args, DIGIT_NFES, Path(tmp))
    minutes = (time.perf_counter() - started) / 60
    args.out.write_text(report(args, nfes, settings, digits, peer, minutes))
    print(f"wrote {args.out} ({minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
