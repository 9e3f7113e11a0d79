"""Frozen run configuration: what a run directory needs to rebuild its model and data.

A run stores its resolved RunConfig as config.json and in each checkpoint's metadata, so
`sample` and `eval` need only the run directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from scorelab.errors import CheckpointError, ScorelabError
from scorelab.schema import (
    AT_LEAST_4,
    FRACTION,
    NONNEG,
    NONNEG_INT,
    POSITIVE,
    POSITIVE_INT,
    POSITIVE_INTS,
    UNIT_INTERVAL,
    check_section,
    entries,
    setting,
)

T_SAMPLINGS = ("uniform", "second-moment")


def _objectives() -> tuple[str, ...]:
    from scorelab.objectives import OBJECTIVES

    return OBJECTIVES


def _predictions() -> tuple[str, ...]:
    from scorelab.processes.parameterization import PROCESS_PREDICTIONS
    from scorelab.typing import PREDICTIONS

    return PREDICTIONS + PROCESS_PREDICTIONS


def _weightings() -> tuple[str, ...]:
    from scorelab.objectives import WEIGHTINGS

    return WEIGHTINGS


def _tsm_blends() -> tuple[str, ...]:
    from scorelab.objectives import TSM_BLENDS

    return TSM_BLENDS


def _probes() -> tuple[str, ...]:
    from scorelab.numerics.divergence import PROBES

    return PROBES


def _networks() -> tuple[str, ...]:
    return tuple(NETWORKS)


_MODEL_HELP = (
    "network: mlp (vectors), unet (images; default for them) or vae (the VAE baseline: MLP for "
    "vectors, convolutional for images; trained on the ELBO)"
)
_VARIANCE_HELP = (
    "reverse variance: fixed_small (beta_tilde), fixed_large (beta) or learned (improved DDPM; "
    "needs --objective hybrid)"
)


def _name(value: str) -> Any:
    return setting(value, "--model", _MODEL_HELP, show_default=False)


def _variance() -> Any:
    # fixed_small (beta_tilde), fixed_large (beta) or learned (the network also outputs v,
    # log Sigma = v log beta + (1 - v) log beta_tilde; Nichol & Dhariwal 2021)
    return setting("fixed_small", "--variance", _VARIANCE_HELP)


def _dim() -> Any:
    return setting(
        2,
        "--dim",
        "tsm without --data: dimension of the target's samples (otherwise the data's)",
        rule=POSITIVE_INT,
    )


@dataclass(frozen=True)
class MLPConfig:
    """The residual MLP with a time embedding, for vectors (nn/mlp.py)."""

    name: str = _name("mlp")
    dim: int = _dim()
    width: int = setting(128, "--width", "MLP width", rule=POSITIVE_INT)
    depth: int = setting(3, "--depth", "MLP residual blocks", rule=POSITIVE_INT)
    variance: str = _variance()
    # class-conditional models (guidance, docs/theory.md §23): labels 0..num_classes-1 and
    # the null class num_classes; 0: unconditional. Set from the labels by `--conditional`.
    num_classes: int = 0

    def validate(self) -> None:
        check_section(self)


@dataclass(frozen=True)
class UNetConfig:
    """The U-Net for images (nn/unet.py); in_channels and image_size are set from the data."""

    name: str = _name("unet")
    in_channels: int = 1
    image_size: int = 0
    channels: int = setting(64, "--channels", "U-Net (and conv VAE) base width", rule=POSITIVE_INT)
    channel_mult: tuple[int, ...] = setting(
        (1, 2),
        "--channel-mult",
        "U-Net width multiplier per level, e.g. 1,2,2; the image side must be divisible by "
        "2^(levels - 1)",
        rule=POSITIVE_INTS,
    )
    res_blocks: int = setting(
        2, "--res-blocks", "U-Net residual blocks per level", rule=POSITIVE_INT
    )
    attn_resolutions: tuple[int, ...] = setting(
        (4,),
        "--attn-res",
        "U-Net resolutions with self-attention, e.g. 4 or 16,8, or none",
        rule=POSITIVE_INTS,
    )
    dropout: float = setting(0.1, "--dropout", "U-Net dropout", rule=FRACTION)
    norm_group_size: int = setting(
        4,
        "--norm-group-size",
        "U-Net GroupNorm: at least this many channels per group, at most 32 groups (0: "
        "gcd(32, channels) groups, which gives layers of 32 channels or fewer one channel per "
        "group and erases their time embedding; U-Net runs stored before this setting load "
        "with 0)",
        rule=NONNEG_INT,
    )
    norm_groups: int = setting(
        0,
        "--norm-groups",
        "U-Net GroupNorm: exactly this many groups in every layer, dividing every width "
        "(diffusers' norm_num_groups: a run exports to diffusers only with one number of "
        "groups); 0: the --norm-group-size rule",
        rule=NONNEG_INT,
    )
    variance: str = _variance()
    num_classes: int = 0  # as MLPConfig's

    def validate(self) -> None:
        check_section(self)


@dataclass(frozen=True)
class VAEConfig:
    """The VAE baseline (nn/vae.py): an MLP VAE for vectors, a conv VAE for images
    (image_size > 0, set from the data)."""

    name: str = _name("vae")
    dim: int = _dim()
    in_channels: int = 1
    image_size: int = 0
    width: int = setting(128, "--width", "MLP width", rule=POSITIVE_INT)
    depth: int = setting(3, "--depth", "MLP residual blocks", rule=POSITIVE_INT)
    channels: int = setting(64, "--channels", "U-Net (and conv VAE) base width", rule=POSITIVE_INT)
    # latent size (0: 2 for vectors, 16 for images), decoder likelihood ("": gaussian for
    # vectors, logistic for images) and the KL weight beta
    latent_dim: int = setting(
        0,
        "--latent-dim",
        "vae: latent size (default: 2 for vectors, 16 for images)",
        rule=NONNEG_INT,
        show_default=False,
    )
    decoder: str = setting(
        "",
        "--decoder",
        "vae: decoder likelihood p(x|z), gaussian, logistic (discretized, 8-bit images) or "
        "bernoulli (binary images) (default: gaussian for vectors, logistic for images)",
        show_default=False,
    )
    beta: float = setting(
        1.0, "--beta", "vae: weight of the KL term of the ELBO, beta-VAE", rule=POSITIVE
    )

    def validate(self) -> None:
        check_section(self)


# the networks a run can train, by the name its config.json stores (model.name)
NETWORKS: dict[str, type] = {"mlp": MLPConfig, "unet": UNetConfig, "vae": VAEConfig}
ModelConfig = MLPConfig | UNetConfig | VAEConfig


def model_config(d: dict[str, Any], *, strict: bool = True) -> Any:
    """The network config named by d["name"] (default mlp) from its fields; strict: a field
    the network does not have is an error (else it is dropped: the flat layout of version 1
    stored every network's fields)."""
    name = d.get("name", "mlp")
    if name not in NETWORKS:
        raise ScorelabError(f"unknown model {name!r}; choose one of: {', '.join(NETWORKS)}")
    cls = NETWORKS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(d) - fields)
    if extra and strict:
        raise ScorelabError(
            f"model {name!r} has no setting {', '.join(extra)} "
            f"(it has: {', '.join(sorted(fields))})"
        )
    kept = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
    return cls(**kept)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = setting(
        "linear",
        "--schedule",
        "beta schedule: linear (DDPM, 1e-4..0.02), cosine, quadratic or sigmoid",
    )
    T: int = setting(1000, "--T", "number of diffusion steps", rule=POSITIVE_INT)


@dataclass(frozen=True)
class SDEConfig:
    """A continuous-time SDE (processes/sde.py): make_sde(name, **params)."""

    name: str = "vp"
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreConfig:
    """Options of the score-matching objectives (dsm, ism, ssm, tsm) on an SDE."""

    # None: the process's own (SDE.native_prediction, native_weighting), recorded when the run
    # starts: eps and sigma2 on vp, subvp and ve; edm on edm; velocity on flow
    prediction: str | None = setting(
        None,
        "--prediction",
        "continuous-time processes: what the network outputs, converted exactly to the score: "
        "eps, x0, v, score, velocity (dx_t/dt, flow matching's target) or edm (EDM's "
        "preconditioned F: D = c_skip x + c_out F(c_in x, c_noise)) (default: the process's "
        "own: eps on vp, subvp and ve, edm on edm, velocity on flow)",
        choices=_predictions,
        show_default=False,
    )
    weighting: str | None = setting(
        None,
        "--weighting",
        "continuous-time processes: lambda(t) of the loss, sigma2 (sigma_t^2), likelihood "
        "(g(t)^2), none, edm (EDM's lambda(sigma): unit weight on F) or velocity (unit weight on "
        "the velocity: flow matching's loss) (default: the process's own: sigma2 on vp, subvp "
        "and ve, edm on edm, velocity on flow)",
        choices=_weightings,
        show_default=False,
    )
    # how a training step reduces each example's loss over its dimensions: "mean" (the default
    # since layout 4: the scale of DDPM's L_simple, so learning rate and --grad-clip carry over
    # between data sizes) or "sum" (the textbook form; what runs of layout 3 and before trained)
    reduction: str = setting(
        "mean",
        None,
        "continuous-time processes: each example's loss summed over its dimensions or their mean",
        choices=lambda: ("mean", "sum"),
    )
    probes: int = setting(1, "--probes", "ssm: random projections per example", rule=POSITIVE_INT)
    probe: str = setting("rademacher", "--probe", "ssm: projection distribution", choices=_probes)
    variance_reduced: bool = True  # ssm: ½‖s‖² in place of ½(vᵀs)² (--ssm-plain: False)
    target: str | None = setting(
        None,
        "--target",
        "tsm: module:function on the Python path, taking (n, d) points and returning grad log "
        "p_0 there, e.g. scorelab.examples.double_well:score. Without --data the training "
        "samples are first drawn by unadjusted Langevin dynamics on that score and the run "
        "reports how well the chains mixed; Langevin alone can get the weights of "
        "well-separated modes wrong (chains rarely cross between modes: the motivation of "
        "annealed Langevin)",
    )
    # tsm: how its target blends with dsm's by noise level (objectives/score_matching.py)
    tsm_blend: str = setting(
        "snr",
        "--tsm-blend",
        "tsm: its target's blend with dsm's by noise level: snr (w_t = alpha_t^2 s^2 / "
        "(alpha_t^2 s^2 + sigma_t^2): the clean score at low noise, dsm at high noise; exact "
        "for Gaussian data), switch (the clean score where alpha_t s > sigma_t, dsm "
        "elsewhere) or none (the clean score at every noise level)",
        choices=_tsm_blends,
    )
    # tsm: the blend's data scale s in model units; None: sqrt(d / E|grad log p_0|^2) of the
    # training data, estimated when the run starts and recorded here
    tsm_scale: float | None = setting(
        None,
        "--tsm-scale",
        "tsm: the blend's data scale s in normalized units (default: estimated from the data "
        "as sqrt(d / E|grad log p_0|^2), about the modes' width, and recorded in config.json)",
        rule=POSITIVE,
    )
    langevin_steps: int = setting(
        2000, "--langevin-steps", "tsm without --data: Langevin steps per chain", rule=AT_LEAST_4
    )
    langevin_step_size: float = setting(
        2e-3, "--langevin-step-size", "tsm without --data: Langevin step size", rule=POSITIVE
    )

    def validate(self) -> None:
        check_section(self)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = setting(
        5000,
        "--steps",
        "total optimizer steps of the run; with --resume, train until this total",
        rule=POSITIVE_INT,
    )
    # wall-clock cap on the run's training seconds (0: none); the run stops at whichever of
    # steps and max_seconds comes first, and the cosine decay follows the larger fraction
    max_seconds: float = setting(
        0.0,
        "--max-seconds",
        "stop after this many seconds of training even before --steps (0: no cap); the "
        "cosine decay then follows the elapsed time, so a capped run is not bit-for-bit "
        "reproducible",
        rule=NONNEG,
    )
    batch_size: int = setting(512, "--batch-size", "batch size", rule=POSITIVE_INT)
    lr: float = setting(1e-2, "--lr", "peak Adam learning rate", rule=POSITIVE)
    warmup: int = setting(
        200, "--warmup", "linear warm-up steps before cosine decay", rule=NONNEG_INT
    )
    min_lr_ratio: float = setting(
        0.05, None, "the cosine decay's final learning rate over the peak", rule=UNIT_INTERVAL
    )
    grad_clip: float = setting(1.0, "--grad-clip", "max gradient norm", rule=POSITIVE)
    ema_decay: float = setting(
        0.995, "--ema-decay", "EMA decay of the weights used for sampling", rule=FRACTION
    )
    seed: int = setting(
        0, "--seed", "seed of the data, weights, batches and noise", rule=NONNEG_INT
    )
    ckpt_every: int = setting(1000, "--ckpt-every", "steps between checkpoints", rule=POSITIVE_INT)
    log_every: int = setting(
        25, "--log-every", "steps between rows of metrics.csv", rule=POSITIVE_INT
    )
    max_bad_steps: int = setting(
        5, None, "non-finite steps in a row before the run stops", rule=POSITIVE_INT
    )
    # the hybrid objective's weight lambda of L_vlb, and how it draws t (uniform, or
    # importance sampling by the loss' second moment: "second-moment")
    vlb_weight: float = setting(
        1e-3, "--vlb-weight", "hybrid objective: the weight lambda of L_vlb", rule=NONNEG
    )
    t_sampling: str = setting(
        "uniform",
        "--t-sampling",
        "how t is drawn: uniform, or second-moment (importance sampling by the loss' second "
        "moment, improved DDPM)",
        choices=lambda: T_SAMPLINGS,
    )
    # speed and scale-out; none of these changes the maths of a step
    micro_batches: int = setting(
        1,
        "--micro-batches",
        "split each batch into this many micro-batches per process, gradients accumulated",
        rule=POSITIVE_INT,
    )
    device: str = setting("cpu", "--device", "cpu, cuda or cuda:N")
    precision: str = setting(
        "fp32",
        "--precision",
        "fp32, bf16 (autocast; CPU or GPU) or fp16 (GPU)",
        choices=lambda: ("fp32", "bf16", "fp16"),
    )
    compile: bool = setting(
        False, "--compile", "torch.compile the network (pays off only on long runs)"
    )
    channels_last: bool = setting(
        False, "--channels-last", "channels-last memory format for images"
    )
    deterministic: bool = setting(
        False,
        "--deterministic",
        "PyTorch's deterministic algorithms (torch.use_deterministic_algorithms): the same run "
        "gives the same bits on a GPU too, at some speed; an op without a deterministic "
        "version then fails with PyTorch's message",
    )
    sample_every: int = setting(
        0,
        "--sample-every",
        "image runs: steps between sample grids (samples.png); 0: only at the end",
        rule=NONNEG_INT,
    )
    # quality while training: FD (and its floor at the same n) of eval_n EMA samples drawn with
    # DPM-Solver++ (20 steps), every eval_every steps and at the last, in metrics.csv's fd and
    # fd_floor columns; it draws from its own generators, so the run's trajectory is unchanged
    eval_every: int = setting(
        0,
        "--eval-every",
        "diffusion runs: steps between quality checks (FD and its floor on --eval-n EMA "
        "samples, DPM-Solver++ 20 steps) written to metrics.csv and fd.png; a multiple of "
        "--log-every; 0: none",
        rule=NONNEG_INT,
    )
    eval_n: int = setting(500, "--eval-n", "samples of each --eval-every check", rule=POSITIVE_INT)
    # label dropout: each label replaced by the null class with this probability, which trains
    # the unconditional model too (classifier-free guidance needs it > 0)
    cond_drop: float = setting(
        0.0,
        "--cond-drop",
        "label dropout: replace each label by the null class with this probability, so the "
        "model can do classifier-free guidance (--cfg); implies --conditional",
        rule=FRACTION,
    )

    def validate(self) -> None:
        check_section(self)
        if self.batch_size % self.micro_batches != 0:
            raise ScorelabError(
                f"--batch-size {self.batch_size} is not divisible by --micro-batches "
                f"{self.micro_batches}"
            )
        if self.eval_every % self.log_every != 0:
            raise ScorelabError(
                f"--eval-every {self.eval_every} must be a multiple of --log-every "
                f"{self.log_every}: each check is written into that step's metrics.csv row"
            )
        if self.eval_every and self.eval_n < 2:
            raise ScorelabError(f"--eval-n must be >= 2 for a Frechet distance, got {self.eval_n}")


# config.json's layout: 1 (no "version" key) stored one flat model section with every
# network's fields; 2 stores the network's own fields only
CONFIG_VERSION = 4


@dataclass(frozen=True)
class RunConfig:
    data: str | None = setting(
        "ring",
        "--data",
        "built-in dataset name (ring, swissroll, moons, checkerboard; digits, fashion-mnist: "
        "images), a path to an (N, d) float .npy file, a folder of images, an IDX images file "
        "(MNIST-style, its labels file beside it) or a uint8 image .npy",
        show_default=False,
    )
    n_data: int = setting(
        20_000, "--n-data", "points drawn from a built-in dataset", rule=POSITIVE_INT
    )
    objective: str = setting(
        "eps",
        "--objective",
        "eps, x0 or v: what the network predicts and regresses on the discrete --schedule "
        "(L_simple, Algorithm 1 of Ho et al. 2020; x0 is the denoiser, docs/theory.md §6); "
        "hybrid: eps with L_simple + lambda L_vlb, for --variance learned. Score matching on "
        "an --sde (VP unless given): dsm (denoising, weighted by --weighting), ism (implicit, "
        "Hyvarinen 2005: exact divergence by autograd, one backward pass per dimension, so "
        "for low dimension only), ssm (sliced: --probes random projections, "
        "variance-reduced), tsm (target score matching: needs --target, the known clean "
        "score)",
    )
    model: ModelConfig = field(
        default_factory=MLPConfig, metadata={"union": lambda: tuple(NETWORKS.values())}
    )
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    normalizer: dict[str, Any] | None = None
    sde: SDEConfig | None = None  # None: the discrete schedule; else a continuous-time SDE
    score: ScoreConfig = field(default_factory=ScoreConfig)
    image_size: int | None = setting(
        None, "--image-size", "resize and centre-crop images to this side", rule=POSITIVE_INT
    )
    hflip: bool = setting(
        False, "--hflip", "images: random horizontal flips (off by default; leave off for digits)"
    )
    # class-conditional training on the data's labels (a labelled dataset or --labels FILE)
    conditional: bool = setting(
        False,
        "--conditional",
        "class-conditional model eps(x, t, y) on the data's labels (a null class too)",
    )
    labels: str | None = setting(
        None,
        "--labels",
        "integer class labels (N,) in a .npy beside an .npy --data (ring, digits and folders "
        "with class sub-folders carry their own)",
    )
    data_dir: str | None = setting(
        None,
        "--data-dir",
        "the folder of named image data sets (fashion-mnist: a fashion-mnist/ folder in it, or "
        "its four IDX files directly); default: $SCORELAB_DATA_DIR, then "
        "/usr/share/datasets/fashion-mnist (sudo apt-get install dataset-fashion-mnist)",
        show_default=False,
    )
    # a data set with official splits: the one the run trained on ("train"; eval --metrics
    # holds out the test split); set from the data when the run starts, None for other data
    data_split: str | None = None
    version: int = CONFIG_VERSION  # the layout of config.json (migrate_stored)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """A stored config.json of any version (migrate_stored) as a RunConfig."""
        d = migrate_stored(d)
        try:
            nested = {
                "schedule": ScheduleConfig,
                "train": TrainConfig,
                "sde": SDEConfig,
                "score": ScoreConfig,
            }
            kwargs = {
                k: nested[k](**v) if k in nested and v is not None else v for k, v in d.items()
            }
            kwargs["model"] = model_config(d.get("model") or {})
            return cls(**kwargs)
        except (TypeError, ScorelabError) as e:
            raise CheckpointError(
                f"the stored run config is not one this version reads: {e}"
            ) from None

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def migrate_stored(d: dict[str, Any]) -> dict[str, Any]:
    """A stored config.json in the current layout (CONFIG_VERSION). Version 1 (no "version"
    key): the flat model section keeps its network's fields only, and a tsm run written before
    the blend existed trained plain tsm. Versions 1 and 2: a U-Net had gcd(32, channels)
    GroupNorm groups (model.norm_group_size 0). Versions 1 to 3: score.prediction and
    score.weighting were always set, eps and sigma2 when not given (since 4, null means the
    process's own), and score objectives summed each example's loss over its dimensions
    (score.reduction "sum"; since 4 the default is the mean)."""
    version = d.get("version", 1)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise CheckpointError(
            f"the run config has layout version {version!r}; this scorelab reads up to "
            f"{CONFIG_VERSION} (a newer scorelab wrote it?)"
        )
    model = d.get("model")
    if version < 3 and isinstance(model, dict) and "norm_group_size" not in model:
        # layout 2 and before: the U-Net's GroupNorm had gcd(32, channels) groups
        d = {
            **d,
            "model": {**model, "norm_group_size": 0} if model.get("name") == "unet" else model,
        }
    if version < 4:
        score = d.get("score") if isinstance(d.get("score"), dict) else {}
        d = {**d, "score": {"prediction": "eps", "weighting": "sigma2", **score}}
        d["score"].setdefault("reduction", "sum")
    if version == 1:
        d = {**d}
        if isinstance(d.get("model"), dict):
            d["model"] = dataclasses.asdict(model_config(d["model"], strict=False))
        if isinstance(d.get("score"), dict) and "tsm_blend" not in d["score"]:
            d["score"] = {**d["score"], "tsm_blend": "none"}
    return {**d, "version": CONFIG_VERSION}


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ between two config dicts, as 'key: a vs b'."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif _plain(va) != _plain(vb):
            out.append(f"{prefix}{key}: {va!r} vs {vb!r}")
    return out


def _plain(v: Any) -> Any:
    """Tuples as lists: JSON reads back lists where the config held tuples."""
    return list(v) if isinstance(v, tuple) else v


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Set dotted keys ('train.lr', 'objective', 'model.channels', ...) on a config, returning a
    new one. model.name first: a new network keeps the settings it shares with the old one;
    a model key the network does not have is an error naming the networks that have it."""
    d = cfg.to_dict()
    name = overrides.get("model.name")
    if name is not None:
        if name not in NETWORKS:
            raise ScorelabError(f"unknown model {name!r}; choose one of: {', '.join(NETWORKS)}")
        shared = {k: v for k, v in d["model"].items() if k in _fields(NETWORKS[name])}
        d["model"] = dataclasses.asdict(NETWORKS[name]()) | shared | {"name": name}
    for key, value in overrides.items():
        same = isinstance(value, dict) and isinstance(d.get("sde"), dict)
        if key == "sde" and same and value.get("name", "vp") == d["sde"].get("name"):
            # the same process: the given parameters over the stored ones (an EDM run's
            # sigma_data, resolved from its data)
            params = {**d["sde"].get("params", {}), **(value.get("params") or {})}
            value = {**value, "params": params}
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            if parents == ["model"]:
                raise ScorelabError(_model_key_error(leaf, d["model"]["name"]))
            raise ScorelabError(f"unknown config key {key!r}")
        node[leaf] = value
    return RunConfig.from_dict(d)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _model_key_error(leaf: str, name: str) -> str:
    owners = [n for n, cls in NETWORKS.items() if leaf in _fields(cls)]
    if not owners:
        return f"unknown config key 'model.{leaf}'"
    flag = next(
        (e.flag.name for e in entries(NETWORKS[owners[0]]) if e.key == leaf and e.flag.name),
        f"model.{leaf}",
    )
    return f"{flag} applies to --model {', '.join(owners)} only (this run's model is {name})"


# the sections a config file may set key by key, and the keys that may also be null
_SECTIONS = ("model", "schedule", "train", "score")
# the flat model section of config.json's layout 1: every network's fields at once
_V1_MODEL = {"name", "dim", "width", "depth", "variance", "in_channels", "image_size"}
_V1_MODEL |= {"channels", "channel_mult", "res_blocks", "attn_resolutions", "dropout"}
_V1_MODEL |= {"num_classes", "latent_dim", "decoder", "beta"}
_OPTIONAL = {"data": str, "labels": str, "image_size": int, "target": str, "tsm_scale": float}
_OPTIONAL |= {"data_dir": str, "prediction": str, "weighting": str}


def _is_a(v: Any, kind: type) -> bool:
    """isinstance, except that a bool is not taken for an int or a float."""
    return isinstance(v, kind) and not isinstance(v, bool)


def _checked(key: str, value: Any, default: Any) -> Any:
    """value if it has the type of the field's default (ints pass for floats, lists of ints
    for tuples, null for the optional keys); otherwise a ScorelabError naming the key."""
    want = _OPTIONAL.get(key.rsplit(".", 1)[-1])
    if want is float and _is_a(value, int | float):
        return float(value)
    if want is not None and (value is None or _is_a(value, want)):
        return value  # e.g. data: null, a tsm run trained on Langevin samples
    if isinstance(default, bool) and isinstance(value, bool):
        return value
    if _is_a(default, int) and _is_a(value, int):
        return value
    if isinstance(default, float) and _is_a(value, int | float):
        return float(value)
    if isinstance(default, str) and isinstance(value, str):
        return value
    ints = isinstance(value, list) and all(_is_a(v, int) for v in value)
    if isinstance(default, tuple) and ints:
        return tuple(value)
    raise ScorelabError(f"config key {key!r}: expected a value like {default!r}, got {value!r}")


def overrides_from_dict(d: Any, source: str = "the config") -> dict[str, Any]:
    """Dotted-key overrides ({'train.lr': 0.003, ...}) from a nested dict shaped like a run's
    config.json, whole or in part, each key and type checked against RunConfig's fields.

    'normalizer' and 'data_split' are dropped: a new run fits its data's normalization and
    records its split anew; so is 'version'. A whole config.json of layout 1 (its flat model
    section) has its model section migrated."""
    if not isinstance(d, dict):
        raise ScorelabError(f"{source} must be a JSON object like a run's config.json")
    model = d.get("model")
    if "version" not in d and isinstance(model, dict) and set(model) >= _V1_MODEL:
        d = {**d, "model": dataclasses.asdict(model_config(model, strict=False))}
    defaults = RunConfig().to_dict()
    defaults["model"] = {}
    for cls in NETWORKS.values():  # every network's settings
        defaults["model"] |= dataclasses.asdict(cls())
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key in ("normalizer", "data_split", "version"):
            continue
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ScorelabError(f"{source}: {key!r} must be an object of {key} settings")
            for sub, v in value.items():
                if sub not in defaults[key]:
                    raise ScorelabError(f"{source}: unknown config key '{key}.{sub}'")
                default = defaults[key][sub]
                out[f"{key}.{sub}"] = _checked(f"{key}.{sub}", v, default) if sub != "name" else v
        elif key == "sde":
            if value is not None:
                ok = isinstance(value, dict) and set(value) <= {"name", "params"}
                params = value.get("params", {}) if ok else None
                if not ok or not isinstance(value.get("name", "vp"), str) or not (
                    isinstance(params, dict)
                    and all(_is_a(p, int | float) for p in params.values())
                ):  # fmt: skip
                    raise ScorelabError(
                        f'{source}: \'sde\' must look like {{"name": "ve", "params": '
                        '{"sigma_max": 50.0}} or be null'
                    )
            out[key] = value
        elif key in defaults:
            out[key] = _checked(key, value, defaults[key])
        else:
            raise ScorelabError(f"{source}: unknown config key {key!r}")
    return out
