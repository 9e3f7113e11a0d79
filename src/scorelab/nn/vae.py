"""The VAE baseline's networks: Gaussian encoder q(z|x), decoder p(x|z) (Kingma & Welling 2014).

Networks only: the ELBO, the importance-weighted bound and the decoder likelihoods are in
scorelab.objectives.vae. The decoder outputs the parameters its likelihood needs:
  gaussian:  the mean, with one learned log-scale shared by all dimensions (VAE.log_scale);
  logistic:  mean and log-scale per dimension (discretized logistic, 8-bit images in [-1, 1]);
  bernoulli: logits (binary data in {-1, 1}).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

DECODERS: tuple[str, ...] = ("gaussian", "logistic", "bernoulli")


def _params_per_dim(likelihood: str) -> int:
    if likelihood not in DECODERS:
        raise ValueError(f"unknown decoder {likelihood!r}; choose one of: {', '.join(DECODERS)}")
    return 2 if likelihood == "logistic" else 1


class VAE(nn.Module):
    """encoder: x -> (B, 2 latent_dim) (mean, log-variance); decoder: z -> (B, k, *shape)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        shape: tuple[int, ...],
        latent_dim: int,
        likelihood: str = "gaussian",
    ) -> None:
        super().__init__()
        self.params_per_dim = _params_per_dim(likelihood)
        self.encoder, self.decoder = encoder, decoder
        self.shape, self.latent_dim, self.likelihood = tuple(shape), latent_dim, likelihood
        # one scale for the Gaussian decoder, learned with the rest (log sigma)
        self.log_scale = nn.Parameter(torch.full((), math.log(0.5)))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x) = N(mean, diag(exp(log_var)))."""
        h = self.encoder(x)
        mean, log_var = h.chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's parameters, shape (B, params_per_dim, *shape)."""
        return self.decoder(z).reshape(z.shape[0], self.params_per_dim, *self.shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode(x)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def mlp_vae(
    dim: int, latent_dim: int = 2, width: int = 128, depth: int = 2, likelihood: str = "gaussian"
) -> VAE:
    """A VAE for vectors (B, dim): MLP encoder and decoder with `depth` hidden layers."""
    if min(dim, latent_dim, width, depth) < 1:
        raise ValueError("dim, latent_dim, width and depth must be positive")
    k = _params_per_dim(likelihood)
    encoder = _mlp([dim, *[width] * depth, 2 * latent_dim])
    decoder = _mlp([latent_dim, *[width] * depth, k * dim])
    return VAE(encoder, decoder, (dim,), latent_dim, likelihood)


def conv_vae(
    shape: tuple[int, int, int],
    latent_dim: int = 16,
    width: int = 32,
    likelihood: str = "gaussian",
) -> VAE:
    """A VAE for images (B, C, H, W): strided convolutions down to at most 4x4, then linear."""
    channels, height, width_px = shape
    levels = 0
    while min(height, width_px) // 2**levels > 4 and (height | width_px) % 2 ** (levels + 1) == 0:
        levels += 1
    h, w = height // 2**levels, width_px // 2**levels
    k = _params_per_dim(likelihood)
    down: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.SiLU()]
    for _ in range(levels):
        down += [nn.Conv2d(width, width, 4, stride=2, padding=1), nn.SiLU()]
    encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(width * h * w, 2 * latent_dim))
    up: list[nn.Module] = [nn.Linear(latent_dim, width * h * w), nn.Unflatten(1, (width, h, w))]
    for _ in range(levels):
        up += [nn.SiLU(), nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)]
    up += [nn.SiLU(), nn.Conv2d(width, k * channels, 3, padding=1)]
    return VAE(encoder, nn.Sequential(*up), shape, latent_dim, likelihood)
