"""Unit tests for the DDPM-style U-Net raw network (diffmem.models.unet)."""

from __future__ import annotations

import pytest
import torch

from diffmem.models.unet import UNet, count_parameters


def _net(seed: int = 0, **kw) -> UNet:
    kw.setdefault("in_channels", 1)
    kw.setdefault("width", 8)
    kw.setdefault("image_size", 8)
    return UNet(generator=torch.Generator().manual_seed(seed), **kw)


def _train(net: UNet, x: torch.Tensor, c: torch.Tensor, target: torch.Tensor, steps: int) -> list[float]:
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        loss = (net(x, c) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("shape", "width"), [((1, 8, 8), 8), ((3, 32, 32), 16)])
def test_output_shape_matches_input(shape, width):
    net = _net(in_channels=shape[0], width=width, image_size=shape[-1])
    x = torch.randn(2, *shape)
    out = net(x, torch.tensor([3.0, 500.0]))
    assert out.shape == x.shape
    assert torch.all(out == 0)  # zero-initialised output conv


def test_scalar_c_noise_is_broadcast():
    net = _net()
    assert net(torch.randn(3, 1, 8, 8), torch.tensor(10.0)).shape == (3, 1, 8, 8)


def test_parameter_count_grows_roughly_quadratically_with_width():
    counts = [count_parameters(UNet(in_channels=1, width=w, image_size=32)) for w in (8, 16, 32)]
    assert counts[0] < counts[1] < counts[2]
    assert 3.5 < counts[1] / counts[0] < 4.5 and 3.5 < counts[2] / counts[1] < 4.5
    assert 0.2e6 < counts[0] < 0.3e6  # paper: about 0.26 M parameters at the smallest width


def test_adam_steps_reduce_regression_loss():
    g = torch.Generator().manual_seed(1)
    x, target = torch.randn(8, 1, 8, 8, generator=g), torch.randn(8, 1, 8, 8, generator=g)
    c = torch.rand(8, generator=g) * 1000
    losses = _train(_net(), x, c, target, steps=20)
    assert losses[-1] < 0.9 * losses[0]


def test_output_depends_on_c_noise_after_one_step():
    g = torch.Generator().manual_seed(2)
    x, target = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    net = _net()
    _train(net, x, torch.full((4,), 100.0), target, steps=1)
    with torch.no_grad():
        a = net(x, torch.full((4,), 10.0))
        b = net(x, torch.full((4,), 900.0))
    assert not torch.allclose(a, b)
    assert a.abs().sum() > 0


def test_gradients_reach_every_parameter_after_one_step():
    g = torch.Generator().manual_seed(3)
    x, target = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    net = _net()
    _train(net, x, torch.rand(4, generator=g) * 1000, target, steps=1)
    (net(x, torch.rand(4, generator=g) * 1000) - target).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_generator_init_is_deterministic_and_independent_of_global_rng():
    torch.manual_seed(123)
    a = _net(seed=7, width=16, image_size=32)
    torch.manual_seed(456)
    b = _net(seed=7, width=16, image_size=32)
    c = _net(seed=8, width=16, image_size=32)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_invalid_configurations_are_rejected():
    with pytest.raises(ValueError, match=r"image_size 6 is not divisible by 2\^2"):
        UNet(in_channels=1, width=8, image_size=6)  # 6 is not divisible by 2^2
    with pytest.raises(ValueError, match=r"attn_levels \(3,\) out of range"):
        UNet(in_channels=1, width=8, image_size=8, attn_levels=(3,))
    with pytest.raises(ValueError, match="emb_dim must be even and >= 2, got 7"):
        UNet(in_channels=1, width=8, image_size=8, emb_dim=7)
