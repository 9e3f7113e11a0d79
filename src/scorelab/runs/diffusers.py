"""A local diffusers DDPM model opened as a scorelab Run: scorelab's samplers, likelihoods,
metrics and guidance on a network that scorelab did not train.

Two layouts are read, both local (nothing is downloaded):

  PIPELINE/model_index.json           a DDPM-family pipeline (DDPMPipeline, DDIMPipeline):
  PIPELINE/unet/config.json           a UNet2DModel and its weights in safetensors
  PIPELINE/unet/diffusion_pytorch_model.safetensors
  PIPELINE/scheduler/scheduler_config.json

  UNET/config.json + UNET/diffusion_pytorch_model.safetensors   a bare UNet2DModel, with
  UNET/scheduler_config.json (or UNET/scheduler/scheduler_config.json) beside it

The mapping is exact (docs/theory.md §28): the betas are diffusers' own float32 recipe for
`beta_schedule` (or `trained_betas`); diffusers' `alphas_cumprod[k]` is scorelab's
alpha_bar(k + 1), so the network is called at k = t - 1; `prediction_type` epsilon, sample
and v_prediction are scorelab's eps, x0 and v; `variance_type` fixed_small(_log),
fixed_large(_log) and learned_range are beta_tilde, beta and the learned interpolation;
`clip_sample` clips the implied x0 to +-clip_sample_range when sampling, as diffusers does.
What cannot be mapped exactly (zero-terminal-SNR rescaling, dynamic thresholding, Fourier
time features, other model classes) is refused in one line. Weights are read with
safetensors only: a folder with pickled weights (.bin, .ckpt) is refused, never unpickled.
diffusers itself is needed only to build the UNet2DModel (the optional extra).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scorelab.build import build_eps_and_variance
from scorelab.config import RunConfig, ScheduleConfig, UNetConfig
from scorelab.errors import CheckpointError, ScorelabError
from scorelab.processes import DiscreteSchedule, make_schedule
from scorelab.processes.ddpm import Variance, VarianceFn
from scorelab.processes.schedules import SCHEDULES
from scorelab.runs.base import IDENTITY
from scorelab.runs.diffusion import Run
from scorelab.training.checkpoint import load_state_dict_checked
from scorelab.typing import EpsFn

PIPELINE_INDEX = "model_index.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLED = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.ckpt", "pytorch_model.bin")
SCHEDULER_CONFIG = "scheduler_config.json"
INSTALL = "pip install 'scorelab[diffusers]'"

# pipelines whose parts are one UNet2DModel and one DDPM-family scheduler
PIPELINES = ("DDPMPipeline", "DDIMPipeline")
# schedulers on the DDPM betas (diffusers' KarrasDiffusionSchedulers of discrete time); which
# one a folder names does not change the model, only diffusers' default way to sample it
SCHEDULERS = (
    "DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
    "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DDPMParallelScheduler", "DDIMParallelScheduler",
)  # fmt: skip
# scheduler keys that set how diffusers samples (scorelab's samplers replace that) and do not
# change the model: read and ignored
SAMPLING_KEYS = frozenset(
    (
        "timestep_spacing", "steps_offset", "set_alpha_to_one", "skip_prk_steps",
        "solver_order", "solver_type", "algorithm_type", "lower_order_final", "euler_at_final",
        "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
        "final_sigmas_type", "lambda_min_clipped", "variance_type_ddim", "predict_x0",
        "disable_corrector", "solver_p", "interpolation_type", "sigma_min", "sigma_max", "eta",
        "s_noise",
    )
)  # fmt: skip
# keys that change what the model is (a flow-matching model, EDM's continuous noise input)
# unless they hold diffusers' DDPM defaults
DEFAULT_ONLY = {"use_flow_sigmas": False, "timestep_type": "discrete", "flow_shift": None}
# keys that define the model's maths: mapped below
MODEL_KEYS = frozenset(
    (
        "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
        "prediction_type", "variance_type", "clip_sample", "clip_sample_range", "thresholding",
        "dynamic_thresholding_ratio", "sample_max_value", "rescale_betas_zero_snr",
    )
)  # fmt: skip
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCES = {
    "fixed_small": "fixed_small", "fixed_small_log": "fixed_small",
    "fixed_large": "fixed_large", "fixed_large_log": "fixed_large",
    "learned_range": "learned",
}  # fmt: skip


def diffusers_betas(config: dict[str, Any]) -> Tensor:
    """The betas (T,) of a diffusers scheduler config, computed as diffusers does (float32
    tables; the cosine schedule in Python floats), returned in float64 for DiscreteSchedule."""
    T = int(config.get("num_train_timesteps", 1000))
    if T < 1:
        raise ScorelabError(f"num_train_timesteps must be positive, got {T}")
    trained = config.get("trained_betas")
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float32)
        if betas.shape != (T,):
            raise ScorelabError(
                f"trained_betas has {betas.numel()} values; num_train_timesteps is {T}"
            )
        return betas.double()
    start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
    name = config.get("beta_schedule", "linear")
    if name == "linear":
        betas = torch.linspace(start, end, T, dtype=torch.float32)
    elif name == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float32) ** 2
    elif name == "squaredcos_cap_v2":

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        cap = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
        betas = torch.tensor(cap, dtype=torch.float32)
    elif name == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, T)) * (end - start) + start
    else:
        raise ScorelabError(
            f"beta_schedule {name!r} has no exact scorelab equivalent (linear, scaled_linear, "
            "squaredcos_cap_v2, sigmoid or trained_betas)"
        )
    return betas.double()


@dataclass(frozen=True)
class SchedulerMapping:
    """What a diffusers scheduler config means in scorelab's terms."""

    schedule: DiscreteSchedule
    prediction: str  # eps, x0, v
    variance: str  # fixed_small, fixed_large, learned
    clip: float | None  # clip the implied x0 to [-clip, clip] when sampling; None: no clip


def map_scheduler(config: dict[str, Any], where: str = "the scheduler config") -> SchedulerMapping:
    """The exact scorelab reading of a diffusers scheduler config, or a one-line refusal."""
    name = config.get("_class_name", "DDPMScheduler")
    if name not in SCHEDULERS:
        raise ScorelabError(
            f"{where}: scheduler {name!r} is not a DDPM-family scheduler scorelab maps "
            f"({', '.join(SCHEDULERS[:3])}, ...)"
        )
    unknown = sorted(
        k for k in config if not k.startswith("_") and k not in MODEL_KEYS | SAMPLING_KEYS
    )
    if unknown:
        raise ScorelabError(
            f"{where}: unknown key(s) {', '.join(unknown)}; scorelab maps a scheduler only when "
            "it knows every setting that could change the maths"
        )
    if config.get("rescale_betas_zero_snr"):
        raise ScorelabError(
            f"{where}: rescale_betas_zero_snr gives alpha_bar(T) = 0 (infinite noise at the "
            "last step), which scorelab's schedules exclude; it cannot be mapped exactly"
        )
    if config.get("thresholding"):
        raise ScorelabError(
            f"{where}: thresholding (dynamic, Imagen) has no exact scorelab equivalent; "
            "set it to false to use scorelab's samplers"
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise ScorelabError(
            f"{where}: prediction_type {prediction!r}; scorelab maps {', '.join(PREDICTIONS)}"
        )
    variance = config.get("variance_type") or "fixed_small"
    if variance not in VARIANCES:
        raise ScorelabError(
            f"{where}: variance_type {variance!r} has no exact scorelab equivalent "
            f"({', '.join(VARIANCES)})"
        )
    if VARIANCES[variance] == "learned" and prediction != "epsilon":
        raise ScorelabError(
            f"{where}: a learned variance with prediction_type {prediction!r}; scorelab's "
            "learned variance goes with eps prediction"
        )
    try:
        schedule = DiscreteSchedule(diffusers_betas(config), name="diffusers")
    except (TypeError, ValueError) as e:
        raise ScorelabError(f"{where}: bad beta settings: {e}") from None
    clip = None
    if config.get("clip_sample", name in ("DDPMScheduler", "DDIMScheduler")):
        clip = float(config.get("clip_sample_range", 1.0))
    return SchedulerMapping(schedule, PREDICTIONS[prediction], VARIANCES[variance], clip)


def schedule_name(schedule: DiscreteSchedule) -> str:
    """The scorelab schedule with these betas (float32 rounding apart), else "diffusers":
    noise-aware classifiers trained on a named schedule guide the model when they match."""
    for name in SCHEDULES:
        ours = make_schedule(name, schedule.T).betas
        if torch.allclose(ours, schedule.betas, rtol=1e-6, atol=1e-9):
            return name
    return "diffusers"


class DiffusersNet(nn.Module):
    """A UNet2DModel as a scorelab network: forward(x, t, y=None) at scorelab's time t,
    which is diffusers' timestep k = t - 1; y: the class labels of a class-conditional net."""

    def __init__(self, unet: nn.Module, num_classes: int = 0) -> None:
        super().__init__()
        self.unet = unet
        self.num_classes = num_classes

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if self.num_classes and y is None:
            raise ScorelabError(
                "this diffusers model is class-conditional and has no null class: pass --class"
            )
        k = torch.as_tensor(t, dtype=torch.float32, device=x.device) - 1
        labels = None if y is None or not self.num_classes else y.long()
        return self.unet(x, k.expand(x.shape[0]), class_labels=labels).sample


@dataclass
class DiffusersRun(Run):
    """A diffusers model opened as a Run (load_diffusers): the same eps_fn, schedule and
    sample(...) as a scorelab run; clip is the scheduler's clip_sample_range (None: off)."""

    clip: float | None = 1.0

    def eps_and_variance(self) -> tuple[EpsFn, Variance | VarianceFn]:
        return build_eps_and_variance(self.model, self.config, self.schedule, clip=self.clip)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable JSON file ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return value


def is_diffusers_dir(path: Path | str) -> bool:
    """Whether a folder looks like a diffusers pipeline or a bare UNet2DModel folder."""
    path = Path(path)
    if (path / PIPELINE_INDEX).is_file():
        return True
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return "_diffusers_version" in json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def _locate(path: Path) -> tuple[Path, Path]:
    """The UNet2DModel folder and the scheduler config file of a diffusers folder."""
    index_file = path / PIPELINE_INDEX
    if index_file.is_file():
        index = _read_json(index_file)
        kind = index.get("_class_name")
        unet, scheduler = index.get("unet"), index.get("scheduler")
        others = sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
                        and k not in ("unet", "scheduler") and v != [None, None])  # fmt: skip
        if kind not in PIPELINES or others:
            raise ScorelabError(
                f"{path} holds a {kind or 'pipeline'} (parts: "
                f"{', '.join(k for k in index if not k.startswith('_'))}); scorelab opens "
                f"unconditional or class-conditional DDPM pipelines ({', '.join(PIPELINES)}: "
                "one UNet2DModel and one scheduler)"
            )
        if not isinstance(unet, list) or len(unet) != 2 or unet[1] != "UNet2DModel":
            raise ScorelabError(f"{path}: the pipeline's unet is {unet!r}, not a UNet2DModel")
        if not isinstance(scheduler, list) or len(scheduler) != 2:
            raise ScorelabError(f"{path}: model_index.json names no scheduler")
        return path / "unet", path / "scheduler" / SCHEDULER_CONFIG
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path} is neither a scorelab run (config.json, checkpoint.safetensors) nor a "
            f"diffusers folder ({PIPELINE_INDEX}, or a UNet2DModel's config.json)"
        )
    for scheduler in (path / SCHEDULER_CONFIG, path / "scheduler" / SCHEDULER_CONFIG):
        if scheduler.is_file():
            return path, scheduler
    raise CheckpointError(
        f"{path} holds a bare diffusers model but no {SCHEDULER_CONFIG} beside it (or in "
        f"scheduler/): scorelab needs the betas the model was trained on"
    )


def _unet_config(config: dict[str, Any], where: Path) -> tuple[int, int, int]:
    """(channels, image size, classes) of a UNet2DModel config that scorelab can drive."""
    if config.get("_class_name") != "UNet2DModel":
        raise ScorelabError(
            f"{where}: the model is a {config.get('_class_name')!r}; scorelab opens UNet2DModel"
        )
    if config.get("time_embedding_type", "positional") != "positional":
        raise ScorelabError(
            f"{where}: time_embedding_type {config['time_embedding_type']!r} is a noise-level "
            "(VE) network; scorelab opens DDPM networks of the integer timestep (positional)"
        )
    if config.get("class_embed_type") is not None:
        raise ScorelabError(
            f"{where}: class_embed_type {config['class_embed_type']!r} is not supported "
            "(class-conditional models with num_class_embeds are)"
        )
    size = config.get("sample_size")
    if isinstance(size, list | tuple):
        if len(size) != 2 or size[0] != size[1]:
            raise ScorelabError(f"{where}: sample_size {size} is not square")
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise ScorelabError(f"{where}: sample_size {size!r} is not a positive image side")
    return int(config.get("in_channels", 3)), size, int(config.get("num_class_embeds") or 0)


def _build_unet(config: dict[str, Any], folder: Path) -> nn.Module:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ScorelabError(f"opening a diffusers model needs diffusers: {INSTALL}") from None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = folder / WEIGHTS
    if not weights.is_file():
        pickled = [p for p in PICKLED if (folder / p).is_file()]
        if pickled:
            raise CheckpointError(
                f"{folder / pickled[0]} holds pickled weights, which scorelab never loads (a "
                f"pickle can run code); save the model with safetensors ({WEIGHTS})"
            )
        raise CheckpointError(f"{weights} is missing")
    try:
        unet = UNet2DModel.from_config(config)
    except (TypeError, ValueError) as e:
        raise ScorelabError(
            f"{folder / 'config.json'}: not a valid UNet2DModel config ({e})"
        ) from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from None
    load_state_dict_checked(unet, state, f"the weights in {weights}")
    return unet.eval()


def load_diffusers(path: Path | str) -> DiffusersRun:
    """A local diffusers pipeline folder (or a bare UNet2DModel folder with its scheduler
    config) as a Run: eps_fn(x, t) in scorelab's time units and the model's data range, the
    exact schedule, and every scorelab sampler through run.sample(...)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory")
    unet_dir, scheduler_file = _locate(path)
    unet_config = _read_json(unet_dir / "config.json")
    channels, size, classes = _unet_config(unet_config, unet_dir / "config.json")
    scheduler_config = _read_json(scheduler_file)
    mapping = map_scheduler(scheduler_config, str(scheduler_file))
    out = int(unet_config.get("out_channels", channels))
    if out != (2 * channels if mapping.variance == "learned" else channels):
        raise ScorelabError(
            f"{unet_dir / 'config.json'}: out_channels {out} for in_channels {channels} and "
            f"variance_type {scheduler_config.get('variance_type', 'fixed_small')}"
        )
    if unet_config.get("num_train_timesteps") not in (None, mapping.schedule.T):
        raise ScorelabError(
            f"{path}: the UNet was built for {unet_config['num_train_timesteps']} timesteps, "
            f"the scheduler has {mapping.schedule.T}"
        )
    unet = _build_unet(unet_config, unet_dir)
    widths = list(unet_config.get("block_out_channels") or [64])
    model_cfg = UNetConfig(
        in_channels=channels, image_size=size, channels=int(widths[0]),
        res_blocks=int(unet_config.get("layers_per_block", 2)), attn_resolutions=(),
        dropout=float(unet_config.get("dropout", 0.0)), variance=mapping.variance,
        num_classes=classes,
    )  # fmt: skip
    schedule = mapping.schedule
    cfg = RunConfig(
        data=None, objective="hybrid" if mapping.variance == "learned" else mapping.prediction,
        model=model_cfg, schedule=ScheduleConfig(schedule_name(schedule), schedule.T),
        normalizer=IDENTITY.to_dict(),
    )  # fmt: skip
    net = DiffusersNet(unet, classes).eval()
    return DiffusersRun(path, cfg, net, schedule, IDENTITY, 0, clip=mapping.clip)


__all__ = [
    "DiffusersNet",
    "DiffusersRun",
    "diffusers_betas",
    "is_diffusers_dir",
    "load_diffusers",
    "map_scheduler",
]
