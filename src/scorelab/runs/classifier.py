"""The noise-aware classifier p_phi(y | x_t, t) as a kind of run, for classifier guidance
(Dhariwal & Nichol 2021); its networks live in scorelab.nn.

CLS_DIR/config.json               the resolved ClassifierConfig (also in the checkpoint)
CLS_DIR/checkpoint.safetensors    raw + EMA weights (the Trainer's), EMA used for guidance
CLS_DIR/accuracy.csv, accuracy.md accuracy per noise level (bins of t), on held-out data for a
                                  built-in dataset, else on the training data with fresh noise

The classifier sees x_t of the same forward process and units as the diffusion run it guides:
the same discrete schedule (name, T) and data normalization, which guidance checks.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scorelab.build import build_schedule
from scorelab.config import ScheduleConfig, TrainConfig
from scorelab.data import (
    DATASETS,
    Normalizer,
    check_array,
    is_image_source,
    load_dataset,
    load_dataset_labels,
    load_images,
)
from scorelab.data.arrays import load_labels
from scorelab.errors import CheckpointError, DataError, ScorelabError
from scorelab.files import atomic_write_bytes
from scorelab.nn import MLP, EncoderClassifier
from scorelab.objectives import classifier_loss
from scorelab.processes import DiscreteSchedule
from scorelab.processes.ddpm import q_sample
from scorelab.runs.base import (
    CHECKPOINT,
    CONFIG,
    IDENTITY,
    Prepared,
    read_stored,
    writing_run,
)
from scorelab.training.checkpoint import load_state_dict_checked
from scorelab.training.trainer import Trainer, TrainResult
from scorelab.typing import ClassifierFn

ACCURACY = "accuracy.md"


@dataclass(frozen=True)
class ClassifierNetConfig:
    """The classifier's network: an MLP (name mlp, for vectors: dim, width, depth) or the
    U-Net encoder (name unet, for images: in_channels, image_size, channels, channel_mult,
    res_blocks), chosen from the data. The other fields are kept so that classifier
    directories written by earlier versions load."""

    name: str = "mlp"
    dim: int = 2
    width: int = 128
    depth: int = 3
    variance: str = "fixed_small"
    in_channels: int = 1
    image_size: int = 0
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (4,)
    dropout: float = 0.1
    num_classes: int = 0
    latent_dim: int = 0
    decoder: str = ""
    beta: float = 1.0
    norm_group_size: int = 4  # the U-Net encoder's (nn/unet.py: norm_groups)


@dataclass(frozen=True)
class ClassifierConfig:
    data: str = "ring"
    n_data: int = 20_000
    labels: str | None = None
    image_size: int | None = None
    model: ClassifierNetConfig = field(default_factory=ClassifierNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=2000, batch_size=256, lr=3e-3, warmup=100)
    )
    normalizer: dict[str, Any] | None = None
    num_classes: int = 0
    data_dir: str | None = None  # where named image data sets are (RunConfig.data_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        try:
            nested = {
                "model": ClassifierNetConfig,
                "schedule": ScheduleConfig,
                "train": TrainConfig,
            }
            model = d.get("model")
            if isinstance(model, dict) and "norm_group_size" not in model:
                d = {**d, "model": {**model, "norm_group_size": 0}}  # stored before it existed
            return cls(**{k: nested[k](**v) if k in nested else v for k, v in d.items()})
        except TypeError as e:
            raise CheckpointError(f"the stored classifier config is not readable: {e}") from None


def build_classifier(cfg: ClassifierConfig) -> nn.Module:
    """The classifier network: an MLP with one logit per class, or the U-Net encoder."""
    m, span = cfg.model, cfg.schedule.T
    if m.name == "unet":
        return EncoderClassifier(
            m.in_channels,
            cfg.num_classes,
            m.channels,
            tuple(m.channel_mult),
            m.res_blocks,
            time_scale=1000 / span,
            norm_group_size=m.norm_group_size,
        )
    if m.name != "mlp":
        raise ScorelabError(f"unknown classifier model {m.name!r}; choose mlp or unet")
    return MLP(m.dim, m.width, m.depth, time_scale=1000 / span, out_dim=cfg.num_classes)


def _load_data(cfg: ClassifierConfig) -> tuple[ClassifierConfig, Tensor, Tensor]:
    """The data (in the classifier's units), its labels and the config fitted to them."""
    if is_image_source(cfg.data):
        images = load_images(cfg.data, cfg.image_size, data_dir=cfg.data_dir)
        x, labels = images.x, images.labels
        if cfg.labels is not None:
            labels = load_labels(cfg.labels, x.shape[0])
        cfg = CLASSIFIER.resolve(cfg, image_shape=images.image_shape, dim=0)
    else:
        x = check_array(load_dataset(cfg.data, cfg.n_data, seed=cfg.train.seed), cfg.data)
        labels = load_dataset_labels(cfg.data, cfg.n_data, seed=cfg.train.seed, labels=cfg.labels)
        if cfg.normalizer is None:  # as `train` fits it: the same data give the same units
            cfg = dataclasses.replace(cfg, normalizer=Normalizer.fit(x).to_dict())
        cfg = CLASSIFIER.resolve(cfg, image_shape=None, dim=x.shape[1])
        x = Normalizer.from_dict(cfg.normalizer).encode(x)
    if labels is None:
        raise DataError(
            f"{cfg.data} has no labels (labelled: ring, digits, folders with class "
            "sub-folders, or --labels FILE.npy beside an .npy)"
        )
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise DataError(f"{cfg.data}: a classifier needs >= 2 classes, the labels hold 1")
    return dataclasses.replace(cfg, num_classes=num_classes), x, labels


def accuracy_by_noise(
    classifier_fn: ClassifierFn,
    x0: Tensor,
    y: Tensor,
    schedule: DiscreteSchedule,
    *,
    bins: int = 10,
    seed: int = 0,
    batch: int = 1000,
) -> list[dict[str, float]]:
    """Accuracy of classifier_fn on x_t ~ q(x_t | x_0) with t uniform in each of `bins` equal
    bins of {1, ..., T}: rows {t_lo, t_hi, alpha_bar (at the bin's middle), accuracy}."""
    generator = torch.Generator().manual_seed(seed)
    T, rows = int(schedule.T), []
    edges = torch.linspace(1, T + 1, bins + 1).round().long().tolist()
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        hi = max(hi, lo + 1)
        correct = 0
        for i in range(0, x0.shape[0], batch):
            xb, yb = x0[i : i + batch], y[i : i + batch]
            t = torch.randint(lo, hi, (xb.shape[0],), generator=generator).float()
            x_t = q_sample(schedule, xb, t, torch.randn(xb.shape, generator=generator))
            with torch.no_grad():
                correct += int((classifier_fn(x_t, t).argmax(dim=1) == yb).sum())
        mid = torch.tensor([(lo + hi - 1) / 2])
        rows.append(
            {
                "t_lo": lo,
                "t_hi": hi - 1,
                "alpha_bar": float(schedule.alpha_bar(mid)),
                "accuracy": correct / x0.shape[0],
            }
        )
    return rows


def format_accuracy(rows: list[dict[str, float]], chance: float) -> str:
    lines = ["| t | alpha_bar | accuracy |", "|---|---|---|"]
    lines += [
        f"| {r['t_lo']}-{r['t_hi']} | {r['alpha_bar']:.3f} | {r['accuracy']:.3f} |" for r in rows
    ]
    return "\n".join(lines) + f"\n\nchance: {chance:.3f}\n"


@dataclass
class NoisyClassifier:
    """A trained noise-aware classifier loaded back: logits(x_t, t) in its run's units."""

    cls_dir: Path
    config: ClassifierConfig
    model: nn.Module
    schedule: DiscreteSchedule

    @property
    def run_dir(self) -> Path:
        return self.cls_dir

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def classifier_fn(self) -> ClassifierFn:
        return lambda x, t: self.model(x, t)

    def sample(self, n: int, **options) -> Any:
        """A classifier guides a run's samples and draws none itself: a one-line error."""
        raise ScorelabError(
            f"{self.cls_dir} holds a noise-aware classifier, which does not sample: pass it to "
            f"a run's sampling with --classifier {self.cls_dir}"
        )

    def preview(self, steps: int = 50) -> Any:
        return self.sample(0)

    def check_matches(self, run: Any) -> None:
        """Raise unless run (a Run) diffuses in the same process and units as the classifier."""
        rc = run.config
        problems = []
        if rc.sde is not None:
            problems.append("the run is on an SDE; classifiers guide discrete-schedule runs")
        if (rc.schedule.name, rc.schedule.T) != (self.config.schedule.name, self.config.schedule.T):
            problems.append(
                f"schedule {rc.schedule.name}/T={rc.schedule.T} vs the classifier's "
                f"{self.config.schedule.name}/T={self.config.schedule.T}"
            )
        a, b = rc.normalizer or {}, self.config.normalizer or {}
        if a and b:
            va = torch.tensor([*a["shift"], a["scale"]])
            vb = torch.tensor([*b["shift"], b["scale"]])
            if va.shape != vb.shape or not torch.allclose(va, vb, rtol=0.05, atol=0.05):
                problems.append("data normalization differs (train both on the same --data)")
        if problems:
            raise ScorelabError(
                f"classifier {self.cls_dir} does not fit run {run.run_dir}: " + "; ".join(problems)
            )


def train_classifier(
    cfg: ClassifierConfig,
    out: Path | str,
    *,
    progress: bool = True,
    log=print,
) -> tuple[TrainResult, list[dict[str, float]]]:
    """Train p_phi(y | x_t, t) into out, holding out's writer lock (one writer per run
    directory, as `train`); return the result and the accuracy per noise level."""
    out = Path(out)
    with writing_run(out):
        if (out / CHECKPOINT).is_file():
            raise ScorelabError(f"{out} already holds a checkpoint; choose another --out")
        return _train_classifier(cfg, out, progress=progress, log=log)


def _train_classifier(
    cfg: ClassifierConfig, out: Path, *, progress: bool, log
) -> tuple[TrainResult, list[dict[str, float]]]:
    cfg.train.validate()
    cfg, x, labels = _load_data(cfg)
    schedule = build_schedule(cfg.schedule)
    torch.manual_seed(cfg.train.seed)
    model = build_classifier(cfg)

    def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator, y: Tensor) -> Tensor:
        return classifier_loss(net, x0, y, schedule=schedule, generator=generator)

    trainer = Trainer(
        model, loss_fn, x, cfg.train, out, cfg.to_dict(), progress=progress, labels=labels
    )
    try:
        atomic_write_bytes(out / CONFIG, json.dumps(cfg.to_dict(), indent=2).encode())
    except OSError as e:
        raise ScorelabError(f"cannot write {out / CONFIG}: {e.strerror or e}") from None
    result = trainer.fit()
    model.load_state_dict(trainer.ema.state_dict())
    model.eval().cpu()
    x_eval, y_eval, where = x, labels, "training data, fresh noise"
    if cfg.data in DATASETS:  # held-out points of the built-in distribution
        n = min(cfg.n_data, 4000)
        raw = load_dataset(cfg.data, n, seed=cfg.train.seed + 1)
        x_eval = Normalizer.from_dict(cfg.normalizer).encode(raw)
        y_eval = load_dataset_labels(cfg.data, n, seed=cfg.train.seed + 1)
        where = "held-out data"
    x_eval, y_eval = x_eval[:4000].cpu(), y_eval[:4000].cpu()
    rows = accuracy_by_noise(model, x_eval, y_eval, schedule, seed=cfg.train.seed)
    table = format_accuracy(rows, float(torch.bincount(y_eval).max()) / len(y_eval))
    header = f"accuracy of p(y | x_t, t) per noise level on {len(y_eval)} examples ({where})\n\n"
    csv = "t_lo,t_hi,alpha_bar,accuracy\n" + "".join(
        f"{r['t_lo']},{r['t_hi']},{r['alpha_bar']:.6g},{r['accuracy']:.6g}\n" for r in rows
    )
    try:
        atomic_write_bytes(out / ACCURACY, (header + table).encode())
        atomic_write_bytes(out / "accuracy.csv", csv.encode())
    except OSError as e:  # the checkpoint is written and complete
        raise ScorelabError(
            f"trained, but cannot write the accuracy table in {out}: {e.strerror or e}"
        ) from None
    log(header + table)
    return result, rows


def load_classifier(cls_dir: Path | str) -> NoisyClassifier:
    """A trained classifier from its directory (EMA weights)."""
    cls_dir = Path(cls_dir)
    if not cls_dir.is_dir():
        raise CheckpointError(f"classifier directory {cls_dir} does not exist")
    config, state, meta = read_stored(cls_dir, "ema/")
    # before from_dict: a diffusion run's config has keys a ClassifierConfig lacks
    if not CLASSIFIER.owns(config):
        raise CheckpointError(f"{cls_dir} does not hold a classifier (a diffusion run?)")
    cfg = ClassifierConfig.from_dict(config)
    if not cfg.num_classes:
        raise CheckpointError(f"{cls_dir} does not hold a classifier (a diffusion run?)")
    return CLASSIFIER.load(cls_dir, cfg, state, meta, weights="ema")


class ClassifierKind:
    """Noise-aware classifiers: trained in one go (no --resume), loaded for guidance."""

    name = "classifier"
    models: tuple[str, ...] = ()  # the network follows the data: mlp or the U-Net encoder
    nll_methods: tuple[str, ...] = ()
    config_type = ClassifierConfig

    def owns(self, config: dict[str, Any]) -> bool:
        return "num_classes" in config and "objective" not in config

    def resolve(
        self, cfg: ClassifierConfig, *, image_shape: tuple[int, int, int] | None, dim: int
    ) -> ClassifierConfig:
        if image_shape is not None:
            c, h, _ = image_shape
            model = dataclasses.replace(cfg.model, name="unet", in_channels=c, image_size=h)
            return dataclasses.replace(cfg, model=model, normalizer=IDENTITY.to_dict())
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="mlp", dim=dim))

    def prepare(self, cfg: Any, *, log: Callable[[str], None], out: Path | None = None) -> Prepared:
        cfg.train.validate()
        return Prepared(cfg)

    def train(
        self,
        cfg: ClassifierConfig,
        out: Path,
        tensors: dict[str, Tensor] | None,
        meta: dict | None,
        *,
        progress: bool = True,
        log=print,
        pictures: bool = True,
    ) -> TrainResult:
        if tensors is not None:
            raise ScorelabError(f"{out} holds a classifier, which trains in one go: no --resume")
        return train_classifier(cfg, out, progress=progress, log=log)[0]

    def load(
        self,
        run_dir: Path,
        cfg: ClassifierConfig,
        state: dict[str, Tensor],
        meta: dict,
        *,
        weights: str = "ema",
    ) -> NoisyClassifier:
        model = build_classifier(cfg)
        what = "classifier" if weights == "ema" else f"classifier's {weights}"
        load_state_dict_checked(model, state, f"the {what} weights in {run_dir / CHECKPOINT}")
        model.eval()
        return NoisyClassifier(run_dir, cfg, model, build_schedule(cfg.schedule))

    def is_image(self, cfg: ClassifierConfig) -> bool:
        return cfg.model.name == "unet"

    def describe(self, cfg: ClassifierConfig) -> str:
        s, classes = cfg.schedule, cfg.num_classes
        return f"noise-aware classifier ({cfg.model.name}, {classes} classes, {s.name} T={s.T})"

    def nll(self, run: Any, data: Tensor, *, methods=None, seed: int = 0, **options) -> list:
        if methods:
            raise ScorelabError(f"{run.run_dir} is a classifier: it has no likelihood (--nll)")
        return []


CLASSIFIER = ClassifierKind()

__all__ = [
    "CLASSIFIER",
    "ClassifierConfig",
    "ClassifierKind",
    "NoisyClassifier",
    "accuracy_by_noise",
    "build_classifier",
    "load_classifier",
    "train_classifier",
]
