"""The U-Net: output shapes for several sizes and channels, time dependence, bad sizes."""

from __future__ import annotations

import pytest
import torch

from scorelab.build import check_image_model
from scorelab.config import MLPConfig, UNetConfig
from scorelab.errors import DataError
from scorelab.nn import UNet


@pytest.mark.parametrize(
    "channels, size, mult, attn",
    [
        (1, 8, (1, 2), (4,)),
        (3, 16, (1, 2, 2), (8,)),
        (3, 32, (1, 2, 2, 2), (8,)),
        (1, 64, (1, 1, 2, 2, 2), (16,)),
    ],
)
def test_output_shape_equals_input_shape(channels, size, mult, attn):
    net = UNet(channels, size, 8, mult, 1, attn, dropout=0.1)
    x = torch.randn(2, channels, size, size)
    assert net(x, torch.tensor([1.0, 900.0])).shape == x.shape


def test_starts_as_zero_and_depends_on_time_after_a_step():
    torch.manual_seed(0)
    net = UNet(1, 8, 8, (1, 2), 1, (4,))
    x = torch.randn(4, 1, 8, 8)
    assert torch.count_nonzero(net(x, torch.full((4,), 10.0))) == 0  # zero-initialized output
    for p in net.out.parameters():
        torch.nn.init.normal_(p)
    assert not torch.allclose(net(x, torch.full((4,), 10.0)), net(x, torch.full((4,), 900.0)))


def test_sizes_the_unet_cannot_take():
    with pytest.raises(ValueError, match="not divisible"):
        UNet(1, 12, 8, (1, 2, 2, 2), 1)
    with pytest.raises(DataError, match="not divisible by 2\\^3"):
        check_image_model(UNetConfig(channel_mult=(1, 2, 2, 2)), (1, 12, 12))
    with pytest.raises(DataError, match="--model unet"):
        check_image_model(MLPConfig(), (1, 8, 8))
    cfg = check_image_model(UNetConfig(), (3, 16, 16))
    assert (cfg.in_channels, cfg.image_size) == (3, 16)


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    net = UNet(3, 8, 8, (1, 2), 1, (4,))
    for p in net.out.parameters():
        torch.nn.init.normal_(p)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5.0, 500.0])
    ref = net(x, t)
    net = net.to(memory_format=torch.channels_last)
    out = net(x.contiguous(memory_format=torch.channels_last), t)
    assert torch.allclose(ref, out, atol=1e-5)
