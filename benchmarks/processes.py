"""DDPM-eps, VP-SDE, EDM and flow matching: the same network and training budget, each process
with its own objective, sampled with each process's best sampler at NFE 5, 10, 20 and 50.

What it measures
----------------
Three problems, each trained four times with the same network, steps, batch, optimizer and
seed; only the process (and with it the prediction, loss weighting and training times) changes:

* ring-2d: samples of ``scorelab.oracle.ring_mixture()`` (8 modes of std 0.15 on a circle);
* mix-64d: samples of the samplers race's 64-D mixture (benchmarks/samplers.py ``mixture_64d``);
* digits: scikit-learn's 8x8 digits with the digits preset's U-Net (images).

With --peers (vectors), the same MLP is also trained by two flow matching libraries' own
loops (torchcfm's ConditionalFlowMatcher, flow_matching's AffineProbPath with CondOTScheduler:
plain Adam at the same learning rate and batch, constant rate, no EMA or clipping, as their
documentation writes it) and sampled with scorelab's samplers on the flow process, so those
rows judge the training recipe, not the sampler.

The processes, as `scorelab train --process NAME` trains them (docs/theory.md §30):

* ddpm: the discrete linear schedule (T = 1000), eps regression (L_simple);
* vp: the VP-SDE (beta 0.1..20), dsm with eps prediction and sigma_t^2 weighting;
* edm: EDM, sigma in [0.002, 80], log-normal training sigma, preconditioned F, lambda(sigma);
* flow: x_t = (1 - t) x_0 + t eps, velocity prediction, unit weight, uniform t.

Each trained model (EMA weights) is sampled with every candidate sampler at NFE 5, 10, 20, 50
(network calls; Heun-type samplers get (NFE + 1) / 2 steps): dpm-solver++ (order 2, logsnr
grid), unipc (order 2), ddim, flow-euler, flow-heun and heun-edm on each one's default grid.
Quality: the sliced Wasserstein distance (SW) to held-out data for vectors, the Frechet
distance (FD) in the digits classifier's features for images, each with its floor (held-out
data against the same reference at the same n). The table gives each process's best sampler
per NFE, and the loss curves go to processes_loss.png.

Run
---
    .venv/bin/python benchmarks/processes.py          # writes benchmarks/results/processes.md
    .venv/bin/python benchmarks/processes.py --quick  # short training, fewer samples: a smoke run

Options: --steps-vectors N, --steps-images N, --n N (samples per set), --threads N, --problems
ring-2d,mix-64d,digits. The default run takes about 35 minutes on 2 CPU cores; run it alone.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import cpu_model  # noqa: E402
from digits import run_config  # noqa: E402
from samplers import mixture_64d  # noqa: E402

from scorelab.config import RunConfig, apply_overrides  # noqa: E402
from scorelab.data import load_images  # noqa: E402
from scorelab.evaluation.features import classifier_features, load_or_train_classifier  # noqa: E402
from scorelab.evaluation.metrics import frechet_distance, sliced_wasserstein  # noqa: E402
from scorelab.oracle import ring_mixture  # noqa: E402
from scorelab.reports.metrics import split_reference  # noqa: E402
from scorelab.runs import load_run, train  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PROCESSES = ("ddpm", "vp", "edm", "flow")
NFES = (5, 10, 20, 50)
SAMPLERS = ("dpm-solver++", "unipc", "ddim", "flow-euler", "flow-heun", "heun-edm")
TWO_CALL = ("flow-heun", "heun-edm")
SEED = 0


def steps_for(sampler: str, nfe: int) -> int:
    """The grid intervals that give at most nfe network calls."""
    return (nfe + 1) // 2 if sampler in TWO_CALL else nfe


def process_overrides(process: str) -> dict:
    """The config changes that select a process: ddpm is the discrete schedule."""
    if process == "ddpm":
        return {"objective": "eps", "sde": None}
    return {"objective": "dsm", "sde": {"name": process, "params": {}}}


def vector_config(data: Path, steps: int, process: str) -> RunConfig:
    """A 3-block MLP of width 256 on an .npy, batch 512, lr 2e-3 with cosine decay, EMA 0.999."""
    return apply_overrides(
        RunConfig(),
        {
            "data": str(data),
            "n_data": 20_000,
            "model.width": 256,
            "model.depth": 3,
            "train.steps": steps,
            "train.batch_size": 512,
            "train.lr": 2e-3,
            "train.warmup": 100,
            "train.ema_decay": 0.999,
            "train.ckpt_every": 10**9,
            "train.log_every": 25,
            **process_overrides(process),
        },
    )


def image_config(steps: int, process: str) -> RunConfig:
    """The digits preset (its U-Net, batch 64, lr 2e-3, EMA 0.999) on the given process."""
    cfg = run_config("digits", steps)
    return apply_overrides(cfg, process_overrides(process))


def loss_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("loss"):
                steps.append(int(row["step"]))
                losses.append(float(row["loss"]))
    return steps, losses


class VectorJudge:
    """SW to a held-out reference, and the floor: another held-out set at the same n."""

    def __init__(self, data: torch.Tensor, n: int) -> None:
        self.reference = data[:n].float()
        self.floor_set = data[n : 2 * n].float()
        self.floor = self(self.floor_set)

    def __call__(self, x: torch.Tensor) -> float:
        g = torch.Generator().manual_seed(0)
        return sliced_wasserstein(x.float(), self.reference, generator=g)


class ImageJudge:
    """FD in the digits classifier's features against the reference half; the floor is the
    held-out half against it (as `scorelab eval` on digits)."""

    def __init__(self, work: Path) -> None:
        images = load_images("digits")
        reference, held_out, ref_labels, held_labels = split_reference(images.x, images.labels)
        classifier, _ = load_or_train_classifier(
            work, reference, ref_labels, held_out, held_labels, log=lambda m: None
        )
        self.features = classifier_features(classifier)
        self.ref = self.features(reference)
        self.floor = frechet_distance(self.features(held_out), self.ref)

    def __call__(self, x: torch.Tensor) -> float:
        return frechet_distance(self.features(x.clamp(-1, 1)), self.ref)


def evaluate_run(run_dir: Path, judge, n: int, batch: int) -> list[dict]:
    run = load_run(run_dir)
    rows = []
    for sampler in SAMPLERS:
        for nfe in NFES:
            parts, calls = [], []
            t0 = time.perf_counter()
            with torch.no_grad():
                for i in range(0, n, batch):
                    x, result = run.sample(min(batch, n - i), seed=SEED + 1 + i, sampler=sampler,
                                           steps=steps_for(sampler, nfe))  # fmt: skip
                    parts.append(x)
                    calls.append(result.nfe)
            seconds = time.perf_counter() - t0
            x = torch.cat(parts)
            score = judge(x) if torch.isfinite(x).all() else float("inf")
            rows.append({"sampler": sampler, "nfe": nfe, "calls": float(np.mean(calls)),
                         "score": score, "seconds": seconds})  # fmt: skip
    return rows


# --------------------------------------------------------------------------- trained peers


def train_flow_peer(library: str, data: torch.Tensor, steps: int, batch: int, lr: float):
    """The same MLP (scorelab's nn.MLP, width 256, depth 3) trained by a peer library's flow
    matching recipe as its documentation writes the loop: plain Adam at a constant learning
    rate, MSE of the velocity, no EMA, no clipping; t = 0 is noise and t = 1 data there.
    torchcfm: ConditionalFlowMatcher(sigma=0).sample_location_and_conditional_flow;
    flow_matching: AffineProbPath(CondOTScheduler()).sample. Returns the trained velocity
    v(x, s) in the peer's time s."""
    from scorelab.nn import MLP

    torch.manual_seed(SEED)
    net = MLP(data.shape[1], 256, 3, time_scale=1000.0)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(SEED)
    if library == "torchcfm":
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

        matcher = ConditionalFlowMatcher(sigma=0.0)
    else:
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        path = AffineProbPath(scheduler=CondOTScheduler())
    x_all = data.float()
    for _ in range(steps):
        x1 = x_all[torch.randint(0, len(x_all), (batch,), generator=g)]
        x0 = torch.randn(x1.shape, generator=g)
        if library == "torchcfm":
            s, xs, us = matcher.sample_location_and_conditional_flow(x0, x1)
        else:
            s = torch.rand(batch, generator=g)
            sample = path.sample(t=s, x_0=x0, x_1=x1)
            xs, us = sample.x_t, sample.dx_t
        loss = ((net(xs, s) - us) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


def peer_rows(net, dim: int, flow, judge, n: int, normalize) -> list[dict]:
    """The peer's velocity field sampled with scorelab's samplers on the flow process (the
    same samplers for every row, so the rows judge the training): scorelab's velocity at
    (x, t) is -v(x, 1 - t), converted to the eps the samplers take."""
    from scorelab.processes.parameterization import as_eps_fn
    from scorelab.samplers import sample

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -net(x.float(), (1 - t).float()).to(x.dtype)

    eps_fn = as_eps_fn(velocity, flow, "velocity")
    rows = []
    for sampler in SAMPLERS:
        for nfe in NFES:
            t0 = time.perf_counter()
            with torch.no_grad():
                out = sample(eps_fn, (n, dim), flow, sampler, steps_for(sampler, nfe),
                             generator=torch.Generator().manual_seed(SEED + 1))  # fmt: skip
            x = normalize.decode(out.x)
            score = judge(x) if torch.isfinite(x).all() else float("inf")
            rows.append({"sampler": sampler, "nfe": nfe, "calls": out.nfe, "score": score,
                         "seconds": time.perf_counter() - t0})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps-vectors", type=int, default=4000)
    parser.add_argument("--steps-images", type=int, default=2500)
    parser.add_argument("--n", type=int, default=2000, help="samples per set (images: half)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--problems", default="ring-2d,mix-64d,digits")
    parser.add_argument(
        "--processes",
        default=",".join(PROCESSES),
        help="the processes to train (default: all four), e.g. flow with --peers",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="vectors: also train the same MLP with torchcfm's and flow_matching's own flow "
        "matching loops (pip install --no-deps torchcfm pot flow-matching)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "processes.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps_vectors, args.steps_images, args.n = 300, 100, 400
    problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    started = time.perf_counter()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="scorelab-processes-") as tmp:
        work = Path(tmp)
        for problem in problems:
            if problem == "digits":
                judge, n, batch = ImageJudge(work), args.n // 2, 500
                steps = args.steps_images
            else:
                mixture = ring_mixture() if problem == "ring-2d" else mixture_64d()
                data, _ = mixture.sample(20_000 + 2 * args.n,
                                         generator=torch.Generator().manual_seed(1))  # fmt: skip
                path = work / f"{problem}.npy"
                np.save(path, data[: 20_000].float().numpy())
                judge, n, batch = VectorJudge(data[20_000:], args.n), args.n, args.n
                steps = args.steps_vectors
            results[problem] = {"floor": judge.floor, "steps": steps, "n": n, "processes": {}}
            peers = [] if problem == "digits" or not args.peers else ["torchcfm", "flow_matching"]
            chosen = tuple(p.strip() for p in args.processes.split(",") if p.strip())
            for process in chosen + tuple(peers):
                if process in peers:  # a peer library's own recipe on the same data and net
                    from scorelab.data import Normalizer
                    from scorelab.processes.sde import Flow

                    x = torch.from_numpy(np.load(path))
                    normalize = Normalizer.fit(x)
                    t0 = time.perf_counter()
                    net = train_flow_peer(process, normalize.encode(x), steps, 512, 2e-3)
                    seconds = time.perf_counter() - t0
                    rows = peer_rows(net, x.shape[1], Flow(), judge, n, normalize)
                    results[problem]["processes"][process] = {
                        "train_seconds": seconds, "curve": ([], []), "rows": rows}  # fmt: skip
                else:
                    cfg = (image_config(steps, process) if problem == "digits"
                           else vector_config(path, steps, process))  # fmt: skip
                    out = work / f"{problem}-{process}"
                    t0 = time.perf_counter()
                    train(cfg, out, progress=False, log=lambda m: None, pictures=False)
                    seconds = time.perf_counter() - t0
                    rows = evaluate_run(out, judge, n, batch)
                    results[problem]["processes"][process] = {
                        "train_seconds": seconds,
                        "curve": loss_curve(out),
                        "rows": rows,
                    }
                best = min(rows, key=lambda r: r["score"])
                print(f"{problem} {process}: trained {seconds:.0f}s; best {best['sampler']} "
                      f"@{best['nfe']} {best['score']:.4g} (floor {judge.floor:.4g})",
                      flush=True)  # fmt: skip
    minutes = (time.perf_counter() - started) / 60
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_curves(results, args.out.with_name(f"{args.out.stem}_loss.png"))  # processes_loss.png
    args.out.write_text(report(args, results, minutes))
    print(f"wrote {args.out} ({minutes:.1f} min)")
    return 0


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.4), squeeze=False)
    for ax, (problem, res) in zip(axes[0], results.items(), strict=True):
        for process, r in res["processes"].items():
            steps, losses = r["curve"]
            if losses:
                # each process's loss has its own scale: relative to its last logged value
                ax.plot(steps, np.asarray(losses) / np.mean(losses[-8:]), label=process, lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{problem}: training loss / final")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(args, results: dict, minutes: float) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Processes: DDPM-eps, VP-SDE, EDM and flow matching at equal training budget",
        "",
        f"{now}; {cpu_model()}, torch {torch.__version__}, {args.threads} threads, Python "
        f"{platform.python_version()}; {minutes:.0f} minutes. Command: `.venv/bin/python "
        f"benchmarks/processes.py{' --quick' if args.quick else ''}`.",
        "",
        "Per problem the same network, steps, batch, optimizer and seed for every process; each "
        "trains with its own objective (ddpm: L_simple on the linear schedule; vp: dsm, eps, "
        "sigma_t^2; edm: F, lambda(sigma), log-normal sigma; flow: velocity, unit weight, "
        "uniform t). Cells: the best sampler's score at that NFE (SW for vectors, FD in the "
        "digits classifier's features for images; lower is better) and the sampler; the floor is "
        "held-out data against the same reference at the same n. Samplers tried: "
        + ", ".join(SAMPLERS)
        + ".",
        "",
    ]
    for problem, res in results.items():
        metric = "FD" if problem == "digits" else "SW"
        lines += [
            f"## {problem}: {metric}, floor {res['floor']:.4g} (n = {res['n']}, "
            f"{res['steps']} training steps)",
            "",
            "| process | train s | " + " | ".join(f"NFE {k}" for k in NFES) + " |",
            "|---|---:|" + "---|" * len(NFES),
        ]
        for process, r in res["processes"].items():
            cells = []
            for nfe in NFES:
                best = min((x for x in r["rows"] if x["nfe"] == nfe), key=lambda x: x["score"])
                cells.append(f"{best['score']:.4g} ({best['sampler']})")
            lines.append(f"| {process} | {r['train_seconds']:.0f} | " + " | ".join(cells) + " |")
        lines += ["", f"Every sampler ({metric} at NFE {', '.join(map(str, NFES))}):", "",
                  "| process | sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |",
                  "|---|---|" + "---:|" * len(NFES)]  # fmt: skip
        for process, r in res["processes"].items():
            for sampler in SAMPLERS:
                vals = [x["score"] for x in r["rows"] if x["sampler"] == sampler]
                lines.append(f"| {process} | {sampler} | " + " | ".join(f"{v:.4g}" for v in vals)
                             + " |")  # fmt: skip
        lines.append("")
    lines += [f"Loss curves: {args.out.stem}_loss.png (each relative to its final value).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
