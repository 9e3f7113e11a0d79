"""Argument types and helpers the commands share: numbers with ranges, lists, the parser
whose errors are one line, and the flags generated from the config's settings."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from scorelab.schema import Entry, entries


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def number(kind: type, ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type: text parsed as kind (int or float), then checked by ok."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


positive_int = number(int, lambda v: v >= 1, ">= 1")
nonneg_int = number(int, lambda v: v >= 0, ">= 0")
positive_float = number(float, lambda v: 0 < v < math.inf, "a finite number > 0")
nonneg_float = number(float, lambda v: 0 <= v < math.inf, "a finite number >= 0")
fraction = number(float, lambda v: 0 <= v < 1, "in [0, 1)")


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2,2, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def int_list_or_none(text: str) -> list[int]:
    return [] if text.strip().lower() in ("", "none") else int_list(text)


def show(value: object) -> str:
    """A default as the command line writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,1,3, got {text!r}") from None
    if not values or any(not 0 <= v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0, got {text!r}")
    return values


def add_settings(p: argparse.ArgumentParser, cls: type) -> list[Entry]:
    """One flag per setting of a config dataclass that declares one (scorelab.schema); each
    parses to its field's type and is checked against its rule. Unset flags stay None."""
    added = []
    for entry in entries(cls):
        if entry.flag.name is None:
            continue
        if entry.base is bool:
            p.add_argument(
                entry.flag.name, dest=entry.key, action="store_const", const=True, default=None,
                help=entry.help_text(),
            )  # fmt: skip
        else:
            p.add_argument(
                entry.flag.name, dest=entry.key, type=_setting_type(entry), default=None,
                metavar=entry.flag.name.lstrip("-").replace("-", "_").upper(),
                help=entry.help_text(),
            )  # fmt: skip
        added.append(entry)
    return added


def _setting_type(entry: Entry) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = entry.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        rule = entry.flag.rule
        if rule is not None and not rule.ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule.words}, got {text}")
        return value

    return parse


def settings_given(args: argparse.Namespace, added: list[Entry]) -> dict[str, Any]:
    """{dotted key: value} of the setting flags given on the command line."""
    return {e.key: getattr(args, e.key) for e in added if getattr(args, e.key) is not None}
