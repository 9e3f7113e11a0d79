"""The metric registry: every sample metric registers where it is defined.

    @register_metric("kid", space="features", summary=..., paper="Binkowski et al. 2018",
                     compare=("images",), default=True)
    def kernel_inception_distance(x, y, *, subsets=50, ...) -> tuple[float, float]: ...

A metric is a function of (samples, reference) in its space. It returns one result per key
(keys default to (name,)): a float, or a (value, standard deviation) pair; a metric with
several keys (pr: precision and recall) returns a tuple of them in the keys' order. Its space
is what it compares (SPACES): "features" (a classifier's features for labelled images, the
pixels of unlabelled ones, the raw vectors of vector data), "data" (the data's own space) or
"inception" (Inception-v3 pool3). applies_to says on which runs it can be computed (images,
vectors), compare on which `scorelab compare` shows it, default whether `scorelab eval` runs it
without --metrics. options are keyword arguments passed to the function and recorded beside
each result. METRICS (name -> MetricSpec) is a read-only live view, in registration order.
This module imports no metric: scorelab.evaluation.metrics imports it, and the package imports
that module, so that the metrics register.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from torch import Tensor

# what each space is, as `scorelab eval --help` says it
SPACES = {
    "features": "in the features of a classifier trained on the data (images with labels; "
    "cached in the run dir), else the pixels or the raw vectors",
    "data": "in data space",
    "inception": "in Inception-v3 features, with user-supplied weights",
}
DATA_KINDS = ("images", "vectors")


@dataclass(frozen=True)
class Score:
    """One result of a metric: its value, and its standard deviation where it has one."""

    value: float
    std: float | None = None


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: its function, what it compares, and where it is used."""

    name: str
    fn: Callable[..., Any]
    space: str
    summary: str
    paper: str
    keys: tuple[str, ...]
    applies_to: tuple[str, ...] = DATA_KINDS
    compare: tuple[str, ...] = ()
    default: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def score(self, samples: Tensor, reference: Tensor) -> dict[str, Score]:
        """{key: Score} of the samples against the reference, in the metric's space."""
        out = self.fn(samples, reference, **self.options)
        results = out if len(self.keys) > 1 else (out,)
        if not isinstance(results, tuple) or len(results) != len(self.keys):
            raise TypeError(f"metric {self.name!r} must return one result per key {self.keys}")
        return {key: _as_score(self.name, r) for key, r in zip(self.keys, results, strict=True)}


def _as_score(name: str, result: Any) -> Score:
    if isinstance(result, tuple) and len(result) == 2:
        return Score(float(result[0]), float(result[1]))
    if isinstance(result, float | int) and not isinstance(result, bool):
        return Score(float(result))
    raise TypeError(f"metric {name!r} returned {result!r}: a float or a (value, std) pair")


_specs: dict[str, MetricSpec] = {}
METRICS: Mapping[str, MetricSpec] = MappingProxyType(_specs)

F = TypeVar("F", bound=Callable[..., Any])


def register_metric(
    name: str,
    *,
    space: str,
    summary: str,
    paper: str,
    keys: tuple[str, ...] | None = None,
    applies_to: tuple[str, ...] = DATA_KINDS,
    compare: tuple[str, ...] = (),
    default: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """A decorator that registers a metric function under name and returns it unchanged.

    Checked at registration (a TypeError): the space, the data kinds, compare within
    applies_to, result keys that no other metric gives, and options that are keyword
    parameters of the function.
    """
    keys = (name,) if keys is None else tuple(keys)
    options = dict(options or {})

    def decorate(fn: F) -> F:
        problem = _problem(name, fn, space, keys, applies_to, compare, options)
        if problem:
            raise TypeError(f"metric {name!r}: {problem}")
        _specs[name] = MetricSpec(
            name,
            fn,
            space,
            summary,
            paper,
            keys,
            tuple(applies_to),
            tuple(compare),
            default,
            MappingProxyType(options),
        )
        return fn

    return decorate


def _problem(name, fn, space, keys, applies_to, compare, options) -> str | None:
    old = _specs.get(name)
    if old is not None and _qualname(old.fn) != _qualname(fn):  # a reload may re-register
        return f"already registered by {_qualname(old.fn)}"
    if space not in SPACES:
        return f"unknown space {space!r}; choose from: {', '.join(SPACES)}"
    if not applies_to or not set(applies_to) <= set(DATA_KINDS):
        return f"applies_to must be some of {DATA_KINDS}, got {applies_to!r}"
    if not set(compare) <= set(applies_to):
        return f"compare {compare!r} must be within applies_to {applies_to!r}"
    taken = {k: s.name for s in _specs.values() if s.name != name for k in s.keys}
    clash = [k for k in keys if k in taken]
    if not keys or len(set(keys)) < len(keys) or clash:
        return f"result keys {keys!r} must be distinct and new" + (
            f" ({clash[0]!r} is {taken[clash[0]]!r}'s)" if clash else ""
        )
    params = inspect.signature(fn).parameters
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    unknown = [k for k in options if k not in params or params[k].kind not in keyword]
    if unknown:
        return f"option {unknown[0]!r} is not a keyword parameter of {fn.__qualname__}"
    return None


def _qualname(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def unregister_metric(name: str) -> None:
    """Remove a registered metric (a plugin's or a test's); unknown names are ignored."""
    _specs.pop(name, None)


def default_metrics() -> tuple[str, ...]:
    """The metrics `scorelab eval` computes without --metrics, in registration order."""
    return tuple(name for name, spec in _specs.items() if spec.default)


def compared_metrics(kind: str) -> tuple[str, ...]:
    """The metrics `scorelab compare` shows for runs on this kind of data (images, vectors)."""
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown kind of data {kind!r}; choose from: {', '.join(DATA_KINDS)}")
    return tuple(name for name, spec in _specs.items() if kind in spec.compare)
