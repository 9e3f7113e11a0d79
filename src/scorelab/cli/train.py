"""scorelab train: flags generated from the config's settings (scorelab.config, scorelab.schema),
a config file or preset under them, image defaults under that; --resume continues a run
(--resume auto: continues it if there is one, else starts it) and --dry-run prints the
resolved config.json without training."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scorelab.cli.args import add_settings, settings_given
from scorelab.config import RunConfig
from scorelab.errors import ScorelabError
from scorelab.presets import config_file_overrides, image_defaults, preset_names


def processes() -> tuple[str, ...]:
    """ddpm (the discrete schedule: config sde null) and processes/sde.py's SDES."""
    from scorelab.processes import SDES

    return ("ddpm", *SDES)


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion model into a run directory",
        description="Train a DDPM (Algorithm 1 of Ho et al. 2020) on a dataset, or a "
        "continuous-time model (--process vp, subvp, ve, edm or flow) with a score-matching "
        "--objective. The run directory gets config.json, checkpoints (safetensors), "
        "metrics.csv and loss.png (and fd.png with --eval-every).",
    )
    settings = add_settings(p, RunConfig)
    p.add_argument(
        "--process",
        "--sde",
        dest="sde.name",
        metavar="PROCESS",
        default=None,
        choices=processes(),
        help="the forward process x_t = alpha_t x_0 + sigma_t eps: ddpm (the discrete --schedule, "
        "trained with --objective eps, x0, v or hybrid; the default), or in continuous time: vp "
        "(beta 0.1..20), subvp, ve (sigma 0.01..50), edm (Karras et al. 2022: sigma "
        "0.002..80, log-normal training sigma, preconditioned network, EDM's loss weight) or "
        "flow (flow matching / rectified flow: x_t = (1 - t) x_0 + t eps, velocity target). A "
        "continuous process trains with a score objective, dsm unless --objective says "
        "otherwise (vp without --process; ve for tsm). --sde is the same flag",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory to create or resume (required unless --dry-run)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,  # not a string, so argparse does not check it against choices
        choices=["auto"],
        default=None,
        help="continue the run in --out exactly where its last checkpoint stopped (flags "
        "other than --steps, --max-seconds and the speed flags must match). --resume auto: "
        "continue it if --out holds a checkpoint, else start it with the flags given, so one "
        "command can be rerun as is, e.g. by torchrun --max-restarts N",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE|PRESET",
        help="a JSON file shaped like a run's config.json, whole or in part (e.g. "
        '{"train": {"lr": 0.003}, "data": "moons"}), or the name of a preset shipped with '
        f"scorelab ({', '.join(preset_names())}; the files are in the repository's configs/); "
        "flags given here override it. Its 'normalizer' is ignored: a new run fits its data's "
        "normalization. Image runs start from the 'images' preset's settings",
    )
    p.add_argument(
        "--ssm-plain",
        action="store_true",
        help="ssm: the plain form ½(vᵀs)² + vᵀ(∂s/∂x)v instead of the variance-reduced "
        "½‖s‖² + vᵀ(∂s/∂x)v",
    )
    p.add_argument(
        "--process-param",
        "--sde-param",
        dest="sde_param",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="a process parameter, repeatable: beta_min, beta_max (vp, subvp); sigma_min, "
        "sigma_max (ve); sigma_min, sigma_max, sigma_data (default: the data's std), p_mean, "
        "p_std, rho (edm); sigma_min, logit_mean, logit_std (flow; logit_std > 0: "
        "logit-normal training times). --sde-param is the same flag",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve the settings (presets, image defaults, config file, flags and the data's "
        "facts: dimension, normalization, image model, conditioning), print the config.json "
        "the run would get, and exit without training",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run, settings=settings)


def run(args: argparse.Namespace) -> int:
    overrides = settings_given(args, args.settings)
    _sde_overrides(args, overrides)
    if overrides.get("train.cond_drop", 0) > 0:
        overrides["conditional"] = True
    if args.ssm_plain:
        overrides["score.variance_reduced"] = False
    auto = args.resume == "auto"  # the new run's flags, or the run in --out when it exists
    if args.config is not None:  # the file first, the flags over it
        if args.resume and not auto:
            raise ScorelabError("--config starts a new run; --resume reads the run's own config")
        from_file = config_file_overrides(args.config)
        if "sde" in overrides and (from_file.get("sde") or {}).get("name") != (
            (overrides["sde"] or {}).get("name")
        ):  # another process than the file's: its resolved prediction and weighting stay there
            for key in ("score.prediction", "score.weighting"):
                from_file.pop(key, None)
        overrides = {**from_file, **overrides}
    if overrides.get("sde") and "objective" not in overrides and (auto or not args.resume):
        overrides["objective"] = "dsm"  # a continuous process trains with a score objective
    from scorelab.objectives import SCORE_OBJECTIVES

    if getattr(args, "sde.name") == "ddpm" and overrides.get("objective") in SCORE_OBJECTIVES:
        raise ScorelabError(
            f"--objective {overrides['objective']} trains a continuous process (vp, subvp, ve, "
            "edm or flow), not --process ddpm, which trains eps, x0, v or hybrid"
        )
    from scorelab.runs import KINDS

    vae = overrides.get("model.name") in KINDS["vae"].models
    if overrides.get("data") and (auto or not args.resume):
        from scorelab.data import is_image_source

        if is_image_source(overrides["data"]) and not vae:
            if overrides.get("model.name", "unet") != "unet":
                raise ScorelabError(
                    f"image data needs --model unet, not {overrides['model.name']!r}"
                )
            # an image run: the measured image defaults (presets/images.json), then the
            # config file, then the flags
            overrides = {**image_defaults(), **overrides}
    if args.dry_run:
        return _dry_run(args, overrides)
    if args.out is None:
        raise ScorelabError("--out is required: the run directory to create or resume")
    from scorelab.training.distributed import barrier, init_from_env, shutdown
    from scorelab.training.preemption import Preempted

    rank, _ = init_from_env(str(overrides.get("train.device", "cpu")))
    try:
        status = _train_and_report(args, overrides, rank)
        barrier()  # ranks leave together: tearing gloo down under a busy peer can abort it
        return status
    except Preempted:
        barrier()  # every rank stops at the same step, so every rank is here
        raise
    finally:
        shutdown()


def _new_run_config(overrides: dict) -> RunConfig:
    from scorelab.config import apply_overrides

    if "data" not in overrides:
        if overrides.get("objective") != "tsm":
            raise ScorelabError("--data is required for a new run")
        overrides = {**overrides, "data": None}  # tsm: Langevin samples of the --target score
    return apply_overrides(RunConfig(), overrides)


def _dry_run(args: argparse.Namespace, overrides: dict) -> int:
    """Print the config.json a new run would get, resolved against its data; train nothing."""
    from scorelab.runs import resolve

    if args.resume:
        raise ScorelabError("--dry-run shows a new run's config; a run's own is its config.json")
    cfg = resolve(_new_run_config(overrides), log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def _train_and_report(args: argparse.Namespace, overrides: dict, rank: int) -> int:
    from scorelab.evaluation import fd_curve, loss_curve
    from scorelab.runs import resume, resume_or_train, train

    log = print if rank == 0 else (lambda message: None)
    if args.resume == "auto":
        result = resume_or_train(
            args.out, overrides, lambda: _new_run_config(overrides),
            progress=not args.no_progress, log=log,
        )  # fmt: skip
    elif args.resume:
        result = resume(args.out, overrides, progress=not args.no_progress, log=log)
    else:
        cfg = _new_run_config(overrides)
        result = train(cfg, args.out, progress=not args.no_progress, log=log)
    if rank != 0:
        return 0
    loss_curve(args.out / "metrics.csv", args.out / "loss.png")
    fd_png = fd_curve(args.out / "metrics.csv", args.out / "fd.png")
    print(
        f"trained to step {result.step} in {result.seconds:.1f}s, final loss "
        f"{result.final_loss:.4f}, {result.bad_steps} skipped steps; checkpoint "
        f"{result.checkpoint}"
    )
    if fd_png is not None:
        print(f"sample quality while training: {fd_png}")
    return 0


def _sde_overrides(args: argparse.Namespace, overrides: dict) -> None:
    """--process and --process-param KEY=VALUE become the config's sde = {name, params}
    (None for ddpm, the discrete schedule)."""
    name = getattr(args, "sde.name")
    if args.sde_param and name in (None, "ddpm"):
        raise ScorelabError(
            "--process-param needs a continuous --process (vp, subvp, ve, edm or flow)"
        )
    if name is None:
        return
    if name == "ddpm":
        overrides["sde"] = None
        return
    params = {}
    for item in args.sde_param or []:
        key, sep, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ScorelabError(f"--process-param must look like KEY=NUMBER, got {item!r}")
    overrides["sde"] = {"name": name, "params": params}
