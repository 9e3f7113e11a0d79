"""The posterior-method registry: each method registers where it is defined, with its options.

    @register_method("pigdm", summary=..., paper=..., nfe=..., operator="svd", options={
        "eta": Option(float, 1.0, "DDIM noise", check=between(0, 1))})
    def sample_pigdm(eps_fn, x, schedule, timesteps, operator, y, sigma_y, *, eta=1.0,
                     generator=None): ...

The options must be exactly the function's keyword-only parameters other than generator, with
the same defaults (checked when it registers), as for samplers: samplers/registry.py's
OptionSpec, and its checks and --opt parsing (check_option_values, parse_option_items), label
their errors "(method NAME)". operator says what the method needs of the operator: "any",
"svd" (has_svd) or "mask" (a Mask); spacing is its default grid. METHODS (name -> MethodSpec)
is a read-only view.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from torch import Tensor

from scorelab.errors import ScorelabError
from scorelab.operators import Mask
from scorelab.samplers.registry import (
    OptionSpec,
    check_option_values,
    describe_options,
    parse_option_items,
)
from scorelab.samplers.timesteps import SPACINGS

OPERATOR_NEEDS = ("any", "svd", "mask")


@dataclass(frozen=True)
class MethodSpec:
    """A registered posterior method: its function, description, operator need and options."""

    name: str
    fn: Callable[..., Tensor]
    summary: str
    paper: str
    nfe: str
    operator: str
    options: Mapping[str, OptionSpec]
    spacing: str = "uniform"

    def check_operator(self, operator: Any) -> None:
        """A ScorelabError of one line if the method cannot use this operator."""
        kind = type(operator).__name__
        if self.operator == "svd" and not getattr(operator, "has_svd", False):
            raise ScorelabError(
                f"method {self.name} needs an operator with an SVD; {kind} has none"
            )
        if self.operator == "mask" and not isinstance(operator, Mask):
            raise ScorelabError(f"method {self.name} works on a Mask (inpainting) only, not {kind}")


_specs: dict[str, MethodSpec] = {}
METHODS: Mapping[str, MethodSpec] = MappingProxyType(_specs)

F = TypeVar("F", bound=Callable[..., Tensor])


def register_method(
    name: str,
    *,
    summary: str,
    paper: str,
    nfe: str,
    operator: str = "any",
    spacing: str = "uniform",
    options: Mapping[str, OptionSpec] | None = None,
) -> Callable[[F], F]:
    """A decorator that registers a posterior method under name and returns it unchanged;
    spacing is the method's default grid (`posterior.sample(spacing=None)`)."""
    options = dict(options or {})
    if operator not in OPERATOR_NEEDS:
        raise TypeError(f"method {name!r}: operator must be one of {OPERATOR_NEEDS}")
    if spacing not in SPACINGS:
        raise TypeError(f"method {name!r}: unknown spacing {spacing!r}")

    def decorate(fn: F) -> F:
        params = {
            k: p
            for k, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "generator"
        }
        if set(params) != set(options):
            raise TypeError(
                f"method {name!r}: options {sorted(options)} must be the keyword-only "
                f"parameters of {fn.__qualname__} {sorted(params)}"
            )
        for key, opt in options.items():
            if params[key].default != opt.default:
                raise TypeError(f"method {name!r}: option {key} default differs from the function")
        old = _specs.get(name)
        if old is not None and old.fn.__qualname__ != fn.__qualname__:
            raise TypeError(f"method {name!r} is already registered")
        _specs[name] = MethodSpec(
            name, fn, summary, paper, nfe, operator, MappingProxyType(dict(options)), spacing
        )
        return fn

    return decorate


def get_method(name: str) -> MethodSpec:
    """The registered method, or a ScorelabError naming every registered one."""
    try:
        return _specs[name]
    except KeyError:
        raise ScorelabError(
            f"unknown posterior method {name!r}; choose one of: {', '.join(_specs)}"
        ) from None


def accepted(name: str) -> str:
    """'method dps takes: zeta (float > 0), eta (float in [0, 1])'."""
    return describe_options(f"method {name}", get_method(name).options)


def validate_options(name: str, options: Mapping[str, Any]) -> None:
    """Options from Python: known keys, values of the option's type and range."""
    check_option_values(f"method {name}", get_method(name).options, options)


def parse_options(name: str, items: Sequence[str]) -> dict[str, Any]:
    """['zeta=0.5', 'eta=1'] -> {'zeta': 0.5, 'eta': 1.0}, typed and checked (one-line errors)."""
    return parse_option_items(f"method {name}", get_method(name).options, items)
