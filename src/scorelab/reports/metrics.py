"""Sample-quality metrics of a trained run, each next to its data-vs-data floor.

The data are split once (seed 0) into a reference half and a held-out half. A metric's
value compares n samples with the reference half; its floor compares the held-out half
(up to n points) with the same reference, which is what a perfect model would score at that
sample size. Image data with an official test split (Fashion-MNIST's t10k files) are not
halved: the test split is held out and the reference is up to HELD_OUT_REFERENCE training
images (seed 0), since the k-NN radii of pr cost a reference-by-reference distance matrix.
Every metric registered in scorelab.evaluation.registry is computed the same way, in its
space: "features" (a classifier trained on the run's labelled images, the pixels of
unlabelled ones, the raw vectors of 2-D data: fd, kid, pr), "data" (the data's own space: swd,
energy, mmd) or "inception" (fid).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from scorelab.build import build_data, build_image_data
from scorelab.data import ImageSet, is_image_source, load_dataset, load_images, load_test_split
from scorelab.errors import ScorelabError
from scorelab.evaluation.features import (
    FeatureFn,
    classifier_features,
    inception_features,
    load_or_train_classifier,
    pixel_features,
)
from scorelab.evaluation.registry import METRICS, default_metrics

# below this many samples FD and KID are biased or noisy enough that the label says so
SMALL_N = 1000
# data with an official test split: this many training images (at most) are the reference
HELD_OUT_REFERENCE = 10_000
_RUNS = {"images": "image", "vectors": "vector"}


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    """'fd, kid' or ["fd", "kid"] as registered names; else one line naming all of them."""
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


def split_official(train: ImageSet, test: ImageSet, size: int = HELD_OUT_REFERENCE, seed: int = 0):
    """(reference, held-out) and their labels for data with an official test split: up to
    size training images by a seeded permutation, and the whole test split."""
    pick = torch.randperm(train.x.shape[0], generator=torch.Generator().manual_seed(seed))[:size]
    labels = None if train.labels is None else train.labels[pick]
    return train.x[pick], test.x, labels, test.labels


def is_image(cfg) -> bool:
    """Whether a run models images: what it was trained on is image data (this module is
    imported by the runs it reports on, so it asks the data, not scorelab.runs); a model
    that records no data (opened from diffusers) is a U-Net on images."""
    if cfg.data is None:
        return cfg.model.name == "unet"
    return is_image_source(cfg.data)


def reference_sets(cfg, data: str | None = None, *, log: Callable[[str], None] = print):
    """(reference, held-out, their labels) that a run's samples are judged against: the run's
    data (or data), split as the module docstring says."""
    labels, test = None, None
    if is_image(cfg):
        if data is not None and not is_image_source(data):
            raise ScorelabError(f"--data {data}: not image data, but the run is an image model")
        data_dir = cfg.data_dir
        image_set = (
            build_image_data(cfg)
            if data is None
            else load_images(data, cfg.image_size, data_dir=data_dir)
        )
        test = load_test_split(data or cfg.data, cfg.image_size, data_dir=data_dir)
        for s in (image_set, test):
            if s is not None and s.image_shape != tuple(sample_shape_of(cfg)):
                raise ScorelabError(
                    f"--data images are {s.image_shape}, the model makes "
                    f"{tuple(sample_shape_of(cfg))}"
                )
        x, labels = image_set.x, image_set.labels
    else:
        x = build_data(cfg) if data is None else load_dataset(data, cfg.n_data, seed=cfg.train.seed)
    if test is not None:
        log(f"held out: {test.note}; reference: {min(HELD_OUT_REFERENCE, len(image_set.x))} "
            "training images")  # fmt: skip
        return split_official(image_set, test)
    return split_reference(x, labels)


class FDProbe:
    """The Frechet distance of n samples in the features `evaluate_metrics` uses (the same
    reference set and cached classifier), and its floor at the same n: what a training run
    checks on the way (--eval-every) and what a benchmark tracks over time. Building it may
    train the feature classifier, whose seeding is kept away from torch's global generator.

        probe = FDProbe(cfg, run_dir, 500)
        probe(samples)  # {"fd": ..., "fd_floor": ...}, samples in the data's own units
    """

    def __init__(self, cfg, run_dir: Path, n: int, *, log: Callable[[str], None] = print):
        if n < 2:
            raise ScorelabError(f"a Frechet distance needs n >= 2 samples, got {n}")
        self.n = n
        with torch.random.fork_rng(devices=[]):
            reference, held_out, ref_labels, held_labels = reference_sets(cfg, log=log)
            self.space, self.features, _ = learned_features(
                run_dir, is_image(cfg), reference, held_out, ref_labels, held_labels, log=log
            )
        self.reference = self.features(reference)
        self.floor = self._fd(self.features(held_out[:n]))

    def _fd(self, features: Tensor) -> float:
        return METRICS["fd"].score(features, self.reference)["fd"].value

    def __call__(self, samples: Tensor) -> dict[str, float]:
        if samples.shape[0] < 2:
            raise ScorelabError(f"a Frechet distance needs >= 2 samples, got {samples.shape[0]}")
        return {"fd": self._fd(self.features(samples)), "fd_floor": self.floor}


# a sampling batch holds about this many numbers per tensor: on a CPU, 28x28 images sample
# 1.9x faster per image in batches of 50 than of 500 (the activations stay in cache)
BATCH_NUMBERS = 50_000


def sampling_batch(shape: Sequence[int]) -> int:
    """Examples per sampling batch for examples of this shape: up to 500 and about
    BATCH_NUMBERS numbers (at least 16)."""
    return min(500, max(16, BATCH_NUMBERS // math.prod(shape)))


def draw_samples(
    run,
    n: int,
    *,
    seed: int,
    sampler: str,
    steps: int | None,
    batch: int | None = None,
    **options,
):
    """n samples from a run in the data's own units, drawn in batches (None: up to 500
    examples and about BATCH_NUMBERS numbers a batch); options go to run.sample (spacing=,
    the sampler's options)."""
    if batch is None:
        batch = sampling_batch(run.shape)
    parts, drawn = [], 0
    while drawn < n:
        size = min(batch, n - drawn)
        x, _ = run.sample(size, seed=seed + drawn, sampler=sampler, steps=steps, **options)
        parts.append(x)
        drawn += size
    return torch.cat(parts)


def evaluate_metrics(
    run,
    metrics: str | Sequence[str] | None = None,
    n: int = 1000,
    *,
    seed: int = 0,
    sampler: str = "ddim",
    steps: int | None = 100,
    data: str | None = None,
    samples: Tensor | None = None,
    inception_weights: str | Path | None = None,
    log: Callable[[str], None] = print,
    sampling: dict | None = None,
) -> dict[str, dict]:
    """{result key: {"value", "floor", "n", ...}} for a loaded run (see the module docstring);
    metrics: registered names (default: the registry's default set); sampling: more of
    run.sample's options (spacing=, the sampler's)."""
    specs = [METRICS[m] for m in parse_metrics(default_metrics() if metrics is None else metrics)]
    if n < 2:
        raise ScorelabError(f"--n must be >= 2, got {n}")
    cfg = run.config
    images = is_image(cfg)
    kind = "images" if images else "vectors"
    for spec in specs:
        if kind not in spec.applies_to:
            runs = " or ".join(_RUNS[k] for k in spec.applies_to)
            raise ScorelabError(f"{spec.name} applies to {runs} runs only")
    spaces = {spec.space for spec in specs}
    # before the data: a missing weights file is the first thing to say
    inception = inception_features(inception_weights) if "inception" in spaces else None
    source = data or cfg.data
    reference, held_out, ref_labels, held_labels = reference_sets(cfg, data, log=log)
    if samples is None:
        samples = draw_samples(run, n, seed=seed, sampler=sampler, steps=steps, **(sampling or {}))
    else:
        samples = samples[:n]
    n = samples.shape[0]
    floor_set = held_out[:n]

    # each space: (its label in the results, its feature map, fields added to each result)
    views: dict[str, tuple[str, FeatureFn, dict]] = {}
    if "features" in spaces:
        views["features"] = learned_features(
            run.run_dir, images, reference, held_out, ref_labels, held_labels, log=log
        )
    if "data" in spaces:
        views["data"] = ("data space", lambda v: v, {})
    if inception is not None:
        views["inception"] = ("inception-v3 (pool3)", inception, {})
    sets = {"samples": samples, "reference": reference, "floor": floor_set}
    features = {space: {k: fn(v) for k, v in sets.items()} for space, (_, fn, _) in views.items()}

    results: dict[str, dict] = {}
    for spec in specs:
        label, _, extra = views[spec.space]
        f = features[spec.space]
        values = spec.score(f["samples"], f["reference"])
        floors = spec.score(f["floor"], f["reference"])
        for key in spec.keys:
            value, floor = values[key], floors[key]
            results[key] = {
                "value": value.value,
                "floor": floor.value,
                "n": n,
                "n_floor": floor_set.shape[0],
                "n_reference": reference.shape[0],
                "features": label,
                "small_n": n < SMALL_N,
                **spread(value.std, floor.std),
                **spec.options,
                **extra,
            }
    for r in results.values():
        r["data"] = source
    return results


def spread(std: float | None, floor_std: float | None) -> dict[str, float]:
    """The standard deviations of a value and its floor, for metrics that give one (kid)."""
    return {} if std is None or floor_std is None else {"std": std, "floor_std": floor_std}


def learned_features(
    run_dir: Path, images: bool, reference, held_out, ref_labels, held_labels, *, log
) -> tuple[str, FeatureFn, dict]:
    """The "features" space: a classifier trained on labelled images (its test accuracy goes
    into each result), the pixels of unlabelled ones, the flattened vectors of vector data."""
    if not images:
        return "raw", (lambda v: v.reshape(v.shape[0], -1)), {}
    if ref_labels is None or len(torch.unique(ref_labels)) < 2:
        return "pixels", pixel_features, {}
    classifier, info = load_or_train_classifier(
        run_dir, reference, ref_labels, held_out, held_labels, log=log
    )
    return (
        "classifier (trained on the run's data, cached in features.safetensors)",
        classifier_features(classifier),
        {"classifier_test_accuracy": info["test_accuracy"]},
    )


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
