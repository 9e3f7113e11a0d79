"""A U-Net for images (B, C, H, W), after DDPM's (Ho et al. 2020, appendix B).

Levels of residual blocks (GroupNorm, SiLU, 3x3 convolutions, the time embedding added
between the two convolutions, dropout) halve the resolution on the way down and double it on
the way up, with skip connections between matching blocks; self-attention runs at the
resolutions listed in attn_resolutions. The image side must be divisible by
2^(levels - 1). The network knows nothing of the noise schedule: t is just a real number.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scorelab.nn.embedding import LabelEmbedding, TimeEmbedding

NORM_GROUP_SIZE = 4  # channels per GroupNorm group at least: DDPM's 32 groups of 128


def norm_groups(channels: int, group_size: int = NORM_GROUP_SIZE) -> int:
    """How many GroupNorm groups: at most 32 (DDPM), each of at least group_size channels.

    A group of one channel erases what ResBlock adds to that channel just before its second
    norm, the time (and label) embedding, so a net of 32 channels or fewer would ignore t.
    group_size 0 gives gcd(32, channels) groups, the rule of U-Net runs stored before
    model.norm_group_size existed (config layout 2), so that they load unchanged.
    """
    if group_size <= 0:
        return math.gcd(32, channels)
    fits = [g for g in range(1, 33) if channels % g == 0 and channels // g >= group_size]
    return max(fits, default=1)


def group_norm(channels: int, group_size: int = NORM_GROUP_SIZE, groups: int = 0) -> nn.GroupNorm:
    """GroupNorm by the group-size rule (norm_groups), or with exactly `groups` groups in
    every layer when groups > 0 (diffusers' norm_num_groups: what an exported U-Net needs)."""
    if groups > 0:
        if channels % groups:
            raise ValueError(
                f"{channels} channels cannot be split into {groups} GroupNorm groups; choose "
                "a number of groups that divides every layer's width"
            )
        return nn.GroupNorm(groups, channels)
    return nn.GroupNorm(norm_groups(channels, group_size), channels)


class ResBlock(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        temb: int,
        dropout: float,
        group_size: int = NORM_GROUP_SIZE,
        groups: int = 0,
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, group_size, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb, c_out)
        self.norm2 = group_norm(c_out, group_size, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, group_size: int = NORM_GROUP_SIZE, groups: int = 0) -> None:
        super().__init__()
        self.norm = group_norm(channels, group_size, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)
        a = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """forward(x (B, C, S, S), t (B,), y=None) -> (B, out_channels or C, S, S); with
    num_classes > 0 the label y (None: the null class) is embedded and added to the time
    embedding."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2),
        res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (),
        dropout: float = 0.0,
        time_scale: float = 1.0,
        out_channels: int | None = None,
        num_classes: int = 0,
        norm_group_size: int = NORM_GROUP_SIZE,
        norm_groups: int = 0,
    ) -> None:
        super().__init__()
        levels = len(channel_mult)
        if in_channels < 1 or channels < 1 or res_blocks < 1 or levels < 1:
            raise ValueError("in_channels, channels, res_blocks and channel_mult must be positive")
        if image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image size {image_size} is not divisible by 2^{levels - 1} = "
                f"{2 ** (levels - 1)} ({levels} levels of channel_mult)"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        temb, g = 4 * channels, (norm_group_size, norm_groups)
        self.time = nn.Sequential(
            TimeEmbedding(channels, time_scale), nn.SiLU(), nn.Linear(channels, temb)
        )
        self.label = LabelEmbedding(num_classes, temb) if num_classes > 0 else None
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        widths, c, res = [channels], channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(res_blocks):
                block = nn.ModuleList([ResBlock(c, channels * mult, temb, dropout, *g)])
                c = channels * mult
                if res in attn_resolutions:
                    block.append(Attention(c, *g))
                self.down.append(block)
                widths.append(c)
            if level < levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                widths.append(c)
                res //= 2
        self.mid = nn.ModuleList(
            [ResBlock(c, c, temb, dropout, *g), Attention(c, *g), ResBlock(c, c, temb, dropout, *g)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(res_blocks + 1):
                skip = widths.pop()
                block = nn.ModuleList([ResBlock(c + skip, channels * mult, temb, dropout, *g)])
                c = channels * mult
                if res in attn_resolutions:
                    block.append(Attention(c, *g))
                self.up.append(block)
            if level > 0:
                self.up.append(
                    nn.ModuleList(
                        [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
                    )
                )
                res *= 2
        out_channels = in_channels if out_channels is None else out_channels
        self.out = nn.Sequential(
            group_norm(c, *g), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1)
        )
        # start as the zero function, as DDPM does: the first losses are those of predicting 0
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _run(block: nn.ModuleList, h: Tensor, temb: Tensor) -> Tensor:
        for layer in block:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        temb = self.time(t)
        if self.label is not None:
            temb = temb + self.label(y, x.shape[0], x.device)
        h = self.inp(x)
        skips = [h]
        for block in self.down:
            h = self._run(block, h, temb)
            skips.append(h)
        h = self._run(self.mid, h, temb)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(block, h, temb)
        return self.out(h)
