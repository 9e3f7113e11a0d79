"""Export a scorelab image run as a diffusers DDPM pipeline folder, exactly: what
`diffusers.DDPMPipeline.from_pretrained(OUT)` loads and runs, written without diffusers.

OUT/model_index.json                                  DDPMPipeline: unet + scheduler
OUT/unet/config.json                                  UNet2DModel with the run's layout
OUT/unet/diffusion_pytorch_model.safetensors          the EMA weights, mapped exactly
OUT/scheduler/scheduler_config.json                   DDPMScheduler with the run's betas
OUT/README.md                                         a model card: config and metrics

scorelab's U-Net has diffusers' UNet2DModel layout block for block (the DDPM network, Ho et
al. 2020, appendix B). Two parts differ and are folded into the exported layers exactly
(docs/theory.md §28):

- time: scorelab feeds t = k + 1 (alpha_bar(t) is diffusers' alphas_cumprod[k]) to
  sinusoids [cos(w t), sin(w t)], then Linear, SiLU, Linear, SiLU, Linear (C -> 4C) and a
  Linear per residual block; diffusers feeds k to the same sinusoids, then Linear, SiLU,
  Linear, and SiLU + Linear per block. The shift k -> k + 1 is a rotation of each (cos, sin)
  pair, folded into the first Linear; scorelab's two layers that follow the last SiLU are
  composed into each block's projection; diffusers' wider embedding is padded with zeros
  (SiLU(0) = 0 keeps the padding at zero).
- labels: scorelab adds a label vector after the time MLP's last layer, diffusers before
  the per-block SiLU. Each class (and the null class) gets its own padded coordinate, set to
  1 in its embedding, so SiLU gives SiLU(1) there and nothing elsewhere; each block's
  projection maps that coordinate to its image of the label vector, divided by SiLU(1).

What diffusers cannot express is refused in one line: vector (MLP) runs, VAEs, SDE runs,
T other than 1000 (UNet2DModel's sinusoid frequencies are fixed for integer timesteps), and
GroupNorms with different numbers of groups (UNet2DModel has one norm_num_groups).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from scorelab.errors import ScorelabError
from scorelab.files import fsync_dir, temporary_name
from scorelab.nn import UNet
from scorelab.nn.embedding import TimeEmbedding
from scorelab.runs.diffusers import PIPELINE_INDEX, SCHEDULER_CONFIG, WEIGHTS, DiffusersRun
from scorelab.runs.diffusion import Run

FORMATS = ("diffusers",)
DIFFUSERS_VERSION = "0.25.0"  # the oldest diffusers the written configs are meant for
PREDICTION_TYPES = {"eps": "epsilon", "hybrid": "epsilon", "x0": "sample", "v": "v_prediction"}
VARIANCE_TYPES = {"fixed_small": "fixed_small", "fixed_large": "fixed_large"}
VARIANCE_TYPES["learned"] = "learned_range"


def exportable(run: Any) -> str | None:
    """Why diffusers cannot express the run (one line), or None when it can."""
    cfg = getattr(run, "config", None)
    model = getattr(run, "model", None)
    if isinstance(run, DiffusersRun):
        return "it is a diffusers model already"
    if cfg is None or not isinstance(model, UNet):
        name = getattr(getattr(cfg, "model", None), "name", "this")
        return f"a {name} run: diffusers' UNet2DModel holds scorelab's U-Net only (image runs)"
    if cfg.sde is not None:
        return (
            f"a {cfg.sde.name} SDE run (continuous time): diffusers' DDPM pipeline needs a "
            "discrete schedule of betas"
        )
    if cfg.objective not in PREDICTION_TYPES:
        return f"objective {cfg.objective!r} has no diffusers prediction_type"
    if cfg.schedule.T != 1000:
        return (
            f"T = {cfg.schedule.T}: UNet2DModel feeds integer timesteps to fixed sinusoid "
            "frequencies, which match scorelab's time features only at T = 1000"
        )
    groups = {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)}
    if len(groups) != 1:
        return (
            f"its GroupNorms have {', '.join(map(str, sorted(groups)))} groups; UNet2DModel has "
            "one norm_num_groups (train with --norm-groups N to export)"
        )
    return None


def unet_config(run: Run) -> dict[str, Any]:
    """The UNet2DModel config of the run's U-Net."""
    cfg, model = run.config.model, run.model
    down, res = [], cfg.image_size
    for level in range(len(cfg.channel_mult)):
        down.append("AttnDownBlock2D" if res in cfg.attn_resolutions else "DownBlock2D")
        if level < len(cfg.channel_mult) - 1:
            res //= 2
    [groups] = {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)}
    classes = cfg.num_classes
    return {
        "_class_name": "UNet2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": cfg.image_size,
        "in_channels": cfg.in_channels,
        "out_channels": model.out[-1].out_channels,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "time_embedding_dim": _embedding_width(cfg.channels, classes),
        "freq_shift": 0,
        "flip_sin_to_cos": True,
        "down_block_types": down,
        "up_block_types": [d.replace("Down", "Up") for d in reversed(down)],
        "block_out_channels": [cfg.channels * m for m in cfg.channel_mult],
        "layers_per_block": cfg.res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": cfg.dropout,
        "act_fn": "silu",
        "attention_head_dim": None,  # one head per attention block, as scorelab's
        "norm_num_groups": groups,
        "attn_norm_num_groups": None,
        "norm_eps": 1e-5,
        "resnet_time_scale_shift": "default",
        "add_attention": True,
        "class_embed_type": None,
        "num_class_embeds": classes + 1 if classes else None,  # + the null class
        "num_train_timesteps": None,
    }


def _embedding_width(channels: int, classes: int) -> int:
    """diffusers' time embedding width: scorelab's 4C, wider if the classes need room."""
    return max(4 * channels, channels + classes + 1 if classes else 0)


def scheduler_config(run: Run) -> dict[str, Any]:
    """DDPMScheduler with the run's exact betas, prediction and variance; x0 clipped to
    [-1, 1] when sampling, as scorelab samples images."""
    cfg = run.config
    return {
        "_class_name": "DDPMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": run.schedule.T,
        "trained_betas": run.schedule.betas.tolist(),
        "beta_schedule": "linear",  # unused: trained_betas wins
        "prediction_type": PREDICTION_TYPES[cfg.objective],
        "variance_type": VARIANCE_TYPES[cfg.model.variance],
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "thresholding": False,
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }


def _rotation(dim: int) -> Tensor:
    """R with sinusoids(k + 1) = R sinusoids(k) for scorelab's [cos, sin] features: each
    (cos w k, sin w k) pair turned by the angle w (float64)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half)
    c, s = torch.cos(freqs), torch.sin(freqs)
    rot = torch.zeros(dim, dim, dtype=torch.float64)
    i = torch.arange(half)
    rot[i, i], rot[i, half + i] = c, -s  # cos w(k+1) = cos wk cos w - sin wk sin w
    rot[half + i, i], rot[half + i, half + i] = s, c  # sin w(k+1) = sin wk cos w + cos wk sin w
    if dim % 2:
        rot[-1, -1] = 1.0  # the zero padding stays zero
    return rot


def _pad(w: Tensor, rows: int, cols: int | None = None) -> Tensor:
    out = w.new_zeros((rows, *w.shape[1:]) if cols is None else (rows, cols))
    out[tuple(slice(0, n) for n in w.shape)] = w
    return out


def unet_state(run: Run) -> dict[str, Tensor]:
    """The run's U-Net weights in UNet2DModel's names, with the time and label embeddings
    folded in exactly (module docstring); computed in float64, stored in float32."""
    model: UNet = run.model
    sd = {k: v.detach().to(torch.float64) for k, v in model.state_dict().items()}
    cfg = run.config.model
    c, classes = cfg.channels, cfg.num_classes
    width = _embedding_width(c, classes)
    embedding: TimeEmbedding = model.time[0]
    if embedding.time_scale != 1.0:
        raise ScorelabError(f"time scale {embedding.time_scale} (T != 1000) cannot be exported")
    out: dict[str, Tensor] = {}
    a_w, a_b = sd["time.0.mlp.0.weight"] @ _rotation(c), sd["time.0.mlp.0.bias"]
    out["time_embedding.linear_1.weight"] = _pad(a_w, width, c)
    out["time_embedding.linear_1.bias"] = _pad(a_b, width)
    out["time_embedding.linear_2.weight"] = _pad(sd["time.0.mlp.2.weight"], width, width)
    out["time_embedding.linear_2.bias"] = _pad(sd["time.0.mlp.2.bias"], width)
    last_w, last_b = sd["time.2.weight"], sd["time.2.bias"]  # (4C, C), (4C,)
    labels = sd.get("label.table.weight")  # (classes + 1, 4C)
    if labels is not None:
        onehot = torch.zeros(classes + 1, width, dtype=torch.float64)
        onehot[torch.arange(classes + 1), c + torch.arange(classes + 1)] = 1.0
        out["class_embedding.weight"] = onehot
    silu_one = 1.0 / (1.0 + math.exp(-1.0))

    def resnet(src: str, dst: str) -> None:
        for a, b in (("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"),
                     ("conv2", "conv2"), ("skip", "conv_shortcut")):  # fmt: skip
            for p in ("weight", "bias"):
                if f"{src}.{a}.{p}" in sd:
                    out[f"{dst}.{b}.{p}"] = sd[f"{src}.{a}.{p}"]
        w_r, b_r = sd[f"{src}.temb.weight"], sd[f"{src}.temb.bias"]  # (Cout, 4C)
        proj = torch.zeros(w_r.shape[0], width, dtype=torch.float64)
        proj[:, :c] = w_r @ last_w
        if labels is not None:
            proj[:, c : c + classes + 1] = (w_r @ labels.T) / silu_one
        out[f"{dst}.time_emb_proj.weight"] = proj
        out[f"{dst}.time_emb_proj.bias"] = w_r @ last_b + b_r

    def attention(src: str, dst: str) -> None:
        out[f"{dst}.group_norm.weight"] = sd[f"{src}.norm.weight"]
        out[f"{dst}.group_norm.bias"] = sd[f"{src}.norm.bias"]
        qkv_w, qkv_b = sd[f"{src}.qkv.weight"].flatten(1), sd[f"{src}.qkv.bias"]
        for i, name in enumerate(("to_q", "to_k", "to_v")):
            out[f"{dst}.{name}.weight"] = qkv_w.chunk(3)[i]
            out[f"{dst}.{name}.bias"] = qkv_b.chunk(3)[i]
        out[f"{dst}.to_out.0.weight"] = sd[f"{src}.out.weight"].flatten(1)
        out[f"{dst}.to_out.0.bias"] = sd[f"{src}.out.bias"]

    def conv(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    conv("inp", "conv_in")
    levels, per_level = len(cfg.channel_mult), cfg.res_blocks
    i = 0
    for level in range(levels):
        for j in range(per_level):
            resnet(f"down.{i}.0", f"down_blocks.{level}.resnets.{j}")
            if f"down.{i}.1.qkv.weight" in sd:
                attention(f"down.{i}.1", f"down_blocks.{level}.attentions.{j}")
            i += 1
        if level < levels - 1:
            conv(f"down.{i}.0", f"down_blocks.{level}.downsamplers.0.conv")
            i += 1
    resnet("mid.0", "mid_block.resnets.0")
    attention("mid.1", "mid_block.attentions.0")
    resnet("mid.2", "mid_block.resnets.1")
    i = 0
    for level in range(levels):
        for j in range(per_level + 1):
            resnet(f"up.{i}.0", f"up_blocks.{level}.resnets.{j}")
            if f"up.{i}.1.qkv.weight" in sd:
                attention(f"up.{i}.1", f"up_blocks.{level}.attentions.{j}")
            i += 1
        if level < levels - 1:
            conv(f"up.{i}.1", f"up_blocks.{level}.upsamplers.0.conv")
            i += 1
    conv("out.0", "conv_norm_out")
    conv("out.2", "conv_out")
    return {k: v.to(torch.float32).contiguous() for k, v in out.items()}


def _model_card(run: Run) -> str:
    cfg = run.config
    lines = [
        f"# {run.run_dir.name}: a scorelab diffusion model, exported for diffusers",
        "",
        f"Trained by scorelab on `{cfg.data}` for {run.step} steps; exported with its EMA "
        "weights by `scorelab export RUN --format diffusers`. The weights and the scheduler's "
        "betas are mapped exactly (scorelab's docs/theory.md §28).",
        "",
        "```python",
        "from diffusers import DDPMPipeline",
        "pipe = DDPMPipeline.from_pretrained('PATH')",
        "images = pipe(batch_size=16, num_inference_steps=1000).images",
        "```",
    ]
    if cfg.model.num_classes:
        lines += [
            "",
            f"The model is class-conditional ({cfg.model.num_classes} classes; label "
            f"{cfg.model.num_classes} is the unconditional null class): call the UNet with "
            "`class_labels` (DDPMPipeline itself passes none).",
        ]
    metrics = run.run_dir / "metrics.csv"
    rows = []
    if metrics.is_file():
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
    if rows:
        last = rows[-1]
        shown = {k: v for k, v in last.items() if v not in ("", None)}
        lines += ["", "## Last training metrics", "", "| " + " | ".join(shown) + " |"]
        lines += ["|" + "---|" * len(shown), "| " + " | ".join(shown.values()) + " |"]
    lines += ["", "## scorelab config", "", "```json", json.dumps(cfg.to_dict(), indent=2), "```"]
    return "\n".join(lines) + "\n"


def export_diffusers(run: Run, out: Path | str) -> Path:
    """Write the run as a diffusers DDPM pipeline folder out (module docstring); out must not
    exist or be empty. The folder appears whole or not at all (written beside, then renamed)."""
    reason = exportable(run)
    if reason is not None:
        raise ScorelabError(f"cannot export {run.run_dir} to diffusers: {reason}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ScorelabError(f"{out} exists and is not empty; choose another --out")
    tmp = temporary_name(out)
    try:
        (tmp / "unet").mkdir(parents=True)
        (tmp / "scheduler").mkdir()
        index = {
            "_class_name": "DDPMPipeline",
            "_diffusers_version": DIFFUSERS_VERSION,
            "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", "DDPMScheduler"],
        }
        files = {
            PIPELINE_INDEX: index,
            "unet/config.json": unet_config(run),
            f"scheduler/{SCHEDULER_CONFIG}": scheduler_config(run),
        }
        for name, value in files.items():
            (tmp / name).write_text(json.dumps(value, indent=2) + "\n")
        save_file(unet_state(run), str(tmp / "unet" / WEIGHTS), metadata={"format": "pt"})
        (tmp / "README.md").write_text(_model_card(run))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
        fsync_dir(out.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ScorelabError(f"cannot write {out}: {e.strerror or e}") from None
    return out


__all__ = ["FORMATS", "export_diffusers", "exportable", "scheduler_config", "unet_config"]
