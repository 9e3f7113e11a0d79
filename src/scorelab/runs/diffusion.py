"""The diffusion kind of run: train a denoiser or score model into a run directory, and load
it back for sampling, guidance and likelihoods.

RUN_DIR/config.json, checkpoint.safetensors, metrics.csv   as every kind (scorelab.runs.base)
RUN_DIR/samples.png, trajectory.gif, trajectory_strip.png   image runs: EMA samples
RUN_DIR/langevin_samples.npy                                tsm without --data: its data
RUN_DIR/tuned_grids.json                                    `scorelab tune-steps`: its grids
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scorelab.build import (
    MODELS,
    build_data,
    build_eps_and_variance,
    build_eps_fn,
    build_image_data,
    build_model_for,
    build_process,
    build_score_fn,
    build_target,
    check_image_model,
    normalizer_of,
    prediction_of,
    resolve_objective,
    sample_shape,
    score_options,
)
from scorelab.config import RunConfig
from scorelab.data import Normalizer, check_array, is_image_source, load_dataset_labels
from scorelab.data.arrays import load_labels
from scorelab.data.images import random_hflip
from scorelab.errors import DataError, ScorelabError
from scorelab.files import atomic_save_npy, atomic_write_bytes
from scorelab.objectives import (
    DENOISING_OBJECTIVES,
    LossSecondMomentSampler,
    diffusion_loss,
    drop_labels,
    fisher_scale,
    hybrid_loss,
    score_matching_loss,
)
from scorelab.processes import SDE, DiscreteSchedule
from scorelab.processes.ddpm import Variance, VarianceFn
from scorelab.runs.base import CHECKPOINT, IDENTITY, Prepared, fit_run, prepare_dir
from scorelab.runs.classifier import NoisyClassifier, load_classifier
from scorelab.samplers import SampleResult, get_sampler, sample
from scorelab.samplers.guidance import classifier_free_guided, classifier_guided, conditional
from scorelab.samplers.tuning import TunedGrid, steps_for_nfe, tune_timesteps
from scorelab.training.checkpoint import load_state_dict_checked
from scorelab.training.trainer import Trainer, TrainResult
from scorelab.typing import CondEpsFn, EpsFn

LANGEVIN_SAMPLES = "langevin_samples.npy"  # tsm without --data: the samples trained on
TUNED_GRIDS = "tuned_grids.json"  # scorelab tune-steps: {sampler/steps/options: grid and errors}


def grid_key(sampler: str, steps: int, options: dict) -> str:
    """The key of a tuned grid: the sampler, its steps and the options it was given that are
    not the sampler's defaults (order=2 for dpm-solver++ is the same grid as no order)."""
    specs = get_sampler(sampler).options
    given = {k: v for k, v in options.items() if k in specs and v != specs[k].default}
    return f"{sampler}/{steps}/{json.dumps(given, sort_keys=True)}"


def prepare_diffusion(
    cfg: RunConfig, *, log: Callable[[str], None] = print, out: Path | None = None
) -> Prepared:
    """The config resolved against its data: objective and process, the network fitted to the
    data's shape, normalization, conditioning, tsm's blend scale (Prepared.extras["target"]:
    tsm's clean score). Without data, tsm first draws Langevin samples into out; a dry run
    (out None) stops there with data None."""
    cfg = resolve_objective(cfg)
    cfg.train.validate()
    target = build_target(cfg) if cfg.objective == "tsm" else None
    extras = {"target": target}
    if cfg.data is None:
        if target is None:
            raise ScorelabError("--data is required (only --objective tsm can do without it)")
        if out is None:
            log("tsm without --data: Langevin samples of the target are drawn when training")
            return Prepared(cfg, None, None, extras)
        cfg = cfg.replace(data=str(_langevin_data(cfg, target, out, log)))
    images = is_image_source(cfg.data)
    if images:
        image_set = build_image_data(cfg)
        log(f"data: {image_set.note}, images {tuple(image_set.image_shape)}")
        data, labels = image_set.x, image_set.labels
        if cfg.labels is not None:
            labels = load_labels(cfg.labels, data.shape[0])
        cfg = fit_model_to_data(cfg, image_set.image_shape, 0)
        cfg = cfg.replace(data_split=image_set.split or None)
        if cfg.normalizer is None:
            cfg = cfg.replace(normalizer=IDENTITY.to_dict())
    else:
        data = check_array(build_data(cfg), cfg.data)
        cfg = fit_model_to_data(cfg, None, data.shape[1])
        labels = None
        if cfg.conditional or cfg.labels is not None:
            labels = load_dataset_labels(
                cfg.data, cfg.n_data, seed=cfg.train.seed, labels=cfg.labels
            )
        if cfg.normalizer is None:
            cfg = cfg.replace(normalizer=Normalizer.fit(data).to_dict())
    cfg = resolve_conditioning(cfg, labels)
    if target is not None and cfg.score.tsm_scale is None:
        clean = normalizer_of(cfg).encode_score(target)
        scale = fisher_scale(clean, normalizer_of(cfg).encode(data[:4096]))
        log(f"tsm: the blend's data scale sqrt(d / E|grad log p_0|^2) is {scale:.4g}")
        cfg = cfg.replace(score=dataclasses.replace(cfg.score, tsm_scale=scale))
    cfg = resolve_sigma_data(cfg, data, log)
    build_process(cfg)  # a bad schedule or SDE parameter fails here, before any work
    return Prepared(cfg, data, labels, extras)


def resolve_sigma_data(cfg: RunConfig, data: Tensor, log: Callable[[str], None]) -> RunConfig:
    """A process with a sigma_data parameter (EDM) not given: the std of the training data in
    model units (first 10,000 examples), recorded in the config's process parameters."""
    if cfg.sde is None or "sigma_data" in cfg.sde.params:
        return cfg
    if "sigma_data" not in {f.name for f in dataclasses.fields(build_process(cfg))}:
        return cfg
    x = normalizer_of(cfg).encode(data[:10_000].to(torch.float64))
    sigma_data = float(f"{float(x.std()):.4g}")
    log(f"{cfg.sde.name}: sigma_data {sigma_data} (the data's std in model units)")
    params = {**cfg.sde.params, "sigma_data": sigma_data}
    return cfg.replace(sde=dataclasses.replace(cfg.sde, params=params))


def train_diffusion(
    cfg: RunConfig,
    out: Path,
    tensors: dict[str, Tensor] | None = None,
    meta: dict | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    pictures: bool = True,
) -> TrainResult:
    """Train a diffusion model into run dir out (prepare, build, fit); with a checkpoint's
    tensors and meta (and its config), continue it exactly."""
    out = Path(out)
    prepare_dir(out)
    if tensors is not None and cfg.train.t_sampling != "uniform":
        raise ScorelabError(
            "resuming a run with --t-sampling second-moment is not supported: the sampler's "
            "loss history is not checkpointed"
        )
    prepared = prepare_diffusion(cfg, log=log, out=out)
    cfg, data, labels, target = (
        prepared.cfg,
        prepared.data,
        prepared.labels,
        prepared.extras["target"],
    )
    images = is_image_source(cfg.data)
    process = build_process(cfg)
    torch.manual_seed(cfg.train.seed)  # the initial weights
    model = build_model_for(cfg, process)
    loss_fn = _loss_fn(cfg, process, target)
    if cfg.conditional:
        loss_fn = conditional_loss_fn(loss_fn, cfg.model.num_classes, cfg.train.cond_drop)
    if cfg.hflip:  # augmentation: each example flipped left-right with probability 1/2
        unflipped = loss_fn

        def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator, *y: Tensor) -> Tensor:
            return unflipped(net, random_hflip(x0, generator), generator, *y)

    run_cfg = cfg

    def write_samples(trainer: Trainer) -> None:
        write_pictures(run_cfg, trainer.ema.state_dict(), out, trajectory=trainer.stopping)

    return fit_run(
        cfg, model, loss_fn, normalizer_of(cfg).encode(data), out, tensors, meta,
        resumed_from=out / CHECKPOINT, progress=progress, log=log,
        write_samples=write_samples if images and pictures else None,
        evaluate=quality_check(cfg, process, out, log=log) if cfg.train.eval_every else None,
        labels=labels if cfg.conditional else None,
    )  # fmt: skip


# the quality check while training (--eval-every): a fast sampler at few steps
EVAL_SAMPLING = {"sampler": "dpm-solver++", "steps": 20}


def quality_check(
    cfg: RunConfig, process, out: Path, *, log: Callable[[str], None] = print
) -> Callable[[Trainer], dict[str, float]]:
    """The trainer's on_eval: FD and its floor (reports.metrics.FDProbe) of cfg.train.eval_n
    samples of the EMA weights, drawn with EVAL_SAMPLING from fixed seeds, so every check of a
    run (and of its resumed copy) sees the same noise."""
    from scorelab.reports.metrics import FDProbe, draw_samples
    from scorelab.training.distributed import world

    if world()[0] != 0:  # rank 0 checks; the others wait for it
        return lambda trainer: {}
    probe = FDProbe(cfg, out, cfg.train.eval_n, log=log)
    log(
        f"quality checks every {cfg.train.eval_every} steps: FD of {probe.n} EMA samples "
        f"({EVAL_SAMPLING['sampler']}, {EVAL_SAMPLING['steps']} steps) in {probe.space}; "
        f"floor {probe.floor:.4g}"
    )

    def evaluate(trainer: Trainer) -> dict[str, float]:
        model = build_model_for(cfg, process)
        model.load_state_dict({k: v.detach().cpu() for k, v in trainer.ema.state_dict().items()})
        run = Run(out, cfg, model.eval(), process, normalizer_of(cfg), trainer.step)
        steps = min(EVAL_SAMPLING["steps"], process.default_steps)
        samples = draw_samples(run, probe.n, seed=0, sampler=EVAL_SAMPLING["sampler"], steps=steps)
        return probe(samples)

    return evaluate


def fit_model_to_data(
    cfg: RunConfig, image_shape: tuple[int, int, int] | None, dim: int
) -> RunConfig:
    """The network fitted to its data: the U-Net to the images' shape, the MLP to dim."""
    if image_shape is not None:
        return cfg.replace(model=check_image_model(cfg.model, image_shape))
    if cfg.model.name == "unet":
        raise DataError(f"--model unet takes images; {cfg.data} is vector data (use mlp)")
    if cfg.model.dim != dim:
        cfg = cfg.replace(model=dataclasses.replace(cfg.model, dim=dim))
    return cfg


def resolve_conditioning(cfg: RunConfig, labels: Tensor | None) -> RunConfig:
    """A conditional run's config with num_classes from its labels, or why it cannot be one."""
    if cfg.train.cond_drop > 0 and not cfg.conditional:
        raise ScorelabError("--cond-drop trains a conditional model: add --conditional")
    if not cfg.conditional:
        if cfg.labels is not None:
            raise ScorelabError("--labels is used by --conditional (or train-classifier)")
        return cfg
    if labels is None:
        raise DataError(
            f"--conditional needs labelled data; {cfg.data} has no labels (labelled: ring, "
            "digits, folders with class sub-folders, or --labels FILE.npy beside an .npy)"
        )
    if cfg.sde is not None or cfg.objective not in DENOISING_OBJECTIVES:
        raise ScorelabError(
            "--conditional trains with --objective eps, x0 or v on the discrete schedule, "
            f"not {cfg.objective!r}"
        )
    if cfg.train.t_sampling != "uniform":
        raise ScorelabError("--conditional is not supported with --t-sampling second-moment")
    num_classes = int(labels.max()) + 1
    if cfg.model.num_classes not in (0, num_classes):
        raise ScorelabError(
            f"the run's config has num_classes {cfg.model.num_classes}, the labels {num_classes}"
        )
    return cfg.replace(model=dataclasses.replace(cfg.model, num_classes=num_classes))


def conditional_loss_fn(loss_fn: Callable[..., Tensor], null_label: int, cond_drop: float):
    """loss_fn(net, x0, generator, y): the unconditional loss of net(x, t, y~), where y~ is y
    with labels dropped to the null class with probability cond_drop (label dropout)."""

    def loss(net: nn.Module, x0: Tensor, generator: torch.Generator, y: Tensor) -> Tensor:
        y = drop_labels(y, cond_drop, null_label, generator=generator)
        return loss_fn(lambda x, t: net(x, t, y), x0, generator)

    return loss


def write_pictures(
    cfg: RunConfig,
    ema_state: dict[str, Tensor],
    out: Path,
    *,
    n: int = 64,
    steps: int = 50,
    trajectory: bool = True,
) -> None:
    """samples.png from EMA weights (DDIM, few steps: a preview), and the trajectory pictures."""
    from scorelab.evaluation.images import (
        save_image_grid,
        save_trajectory_gif,
        save_trajectory_strip,
    )

    process = build_process(cfg)
    model = build_model_for(cfg, process)
    model.load_state_dict({k: v.detach().cpu() for k, v in ema_state.items()})
    model.eval()
    result = sample(
        build_eps_and_variance(model, cfg, process)[0],
        sample_shape(cfg.model, n),
        process,
        "ddim",
        min(steps, process.default_steps),
        generator=torch.Generator().manual_seed(0),
        record_trajectory=trajectory,
    )
    save_image_grid(result.x, out / "samples.png")
    if trajectory and result.trajectory:
        save_trajectory_gif(result.trajectory, out / "trajectory.gif")
        save_trajectory_strip(result.trajectory, out / "trajectory_strip.png")


def _loss_fn(cfg: RunConfig, process, target) -> Callable[..., Tensor]:
    """loss_fn(net, x0, generator) -> (B,): diffusion_loss on a schedule, score matching on an
    SDE. Data are normalized, x' = (x - shift) / scale, so tsm's clean score is taken in those
    units (Normalizer.encode_score)."""
    if cfg.sde is None:
        return make_loss_fn(cfg, process)
    clean = None if target is None else normalizer_of(cfg).encode_score(target)
    opts = cfg.score
    weighting = score_options(cfg, process)[1]

    def score_loss(net: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        # "mean": per dimension, L_simple's scale (an 8x8 digit's summed loss is 64 times larger
        # and --grad-clip 1 clipped every step: grad norm 15 against DDPM's 0.5; VP-SDE FD at
        # unipc 20 after 2000 steps 2.82 summed, 2.30 averaged, DDPM 2.25)
        per = 1.0 if opts.reduction == "sum" else 1.0 / x0[0].numel()
        return per * score_matching_loss(
            cfg.objective,
            build_score_fn(net, cfg, process),
            x0,
            sde=process,
            weighting=weighting,
            clean_score=clean,
            tsm_blend=opts.tsm_blend,
            data_std=opts.tsm_scale or 1.0,
            probes=opts.probes,
            distribution=opts.probe,
            variance_reduced=opts.variance_reduced,
            generator=generator,
        )

    return score_loss


def _langevin_data(cfg: RunConfig, target, out: Path, log: Callable[[str], None]) -> Path:
    """Draw cfg.n_data samples by Langevin on the target score into out/LANGEVIN_SAMPLES."""

    from scorelab.targets import langevin_samples

    result = langevin_samples(
        target,
        cfg.n_data,
        cfg.model.dim,
        steps=cfg.score.langevin_steps,
        step_size=cfg.score.langevin_step_size,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    log(result.report())
    path = out / LANGEVIN_SAMPLES
    atomic_save_npy(path, result.x.numpy())
    atomic_write_bytes(out / "langevin.txt", (result.report() + "\n").encode())
    return path


def make_loss_fn(
    cfg: RunConfig, schedule: DiscreteSchedule
) -> Callable[[nn.Module, Tensor, torch.Generator], Tensor]:
    """The per-example loss of cfg.objective: L_simple-style regression, or the hybrid loss
    (learned variance), with t uniform or importance-sampled by the loss' second moment."""
    prediction = prediction_of(cfg.objective)
    hybrid = cfg.objective == "hybrid"
    sampler = (
        LossSecondMomentSampler(schedule.T) if cfg.train.t_sampling == "second-moment" else None
    )

    def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        t, weights = None, None
        if sampler is not None:
            t, weights = sampler.sample(x0.shape[0], generator=generator, device=x0.device)
        if hybrid:
            loss = hybrid_loss(
                net,
                x0,
                schedule=schedule,
                vlb_weight=cfg.train.vlb_weight,
                generator=generator,
                t=t,
            )
        else:
            loss = diffusion_loss(
                net, x0, schedule=schedule, prediction=prediction, generator=generator, t=t
            )
        if sampler is None:
            return loss
        sampler.update(t, loss)
        return loss * weights

    return loss_fn


@dataclass
class Run:
    """A trained run loaded back: config, EMA (or raw) network, process (a DiscreteSchedule or
    the run's SDE), normalizer."""

    run_dir: Path
    config: RunConfig
    model: nn.Module
    schedule: DiscreteSchedule | SDE
    normalizer: Normalizer
    step: int

    @property
    def eps_fn(self) -> EpsFn:
        return self.eps_and_variance()[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example: (C, H, W) for images, (dim,) for vectors."""
        return sample_shape(self.config.model, 1)[1:]

    def default_sampling(self) -> dict:
        """`scorelab sample`'s sampler when none is given: ancestral DDPM, over every step of
        the schedule for vectors, 50 respaced steps for images (the digits benchmark: FD 1.18
        at 50 steps against DDIM's 1.73, in 1/20 of the time of all 1000)."""
        return {"sampler": "ddpm", "steps": 50 if DIFFUSION.is_image(self.config) else None}

    def preview(self, steps: int = 50) -> tuple[dict, str]:
        """How previews (compare) sample: DDIM with at most `steps` steps."""
        steps = min(steps, self.schedule.default_steps)
        return {"sampler": "ddim", "steps": steps}, f"ddim, {steps} steps"

    @property
    def num_classes(self) -> int:
        """Classes of a conditional run (labels 0..num_classes - 1); 0 if unconditional."""
        return self.config.model.num_classes

    @property
    def cond_eps_fn(self) -> CondEpsFn:
        """A conditional run's eps(x, t, y); y = num_classes is the null class."""
        if self.num_classes == 0:
            raise ScorelabError(f"{self.run_dir} is not a conditional run (train --conditional)")
        model, cfg, schedule = self.model, self.config, self.schedule

        def cond_eps_fn(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
            return build_eps_fn(lambda x_, t_: model(x_, t_, y), cfg, schedule)(x, t)

        return cond_eps_fn

    def guided_eps_fn(
        self,
        y: int | Tensor,
        *,
        cfg: float | None = None,
        classifier: NoisyClassifier | str | Path | None = None,
        scale: float = 1.0,
    ) -> EpsFn:
        """The eps_fn that samples class y: classifier guidance (classifier, scale s),
        classifier-free guidance (weight cfg = w), or the conditional model (neither)."""
        if cfg is not None and classifier is not None:
            raise ScorelabError("give --cfg or --classifier, not both")
        if classifier is not None:
            if not isinstance(classifier, NoisyClassifier):
                classifier = load_classifier(classifier)
            classifier.check_matches(self)
            _check_label(y, classifier.num_classes)
            return classifier_guided(
                self.eps_fn, self.schedule, classifier.classifier_fn, y, scale=scale
            )
        if self.num_classes == 0:
            raise ScorelabError(
                f"{self.run_dir} is an unconditional run: --class needs a --classifier, or a "
                "run trained with --conditional (and --cond-drop for --cfg)"
            )
        _check_label(y, self.num_classes)
        if cfg is None:
            return conditional(self.cond_eps_fn, y)
        if self.config.train.cond_drop <= 0:
            raise ScorelabError(
                f"--cfg needs a run trained with label dropout; {self.run_dir} was trained with "
                "--cond-drop 0, so its null class was never learned (use --cfg only with runs "
                "trained with e.g. --cond-drop 0.1; plain --class works)"
            )
        return classifier_free_guided(self.cond_eps_fn, y, scale=cfg, null_label=self.num_classes)

    @property
    def variance(self) -> Variance | VarianceFn:
        """The reverse variance: "beta_tilde", "beta", or the network's learned VarianceFn."""
        return self.eps_and_variance()[1]

    def eps_and_variance(self) -> tuple[EpsFn, Variance | VarianceFn]:
        """Both at once: for a learned variance they share one network call per (x, t)."""
        return build_eps_and_variance(self.model, self.config, self.schedule)

    def tuned_grids(self) -> dict[str, dict]:
        """The grids `tune-steps` saved in the run directory, by grid_key."""
        path = self.run_dir / TUNED_GRIDS
        if not path.is_file():
            return {}
        try:
            grids = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ScorelabError(f"cannot read {path}: {e}") from None
        if not isinstance(grids, dict):
            raise ScorelabError(f"{path} is not a JSON object of grids")
        for key, entry in grids.items():
            times = entry.get("timesteps") if isinstance(entry, dict) else None
            if not (isinstance(times, list) and all(isinstance(t, int | float) for t in times)):
                raise ScorelabError(f"{path}: the grid {key!r} has no list of numbers 'timesteps'")
        return grids

    def tuned_timesteps(self, sampler: str, steps: int | None, options: dict) -> Tensor:
        """The saved tuned grid of this sampler, options and steps (steps None: the only one)."""
        grids = self.tuned_grids()
        if steps is None:  # the only grid of this sampler and options
            suffix = grid_key(sampler, 0, options).split("/", 2)[2]
            mine = [k for k in grids if k.startswith(f"{sampler}/") and k.endswith("/" + suffix)]
            if len(mine) == 1:
                return torch.tensor(grids[mine[0]]["timesteps"], dtype=torch.float64)
        key = grid_key(sampler, steps or 0, options)
        if key not in grids:
            have = ", ".join(sorted(grids)) or "none"
            raise ScorelabError(
                f"{self.run_dir} has no tuned grid {key!r} (tuned: {have}); run: scorelab "
                f"tune-steps {self.run_dir} --sampler {sampler} --nfe K (and its --opt)"
            )
        return torch.tensor(grids[key]["timesteps"], dtype=torch.float64)

    def tune_steps(
        self,
        nfe: int,
        *,
        sampler: str = "dpm-solver++",
        n: int = 256,
        max_evals: int = 300,
        seed: int = 0,
        save: bool = True,
        **options,
    ) -> TunedGrid:
        """Tune the grid of a deterministic sampler for nfe network calls on this model
        (samplers/tuning.py) and save it in the run directory, where `sample --spacing tuned`
        finds it."""
        steps, _ = steps_for_nfe(sampler, nfe, self.schedule, **options)
        tuned = tune_timesteps(
            self.eps_fn,
            sample_shape(self.config.model, n),
            self.schedule,
            sampler,
            steps,
            n=n,
            max_evals=max_evals,
            generator=torch.Generator().manual_seed(seed),
            **options,
        )
        if save:
            grids = self.tuned_grids()
            grids[grid_key(sampler, steps, options)] = {**tuned.to_dict(), "n": n, "seed": seed}
            path = self.run_dir / TUNED_GRIDS
            try:
                atomic_write_bytes(path, (json.dumps(grids, indent=1) + "\n").encode())
            except OSError as e:
                raise ScorelabError(f"cannot write {path}: {e.strerror or e}") from None
        return tuned

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        sampler: str = "ddpm",
        steps: int | None = None,
        record_trajectory: bool = False,
        y: int | Tensor | None = None,
        cfg: float | None = None,
        classifier: NoisyClassifier | str | Path | None = None,
        scale: float = 1.0,
        **options,
    ) -> tuple[Tensor, SampleResult]:
        """n samples in the data's own units, and the sampler's result (model units); with y,
        of class y (see guided_eps_fn for cfg, classifier and scale)."""
        if n < 1:
            raise ScorelabError(f"--n must be >= 1, got {n}")
        generator = torch.Generator().manual_seed(seed)
        eps_fn, variance = self.eps_and_variance()
        if y is not None:
            eps_fn = self.guided_eps_fn(y, cfg=cfg, classifier=classifier, scale=scale)
        elif cfg is not None or classifier is not None:
            raise ScorelabError("--cfg and --classifier need --class")
        if sampler == "ddpm" and options.get("variance") is None and variance != "beta_tilde":
            options["variance"] = variance  # the run's own (fixed large or learned)
        if options.get("variance") == "analytic" and "gamma" not in options:
            # Analytic-DPM's Gamma_t from (up to 2000 of) the training data, in model units
            data = build_data(self.config)
            pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
            options.setdefault("data", self.normalizer.encode(data[pick[:2000]]))
        if options.get("spacing") == "tuned":  # the grid tune-steps saved for this sampler
            del options["spacing"]
            options["timesteps"] = self.tuned_timesteps(sampler, steps, options)
        result = sample(
            eps_fn,
            sample_shape(self.config.model, n),
            self.schedule,
            sampler,
            steps,
            generator=generator,
            record_trajectory=record_trajectory,
            **options,
        )
        x = self.normalizer.decode(result.x)
        if DIFFUSION.is_image(self.config):
            x = x.clamp(-1, 1)  # images: the data's range, as DDPM clips its final samples
        return x, result


def _check_label(y: int | Tensor, num_classes: int) -> None:
    y = torch.as_tensor(y)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ScorelabError(f"--class must be in 0..{num_classes - 1}, got {y.tolist()}")


class DiffusionKind:
    """Diffusion models: a network on a discrete schedule or an SDE, sampled by any sampler."""

    name = "diffusion"
    models = tuple(MODELS)  # mlp (vectors), unet (images)
    nll_methods = ("vlb", "ode")
    config_type = RunConfig

    def owns(self, config: dict[str, Any]) -> bool:
        return "objective" in config and (config.get("model") or {}).get("name") in self.models

    def resolve(
        self, cfg: RunConfig, *, image_shape: tuple[int, int, int] | None, dim: int
    ) -> RunConfig:
        return fit_model_to_data(resolve_objective(cfg), image_shape, dim)

    prepare = staticmethod(prepare_diffusion)
    train = staticmethod(train_diffusion)

    def load(
        self, run_dir: Path, cfg: RunConfig, state: dict[str, Tensor], meta: dict, *, weights: str
    ) -> Run:
        schedule = build_process(cfg)
        model = build_model_for(cfg, schedule)
        load_state_dict_checked(model, state, f"the {weights} weights in {run_dir / CHECKPOINT}")
        model.eval()
        return Run(run_dir, cfg, model, schedule, normalizer_of(cfg), int(meta["step"]))

    def is_image(self, cfg: RunConfig) -> bool:
        return cfg.model.name == "unet"

    def describe(self, cfg: RunConfig) -> str:
        schedule = f"{cfg.schedule.name} T={cfg.schedule.T}"
        process = f"{cfg.sde.name} process" if cfg.sde is not None else schedule
        return f"diffusion ({cfg.model.name}, {cfg.objective}, {process})"

    def nll(
        self,
        run: Run,
        data: Tensor,
        *,
        methods=None,
        seed: int = 0,
        divergence: str | None = None,
        **options,
    ) -> list:
        """The VLB or the ODE likelihood (None: the one compare shows, the VLB on a schedule
        and the ODE on an SDE); divergence None: exact on vectors, Hutchinson on images, whose
        exact divergence costs a backward pass per dimension. k is the VAE's and unused."""
        from scorelab.evaluation.nll import evaluate_nll

        for method in methods or ():
            if method not in self.nll_methods:
                raise ScorelabError(
                    f"--nll {method} is a VAE bound; this is a diffusion run: use --nll vlb or ode"
                )
        if divergence is None:
            divergence = "hutchinson" if self.is_image(run.config) else "exact"
        options = {k: v for k, v in options.items() if k in ("probes", "rtol", "atol", "t0")}
        methods = methods or ("vlb" if run.config.sde is None else "ode",)
        return [
            evaluate_nll(run, data, method=m, seed=seed, divergence=divergence, **options)
            for m in methods
        ]


DIFFUSION = DiffusionKind()
