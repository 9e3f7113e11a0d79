"""scorelab env: versions and devices, for bug reports."""

from __future__ import annotations

import argparse
import json
import platform


def register(sub) -> None:
    p = sub.add_parser("env", help="print versions and devices, for bug reports")
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    p.set_defaults(handler=run)


def _version(package: str) -> str:
    """An optional package's version, without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> int:
    import numpy
    import torch

    import scorelab

    info = {
        "scorelab": scorelab.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "diffusers": _version("diffusers"),  # the optional extra: opening diffusers folders
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "devices": ["cpu"]
        + [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if args.format == "json":
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:<10} {value}")
    return 0
