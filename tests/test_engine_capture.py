"""The capture and precision options of the training engine: train.compile, train.channels_last,
train.precision. On CPU they are checked against the eager fp32 engine; the CUDA paths (CUDA graphs
through torch.compile mode reduce-overhead, bf16 tensor cores) are checked only where CUDA exists."""

import numpy as np
import pytest
import torch

from diffmem.checkpoint import checkpoint_path, load_checkpoint
from diffmem.config import ModelConfig, TrainConfig
from diffmem.engine import Run, run_training, train_runs

POOL = np.random.default_rng(0).normal(size=(60, 16)).astype(np.float32)
XT = np.random.default_rng(1).normal(size=(20, 16)).astype(np.float32)
SETTINGS = {"batch_size": 16, "checkpoints_per_decade": 1, "probe_size": 32, "lr": 3e-3, "log_every": 10**6}
MLP = ModelConfig(width=32, depth=1, emb_dim=8)
UNET = ModelConfig(arch="unet", width=8, channel_mult=[1, 2], num_res_blocks=1, attn_levels=[], emb_dim=8)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def weights(state_dir, step):
    return load_checkpoint(checkpoint_path(state_dir, step))["model"]


def assert_close(a, b, *, atol):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].cpu(), b[key].cpu(), rtol=0, atol=atol, msg=key)


def train(state_dir, *, model=MLP, device="cpu", runs=1, max_steps=10, data_shape=(16,), **extra):
    cfg = TrainConfig(max_steps=max_steps, **{**SETTINGS, **extra})
    sizes = (40, 24, 32, 48)[:runs]
    return train_runs([Run(POOL[:n], seed, state_dir / f"m{seed}") for seed, n in enumerate(sizes)], XT,
                      model_cfg=model, train_cfg=cfg, data_shape=data_shape, device=torch.device(device),
                      log=lambda m: None)


@pytest.mark.parametrize("runs", [1, 2])
def test_compiled_step_follows_the_eager_trajectory(tmp_path, runs):
    eager = train(tmp_path / "eager", runs=runs)
    compiled = train(tmp_path / "compiled", runs=runs, compile=True)
    for m in range(runs):
        assert_close(weights(tmp_path / "eager" / f"m{m}", 10), weights(tmp_path / "compiled" / f"m{m}", 10), atol=1e-4)
        for step in eager[m]:
            assert compiled[m][step] == pytest.approx(eager[m][step], rel=1e-4)


def test_channels_last_unet_follows_the_contiguous_trajectory(tmp_path):
    shape = (1, 4, 4)
    plain = train(tmp_path / "plain", model=UNET, data_shape=shape, max_steps=3)
    last = train(tmp_path / "last", model=UNET, data_shape=shape, max_steps=3, channels_last=True)
    assert_close(weights(tmp_path / "plain" / "m0", 3), weights(tmp_path / "last" / "m0", 3), atol=1e-5)
    assert last[0][3] == pytest.approx(plain[0][3], rel=1e-5)


# ----------------------------------------------------------------------------- CUDA only


@CUDA
def test_cuda_run_is_reproducible_from_its_seed(tmp_path):
    # the streams are device generators, so the draws differ between devices; the same device must agree
    a = train(tmp_path / "a", device="cuda")
    b = train(tmp_path / "b", device="cuda")
    assert a == b
    assert_close(weights(tmp_path / "a" / "m0", 10), weights(tmp_path / "b" / "m0", 10), atol=0)


@CUDA
def test_cuda_graph_capture_follows_the_eager_trajectory(tmp_path):
    eager = train(tmp_path / "eager", device="cuda", runs=2)
    graphs = train(tmp_path / "graphs", device="cuda", runs=2, compile=True)
    for m in range(2):
        assert_close(weights(tmp_path / "eager" / f"m{m}", 10), weights(tmp_path / "graphs" / f"m{m}", 10), atol=1e-4)
        assert graphs[m][10] == pytest.approx(eager[m][10], rel=1e-3)


@CUDA
def test_cuda_member_alone_and_in_a_stack_of_four_draw_the_same(tmp_path):
    alone = run_training(POOL[:40], XT, model_cfg=MLP, train_cfg=TrainConfig(max_steps=10, **SETTINGS), seed=0,
                         state_dir=tmp_path / "alone", data_shape=(16,), device=torch.device("cuda"),
                         log=lambda m: None)
    stacked = train(tmp_path / "stack", device="cuda", runs=4)
    a, b = (load_checkpoint(checkpoint_path(d, 10)) for d in (tmp_path / "alone", tmp_path / "stack" / "m0"))
    assert torch.equal(a["rng"], b["rng"]) and torch.equal(a["perm"], b["perm"])
    assert_close(a["model"], b["model"], atol=1e-5)
    assert stacked[0][10] == pytest.approx(alone[10], rel=1e-4)


@CUDA
def test_cuda_bf16_channels_last_unet_trains(tmp_path):
    shape = (1, 4, 4)
    fp32 = train(tmp_path / "fp32", model=UNET, data_shape=shape, device="cuda", max_steps=3)
    bf16 = train(tmp_path / "bf16", model=UNET, data_shape=shape, device="cuda", max_steps=3, precision="bf16",
                 channels_last=True, compile=True)
    assert np.isfinite(bf16[0][3]["train_loss"])
    assert bf16[0][3]["train_loss"] == pytest.approx(fp32[0][3]["train_loss"], rel=5e-2)


@CUDA
@pytest.mark.parametrize("runs", [1, 4])
def test_cuda_training_step_never_waits_for_the_device(runs):
    """No host-device synchronization inside a step (a blocking copy, .item(), a data-dependent shape):
    the host must run ahead of the GPU, or launch time and GPU time add up."""
    from diffmem.engine import StackData, make_step_loss, start_stack, train_step
    from diffmem.models import build_denoiser

    device = torch.device("cuda")
    cfg = TrainConfig(max_steps=10, **SETTINGS)
    model = ModelConfig(width=32, depth=1, emb_dim=8, parameterization="ddpm")
    sizes = (40, 40, 40, 40)[:runs]
    stack = start_stack([Run(POOL[:n], seed, None) for seed, n in enumerate(sizes)], [None] * runs, model_cfg=model,
                        train_cfg=cfg, data_shape=(16,), device=device, log=lambda m: None)
    data = StackData.stack([torch.as_tensor(POOL[:n], device=device) for n in sizes])
    base = build_denoiser(model, data_shape=(16,)).to(device)
    step_loss = make_step_loss(base, cfg, device)
    for _ in range(3):  # the first steps allocate the optimizer state
        train_step(stack, data, step_loss=step_loss, model_cfg=model, train_cfg=cfg, vp_sigmas=base.sigmas)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            train_step(stack, data, step_loss=step_loss, model_cfg=model, train_cfg=cfg, vp_sigmas=base.sigmas)
    finally:
        torch.cuda.set_sync_debug_mode("default")
