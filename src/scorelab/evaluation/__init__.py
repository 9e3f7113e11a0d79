"""Metrics and pictures."""

# importing metrics registers them (evaluation/registry.py)
from scorelab.evaluation.metrics import sliced_wasserstein
from scorelab.evaluation.nll import NLLReport, evaluate_nll
from scorelab.evaluation.plots import (
    fd_curve,
    loss_curve,
    scatter_vs_data,
    trajectory_panels,
    vlb_breakdown,
)

__all__ = [
    "NLLReport",
    "evaluate_nll",
    "fd_curve",
    "loss_curve",
    "scatter_vs_data",
    "sliced_wasserstein",
    "trajectory_panels",
    "vlb_breakdown",
]
