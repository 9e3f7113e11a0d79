"""The command line: one module per command, each registering its parser and handler once;
no maths here. `main(argv)` returns the exit status: 0, 2 for a one-line error, 75 when a
signal preempted training (a scheduler may requeue), 130 on Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from scorelab.cli import (
    compare,
    demo,
    env,
    export,
    restore,
    sample,
    samplers,
    train,
    train_classifier,
    tune_steps,
)
from scorelab.cli import eval as eval_command
from scorelab.cli.args import Parser
from scorelab.errors import ScorelabError

# the commands, in the order `scorelab --help` lists them
COMMANDS = (
    train,
    sample,
    restore,
    train_classifier,
    eval_command,
    compare,
    export,
    tune_steps,
    demo,
    samplers,
    env,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="scorelab",
        description="Diffusion generative models, checked against exact answers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ScorelabError as e:
        # Preempted (training/preemption.py): a signal stopped training after a step; 75 or 130
        status = getattr(e, "exit_status", None)
        if status is None:
            print(f"scorelab {args.command}: error: {e}", file=sys.stderr)
            return 2
        if e.rank == 0:
            note, step = str(e), e.step
            if e.checkpoint is None:  # the save failed: say what is on disk
                from scorelab.training.checkpoint import describe_last_checkpoint

                words, step = describe_last_checkpoint(args.out)
                note = f"{note}; {words}"
            resume = step is not None and hasattr(args, "resume")
            print(
                f"scorelab {args.command}: {note}" + ("; continue with --resume" if resume else ""),
                file=sys.stderr,
            )
        return status
    except OSError as e:  # a file the command could not write or read (disk full, I/O error)
        from scorelab.files import os_error_cause

        name = e.filename2 or e.filename  # a rename into place: the final name
        where = f"{name}: " if name else ""
        note = ""
        if args.command in ("train", "train-classifier") and args.out is not None:
            from scorelab.training.checkpoint import describe_last_checkpoint

            note = "; " + describe_last_checkpoint(args.out)[0]
        print(
            f"scorelab {args.command}: error: {where}{os_error_cause(e)}{note}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:  # outside Trainer.fit, or Ctrl-C twice: check what is on disk
        note = ""
        if args.command == "train":
            from scorelab.training.checkpoint import describe_last_checkpoint

            words, step = describe_last_checkpoint(args.out)
            note = f"; {words}" + ("; continue with --resume" if step is not None else "")
        print(f"\nscorelab {args.command}: interrupted{note}", file=sys.stderr)
        return 130


def console() -> None:
    """The `scorelab` program (console script and `python -m scorelab`): main's status as the
    exit status. A rank of a process group (WORLD_SIZE > 1, e.g. under torchrun) leaves with
    os._exit once its output is flushed: its group is destroyed by then, but gloo's worker
    threads can still abort the interpreter's finalization ("terminate called without an
    active exception", SIGABRT), which would turn a finished run into a failed one."""
    status = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
