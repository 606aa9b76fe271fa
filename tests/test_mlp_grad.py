"""models/mlp_grad.py: the MLP's loss and gradient by hand equal autograd's on the module, bit for bit; a
stack computed by hand trains each member as it trains alone (bit for bit at the default experiment's
shapes, to float rounding elsewhere)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from diffmem.checkpoint import checkpoint_path, load_checkpoint
from diffmem.config import ModelConfig, TrainConfig, load_config
from diffmem.engine import Run, make_step_loss, train_runs
from diffmem.loss import denoising_loss, sample_sigma
from diffmem.models import build_denoiser, mlp_grad
from diffmem.models.stacked import stack_modules

CPU = torch.device("cpu")
CASES = {  # (data shape, width, depth, emb_dim, batch)
    "digits": ((64,), 128, 3, 64, 16),
    "gmm": ((8,), 128, 2, 16, 256),
    "one-block-odd-batch": ((5,), 32, 1, 8, 7),
    "image-shaped": ((1, 4, 4), 16, 2, 8, 6),
}


def batch_for(base, parameterization, shape, size, seed):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn((size, *shape), generator=gen)
    sigma = sample_sigma(size, parameterization=parameterization, p_mean=-1.2, p_std=1.2,
                         vp_sigmas=base.sigmas if parameterization == "ddpm" else None, generator=gen, device=CPU)
    return x0, sigma, torch.randn((size, *shape), generator=gen)


@pytest.mark.parametrize("parameterization", ["edm", "ddpm"])
@pytest.mark.parametrize("case", list(CASES))
def test_by_hand_equals_autograd_on_the_module(parameterization, case):
    shape, width, depth, emb_dim, size = CASES[case]
    cfg = ModelConfig(arch="mlp", parameterization=parameterization, width=width, depth=depth, emb_dim=emb_dim)
    torch.manual_seed(3)
    base = build_denoiser(cfg, data_shape=shape)
    with torch.no_grad():  # move every weight off its initial value, so no gradient is trivially zero
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x0, sigma, noise = batch_for(base, parameterization, shape, size, seed=5)
    loss = denoising_loss(base, x0, sigma, noise).mean()
    reference = torch.autograd.grad(loss, list(base.parameters()))
    params = dict(base.named_parameters())
    got_loss, got = mlp_grad.mlp_loss_and_grads(base, params, dict(base.named_buffers()), x0, sigma, noise)
    assert torch.equal(got_loss, loss.detach().unsqueeze(0))
    assert len(got) == len(reference)
    for name, g, r in zip(params, got, reference):
        assert g.shape == r.shape and g.is_contiguous(), name
        assert torch.equal(g, r), f"{name}: max |diff| {float((g - r).abs().max()):.3g}"
        assert bool(g.abs().sum() > 0), name


def test_the_engine_differentiates_by_hand_only_what_this_module_covers():
    mlp = build_denoiser(ModelConfig(arch="mlp", width=16, depth=1, emb_dim=8), data_shape=(4,))
    time_mlp = build_denoiser(ModelConfig(arch="time_mlp", width=16, depth=1), data_shape=(4,))
    fp32 = TrainConfig()
    assert getattr(make_step_loss(mlp, fp32, CPU), "by_hand", None) is not None
    assert getattr(make_step_loss(mlp, fp32, CPU, by_hand=False), "by_hand", None) is None
    assert getattr(make_step_loss(mlp, fp32, torch.device("cuda")), "by_hand", None) is None  # measured on CPU only
    assert getattr(make_step_loss(time_mlp, fp32, CPU), "by_hand", None) is None
    bf16 = dataclasses.replace(fp32, precision="bf16")
    assert getattr(make_step_loss(mlp, bf16, CPU), "by_hand", None) is None
    assert mlp_grad.supports(mlp) and not mlp_grad.supports(time_mlp)


@pytest.mark.parametrize("parameterization", ["edm", "ddpm"])
@pytest.mark.parametrize("masked", [False, True], ids=["same-n", "padded"])
def test_a_stack_by_hand_gives_each_member_its_own_gradient(parameterization, masked):
    """Against autograd on each member's own module, with the engine's stacked reduction (and padding mask)."""
    shape, width, depth, emb_dim, size = (6,), 32, 2, 8, 10
    cfg = ModelConfig(arch="mlp", parameterization=parameterization, width=width, depth=depth, emb_dim=emb_dim)
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(build_denoiser(cfg, data_shape=shape))
    params, buffers = stack_modules(members)
    batches = [batch_for(members[0], parameterization, shape, size, seed=10 + m) for m in range(3)]
    x0, sigma, noise = (torch.stack([b[i] for b in batches]) for i in range(3))
    rows = [size, size // 2 if masked else size, size]
    mask = None
    if masked:
        mask = torch.zeros(3, size)
        for m, r in enumerate(rows):
            mask[m, :r] = 1.0
    losses, grads = mlp_grad.mlp_loss_and_grads(members[0], params, buffers, x0, sigma, noise, mask)
    assert losses.shape == (3,)
    for m, module in enumerate(members):
        r = rows[m]
        loss = denoising_loss(module, x0[m, :r], sigma[m, :r], noise[m, :r]).mean()
        reference = torch.autograd.grad(loss, list(module.parameters()))
        assert torch.allclose(losses[m], loss.detach(), rtol=1e-6, atol=0)
        for name, g, ref in zip(params, grads, reference):
            assert g[m].shape == ref.shape, name
            assert torch.allclose(g[m], ref, rtol=1e-4, atol=1e-7), f"member {m} {name}"


def test_the_default_experiment_trains_grouped_as_each_run_alone_bit_for_bit(tmp_path):
    """config.yaml's digits network, batch and optimizer: six runs (three n, two seeds) in one stack, by hand,
    end with the weights and optimizer state each run gets alone."""
    exp = load_config(Path(__file__).resolve().parent.parent / "config.yaml")["experiments"]["digits"]
    model = ModelConfig.from_dict(exp["model"])
    train = TrainConfig(optimizer=exp["train"]["optimizer"], lr=exp["train"]["lr"], batch_size=exp["train"]["batch_size"],
                        max_steps=60, checkpoints_per_decade=1, probe_size=32, log_every=10**6, keep="all")
    rng = np.random.default_rng(0)
    subsets = {n: rng.uniform(-1, 1, size=(n, 64)).astype(np.float32) for n in (16, 24, 48)}
    held_out = rng.uniform(-1, 1, size=(20, 64)).astype(np.float32)
    kw = dict(model_cfg=model, train_cfg=train, data_shape=(64,), device=CPU, log=lambda m: None)
    grouped = [Run(x, seed, tmp_path / f"group_n{n}_s{seed}") for n, x in subsets.items() for seed in (0, 1)]
    train_runs(grouped, held_out, **kw)
    for run in grouped:
        alone = Run(run.x_train, run.seed, tmp_path / f"alone_{run.state_dir.name}")
        train_runs([alone], held_out, **kw)
        a, b = (load_checkpoint(checkpoint_path(r.state_dir, 60)) for r in (run, alone))
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (run.label, key)
        for i, state in a["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, b["optimizer"]["state"][i][key]), (run.label, i, key)
