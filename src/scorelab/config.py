"""Frozen run configuration: what a run directory needs to rebuild its model and data.

A run stores its resolved RunConfig as config.json and in each checkpoint's metadata, so
`sample` and `eval` need only the run directory.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from scorelab.errors import CheckpointError, ScorelabError

T_SAMPLINGS = ("uniform", "second-moment")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    dim: int = 2
    width: int = 128
    depth: int = 3
    # reverse variance: fixed_small (beta_tilde), fixed_large (beta) or learned (the network
    # also outputs v, log Sigma = v log beta + (1 - v) log beta_tilde; Nichol & Dhariwal 2021)
    variance: str = "fixed_small"
    # the U-Net's (images): in_channels and image_size are set from the data
    in_channels: int = 1
    image_size: int = 0
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (4,)
    dropout: float = 0.1
    # class-conditional models (guidance, docs/theory.md §23): labels 0..num_classes-1 and
    # the null class num_classes; 0: unconditional. Set from the data's labels by
    # `train --conditional`.
    num_classes: int = 0
    # the VAE's (--model vae): latent size (0: 2 for vectors, 16 for images), decoder
    # likelihood ("": gaussian for vectors, logistic for images) and the KL weight beta
    latent_dim: int = 0
    decoder: str = ""
    beta: float = 1.0


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "linear"
    T: int = 1000


@dataclass(frozen=True)
class SDEConfig:
    """A continuous-time SDE (processes/sde.py): make_sde(name, **params)."""

    name: str = "vp"
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreConfig:
    """Options of the score-matching objectives (dsm, ism, ssm, tsm) on an SDE."""

    prediction: str = "eps"  # what the network outputs: eps, x0 or score
    weighting: str = "sigma2"  # lambda(t): sigma2, likelihood (g^2) or none
    probes: int = 1  # ssm: projections per example
    probe: str = "rademacher"  # ssm: rademacher or gaussian
    variance_reduced: bool = True  # ssm: ½‖s‖² in place of ½(vᵀs)²
    target: str | None = None  # tsm: module:function giving grad log p_0
    # tsm: how its target blends with dsm's by noise level (objectives/score_matching.py)
    tsm_blend: str = "snr"
    # tsm: the blend's data scale s in model units; None: sqrt(d / E|grad log p_0|^2) of the
    # training data, estimated when the run starts and recorded here
    tsm_scale: float | None = None
    langevin_steps: int = 2000  # tsm without data: Langevin steps on the target score
    langevin_step_size: float = 2e-3

    def validate(self) -> None:
        from scorelab.numerics.divergence import PROBES
        from scorelab.objectives import TSM_BLENDS, WEIGHTINGS

        checks = [
            (
                self.prediction in ("eps", "x0", "score"),
                f"--prediction must be eps, x0 or score, got {self.prediction!r}",
            ),
            (
                self.weighting in WEIGHTINGS,
                f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}",
            ),
            (
                self.tsm_blend in TSM_BLENDS,
                f"--tsm-blend must be one of {', '.join(TSM_BLENDS)}, got {self.tsm_blend!r}",
            ),
            (
                self.tsm_scale is None or self.tsm_scale > 0,
                f"--tsm-scale must be > 0, got {self.tsm_scale}",
            ),
            (self.probes >= 1, f"--probes must be >= 1, got {self.probes}"),
            (self.probe in PROBES, f"--probe must be one of {', '.join(PROBES)}"),
            (self.langevin_steps >= 4, "--langevin-steps must be >= 4"),
            (self.langevin_step_size > 0, "--langevin-step-size must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ScorelabError(message)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 5000
    # wall-clock cap on the run's training seconds (0: none); the run stops at whichever of
    # steps and max_seconds comes first, and the cosine decay follows the larger fraction
    max_seconds: float = 0.0
    batch_size: int = 512
    lr: float = 1e-2
    warmup: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    ckpt_every: int = 1000
    log_every: int = 25
    max_bad_steps: int = 5
    # the hybrid objective's weight lambda of L_vlb, and how it draws t (uniform, or
    # importance sampling by the loss' second moment: "second-moment")
    vlb_weight: float = 1e-3
    t_sampling: str = "uniform"
    # speed and scale-out; none of these changes the maths of a step
    micro_batches: int = 1
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    deterministic: bool = False
    sample_every: int = 0
    # label dropout: each label replaced by the null class with this probability, which trains
    # the unconditional model too (classifier-free guidance needs it > 0)
    cond_drop: float = 0.0

    def validate(self) -> None:
        checks = [
            (self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
            (
                math.isfinite(self.max_seconds) and self.max_seconds >= 0,
                f"--max-seconds must be >= 0, got {self.max_seconds}",
            ),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}"),
            (0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]"),
            (self.grad_clip > 0, f"--grad-clip must be > 0, got {self.grad_clip}"),
            (0 <= self.ema_decay < 1, f"--ema-decay must be in [0, 1), got {self.ema_decay}"),
            (self.ckpt_every >= 1, f"--ckpt-every must be >= 1, got {self.ckpt_every}"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.max_bad_steps >= 1, "max_bad_steps must be >= 1"),
            (self.vlb_weight >= 0, f"--vlb-weight must be >= 0, got {self.vlb_weight}"),
            (
                self.t_sampling in T_SAMPLINGS,
                f"--t-sampling must be one of {', '.join(T_SAMPLINGS)}, got {self.t_sampling!r}",
            ),
            (self.micro_batches >= 1, "--micro-batches must be >= 1"),
            (
                self.batch_size % self.micro_batches == 0,
                f"--batch-size {self.batch_size} is not divisible by --micro-batches "
                f"{self.micro_batches}",
            ),
            (
                self.precision in ("fp32", "bf16", "fp16"),
                f"--precision must be fp32, bf16 or fp16, got {self.precision!r}",
            ),
            (self.sample_every >= 0, "--sample-every must be >= 0"),
            (0 <= self.cond_drop < 1, f"--cond-drop must be in [0, 1), got {self.cond_drop}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ScorelabError(message)


@dataclass(frozen=True)
class RunConfig:
    data: str = "ring"
    n_data: int = 20_000
    objective: str = "eps"
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    normalizer: dict[str, Any] | None = None
    sde: SDEConfig | None = None  # None: the discrete schedule; else a continuous-time SDE
    score: ScoreConfig = field(default_factory=ScoreConfig)
    image_size: int | None = None
    hflip: bool = False
    # class-conditional training on the data's labels (a labelled dataset or --labels FILE)
    conditional: bool = False
    labels: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        try:
            nested = {
                "model": ModelConfig,
                "schedule": ScheduleConfig,
                "train": TrainConfig,
                "sde": SDEConfig,
                "score": ScoreConfig,
            }
            if isinstance(d.get("score"), dict) and "tsm_blend" not in d["score"]:
                # runs written before the blend existed trained plain tsm
                d = {**d, "score": {**d["score"], "tsm_blend": "none"}}
            kwargs = {
                k: nested[k](**v) if k in nested and v is not None else v for k, v in d.items()
            }
            return cls(**kwargs)
        except TypeError as e:
            raise CheckpointError(
                f"the stored run config is not one this version reads: {e}"
            ) from None

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ between two config dicts, as 'key: a vs b'."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} vs {vb!r}")
    return out


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Set dotted keys ('train.lr', 'objective', ...) on a config, returning a new one."""
    d = cfg.to_dict()
    for key, value in overrides.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ScorelabError(f"unknown config key {key!r}")
        node[leaf] = value
    return RunConfig.from_dict(d)


# the sections a config file may set key by key, and the keys that may also be null
_SECTIONS = {
    "model": ModelConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "score": ScoreConfig,
}
_OPTIONAL = {"data": str, "labels": str, "image_size": int, "target": str, "tsm_scale": float}


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

    'normalizer' is dropped: a new run fits its data's normalization anew."""
    if not isinstance(d, dict):
        raise ScorelabError(f"{source} must be a JSON object like a run's config.json")
    defaults = RunConfig().to_dict()
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key == "normalizer":
            continue
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ScorelabError(f"{source}: {key!r} must be an object of {key} settings")
            for sub, v in value.items():
                if sub not in defaults[key]:
                    raise ScorelabError(f"{source}: unknown config key '{key}.{sub}'")
                out[f"{key}.{sub}"] = _checked(f"{key}.{sub}", v, defaults[key][sub])
        elif key == "sde":
            if value is not None:
                ok = isinstance(value, dict) and set(value) <= {"name", "params"}
                params = value.get("params", {}) if ok else None
                if not ok or not isinstance(value.get("name", "vp"), str) or not (
                    isinstance(params, dict)
                    and all(_is_a(p, int | float) for p in params.values())
                ):  # fmt: skip
                    raise ScorelabError(
                        f"{source}: 'sde' must look like {{\"name\": \"ve\", \"params\": "
                        "{\"sigma_max\": 50.0}} or be null"
                    )
            out[key] = value
        elif key in defaults:
            out[key] = _checked(key, value, defaults[key])
        else:
            raise ScorelabError(f"{source}: unknown config key {key!r}")
    return out
