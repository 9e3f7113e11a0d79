"""Metrics and pictures."""

from scorelab.evaluation.metrics import sliced_wasserstein
from scorelab.evaluation.plots import loss_curve, scatter_vs_data, trajectory_panels

__all__ = ["loss_curve", "scatter_vs_data", "sliced_wasserstein", "trajectory_panels"]
