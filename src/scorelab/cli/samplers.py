"""scorelab samplers: every registered sampler with its paper, NFE, grid and options."""

from __future__ import annotations

import argparse
import json

from scorelab.cli.args import show


def register(sub) -> None:
    p = sub.add_parser(
        "samplers", help="list the samplers with their papers, NFE per step and options"
    )
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Every registered sampler: summary, NFE, grid, paper and its options (type, default)."""
    from scorelab.samplers import REGISTRY
    from scorelab.samplers.registry import describe

    if getattr(args, "format", "text") == "json":
        print(json.dumps([describe(spec) for spec in REGISTRY.values()], indent=1))
        return 0
    width = max(map(len, REGISTRY))
    for name, spec in REGISTRY.items():
        print(
            f"{name:<{width}}  {spec.summary}. NFE: {spec.nfe}. Grid: {spec.spacing}. "
            f"[{spec.paper}]"
        )
        key_width = max(map(len, spec.options), default=0)
        for key, opt in spec.options.items():
            print(
                f"{'':<{width}}    {key:<{key_width}}  {opt.describe()}, default "
                f"{show(opt.default)}: {opt.help}"
            )
    print("set an option with `scorelab sample RUN --sampler NAME --opt KEY=VALUE`")
    return 0
