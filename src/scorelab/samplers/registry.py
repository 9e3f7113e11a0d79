"""The sampler registry: every sampler registers where it is defined, with its options.

    @register_sampler("pc", summary=..., paper=..., nfe=..., options={
        "snr": Option(float, 0.16, "target signal-to-noise ratio", check=positive), ...})
    def sample_pc(eps_fn, x, schedule, timesteps, *, snr=0.16, ..., generator=None,
                  callback=None): ...

The options must be exactly the sampler's keyword-only parameters other than generator and
callback, with the same defaults (checked when it registers). SAMPLERS (name -> function) and
SAMPLER_INFO (name -> SamplerInfo) are read-only live views of the registry. parse_options
turns the command line's KEY=VALUE strings into typed options; validate_options checks options
given from Python. Both raise ScorelabError with one line that names the accepted options or
the expected type, choices or range. This module imports no sampler module: they import it,
and scorelab.samplers imports them so that they register.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from torch import Tensor

from scorelab.errors import ScorelabError
from scorelab.samplers.timesteps import SPACINGS

# keyword-only parameters that sample() passes itself: not options
RESERVED = ("generator", "callback")
_CLI_TYPES = (float, int, str, bool)
_TYPE_NAMES = {float: "float", int: "int", str: "str", bool: "bool", Tensor: "tensor"}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NONE = ("none", "null")


@dataclass(frozen=True)
class Range:
    """A closed or open interval check for a number: lo <(=) value <(=) hi."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __call__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"in {left}{self.lo:g}, {self.hi:g}{right}"


positive = Range(0, lo_open=True)
nonnegative = Range(0)


def at_least(lo: float) -> Range:
    return Range(lo)


def between(lo: float, hi: float) -> Range:
    """The closed interval [lo, hi]."""
    return Range(lo, hi)


@dataclass(frozen=True)
class OptionSpec:
    """One keyword option of a sampler.

    type is how a command-line value is parsed (float, int, str or bool); any other type (a
    Tensor) makes the option Python-only. choices or check (a Range) restrict the value;
    nullable options also take None ("none" on the command line); python_types are further
    types accepted unchecked from Python (a learned variance function).
    """

    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    check: Range | None = None
    nullable: bool = False
    python_types: tuple[type, ...] = ()

    @property
    def cli(self) -> bool:
        """Whether the command line can set it (--opt KEY=VALUE)."""
        return self.type in _CLI_TYPES

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type, self.type.__name__)

    def describe(self) -> str:
        """'float > 0', 'int in {1, 2, 3}', 'float or none', 'tensor (Python only)'."""
        text = self.type_name
        if self.choices is not None:
            text += " in {" + ", ".join(map(str, self.choices)) + "}"
        elif self.check is not None:
            text += f" {self.check}"
        if self.nullable:
            text += " or none"
        return text if self.cli else f"{text} (Python only)"


Option = OptionSpec


@dataclass(frozen=True)
class SamplerInfo:
    """What a sampler is, where it comes from, its eps_fn calls and its default time grid."""

    summary: str
    paper: str
    nfe: str
    spacing: str = "uniform"


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: its function, its description and its options (read-only)."""

    name: str
    fn: Callable[..., Tensor]
    summary: str
    paper: str
    nfe: str
    spacing: str = "uniform"
    options: Mapping[str, OptionSpec] = field(default_factory=dict)

    @property
    def info(self) -> SamplerInfo:
        return SamplerInfo(self.summary, self.paper, self.nfe, self.spacing)

    @property
    def cli_options(self) -> dict[str, OptionSpec]:
        return {k: o for k, o in self.options.items() if o.cli}


_specs: dict[str, SamplerSpec] = {}
REGISTRY: Mapping[str, SamplerSpec] = MappingProxyType(_specs)

F = TypeVar("F", bound=Callable[..., Tensor])


def keyword_options(fn: Callable) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of a sampler function that are options."""
    return {
        name: p
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in RESERVED
    }


def register_sampler(
    name: str,
    *,
    summary: str,
    paper: str,
    nfe: str,
    spacing: str = "uniform",
    options: Mapping[str, OptionSpec] | None = None,
) -> Callable[[F], F]:
    """A decorator that registers a sampler function under name and returns it unchanged.

    The options must be exactly its keyword-only parameters besides generator and callback,
    each with the function's own default: a mismatch is a TypeError at import.
    """
    options = dict(options or {})

    def decorate(fn: F) -> F:
        params = keyword_options(fn)
        if set(params) != set(options):
            raise TypeError(
                f"sampler {name!r}: options {sorted(options)} must be the keyword-only "
                f"parameters of {fn.__qualname__} {sorted(params)}"
            )
        for key, opt in options.items():
            default = params[key].default
            if not (default is opt.default or default == opt.default):
                raise TypeError(
                    f"sampler {name!r}: option {key} defaults to {opt.default!r}, "
                    f"{fn.__qualname__} to {default!r}"
                )
        if spacing not in SPACINGS:
            raise TypeError(f"sampler {name!r}: unknown spacing {spacing!r}")
        old = _specs.get(name)
        if old is not None and _qualname(old.fn) != _qualname(fn):  # a reload may re-register
            raise TypeError(f"sampler {name!r} is already registered by {_qualname(old.fn)}")
        _specs[name] = SamplerSpec(
            name, fn, summary, paper, nfe, spacing, MappingProxyType(dict(options))
        )
        return fn

    return decorate


def _qualname(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def get_sampler(name: str) -> SamplerSpec:
    """The registered sampler, or a ScorelabError naming every registered one."""
    try:
        return _specs[name]
    except KeyError:
        raise ScorelabError(
            f"unknown sampler {name!r}; choose one of: {', '.join(_specs)}"
        ) from None


V = TypeVar("V")


class _View(Mapping[str, V], Generic[V]):
    """A read-only name -> value view of the registry that follows new registrations."""

    def __init__(self, get: Callable[[SamplerSpec], V]) -> None:
        self._get = get

    def __getitem__(self, name: str) -> V:
        return self._get(_specs[name])

    def __iter__(self) -> Iterator[str]:
        return iter(_specs)

    def __len__(self) -> int:
        return len(_specs)

    def __repr__(self) -> str:
        return repr(dict(self))


SAMPLERS: Mapping[str, Callable[..., Tensor]] = _View(lambda spec: spec.fn)
SAMPLER_INFO: Mapping[str, SamplerInfo] = _View(lambda spec: spec.info)


def describe_options(owner: str, options: Mapping[str, OptionSpec]) -> str:
    """'sampler pc takes: n_corrector (int >= 0), snr (float > 0)': what --opt can set; owner
    names whose options they are ('sampler pc', 'method dps')."""
    options = {k: o for k, o in options.items() if o.cli}
    if not options:
        return f"{owner} takes no options"
    return f"{owner} takes: " + ", ".join(f"{k} ({o.describe()})" for k, o in options.items())


def accepted(name: str) -> str:
    """What --opt can set for sampler name (describe_options)."""
    return describe_options(f"sampler {name}", get_sampler(name).options)


def _unknown(owner: str, options: Mapping[str, OptionSpec], key: str) -> ScorelabError:
    return ScorelabError(f"unknown option {key!r}: {describe_options(owner, options)}")


def _bad(owner: str, key: str, what: str, value: Any) -> ScorelabError:
    return ScorelabError(f"{key} must be {what}, got {value!r} ({owner})")


def _check_value(owner: str, key: str, opt: OptionSpec, value: Any) -> None:
    if opt.choices is not None and value not in opt.choices:
        raise _bad(owner, key, "one of " + ", ".join(map(str, opt.choices)), value)
    if opt.check is not None and not opt.check(value):
        raise _bad(owner, key, str(opt.check), value)


def parse_value(owner: str, key: str, opt: OptionSpec, text: str) -> Any:
    """A command-line string as the option's type, checked against its choices or range."""
    if not opt.cli:
        call = "scorelab.posterior.sample" if owner.startswith("method ") else "scorelab.sample"
        raise ScorelabError(
            f"{key} is a {opt.type_name}: set it from Python, {call}(..., {key}=...) ({owner})"
        )
    word = text.strip().lower()
    if opt.nullable and word in _NONE:
        return None
    if opt.type is bool:
        if word not in _TRUE + _FALSE:
            raise _bad(owner, key, "true or false", text)
        return word in _TRUE
    try:
        value = opt.type(text.strip()) if opt.type is not str else text
    except ValueError:
        noun = {float: "a number", int: "an integer"}[opt.type]
        raise _bad(owner, key, noun + (" or none" if opt.nullable else ""), text) from None
    _check_value(owner, key, opt, value)
    return value


def parse_option_items(
    owner: str, options: Mapping[str, OptionSpec], items: Sequence[str]
) -> dict[str, Any]:
    """['snr=0.16', 'n_corrector=2'] -> {'snr': 0.16, 'n_corrector': 2}, typed and checked.

    A missing '=', an unknown or repeated key, or a value of the wrong type or out of range is
    a ScorelabError of one line naming the accepted options or the expected value.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ScorelabError(
                f"--opt must look like KEY=VALUE, got {item!r}; "
                f"{describe_options(owner, options)}"
            )
        if key not in options:
            raise _unknown(owner, options, key)
        if key in out:
            raise ScorelabError(f"--opt {key} is given twice")
        out[key] = parse_value(owner, key, options[key], text)
    return out


def parse_options(name: str, items: Sequence[str]) -> dict[str, Any]:
    """--opt items for sampler name (parse_option_items)."""
    return parse_option_items(f"sampler {name}", get_sampler(name).options, items)


def _is_type(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_option_values(
    owner: str, options: Mapping[str, OptionSpec], given: Mapping[str, Any]
) -> None:
    """Options given from Python: every key must be one of options, and every value of its
    type (or None where that is allowed) and within its choices or range."""
    for key, value in given.items():
        opt = options.get(key)
        if opt is None:
            raise _unknown(owner, options, key)
        if value is None and opt.nullable:
            continue
        if opt.python_types and isinstance(value, opt.python_types):
            continue
        if not _is_type(value, opt.type):
            article = "an" if opt.type_name[0] in "aeiou" else "a"
            raise _bad(owner, key, f"{article} {opt.describe()}", value)
        _check_value(owner, key, opt, value)


def validate_options(name: str, options: Mapping[str, Any]) -> None:
    """Options given from Python for sampler name (check_option_values)."""
    check_option_values(f"sampler {name}", get_sampler(name).options, options)


def describe(spec: SamplerSpec) -> dict[str, Any]:
    """A sampler's registry entry as plain JSON-able data (non-finite defaults as strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    return {
        "name": spec.name,
        "summary": spec.summary,
        "paper": spec.paper,
        "nfe": spec.nfe,
        "spacing": spec.spacing,
        "options": {
            key: {
                "type": opt.type_name,
                "default": plain(opt.default),
                "help": opt.help,
                "choices": list(opt.choices) if opt.choices is not None else None,
                "range": str(opt.check) if opt.check is not None else None,
                "nullable": opt.nullable,
                "cli": opt.cli,
            }
            for key, opt in spec.options.items()
        },
    }
