"""Settings declared once, beside their config field: flag, help, type and range.

`setting(default, "--lr", "peak Adam learning rate", rule=POSITIVE)` is a dataclass field whose
metadata the command line is generated from (cli/train.py) and against which every value is
checked, whether it came from a flag, a config file or Python (`check_section`). A field's type
comes from its annotation: int, float, str, bool (a switch), tuple[int, ...] (comma-separated;
"none" for the empty tuple) and their `| None` forms.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from scorelab.errors import ScorelabError


@dataclass(frozen=True)
class Rule:
    """A check on a parsed value and its words for messages ('a finite number > 0')."""

    ok: Callable[[Any], bool]
    words: str


POSITIVE_INT = Rule(lambda v: v >= 1, ">= 1")
NONNEG_INT = Rule(lambda v: v >= 0, ">= 0")
POSITIVE = Rule(lambda v: 0 < v < math.inf, "a finite number > 0")
NONNEG = Rule(lambda v: 0 <= v < math.inf, "a finite number >= 0")
FRACTION = Rule(lambda v: 0 <= v < 1, "in [0, 1)")
UNIT_INTERVAL = Rule(lambda v: 0 <= v <= 1, "in [0, 1]")
AT_LEAST_4 = Rule(lambda v: v >= 4, ">= 4")
POSITIVE_INTS = Rule(lambda v: all(i >= 1 for i in v), "positive integers like 1,2,2")


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line."""

    name: str | None  # "--lr"; None: settable from a config file and Python only
    help: str
    rule: Rule | None = None
    choices: Callable[[], Sequence[str]] | None = None  # lazy: the names live in registries
    show_default: bool = True


def setting(
    default: Any,
    flag: str | None,
    help: str,
    *,
    rule: Rule | None = None,
    choices: Callable[[], Sequence[str]] | None = None,
    show_default: bool = True,
) -> Any:
    """A dataclass field carrying its Flag."""
    meta = {"flag": Flag(flag, help, rule, choices, show_default)}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Entry:
    """One setting: its dotted key, Flag, default and annotated type."""

    key: str
    flag: Flag
    default: Any
    kind: Any

    @property
    def base(self) -> Any:
        """The type without None: int, float, str, bool or tuple."""
        args = [a for a in typing.get_args(self.kind) if a is not type(None)]
        union = typing.get_origin(self.kind) in (typing.Union, types.UnionType)
        kind = args[0] if union and len(args) == 1 else self.kind
        return typing.get_origin(kind) or kind

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.kind)

    def help_text(self) -> str:
        text = self.flag.help
        if self.flag.choices is not None:
            text += f" ({', '.join(self.flag.choices())})"
        if self.flag.show_default and self.base is not bool and self.default is not None:
            shown = ",".join(map(str, self.default)) if self.base is tuple else self.default
            text += f" (default: {shown if shown != '' else 'none'})"
        return text

    def parse(self, text: str) -> Any:
        """A flag's text as a value; ValueError with the words of what was expected."""
        base = self.base
        if base is tuple:
            if text.strip().lower() in ("", "none"):
                return ()
            try:
                return tuple(int(v) for v in text.split(",") if v.strip())
            except ValueError:
                raise ValueError(f"expected integers like 1,2,2, got {text!r}") from None
        if base in (int, float):
            try:
                return base(text)
            except ValueError:
                noun = "an integer" if base is int else "a number"
                raise ValueError(f"expected {noun}, got {text!r}") from None
        return text

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value of this setting, or None."""
        if value is None and self.optional:
            return None
        name = self.flag.name or self.key
        if self.flag.choices is not None and value not in self.flag.choices():
            return f"{name} must be one of {', '.join(self.flag.choices())}, got {value!r}"
        if self.flag.rule is not None and not self.flag.rule.ok(value):
            return f"{name} must be {self.flag.rule.words}, got {value!r}"
        return None


def entries(cls: type, prefix: str = "") -> Iterator[Entry]:
    """The settings of a config dataclass, nested sections as dotted keys, in field order."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if "flag" in f.metadata:
            yield Entry(prefix + f.name, f.metadata["flag"], value, hints[f.name])
        elif "union" in f.metadata:  # one of several dataclasses (a network): all their settings
            seen: set[str] = set()
            for option in f.metadata["union"]():
                for entry in entries(option, f"{prefix}{f.name}."):
                    if entry.key not in seen:
                        seen.add(entry.key)
                        yield entry
        elif dataclasses.is_dataclass(value):
            yield from entries(type(value), f"{prefix}{f.name}.")


def check_section(section: Any) -> None:
    """Every setting of a config dataclass against its rule and choices: one-line errors."""
    for entry in entries(type(section)):
        value = section
        for part in entry.key.split("."):
            value = getattr(value, part)
        message = entry.problem(value)
        if message is not None:
            raise ScorelabError(message)


__all__ = [
    "AT_LEAST_4",
    "Entry",
    "FRACTION",
    "Flag",
    "NONNEG",
    "NONNEG_INT",
    "POSITIVE",
    "POSITIVE_INT",
    "POSITIVE_INTS",
    "Rule",
    "UNIT_INTERVAL",
    "check_section",
    "entries",
    "setting",
]
