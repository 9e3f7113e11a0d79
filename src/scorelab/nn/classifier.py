"""A noise-aware image classifier p_phi(y | x_t, t): the U-Net's encoder (Dhariwal & Nichol
2021 use the downsampling half of their U-Net), then global average pooling and a linear head.
For vectors the MLP with out_dim = classes is the classifier."""

from __future__ import annotations

from torch import Tensor, nn

from scorelab.nn.embedding import TimeEmbedding
from scorelab.nn.unet import NORM_GROUP_SIZE, ResBlock, group_norm


class EncoderClassifier(nn.Module):
    """forward(x (B, C, S, S), t (B,)) -> logits (B, classes)."""

    def __init__(
        self,
        in_channels: int,
        classes: int,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        res_blocks: int = 1,
        time_scale: float = 1.0,
        norm_group_size: int = NORM_GROUP_SIZE,
    ) -> None:
        super().__init__()
        if classes < 2:
            raise ValueError(f"a classifier needs >= 2 classes, got {classes}")
        temb = 4 * channels
        self.time = nn.Sequential(
            TimeEmbedding(channels, time_scale), nn.SiLU(), nn.Linear(channels, temb)
        )
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        layers: list[nn.Module] = []
        c = channels
        for level, mult in enumerate(channel_mult):
            for _ in range(res_blocks):
                layers.append(ResBlock(c, channels * mult, temb, 0.0, norm_group_size))
                c = channels * mult
            if level < len(channel_mult) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.blocks = nn.ModuleList(layers)
        self.head = nn.Sequential(group_norm(c, norm_group_size), nn.SiLU())
        self.out = nn.Linear(c, classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.time(t)
        h = self.inp(x)
        for layer in self.blocks:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return self.out(self.head(h).mean(dim=(2, 3)))
