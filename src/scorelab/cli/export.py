"""scorelab export: a trained image run as a diffusers pipeline folder (runs/export.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from scorelab.runs import load_run
    from scorelab.runs.export import export_diffusers

    model = load_run(args.run_dir)
    out = export_diffusers(model, args.out)
    print(
        f"wrote {out}: a diffusers DDPMPipeline (EMA weights, exact betas); load it with "
        f"diffusers.DDPMPipeline.from_pretrained({str(out)!r})"
    )
    return 0


def register(sub) -> None:
    from scorelab.runs.export import FORMATS

    p = sub.add_parser(
        "export",
        help="write a trained image run as a diffusers pipeline folder",
        description="Write RUN_DIR's EMA network as a folder that "
        "diffusers.DDPMPipeline.from_pretrained loads: model_index.json, unet/ (UNet2DModel "
        "config and safetensors weights, mapped exactly) and scheduler/ (DDPMScheduler with "
        "the run's exact betas), with a README.md model card. Needs no diffusers installed. "
        "Runs diffusers cannot express (vectors, VAEs, SDE runs, T other than 1000, GroupNorms "
        "with different group counts: train with --norm-groups) are refused, saying why.",
    )
    p.add_argument("run_dir", type=Path, help="a trained scorelab image run")
    p.add_argument("--format", choices=FORMATS, default="diffusers", help="(default: diffusers)")
    p.add_argument("--out", type=Path, required=True, help="the folder to write (new or empty)")
    p.set_defaults(handler=run)
