"""A residual MLP with a time embedding, for vector data (B, d)."""

from __future__ import annotations

from torch import Tensor, nn

from scorelab.nn.embedding import LabelEmbedding, TimeEmbedding


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width)
        )

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        return h + self.net(h + temb)


class MLP(nn.Module):
    """forward(x (B, d), t (B,), y=None) -> (B, out_dim): a prediction of eps, x0, v or the
    score (out_dim = d), or with a learned variance also its interpolation weight (out_dim =
    2d). With num_classes > 0 the label y (None: the null class) is embedded and added to the
    time embedding."""

    def __init__(
        self,
        dim: int,
        width: int = 128,
        depth: int = 3,
        time_scale: float = 1.0,
        out_dim: int | None = None,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if dim < 1 or width < 1 or depth < 1:
            raise ValueError("dim, width and depth must be positive")
        self.time = TimeEmbedding(width, time_scale)
        self.label = LabelEmbedding(num_classes, width) if num_classes > 0 else None
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, out_dim or dim))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        temb = self.time(t)
        if self.label is not None:
            temb = temb + self.label(y, x.shape[0], x.device)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)
