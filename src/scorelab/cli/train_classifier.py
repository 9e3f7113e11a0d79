"""scorelab train-classifier: a noise-aware classifier p(y | x_t, t) for classifier guidance."""

from __future__ import annotations

import argparse
from pathlib import Path

from scorelab.cli.args import int_list, nonneg_int, positive_float, positive_int


def register(sub) -> None:
    from scorelab.runs.classifier import ClassifierConfig

    d = ClassifierConfig()
    p = sub.add_parser(
        "train-classifier",
        help="train a noise-aware classifier p(y | x_t, t) for classifier guidance",
        description="Train p_phi(y | x_t, t) on x_t drawn from the forward process (t uniform "
        "on 1..T), an MLP for vectors and a U-Net encoder for images, and report its accuracy "
        "per noise level (printed and written to OUT/accuracy.md). Use the same --data (and "
        "--n-data, --seed, --schedule, --T) as the run it will guide.",
    )
    p.add_argument(
        "--data",
        required=True,
        help="labelled data: ring, digits, fashion-mnist, a folder, an IDX images file, .npy",
    )
    p.add_argument("--labels", default=None, help="labels .npy beside an .npy --data")
    p.add_argument(
        "--data-dir",
        default=None,
        help="the folder of named image data sets such as fashion-mnist (default: "
        "$SCORELAB_DATA_DIR, then /usr/share/datasets/NAME)",
    )
    p.add_argument(
        "--n-data", type=positive_int, default=d.n_data, help=f"points (default: {d.n_data})"
    )
    p.add_argument("--image-size", type=positive_int, default=None, help="resize images")
    p.add_argument("--out", type=Path, required=True, help="classifier directory to create")
    p.add_argument("--schedule", default=d.schedule.name, help="beta schedule (default: linear)")
    p.add_argument("--T", type=positive_int, default=d.schedule.T, help="steps (default: 1000)")
    t = d.train
    p.add_argument("--steps", type=positive_int, default=t.steps, help=f"(default: {t.steps})")
    p.add_argument(
        "--batch-size", type=positive_int, default=t.batch_size, help=f"(default: {t.batch_size})"
    )
    p.add_argument("--lr", type=positive_float, default=t.lr, help=f"(default: {t.lr})")
    p.add_argument("--seed", type=nonneg_int, default=t.seed, help="seed (default: 0)")
    p.add_argument("--width", type=positive_int, default=128, help="MLP width (default: 128)")
    p.add_argument("--depth", type=positive_int, default=3, help="MLP blocks (default: 3)")
    p.add_argument(
        "--channels", type=positive_int, default=32, help="encoder base width (default: 32)"
    )
    p.add_argument(
        "--channel-mult", type=int_list, default=[1, 2], help="encoder levels (default: 1,2)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from scorelab.runs.classifier import ClassifierConfig, train_classifier

    d = ClassifierConfig()
    cfg = ClassifierConfig(
        data=args.data,
        n_data=args.n_data,
        labels=args.labels,
        data_dir=args.data_dir,
        image_size=args.image_size,
        model=dataclasses.replace(
            d.model,
            width=args.width,
            depth=args.depth,
            channels=args.channels,
            channel_mult=tuple(args.channel_mult),
            res_blocks=1,
        ),
        schedule=dataclasses.replace(d.schedule, name=args.schedule, T=args.T),
        train=dataclasses.replace(
            d.train,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            warmup=min(d.train.warmup, args.steps // 10),
            ckpt_every=args.steps,
            device=args.device,
        ),
    )
    result, _ = train_classifier(cfg, args.out, progress=not args.no_progress)
    print(
        f"trained the classifier to step {result.step} in {result.seconds:.1f}s, final loss "
        f"{result.final_loss:.4f}; wrote {args.out / 'accuracy.md'} and {result.checkpoint}"
    )
    return 0
