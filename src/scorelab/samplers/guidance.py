"""Guidance as adapters: eps_fn -> eps_fn, so every sampler guides without knowing it.

Classifier guidance (Dhariwal & Nichol 2021; docs/theory.md §23): with a noise-aware classifier
p_phi(y | x_t, t), the guided score is grad log p_t(x) + s grad log p_phi(y | x_t). In eps
(score = -eps / sigma_t) that is

    eps~(x, t) = eps(x, t) - s sigma_t grad_x log p_phi(y | x, t).

At s = 1 with the exact classifier this is grad log p_t(x | y) exactly (Bayes:
log p(x | y) = log p(x) + log p(y | x) - log p(y)). For ancestral DDPM it moves the mean by
s (beta_t / sqrt(alpha_t)) grad log p_phi, Dhariwal & Nichol's s Sigma grad log p_phi with
Sigma = beta_t, up to the factor 1 / sqrt(alpha_t) = 1 + O(beta_t).

Classifier-free guidance (Ho & Salimans 2022): a model trained with labels dropped to a null
class gives eps(x, t, y) and eps(x, t, null);

    eps~ = (1 + w) eps(x, t, y) - w eps(x, t, null),

w = 0 is plain conditional sampling. Both branches run in one batched call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab._tensor import append_dims
from scorelab.errors import ScorelabError
from scorelab.typing import ClassifierFn, CondEpsFn, EpsFn, Schedule


def _labels(y: Tensor | int, x: Tensor) -> Tensor:
    y = torch.as_tensor(y, dtype=torch.long, device=x.device)
    if y.ndim == 0:
        y = y.expand(x.shape[0])
    if y.shape != (x.shape[0],):
        raise ScorelabError(f"labels must be an int or ({x.shape[0]},), got {tuple(y.shape)}")
    return y


def classifier_log_prob_grad(
    classifier_fn: ClassifierFn, x: Tensor, t: Tensor, y: Tensor | int
) -> Tensor:
    """grad_x log p_phi(y | x_t = x, t) from the classifier's logits (log-softmax), shape of x."""
    y = _labels(y, x)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        logits = classifier_fn(x_in, t)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            shape = tuple(logits.shape)
            raise ScorelabError(f"classifier must return logits (B, classes), got {shape}")
        if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
            raise ScorelabError(f"label out of range 0..{logits.shape[1] - 1}")
        log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, x_in)
    return grad.detach()


def classifier_guided(
    eps_fn: EpsFn,
    schedule: Schedule,
    classifier_fn: ClassifierFn,
    y: Tensor | int,
    *,
    scale: float = 1.0,
) -> EpsFn:
    """eps~ = eps - scale sigma_t grad log p_phi(y | x_t): the score plus scale times the
    classifier's gradient, for any sampler."""
    if not scale >= 0:
        raise ScorelabError(f"guidance scale must be >= 0, got {scale}")

    def guided(x: Tensor, t: Tensor) -> Tensor:
        eps = eps_fn(x, t)
        if scale == 0:
            return eps
        sigma = append_dims((1 - schedule.alpha_bar(t)).sqrt().to(x.dtype), x.ndim)
        return eps - scale * sigma * classifier_log_prob_grad(classifier_fn, x, t, y)

    return guided


def classifier_free_guided(
    cond_eps_fn: CondEpsFn, y: Tensor | int, *, scale: float, null_label: int
) -> EpsFn:
    """eps~ = (1 + w) eps(x, t, y) - w eps(x, t, null), one batched call; w = 0 is conditional."""
    if not scale >= 0:
        raise ScorelabError(f"classifier-free guidance weight must be >= 0, got {scale}")

    def guided(x: Tensor, t: Tensor) -> Tensor:
        labels = _labels(y, x)
        if scale == 0:
            return cond_eps_fn(x, t, labels)
        null = torch.full_like(labels, null_label)
        eps = cond_eps_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = eps.chunk(2)
        return torch.add(cond, cond - uncond, alpha=scale)

    return guided


def conditional(cond_eps_fn: CondEpsFn, y: Tensor | int) -> EpsFn:
    """Fix the label of a conditional eps(x, t, y): an eps_fn for any sampler."""
    return lambda x, t: cond_eps_fn(x, t, _labels(y, x))


__all__ = [
    "classifier_free_guided",
    "classifier_guided",
    "classifier_log_prob_grad",
    "conditional",
]
