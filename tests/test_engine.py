"""The training engine: a stack of one is a plain torch training loop, bit for bit; a run trains the
same in any stack (same draws, same checkpoints, same resume), to the float rounding of batched kernels."""

import numpy as np
import pytest
import torch
import xarray as xr

from diffmem.checkpoint import checkpoint_path, existing_steps, load_checkpoint
from diffmem.config import ModelConfig, TrainConfig, checkpoint_grid
from diffmem.engine import Run, TrainingDiverged, run_training, seed_of, train_runs
from diffmem.loss import denoising_loss, sample_sigma
from diffmem.models import build_denoiser
from diffmem.models.stacked import StackedDenoiser, stack_modules
from diffmem.optim import adam_update_, fused_adam_update_, in_slabs, optimizer_step_, sgd_update_
from diffmem.stages import train as train_stage

MODEL = ModelConfig(width=32, depth=1, emb_dim=8)
POOL = np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32)
XT = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)
CPU = torch.device("cpu")
# keep: all, so every grid checkpoint keeps the optimizer and stream state these tests compare
SETTINGS = {"batch_size": 16, "checkpoints_per_decade": 2, "probe_size": 32, "lr": 3e-3, "log_every": 10**6, "keep": "all"}
VARIANTS = {
    "adam": {},
    "sgd-ema-wd": {"optimizer": "sgd", "ema_decay": 0.9, "weight_decay": 0.01},
    "ddpm-clip-wd": {"model": {"parameterization": "ddpm"}, "grad_clip": 0.5, "weight_decay": 1e-3},
    "time_mlp-ddpm": {"model": {"arch": "time_mlp", "parameterization": "ddpm"}},
    "time_mlp_emb": {"model": {"arch": "time_mlp_emb"}},
    "tikhonov": {"tikhonov": 0.05},  # the penalized loss (loss.py), through autograd
}


def configs(max_steps, extra=None):
    extra = dict(extra or {})
    model = ModelConfig(**{**MODEL.__dict__, **extra.pop("model", {})})
    return model, TrainConfig(max_steps=max_steps, **{**SETTINGS, **extra})


def single(state_dir, x, seed, max_steps, extra=None):
    model, cfg = configs(max_steps, extra)
    return run_training(x, XT, model_cfg=model, train_cfg=cfg, seed=seed, state_dir=state_dir, data_shape=(6,),
                        device=CPU, log=lambda m: None)


def group(members, max_steps, extra=None):
    model, cfg = configs(max_steps, extra)
    return train_runs([Run(x, s, d) for x, s, d in members], XT, model_cfg=model, train_cfg=cfg, data_shape=(6,),
                      device=CPU, log=lambda m: None)


def assert_same_payload(a, b, *, atol=0.0):
    """Two checkpoints agree: weights, EMA, optimizer state (to atol) and the random streams exactly."""
    close = torch.equal if atol == 0 else (lambda u, v: torch.allclose(u, v, rtol=0, atol=atol))
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert close(a["model"][key], b["model"][key]), key
    assert (a["ema"] is None) == (b["ema"] is None)
    if a["ema"] is not None:
        assert all(close(a["ema"][key], b["ema"][key]) for key in a["ema"])
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        assert list(oa["state"][i]) == list(ob["state"][i])
        for key, value in oa["state"][i].items():
            if key == "step":
                assert torch.equal(value, ob["state"][i][key]) and value.dtype == ob["state"][i][key].dtype
            else:
                assert close(value, ob["state"][i][key]), (i, key)
    # the random draws are the single path's own: generator, epoch order and cursor agree exactly
    assert torch.equal(a["rng"], b["rng"]) and torch.equal(a["perm"], b["perm"]) and a["cursor"] == b["cursor"]
    assert a["config"]["model"] == b["config"]["model"] and a["config"]["data_shape"] == b["config"]["data_shape"]


def ckpt(state_dir, step):
    return load_checkpoint(checkpoint_path(state_dir, step))


def plain_loop(x, seed, max_steps, extra=None):
    """Reference: one nn.Module trained by torch.optim, written out as a textbook loop (no engine code but
    the seeds), with the engine's documented draw order: batch indices, noise levels, noise."""
    model_cfg, cfg = configs(max_steps, extra)
    torch.manual_seed(seed_of("init", seed))
    net = build_denoiser(model_cfg, data_shape=(6,))
    ema = [p.detach().clone() for p in net.parameters()]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed_of("batches", seed))
    xt = torch.as_tensor(x)
    perm, cursor = torch.randperm(len(x), generator=gen), 0
    vp = net.sigmas if model_cfg.parameterization == "ddpm" else None
    for _ in range(max_steps):
        if cursor + cfg.batch_size > len(x):
            perm, cursor = torch.randperm(len(x), generator=gen), 0
        x0 = xt[perm[cursor:cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        sigma = sample_sigma(len(x0), parameterization=model_cfg.parameterization, p_mean=cfg.p_mean,
                             p_std=cfg.p_std, vp_sigmas=vp, generator=gen, device=CPU)
        noise = torch.randn(x0.shape, generator=gen)
        loss = denoising_loss(net, x0, sigma, noise, tikhonov=cfg.tikhonov).mean()
        opt.zero_grad()
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()):
                e.lerp_(p, 1 - (cfg.ema_decay or 0.0))
    return net, ema, opt


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stack_of_one_equals_a_plain_torch_loop_exactly(tmp_path, variant):
    # torch's kernels: the native kernel computes the same step with other roundings (tests/test_mlp_native.py)
    extra = {"kernel": "torch", **VARIANTS[variant]}
    x = POOL[:40]
    single(tmp_path / "engine", x, 0, 50, extra)
    net, ema, opt = plain_loop(x, 0, 50, extra)
    got = ckpt(tmp_path / "engine", 50)
    for key, value in net.state_dict().items():
        assert torch.equal(got["model"][key], value), key
    if got["ema"] is not None:
        for (key, _), e in zip(net.named_parameters(), ema):
            assert torch.equal(got["ema"][key], e), key
    ref = opt.state_dict()
    assert got["optimizer"]["param_groups"][0]["lr"] == ref["param_groups"][0]["lr"]
    for i, state in ref["state"].items():
        for key, value in state.items():
            assert torch.equal(got["optimizer"]["state"][i][key].cpu(), value.cpu()), (i, key)


@pytest.mark.parametrize("sizes", [(40, 40, 40), (40, 24, 10)], ids=["same-n", "different-n"])
def test_group_of_three_matches_each_member_alone(tmp_path, sizes):
    extra = VARIANTS["sgd-ema-wd"] if sizes[1] != sizes[0] else {}
    members = [(POOL[:n], seed, tmp_path / f"g{seed}") for seed, n in enumerate(sizes)]
    got = group(members, 50, extra)
    for (x, seed, gdir), metrics in zip(members, got):
        expected = single(tmp_path / f"s{seed}", x, seed, 50, extra)
        assert metrics.keys() == expected.keys()
        for step in expected:
            for key, value in expected[step].items():
                assert metrics[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6)
        assert_same_payload(ckpt(tmp_path / f"s{seed}", 50), ckpt(gdir, 50), atol=1e-5)


def test_resumed_group_equals_uninterrupted(tmp_path):
    def members(root):
        return [(POOL[:n], seed, root / f"m{seed}") for seed, n in enumerate((40, 24, 10))]

    straight = group(members(tmp_path / "a"), 50)
    group(members(tmp_path / "b"), 20)
    resumed = group(members(tmp_path / "b"), 50)
    assert straight == resumed
    for _, seed, _ in members(tmp_path):
        assert_same_payload(ckpt(tmp_path / "a" / f"m{seed}", 50), ckpt(tmp_path / "b" / f"m{seed}", 50))


def test_single_and_grouped_paths_resume_each_other(tmp_path):
    x, extra = POOL[:40], VARIANTS["sgd-ema-wd"]
    single(tmp_path / "ref", x, 3, 50, extra)
    group([(x, 3, tmp_path / "g-then-s")], 20, extra)
    single(tmp_path / "g-then-s", x, 3, 50, extra)
    single(tmp_path / "s-then-g", x, 3, 20, extra)
    group([(x, 3, tmp_path / "s-then-g")], 50, extra)
    for other in ("g-then-s", "s-then-g"):
        assert_same_payload(ckpt(tmp_path / "ref", 50), ckpt(tmp_path / other, 50))


def test_members_at_different_steps_train_in_sub_groups(tmp_path):
    single(tmp_path / "done", POOL[:24], 0, 50)  # nothing left to train
    single(tmp_path / "half", POOL[:40], 1, 20)  # resumes from step 20
    logs = []
    model, cfg = configs(50)
    got = train_runs(
        [Run(POOL[:24], 0, tmp_path / "done"), Run(POOL[:40], 1, tmp_path / "half"), Run(POOL[:10], 2, tmp_path / "fresh")],
        XT, model_cfg=model, train_cfg=cfg, data_shape=(6,), device=CPU, log=logs.append)
    assert any("n=24 seed=0: every checkpoint of the grid exists" in line for line in logs)
    assert any("resuming from step 20" in line for line in logs)
    assert sum("training 1 run from" in line for line in logs) == 2
    assert got[1] == single(tmp_path / "ref1", POOL[:40], 1, 50)
    assert got[2] == single(tmp_path / "ref2", POOL[:10], 2, 50)
    assert all(set(existing_steps(tmp_path / d)) >= set(checkpoint_grid(cfg.__dict__)) for d in ("half", "fresh"))


def test_a_diverged_member_does_not_stop_the_others(tmp_path):
    bad = POOL[:24].copy()
    bad[3, 2] = np.nan
    with pytest.raises(TrainingDiverged, match=r"n=24 seed=1: non-finite (probe|training) loss") as err:
        group([(POOL[:40], 0, tmp_path / "ok"), (bad, 1, tmp_path / "bad")], 30)
    assert "seed=0" not in str(err.value)
    assert existing_steps(tmp_path / "ok") == checkpoint_grid({"max_steps": 30, "checkpoints_per_decade": 2})
    assert existing_steps(tmp_path / "bad") == []


def test_bf16_autocast_trains_alone_and_in_a_stack(tmp_path):
    extra = {"precision": "bf16"}
    s = single(tmp_path / "s", POOL[:40], 0, 10, extra)
    g = group([(POOL[:40], 0, tmp_path / "g"), (POOL[:24], 1, tmp_path / "g1")], 10, extra)[0]
    fp32 = single(tmp_path / "f", POOL[:40], 0, 10)
    assert all(np.isfinite(v["train_loss"]) for v in s.values())
    assert g[10]["train_loss"] == pytest.approx(s[10]["train_loss"], rel=1e-2)
    assert s[10]["train_loss"] == pytest.approx(fp32[10]["train_loss"], rel=5e-2)
    assert s[10]["train_loss"] != fp32[10]["train_loss"]  # bf16 did change the arithmetic


@pytest.mark.parametrize("parameterization", ["edm", "ddpm"])
def test_sample_sigma_draws_the_documented_distributions(parameterization):
    model = ModelConfig(**{**MODEL.__dict__, "parameterization": parameterization})
    cfg = TrainConfig()
    vp = build_denoiser(model, data_shape=(6,)).sigmas if parameterization == "ddpm" else None
    got = sample_sigma(16, parameterization=parameterization, p_mean=cfg.p_mean, p_std=cfg.p_std, vp_sigmas=vp,
                       generator=torch.Generator().manual_seed(3), device=CPU)
    gen = torch.Generator().manual_seed(3)
    if parameterization == "edm":
        expected = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(16, generator=gen))
    else:
        expected = vp[torch.randint(0, 1000, (16,), generator=gen)].float()
    assert torch.equal(got, expected)


def test_unknown_optimizer_names_itself():
    params = {"w": torch.zeros(1, 3, requires_grad=True)}
    with pytest.raises(ValueError, match="train.optimizer='rmsprop'"):
        optimizer_step_(params, [torch.ones(1, 3)], {}, TrainConfig(optimizer="rmsprop"), step=1, workspace={})


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_stacked_adam_and_sgd_match_torch_optim_bit_for_bit(weight_decay):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 5, 4), (3, 7)]
    for name in ("adam", "sgd"):
        params = [torch.randn(s, generator=gen) for s in shapes]
        ref = [p.clone().requires_grad_() for p in params]
        if name == "adam":
            opt = torch.optim.Adam(ref, lr=1e-2, weight_decay=weight_decay, foreach=True)
            m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
        else:
            opt = torch.optim.SGD(ref, lr=1e-2, momentum=0.9, weight_decay=weight_decay, foreach=True)
            bufs = None
        for step in range(1, 6):
            grads = [torch.randn(s, generator=gen) for s in shapes]
            for p, g in zip(ref, grads):
                p.grad = g.clone()
            opt.step()
            if name == "adam":
                adam_update_(params, grads, m, v, step=step, lr=1e-2, weight_decay=weight_decay)
            else:
                bufs = sgd_update_(params, grads, bufs, lr=1e-2, momentum=0.9, weight_decay=weight_decay)
            assert all(torch.equal(p, r) for p, r in zip(params, ref)), (name, step)


def test_cache_sized_slabs_give_the_same_update():
    gen = torch.Generator().manual_seed(1)
    shapes = [(5, 33, 7), (5, 3)]
    state = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(4)]  # p, g, m, v
    v = [x.abs() for x in state[3]]
    whole = [[x.clone() for x in lst] for lst in (state[0], state[1], state[2], v)]
    sliced = [[x.clone() for x in lst] for lst in (state[0], state[1], state[2], v)]

    def adam(p, g, m, v, d=None):
        adam_update_(p, g, m, v, step=3, lr=1e-2, weight_decay=0.1, denom=d)

    adam(*whole)
    denom = [torch.empty_like(x) for x in sliced[0]]
    in_slabs(adam, [*sliced, denom], max_bytes=64)  # 64 bytes: one member per call
    assert all(torch.equal(a, b) for la, lb in zip(whole, sliced) for a, b in zip(la, lb))


def test_cli_with_two_runs_writes_what_it_writes_for_each_alone(tmp_path):
    dataset = tmp_path / "dataset.npz"
    np.savez(dataset, pool=POOL, test=XT)
    trains = []
    for seed, n in enumerate((40, 24)):
        path = tmp_path / f"train{seed}.npz"
        np.savez(path, x=POOL[:n], indices=np.arange(n))
        trains.append(str(path))
    model = '{"width": 32, "depth": 1, "emb_dim": 8}'
    cfg = ('{"batch_size": 16, "checkpoints_per_decade": 2, "probe_size": 32, "lr": 0.003, "max_steps": 20,'
           ' "device": "cpu", "log_every": 1000000, "grouped": true}')
    outs = [str(tmp_path / f"g{s}.nc") for s in (0, 1)]
    train_stage.main(["--train", *trains, "--seed", "0", "1", "--dataset", str(dataset), "--model", model,
                "--train-cfg", cfg, "--checkpoints", str(tmp_path / "gs0"), str(tmp_path / "gs1"), "--out", *outs])
    torch.set_num_threads(1)
    for seed in (0, 1):
        ref = str(tmp_path / f"s{seed}.nc")
        train_stage.main(["--train", trains[seed], "--dataset", str(dataset), "--model", model,
                    "--train-cfg", cfg.replace("true", "false"), "--seed", str(seed),
                    "--checkpoints", str(tmp_path / f"ss{seed}"), "--out", ref])
        with xr.open_dataset(outs[seed], engine="h5netcdf") as g, xr.open_dataset(ref, engine="h5netcdf") as s:
            # the trajectory hash ignores `grouped`: either kind of job continues the other's checkpoints
            assert g.attrs["trajectory_hash"] == s.attrs["trajectory_hash"]
            assert g.attrs["checkpoint_dir"] == str(tmp_path / f"gs{seed}")
            xr.testing.assert_allclose(g, s, rtol=1e-5)
            assert list(g.coords) == list(s.coords) and int(g["n"]) == (40, 24)[seed]
            assert all(g[v].attrs == s[v].attrs for v in g.variables)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_fused_adam_on_stacked_members_matches_torch_optim_fused_bit_for_bit(weight_decay):
    """The grouped Adam on CPU/CUDA: torch's fused kernel on [k, ...] stacks, with transposed
    (non-contiguous) gradients as vmap returns them, equals torch.optim.Adam(fused=True) per member."""
    gen = torch.Generator().manual_seed(0)
    stacked = [torch.randn(3, 5, 4, generator=gen), torch.randn(3, 7, generator=gen)]
    ref = [[p[m].clone().requires_grad_() for p in stacked] for m in range(3)]
    opts = [torch.optim.Adam(r, lr=1e-2, weight_decay=weight_decay, fused=True) for r in ref]
    m, v = [torch.zeros_like(p) for p in stacked], [torch.zeros_like(p) for p in stacked]
    for step in range(1, 5):
        grads = [torch.randn(3, 4, 5, generator=gen).transpose(1, 2), torch.randn(3, 7, generator=gen)]
        assert not grads[0].is_contiguous()
        for k in range(3):
            for r, g in zip(ref[k], grads):
                r.grad = g[k].contiguous()  # as nn.Linear gives it (clone() would keep the strides)
            opts[k].step()
        fused_adam_update_(stacked, grads, m, v, step=step, lr=1e-2, weight_decay=weight_decay)
        for k in range(3):
            for p, r in zip(stacked, ref[k]):
                assert torch.equal(p[k], r.detach())


@pytest.mark.parametrize("parameterization", ["edm", "ddpm"])
@pytest.mark.parametrize("arch", ["mlp", "time_mlp", "time_mlp_emb", "unet"])
def test_stacked_denoiser_equals_each_members_module(parameterization, arch):
    """The stacked forward gives every member its own module's output; a stack of one exactly."""
    cfg = ModelConfig(arch=arch, width=8 if arch == "unet" else 32, depth=2, emb_dim=8, channel_mult=[1, 2],
                      attn_levels=[], num_res_blocks=1, parameterization=parameterization)
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_denoiser(cfg, data_shape=(1, 8, 8)).eval())
    params, buffers = stack_modules(nets)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 1, 8, 8, generator=gen)
    sigma = torch.exp(torch.randn(3, 4, generator=gen))
    with torch.no_grad():
        got = StackedDenoiser(nets[0], params, buffers)(x, sigma)
        assert got.shape == x.shape
        for m, net in enumerate(nets):
            torch.testing.assert_close(got[m], net(x[m], sigma[m]), rtol=1e-5, atol=1e-5)
        one = StackedDenoiser(nets[0], params, buffers).member(1)(x[1], sigma[1])  # unstacked: the module's kernels
        assert torch.equal(one, nets[1](x[1], sigma[1]))
        view = StackedDenoiser(nets[0], {k: v[1:2] for k, v in params.items()},
                               {k: v[1:2] for k, v in buffers.items()})(x[1:2], sigma[1:2])  # a stack of one
        assert torch.equal(view[0], nets[1](x[1], sigma[1]))


def test_ddpm_group_of_three_matches_each_member_alone(tmp_path):
    extra = VARIANTS["ddpm-clip-wd"]
    members = [(POOL[:n], seed, tmp_path / f"g{seed}") for seed, n in enumerate((40, 24, 10))]
    got = group(members, 30, extra)
    for (x, seed, gdir), metrics in zip(members, got):
        expected = single(tmp_path / f"s{seed}", x, seed, 30, extra)
        for step in expected:
            for key, value in expected[step].items():
                assert metrics[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6)
        assert_same_payload(ckpt(tmp_path / f"s{seed}", 30), ckpt(gdir, 30), atol=1e-5)
