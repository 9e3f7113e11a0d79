"""Sample-quality metrics of a trained run, each next to its data-vs-data floor.

The data are split once (seed 0) into a reference half and a held-out half. A metric's
value compares n samples with the reference half; its floor compares the held-out half
(up to n points) with the same reference, which is what a perfect model would score at that
sample size. fd, kid and pr are computed in a feature space (a classifier trained on the
run's labelled images, the pixels of unlabelled ones, the raw vectors of 2-D data; fid:
Inception); swd, energy and mmd in the data's own space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from scorelab.build import build_data, build_image_data
from scorelab.data import is_image_source, load_dataset, load_images
from scorelab.errors import ScorelabError
from scorelab.evaluation.features import (
    classifier_features,
    inception_features,
    load_or_train_classifier,
    pixel_features,
)
from scorelab.evaluation.metrics import (
    energy_distance,
    frechet_distance,
    kernel_inception_distance,
    mmd_rbf,
    precision_recall,
    sliced_wasserstein,
)
from scorelab.runs import is_image

METRICS = ("fd", "kid", "pr", "swd", "energy", "mmd", "fid")
DEFAULT_METRICS = ("fd", "kid", "pr", "swd")
# below this many samples FD and KID are biased or noisy enough that the label says so
SMALL_N = 1000


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    names = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text)
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        what = f"unknown metric {unknown[0]!r}" if unknown else "no metric given"
        raise ScorelabError(f"{what}; choose from: {', '.join(METRICS)}")
    return names


def split_reference(x: Tensor, labels: Tensor | None, seed: int = 0):
    """(reference, held-out) halves of the data and of its labels, by a seeded permutation."""
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    half = x.shape[0] // 2
    a, b = perm[half:], perm[:half]  # the reference gets the extra point of an odd count
    if labels is None:
        return x[a], x[b], None, None
    return x[a], x[b], labels[a], labels[b]


def draw_samples(run, n: int, *, seed: int, sampler: str, steps: int | None, batch: int = 500):
    """n samples from a run in the data's own units, drawn in batches."""
    parts, drawn = [], 0
    while drawn < n:
        size = min(batch, n - drawn)
        x, _ = run.sample(size, seed=seed + drawn, sampler=sampler, steps=steps)
        parts.append(x)
        drawn += size
    return torch.cat(parts)


def evaluate_metrics(
    run,
    metrics: Sequence[str] = DEFAULT_METRICS,
    n: int = 1000,
    *,
    seed: int = 0,
    sampler: str = "ddim",
    steps: int | None = 100,
    data: str | None = None,
    samples: Tensor | None = None,
    inception_weights: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """{metric: {"value", "floor", "n", ...}} for a loaded run (see the module docstring)."""
    metrics = parse_metrics(metrics)
    if n < 2:
        raise ScorelabError(f"--n must be >= 2, got {n}")
    cfg = run.config
    images = is_image(cfg)
    if "fid" in metrics and not images:
        raise ScorelabError("fid applies to image runs only")
    inception = inception_features(inception_weights) if "fid" in metrics else None
    source = data or cfg.data
    labels = None
    if images:
        if data is not None and not is_image_source(data):
            raise ScorelabError(f"--data {data}: not image data, but the run is an image model")
        image_set = build_image_data(cfg) if data is None else load_images(data, cfg.image_size)
        if image_set.image_shape != tuple(sample_shape_of(cfg)):
            raise ScorelabError(
                f"--data images are {image_set.image_shape}, the model makes "
                f"{tuple(sample_shape_of(cfg))}"
            )
        x, labels = image_set.x, image_set.labels
    else:
        x = build_data(cfg) if data is None else load_dataset(data, cfg.n_data, seed=cfg.train.seed)
    reference, held_out, ref_labels, held_labels = split_reference(x, labels)
    if samples is None:
        samples = draw_samples(run, n, seed=seed, sampler=sampler, steps=steps)
    else:
        samples = samples[:n]
    n = samples.shape[0]
    floor_set = held_out[:n]

    feature_name, feature_fn, extra = "raw", (lambda v: v.reshape(v.shape[0], -1)), {}
    if images and {"fd", "kid", "pr"} & set(metrics):
        if ref_labels is not None and len(torch.unique(ref_labels)) > 1:
            classifier, info = load_or_train_classifier(
                run.run_dir, reference, ref_labels, held_out, held_labels, log=log
            )
            feature_name = "classifier (trained on the run's data, cached in features.safetensors)"
            feature_fn = classifier_features(classifier)
            extra = {"classifier_test_accuracy": info["test_accuracy"]}
        else:
            feature_name, feature_fn = "pixels", pixel_features
    feats: dict[str, Tensor] = {}
    if {"fd", "kid", "pr"} & set(metrics):
        feats = {
            k: feature_fn(v)
            for k, v in (("samples", samples), ("reference", reference), ("floor", floor_set))
        }

    def entry(value: float, floor: float, features: str, **more) -> dict:
        out = {
            "value": value,
            "floor": floor,
            "n": n,
            "n_floor": floor_set.shape[0],
            "n_reference": reference.shape[0],
            "features": features,
            "small_n": n < SMALL_N,
        }
        out.update(more)
        return out

    results: dict[str, dict] = {}
    for name in metrics:
        if name == "fd":
            results["fd"] = entry(
                frechet_distance(feats["samples"], feats["reference"]),
                frechet_distance(feats["floor"], feats["reference"]),
                feature_name,
                **extra,
            )
        elif name == "kid":
            value, std = kernel_inception_distance(feats["samples"], feats["reference"])
            floor, floor_std = kernel_inception_distance(feats["floor"], feats["reference"])
            results["kid"] = entry(
                value, floor, feature_name, std=std, floor_std=floor_std, **extra
            )
        elif name == "pr":
            p, r = precision_recall(feats["reference"], feats["samples"])
            fp, fr = precision_recall(feats["reference"], feats["floor"])
            results["precision"] = entry(p, fp, feature_name, k=3, **extra)
            results["recall"] = entry(r, fr, feature_name, k=3, **extra)
        elif name == "swd":
            results["swd"] = entry(
                sliced_wasserstein(samples, reference),
                sliced_wasserstein(floor_set, reference),
                "data space",
            )
        elif name == "energy":
            results["energy"] = entry(
                energy_distance(samples, reference),
                energy_distance(floor_set, reference),
                "data space",
            )
        elif name == "mmd":
            results["mmd"] = entry(
                mmd_rbf(samples, reference), mmd_rbf(floor_set, reference), "data space"
            )
        elif name == "fid" and inception is not None:
            f_s, f_r, f_f = inception(samples), inception(reference), inception(floor_set)
            results["fid"] = entry(
                frechet_distance(f_s, f_r), frechet_distance(f_f, f_r), "inception-v3 (pool3)"
            )
    for r in results.values():
        r["data"] = source
    return results


def sample_shape_of(cfg) -> tuple[int, int, int]:
    return (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size)


def format_report(results: dict[str, dict]) -> str:
    """One line per metric: value, floor, n and the feature space; small n flagged."""
    lines = []
    width = max(map(len, results), default=0)
    for name, r in results.items():
        flag = f"  [small n={r['n']}: biased, compare only at equal n]" if r["small_n"] else ""
        acc = r.get("classifier_test_accuracy")
        acc_text = f", classifier test accuracy {acc:.3f}" if acc is not None else ""
        lines.append(
            f"{name:<{width}}  {r['value']:.5g}  (floor {r['floor']:.5g}; n={r['n']} vs "
            f"{r['n_reference']} reference; {r['features']}{acc_text}){flag}"
        )
    return "\n".join(lines)
