"""The U-Net: output shapes for several sizes and channels, time dependence, bad sizes."""

from __future__ import annotations

import pytest
import torch

from scorelab.build import check_image_model
from scorelab.config import MLPConfig, UNetConfig
from scorelab.errors import DataError
from scorelab.nn import UNet
from scorelab.nn.unet import norm_groups


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
    """Zero output at init (DDPM's zero-initialized last layer); with it randomized the output
    at t = 10 and t = 900 differs by far more than float rounding (> 1e-3, the output is
    ~0.4; a t-blind net differs by ~1e-7, which allclose's default atol of 1e-8 took for a
    difference). Catches the time embedding not added to the blocks."""
    torch.manual_seed(0)
    net = UNet(1, 8, 32, (1, 2), 1, (4,)).eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.count_nonzero(net(x, torch.full((4,), 10.0))) == 0  # zero-initialized output
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        early, late = net(x, torch.full((4,), 10.0)), net(x, torch.full((4,), 900.0))
    assert ((early - late).abs().amax((1, 2, 3)) > 1e-3).all()


@torch.no_grad()
def test_a_narrow_unet_depends_on_time():
    """--channels 8: the output must depend on t (the noise level). With one channel per
    GroupNorm group (gcd(32, c) groups, norm_group_size 0) the norm after the time shift
    erases it: the legacy rule differs by float rounding only."""
    torch.manual_seed(0)
    net = UNet(1, 8, 8, (1, 2), 1, (4,)).eval()
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(4, 1, 8, 8)
    early, late = net(x, torch.full((4,), 10.0)), net(x, torch.full((4,), 900.0))
    assert ((early - late).abs().amax((1, 2, 3)) > 1e-3).all()
    torch.manual_seed(0)
    legacy = UNet(1, 8, 8, (1, 2), 1, (4,), norm_group_size=0).eval()
    for p in legacy.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    early, late = legacy(x, torch.full((4,), 10.0)), legacy(x, torch.full((4,), 900.0))
    assert (early - late).abs().max() < 1e-5


@pytest.mark.parametrize(
    "channels, size, groups",
    [(8, 4, 2), (16, 4, 4), (32, 4, 8), (64, 4, 16), (128, 4, 32), (256, 4, 32), (96, 4, 24),
     (3, 4, 1), (8, 0, 8), (32, 0, 32), (96, 0, 32), (48, 0, 16), (12, 1, 12), (36, 4, 9)],
)  # fmt: skip
def test_norm_groups(channels, size, groups):
    """At most 32 groups of at least `size` channels, the most that divide the width; size 0 is
    the rule of runs stored before the setting (gcd(32, channels))."""
    assert norm_groups(channels, size) == groups
    assert channels % groups == 0


def test_unet_runs_stored_before_the_setting_keep_their_groups():
    """A stored U-Net config of layout 2 (no norm_group_size) loads with 0, so its network is
    the one it was trained as; MLP configs are untouched, and new runs get 4."""
    from scorelab.config import RunConfig

    d = RunConfig(model=UNetConfig(channels=8)).to_dict()
    del d["model"]["norm_group_size"]
    old = RunConfig.from_dict({**d, "version": 2})
    assert old.model.norm_group_size == 0 and old.version == RunConfig().version
    assert RunConfig.from_dict(RunConfig(model=UNetConfig()).to_dict()).model.norm_group_size == 4
    mlp = RunConfig().to_dict()
    assert RunConfig.from_dict({**mlp, "version": 2}).model == RunConfig().model


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


def _with_random_zero_layers(net: UNet) -> UNet:
    """The zero-initialized layers (the output convolution, the label table) given random
    weights, so that every input path shows in the output."""
    for p in net.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    if net.label is not None:
        torch.nn.init.normal_(net.label.table.weight)
    return net


@torch.no_grad()
def test_each_output_depends_on_its_own_image_time_and_label_only():
    """A conditional U-Net (3 classes, 32 and 64 channels, attention at 8x8 and in the middle):
    at init its output is exactly 0 and its label table is 0 (the conditional net starts as
    its unconditional twin: y = 0 gives y = None's output); with those layers randomized,
    changing example 1's image, time or label changes example 1's output and leaves examples 0
    and 2 unchanged (no mixing across the batch: per-example GroupNorm, attention over one
    image's positions), each of the three alone changes it, and y = None is the null class 3.
    Catches the label embedding not added, attention or normalization that mixes examples
    (q, k, v split along the wrong axis, a batch norm), and t ignored by the blocks."""
    torch.manual_seed(0)
    net = UNet(2, 16, 32, (1, 2), 1, (8,), num_classes=3).eval()
    x = torch.randn(3, 2, 16, 16)
    t, y = torch.tensor([5.0, 500.0, 900.0]), torch.tensor([0, 1, 2])
    assert torch.count_nonzero(net(x, t, y)) == 0
    _with_random_zero_layers(net)
    ref = net(x, t, y)
    assert torch.count_nonzero(ref) == ref.numel()
    x2 = x.clone()
    x2[1, 0, 3, 4] += 1.0
    changes = [
        (x2, t, y),
        (x, torch.tensor([5.0, 50.0, 900.0]), y),
        (x, t, torch.tensor([0, 2, 2])),
    ]
    for args in changes:
        out = net(*args)
        torch.testing.assert_close(out[[0, 2]], ref[[0, 2]], rtol=0, atol=1e-6)
        assert (out[1] - ref[1]).abs().max() > 1e-3
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.full((3,), 3)), rtol=0, atol=0)


@torch.no_grad()
def test_learned_variance_output_has_twice_the_channels_and_starts_at_zero():
    """out_channels = 2C (eps and the variance's r, improved DDPM): shape (B, 2C, S, S), zero at
    init, so a new learned-variance net starts at v = 1/2 (the geometric mean of beta and
    beta_tilde); randomized, both halves depend on the input."""
    torch.manual_seed(0)
    net = UNet(3, 8, 8, (1, 2), 1, (), out_channels=6).eval()
    x = torch.randn(2, 3, 8, 8)
    out = net(x, torch.tensor([1.0, 700.0]))
    assert out.shape == (2, 6, 8, 8) and torch.count_nonzero(out) == 0
    _with_random_zero_layers(net)
    a, b = net(x, torch.tensor([1.0, 700.0])), net(x + 0.5, torch.tensor([1.0, 700.0]))
    assert ((a - b)[:, :3].abs().amax((1, 2, 3)) > 1e-3).all()
    assert ((a - b)[:, 3:].abs().amax((1, 2, 3)) > 1e-3).all()
