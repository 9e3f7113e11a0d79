"""Helpers the CLI tests share."""

from __future__ import annotations

from scorelab.cli import main


def cli_fails(argv: list[str], capsys, pattern: str) -> str:
    """The command exits with status 2 and prints one line naming the problem, no traceback
    (argparse's own errors exit from the parser, with the same status); returns the line."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert pattern in err, err
    return err
