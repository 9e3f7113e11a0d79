"""The VAE baseline as a kind of run: trained by the same Trainer, loaded back, sampled, scored.

A VAE run has the layout of a diffusion run (config.json, checkpoints, metrics.csv); its
config says model.name = "vae" and objective = "elbo". Vectors are normalized as a diffusion
run's are, x' = (x - shift) / scale, so every NLL adds d log(scale) nats (data units); images
stay in [-1, 1]. Samples decode z ~ p(z) = N(0, I) (the prior) or z ~ q(z), the aggregate
posterior of up to 2000 training examples (the diagnostic of docs/theory.md §27;
scorelab.evaluation.latent).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from scorelab.build import build_data, build_image_data, build_vae, normalizer_of
from scorelab.config import RunConfig
from scorelab.data import Normalizer, check_array, is_image_source
from scorelab.errors import DataError, ScorelabError
from scorelab.likelihood import dequantize
from scorelab.nn.vae import VAE
from scorelab.objectives.vae import elbo, iwae_bound, sample_vae, vae_loss
from scorelab.runs.base import CHECKPOINT, IDENTITY, Prepared, fit_run, prepare_dir
from scorelab.samplers import SampleResult
from scorelab.training.checkpoint import load_state_dict_checked
from scorelab.training.trainer import Trainer, TrainResult

if TYPE_CHECKING:
    from scorelab.evaluation.nll import NLLReport

VAE_METHODS = ("elbo", "iwae")
LATENTS = ("prior", "aggregate")
AGGREGATE_N = 2000  # training examples whose posteriors make up q(z)


def resolve_vae_config(cfg: RunConfig, image_shape: tuple[int, int, int] | None, dim: int):
    """The VAE's config fitted to its data: shapes, latent size and decoder defaults, checked."""
    if cfg.sde is not None:
        raise ScorelabError("--sde is for diffusion models; --model vae trains on the ELBO")
    if cfg.objective not in ("eps", "elbo"):  # eps: the default, i.e. not given
        raise ScorelabError(
            f"--model vae trains on the ELBO; --objective {cfg.objective} is for diffusion models"
        )
    m = cfg.model
    if image_shape is not None:
        c, h, _ = image_shape
        m = dataclasses.replace(m, in_channels=c, image_size=h)
        m = dataclasses.replace(m, latent_dim=m.latent_dim or 16, decoder=m.decoder or "logistic")
    else:
        if m.decoder in ("logistic", "bernoulli"):
            raise DataError(
                f"--decoder {m.decoder} is for images in [-1, 1]; {cfg.data} is vector data "
                "(use gaussian)"
            )
        m = dataclasses.replace(
            m, dim=dim, image_size=0, latent_dim=m.latent_dim or 2, decoder=m.decoder or "gaussian"
        )
    if not m.beta > 0 or not math.isfinite(m.beta):
        raise ScorelabError(f"--beta must be a finite number > 0, got {m.beta}")
    build_vae(m)  # an unknown decoder or bad size fails here, before any work
    return cfg.replace(model=m, objective="elbo")


def prepare_vae(
    cfg: RunConfig, *, log: Callable[[str], None] = print, out: Path | None = None
) -> Prepared:
    """The VAE config resolved against its data: latent size, decoder, normalization (out:
    unused, the VAE makes no data of its own)."""
    cfg.train.validate()
    if cfg.data is None:
        raise ScorelabError("--data is required for --model vae")
    if is_image_source(cfg.data):
        image_set = build_image_data(cfg)
        log(f"data: {image_set.note}, images {tuple(image_set.image_shape)}")
        data = image_set.x
        cfg = VAE_KIND.resolve(cfg, image_shape=image_set.image_shape, dim=0)
        cfg = cfg.replace(data_split=image_set.split or None)
        if cfg.model.decoder == "bernoulli" and not ((data == -1) | (data == 1)).all():
            raise DataError(
                f"--decoder bernoulli needs binary images; {cfg.data} has grey levels "
                "(use logistic or gaussian)"
            )
        if cfg.normalizer is None:
            cfg = cfg.replace(normalizer=IDENTITY.to_dict())
    else:
        data = check_array(build_data(cfg), cfg.data)
        cfg = VAE_KIND.resolve(cfg, image_shape=None, dim=data.shape[1])
        if cfg.normalizer is None:
            cfg = cfg.replace(normalizer=Normalizer.fit(data).to_dict())
    return Prepared(cfg, data)


def train_vae(
    cfg: RunConfig,
    out: Path,
    tensors: dict[str, Tensor] | None,
    meta: dict | None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    pictures: bool = True,
) -> TrainResult:
    """scorelab.runs.train for --model vae: the negative beta-ELBO per example as the loss."""
    prepare_dir(out)
    prepared = prepare_vae(cfg, log=log)
    cfg, data = prepared.cfg, prepared.data
    torch.manual_seed(cfg.train.seed)  # the initial weights
    model = build_vae(cfg.model)
    beta = cfg.model.beta

    def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        return vae_loss(net, x0, generator, beta=beta)

    run_cfg = cfg

    def write_samples(trainer: Trainer) -> None:
        write_vae_pictures(run_cfg, trainer.ema.state_dict(), out)

    return fit_run(
        cfg, model, loss_fn, normalizer_of(cfg).encode(data), out, tensors, meta,
        resumed_from=out, progress=progress, log=log,
        write_samples=write_samples if pictures else None,
    )  # fmt: skip


def write_vae_pictures(cfg: RunConfig, ema_state: dict[str, Tensor], out: Path, n: int = 64):
    """samples.png (decoded from the prior) and samples_aggregate.png (from q(z)), EMA weights."""
    model = build_vae(cfg.model)
    model.load_state_dict({k: v.detach().cpu() for k, v in ema_state.items()})
    model.eval()
    run = VAERun(out, cfg, model, normalizer_of(cfg), 0)
    images = VAE_KIND.is_image(cfg)
    reference = None if images else build_data(cfg)[: max(n, 2000)]
    for latents, name in (("prior", "samples.png"), ("aggregate", "samples_aggregate.png")):
        x, _ = run.sample(n if images else 2000, latents=latents)
        save_samples_picture(x, out / name, reference, f"{cfg.data}: VAE, z from the {latents}")


def save_samples_picture(x: Tensor, path: Path, reference: Tensor | None, title: str) -> Path:
    """An image grid for images, a scatter against the data for 2-D vectors."""
    if x.ndim == 4:
        from scorelab.evaluation.images import save_image_grid

        return save_image_grid(x[:64], path)
    from scorelab.evaluation.plots import scatter_vs_data

    return scatter_vs_data(x, reference if reference is not None else x, path, title)


@dataclass
class VAERun:
    """A trained VAE loaded back, with the interface of scorelab.runs.diffusion.Run that
    sampling, metrics and the report use; sample() decodes one latent per example (1 NFE)."""

    run_dir: Path
    config: RunConfig
    model: VAE
    normalizer: Normalizer
    step: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example: (C, H, W) for images, (dim,) for vectors."""
        return tuple(self.model.shape)

    def default_sampling(self) -> dict:
        """The VAE decodes z in one call: no sampler, no steps."""
        return {"sampler": "ddpm", "steps": None}

    def preview(self, steps: int = 50) -> tuple[dict, str]:
        """How previews (compare) sample: the decoder at z ~ p(z); there are no steps."""
        return {}, "decoder (prior)"

    def training_data(self) -> Tensor:
        """The run's training data in model units."""
        if VAE_KIND.is_image(self.config):
            return build_image_data(self.config).x
        return self.normalizer.encode(build_data(self.config))

    def aggregate_posterior(self, seed: int = 0) -> tuple[Tensor, Tensor]:
        """The components (mean, log_var) of q(z) over up to AGGREGATE_N training examples."""
        from scorelab.evaluation.latent import aggregate_posterior

        data = self.training_data()
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        return aggregate_posterior(self.model, data[pick[:AGGREGATE_N]])

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        sampler: str | None = None,
        steps: int | None = None,
        record_trajectory: bool = False,
        latents: str = "prior",
        **options,
    ) -> tuple[Tensor, SampleResult]:
        """n samples in the data's own units: decoder means at z ~ p(z) or z ~ q(z)."""
        if n < 1:
            raise ScorelabError(f"--n must be >= 1, got {n}")
        if latents not in LATENTS:
            raise ScorelabError(f"--latents must be one of {', '.join(LATENTS)}, got {latents!r}")
        if record_trajectory:
            raise ScorelabError("a VAE decodes in one step: there is no trajectory (.gif)")
        options = {k: v for k, v in options.items() if v is not None and k != "spacing"}
        if options:
            raise ScorelabError(f"sampler options do not apply to a VAE: {', '.join(options)}")
        generator = torch.Generator().manual_seed(seed)
        z = None
        if latents == "aggregate":
            from scorelab.evaluation.latent import sample_aggregate_posterior

            mean, log_var = self.aggregate_posterior(seed)
            z = sample_aggregate_posterior(mean, log_var, n, generator=generator)
        x = sample_vae(self.model, n, generator=generator, z=z)
        return self.normalizer.decode(x), SampleResult(x, nfe=1)


@torch.no_grad()
def evaluate_vae_nll(
    run: VAERun,
    data: Tensor,
    *,
    method: str = "elbo",
    k: int = 64,
    seed: int = 0,
    batch_size: int = 500,
) -> NLLReport:
    """-ELBO or -IWAE_k (upper bounds on the NLL) of data in data units, mean and stderr.

    Vectors: the Gaussian decoder's density, plus d log(scale) for the normalizer. Images:
    logistic and bernoulli decoders give a discrete probability P(x) directly; the Gaussian
    decoder's density is uniformly dequantized (as the diffusion likelihoods are), giving
    -log P(x) <= -log p(y) - d log(2/255)."""
    from scorelab.evaluation.nll import NLLReport

    if method not in VAE_METHODS:
        raise ScorelabError(
            f"--nll {method} is a diffusion likelihood; a VAE run takes --nll elbo or iwae"
        )
    if k < 1:
        raise ScorelabError(f"--k must be >= 1, got {k}")
    model_shape = run.model.shape
    if tuple(data.shape[1:]) != model_shape:
        raise ScorelabError(
            f"the data has shape {tuple(data.shape[1:])} per example; the run's model has "
            f"{model_shape}"
        )
    if not torch.isfinite(data).all():
        raise ScorelabError("the data holds NaN or infinite values")
    generator = torch.Generator().manual_seed(seed)
    images = VAE_KIND.is_image(run.config)
    dequantized = images and run.model.likelihood == "gaussian"
    dim = data[0].numel()
    x = run.normalizer.encode(data.to(torch.float32))
    log_det = 0.0 if images else dim * math.log(run.normalizer.scale)
    start = time.perf_counter()
    nlls = []
    for chunk in x.split(batch_size):
        log_volume = torch.zeros(chunk.shape[0])
        if dequantized:
            chunk, log_volume = dequantize(chunk, generator=generator)
        if method == "elbo":
            bound = elbo(run.model, chunk, generator=generator)
        else:
            bound = iwae_bound(run.model, chunk, k, generator=generator)
        nlls.append(-bound - log_volume)
    seconds = time.perf_counter() - start
    nll = torch.cat(nlls).to(torch.float64) + log_det
    if not torch.isfinite(nll).all():
        raise ScorelabError("the bound is not finite on this data (is the run diverged?)")
    n = nll.numel()
    stderr = float(nll.std()) / math.sqrt(n) if n > 1 else float("nan")
    settings: dict = {
        "decoder": run.model.likelihood,
        "likelihood": "discrete" if images else "density",
    }
    if dequantized:
        settings["dequantized"] = True
    if method == "iwae":
        settings["k"] = k
    return NLLReport(
        method, float(nll.mean()), stderr, n, dim, seconds, nfe=None, settings=settings
    )


class VAEKind:
    """The VAE baseline (--model vae): the same run directory, its own loss and sampler."""

    name = "vae"
    models = ("vae",)
    nll_methods = VAE_METHODS
    config_type = RunConfig

    def owns(self, config: dict[str, Any]) -> bool:
        return "objective" in config and (config.get("model") or {}).get("name") == "vae"

    def resolve(
        self, cfg: RunConfig, *, image_shape: tuple[int, int, int] | None, dim: int
    ) -> RunConfig:
        return resolve_vae_config(cfg, image_shape, dim)

    prepare = staticmethod(prepare_vae)
    train = staticmethod(train_vae)

    def load(
        self, run_dir: Path, cfg: RunConfig, state: dict[str, Tensor], meta: dict, *, weights: str
    ) -> VAERun:
        model = build_vae(cfg.model)
        load_state_dict_checked(model, state, f"the {weights} weights in {run_dir / CHECKPOINT}")
        model.eval()
        return VAERun(run_dir, cfg, model, normalizer_of(cfg), int(meta["step"]))

    def is_image(self, cfg: RunConfig) -> bool:
        return cfg.model.image_size > 0

    def describe(self, cfg: RunConfig) -> str:
        m = cfg.model
        return f"VAE ({m.decoder} decoder, latent {m.latent_dim}, beta {m.beta:g})"

    def nll(
        self, run: VAERun, data: Tensor, *, methods=None, seed: int = 0, k: int = 64, **options
    ) -> list[NLLReport]:
        """-ELBO and -IWAE_k (None: both, as compare shows them); other options are the
        diffusion likelihoods' and do not apply."""
        return [
            evaluate_vae_nll(run, data, method=m, k=k, seed=seed) for m in methods or VAE_METHODS
        ]


VAE_KIND = VAEKind()
