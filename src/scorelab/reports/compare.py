"""`scorelab compare`: runs on the same data side by side, as HTML and markdown.

For each run: n samples (diffusion: DDIM; VAE: decoded from the prior) with their time and
NFE; the sample metrics of scorelab.reports.metrics beside their data floors (those registered
with compare= for the runs' kind of data: images: FD, KID, precision/recall in classifier
features; vectors: precision/recall, SWD, energy, MMD);
NLL bounds in data units (diffusion: the VLB, or the ODE likelihood on an SDE, vectors only;
VAE: -ELBO and -IWAE_k); training time from metrics.csv; parameter count; and for a VAE the
aggregate-posterior diagnostic of docs/theory.md §27: KL(q(z) || p(z)), MMD(q, p) and samples
decoded from each.
"""

from __future__ import annotations

import base64
import csv
import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from scorelab.build import build_data, build_image_data
from scorelab.data import load_dataset
from scorelab.errors import CheckpointError, ScorelabError
from scorelab.evaluation.registry import compared_metrics
from scorelab.files import atomic_write_bytes
from scorelab.runs import is_image, kind_of, load_run
from scorelab.runs.vae import VAERun, save_samples_picture


@dataclass
class RunSummary:
    name: str
    kind: str
    params: int
    train_steps: int | None
    train_seconds: float | None
    sampler: str
    nfe: int
    sample_seconds: float
    metrics: dict[str, dict]
    nll: list[dict] = field(default_factory=list)
    latent: dict | None = None
    pictures: dict[str, Path] = field(default_factory=dict)


def _training_log(run_dir: Path) -> tuple[int | None, float | None]:
    """The last (step, seconds) of metrics.csv, or (None, None) without one."""
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        return int(rows[-1]["step"]), float(rows[-1]["seconds"])
    except (OSError, KeyError, ValueError, IndexError):
        return None, None


def _draw(run, n: int, *, seed: int, steps: int) -> tuple[Tensor, int, float, str]:
    """n samples in batches of 500: (x, NFE per sample, seconds, sampler description)."""
    options, sampler = run.preview(steps)  # diffusion: DDIM; VAE: decoded from the prior
    parts, nfe, start = [], 0, time.perf_counter()
    for i in range(0, n, 500):
        x, result = run.sample(min(500, n - i), seed=seed + i, **options)
        parts.append(x)
        nfe = result.nfe
    seconds = time.perf_counter() - start
    return torch.cat(parts), nfe, seconds, sampler


def _nll_data(run, n: int, seed: int) -> Tensor:
    """Data to score: a fresh draw of a named 2-D dataset (seed + 1), else the first n."""
    cfg = run.config
    if is_image(cfg):
        return build_image_data(cfg).x[:n]
    try:
        return load_dataset(cfg.data, n, seed=seed + 1)[:n]
    except ScorelabError:
        return build_data(cfg)[:n]


def _nll_rows(run, n: int, k: int, seed: int) -> list[dict]:
    data = _nll_data(run, n, seed)
    # the kind's own bounds: the VLB (schedule) or ODE (SDE) of a diffusion run; a VAE's ELBO
    # and IWAE_k
    reports = kind_of(run.config).nll(run, data, seed=seed, k=k)
    rows = []
    for r in reports:
        row = r.to_dict()
        note = f"k={r.settings['k']}" if "k" in r.settings else ""
        if r.nfe is not None:
            note = f"{r.nfe} NFE"
        row["note"] = note
        rows.append(row)
    return rows


def _picture(x: Tensor, path: Path, reference: Tensor | None, title: str) -> Path:
    return save_samples_picture(x.detach().cpu(), path, reference, title)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _stems(names: list[str]) -> list[str]:
    """A file-name stem per run: its name made safe, numbered where two would collide."""
    stems = [_safe(name) for name in names]
    if len(set(stems)) < len(stems):
        stems = [f"{i}_{stem}" for i, stem in enumerate(stems)]
    return stems


def _load_all(run_dirs: Sequence[Path], data: str | None = None) -> list:
    if not run_dirs:
        raise ScorelabError("give at least one run directory")
    runs = []
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise CheckpointError(f"run directory {d} does not exist")
        try:
            runs.append(load_run(d))
        except ScorelabError as e:
            raise CheckpointError(f"cannot load {d}: {e}") from None
        if runs[-1].config.data is None:  # a model from elsewhere (diffusers): judged on data
            if data is None:
                raise ScorelabError(
                    f"{d} records no training data (it was not trained by scorelab): pass --data"
                )
            runs[-1].config = runs[-1].config.replace(data=data)
    datasets = {
        (r.config.data, r.config.model.image_size if is_image(r.config) else 0) for r in runs
    }
    images = {is_image(r.config) for r in runs}
    if len(datasets) > 1 or len(images) > 1:
        listing = ", ".join(f"{r.run_dir}: {r.config.data}" for r in runs)
        raise ScorelabError(
            f"the runs were trained on different data ({listing}); compare runs on the same data"
        )
    return runs


def compare_runs(
    run_dirs: Sequence[Path | str],
    out: Path | str,
    *,
    n: int = 500,
    n_nll: int = 100,
    steps: int = 50,
    k: int = 16,
    seed: int = 0,
    data: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Write out/index.html and out/report.md comparing the runs; returns their paths. data:
    the data set of runs that record none (models opened from a diffusers folder)."""
    from scorelab.reports.metrics import evaluate_metrics

    if n < 2:
        raise ScorelabError(f"--n must be >= 2, got {n}")
    runs = _load_all([Path(d) for d in run_dirs], data)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ScorelabError(f"cannot write to {out}: {e.strerror or e}") from None
    images = is_image(runs[0].config)
    metrics = compared_metrics("images" if images else "vectors")
    reference = None if images else build_data(runs[0].config)[:2000]
    names = [r.run_dir.name or str(r.run_dir) for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.run_dir) for r in runs]
    summaries = []
    for name, stem, run in zip(names, _stems(names), runs, strict=True):
        log(f"{name}: sampling {n}")
        x, nfe, seconds, sampler = _draw(run, n, seed=seed, steps=steps)
        results = evaluate_metrics(run, metrics, n, seed=seed, samples=x, log=log)
        steps_done, train_seconds = _training_log(run.run_dir)
        summary = RunSummary(
            name,
            kind_of(run.config).describe(run.config),
            sum(p.numel() for p in run.model.parameters()),
            steps_done if steps_done is not None else run.step,
            train_seconds,
            sampler,
            nfe,
            seconds,
            results,
        )
        summary.pictures["samples"] = _picture(
            x[:64] if images else x, out / f"{stem}_samples.png", reference, f"{name}: {sampler}"
        )
        if n_nll > 0:
            log(f"{name}: NLL on {n_nll} examples")
            summary.nll = _nll_rows(run, n_nll, k, seed)
        if isinstance(run, VAERun):  # the aggregate-posterior diagnostic
            from scorelab.evaluation.latent import prior_coverage

            mean, log_var = run.aggregate_posterior(seed)
            g = torch.Generator().manual_seed(seed)
            summary.latent = prior_coverage(mean, log_var, n=1000, generator=g)
            summary.latent["latent_dim"] = run.config.model.latent_dim
            xa, _ = run.sample(64 if images else n, seed=seed, latents="aggregate")
            summary.pictures["aggregate posterior"] = _picture(
                xa, out / f"{stem}_aggregate.png", reference, f"{name}: z from q(z)"
            )
        summaries.append(summary)
    title = f"scorelab compare: {runs[0].config.data}"
    sections = _sections(summaries, n)
    md, page = out / "report.md", out / "index.html"
    try:
        atomic_write_bytes(md, _markdown(title, sections, summaries, out).encode())
        atomic_write_bytes(page, _html(title, sections, summaries).encode())
    except OSError as e:
        raise ScorelabError(f"cannot write the report in {out}: {e.strerror or e}") from None
    return page, md


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _sections(summaries: list[RunSummary], n: int) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, header, rows) of each table, shared by the markdown and the HTML."""
    runs = [
        [s.name, s.kind, f"{s.params:,}", _fmt(s.train_steps), _fmt(s.train_seconds, 3)]
        for s in summaries
    ]
    sampling = [
        [
            s.name,
            s.sampler,
            str(s.nfe),
            f"{s.sample_seconds:.3f}",
            f"{1e3 * s.sample_seconds / n:.3f}",
        ]
        for s in summaries
    ]
    names = list(summaries[0].metrics)
    metric_rows = [
        [s.name]
        + [f"{s.metrics[m]['value']:.4g} (floor {s.metrics[m]['floor']:.4g})" for m in names]
        for s in summaries
    ]
    features = summaries[0].metrics[names[0]]["features"]
    nll = [
        [
            s.name,
            r["method"],
            f"{r['nll_nats']:.4f} ± {r['stderr_nats']:.4f}" if "nll_nats" in r else "-",
            f"{r['nll_bits_per_dim']:.4f} ± {r['stderr_bits_per_dim']:.4f}"
            if "nll_nats" in r
            else "-",
            str(r.get("n", "-")),
            r.get("note", ""),
        ]
        for s in summaries
        for r in s.nll
    ]
    out = [
        ("Runs", ["run", "model", "parameters", "training steps", "training seconds"], runs),
        (
            f"Sampling ({n} samples)",
            ["run", "sampler", "NFE", "seconds", "ms / sample"],
            sampling,
        ),
        (
            f"Sample metrics (n={n}; features: {features}; lower is better except precision and "
            "recall; the floor is held-out data against the same reference)",
            ["run", *names],
            metric_rows,
        ),
    ]
    if nll:
        out.append(
            (
                "NLL bounds in data units (upper bounds on -log p(x), lower is better; on "
                "images -log P(x) of the 8-bit bin: the diffusion VLB's discretized decoder, the "
                "VAE's logistic decoder; the ODE and Gaussian decoders on dequantized data)",
                ["run", "bound", "nats / example", "bits / dim", "n", "note"],
                nll,
            )
        )
    latent = [
        [
            s.name,
            str(s.latent["latent_dim"]),
            f"{s.latent['kl']:.4f}",
            f"{s.latent['mmd']:.4g}",
            f"{s.latent['mmd_floor']:.4g}",
        ]
        for s in summaries
        if s.latent is not None
    ]
    if latent:
        out.append(
            (
                "Aggregate posterior q(z) = (1/n) sum q(z|x_i) against the prior p(z) = N(0, I) "
                "(docs/theory.md §27: where they differ, prior samples decode poorly)",
                [
                    "run",
                    "latent dim",
                    "KL(q(z) || p(z)) nats",
                    "MMD^2(q, p)",
                    "MMD^2 floor (p vs p)",
                ],
                latent,
            )
        )
    return out


_MD_SPECIAL = set("\\`*[]<>|&")


def _md(text: str) -> str:
    """text as literal markdown on one line: run names and config strings are data, so line
    breaks become spaces and markdown's specials (a table's pipe, markup, links, HTML tags,
    entities) are backslash-escaped; they render as the characters they are."""
    text = " ".join(str(text).split())
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(_md(c) for c in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]
    return "\n".join(lines)


def _markdown(title: str, sections, summaries: list[RunSummary], out: Path) -> str:
    parts = [f"# {_md(title)}", ""]
    for heading, header, rows in sections:
        parts += [f"## {_md(heading)}", "", _md_table(header, rows), ""]
    parts += ["## Samples", ""]
    for s in summaries:
        for label, path in s.pictures.items():
            parts += [
                f"**{_md(s.name)}**: {_md(label)}",
                "",
                f"![{_md(s.name)} {_md(label)}]({path.relative_to(out).as_posix()})",
                "",
            ]
    return "\n".join(parts)


def _html(title: str, sections, summaries: list[RunSummary]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #bbb;padding:4px 8px;text-align:left}"
        ".pics{display:flex;flex-wrap:wrap;gap:1.5em}figure{margin:0}"
        "img{max-width:420px;image-rendering:pixelated}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for heading, header, rows in sections:
        parts.append(f"<h2>{esc(heading)}</h2><table><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Samples</h2><div class='pics'>")
    for s in summaries:
        for label, path in s.pictures.items():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{esc(s.name)} {esc(label)}' "
                f"src='data:image/png;base64,{data}'><figcaption>{esc(s.name)}: {esc(label)}"
                "</figcaption></figure>"
            )
    parts.append("</div></body></html>")
    return "\n".join(parts)
