"""The U-Net recipe of arXiv 2505.17638 as configuration: dropout, centring, the beta schedule, the
batch min(n, B) and the checkpoint grid (issue 21), each against its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffmem.checkpoint import DATA_OFFSET, checkpoint_path, load_checkpoint
from diffmem.config import (
    ConfigError,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    checkpoint_grid,
    paper_checkpoint_steps,
    split_run_settings,
    validate_config,
)
from diffmem.engine import Run, Stream, data_offset, run_training, train_runs, trajectory_hash
from diffmem.generation import ShiftedDenoiser, denoiser_from_checkpoint, generate, generate_stack
from diffmem.models import build_denoiser
from diffmem.models.unet import ChannelDropout, UNet

SHAPE = (1, 8, 8)
CPU = torch.device("cpu")


def unet_cfg(**kw) -> ModelConfig:
    return ModelConfig.from_dict({"arch": "unet", "width": 8, "emb_dim": 16, "parameterization": "ddpm",
                                  "channel_mult": [1, 2], "attn_levels": [1], "num_res_blocks": 1, **kw})


def train_cfg(**kw) -> TrainConfig:
    return TrainConfig.from_dict({"optimizer": "sgd", "lr": 0.01, "momentum": 0.95, "batch_size": 4,
                                  "max_steps": 6, "checkpoint_steps": [3], "keep": "all", "log_every": 1000,
                                  "probe_size": 16, **kw})


def digits_like(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 64)).astype(np.float32)


def weights(state_dir, step: int) -> dict:
    return load_checkpoint(checkpoint_path(state_dir, step))["model"]


# ---- dropout


def test_channel_dropout_zeroes_whole_channels_and_rescales():
    layer = ChannelDropout(0.5).train()
    x = torch.ones(64, 16, 4, 4)
    y = layer(x)
    per_channel = y.reshape(64, 16, -1)
    assert torch.all(per_channel == per_channel[..., :1])  # a channel is kept or dropped whole
    assert set(torch.unique(y).tolist()) == {0.0, 2.0}  # kept channels scaled by 1 / (1 - p)
    assert 0.4 < float((per_channel[..., 0] == 0).float().mean()) < 0.6
    assert torch.equal(layer.eval()(x), x)


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    net = UNet(in_channels=1, width=8, image_size=8, dropout=0.3)
    plain = UNet(in_channels=1, width=8, image_size=8, dropout=0.0)
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():  # the zero-initialised output layer would hide any difference
        for m in (net, plain):
            m.out.weight.fill_(0.1)
    x, c = torch.randn(4, *SHAPE), torch.full((4,), 500.0)
    net.eval(), plain.eval()
    assert torch.equal(net(x, c), plain(x, c))  # eval: no dropout at all
    net.train()
    a, b = net(x, c), net(x, c)
    assert not torch.equal(a, b)  # training: fresh masks at every call
    assert not torch.allclose(a, plain.train()(x, c))


def test_dropout_is_a_unet_option_in_the_config():
    cfg = {"run": ["e"], "experiments": {"e": {"data": {"dataset": "digits", "n_train": [16], "seeds": [0]},
                                              "model": {"arch": "mlp", "dropout": 0.1}}}}
    with pytest.raises(ConfigError, match="model.dropout"):
        validate_config(cfg)


def test_dropout_masks_come_from_each_runs_stream_grouped_or_alone(tmp_path):
    """With dropout, two runs trained as one stack end where each ends alone (masks per run stream)."""
    mc, tc = unet_cfg(dropout=0.2), train_cfg()
    xs = [digits_like(8, 1), digits_like(12, 2)]
    test = digits_like(10, 3)
    kw = dict(model_cfg=mc, train_cfg=tc, data_shape=SHAPE, device=CPU, log=lambda m: None)
    train_runs([Run(x, s, tmp_path / f"grouped{s}") for s, x in enumerate(xs)], test, **kw)
    for s, x in enumerate(xs):
        run_training(x, test, seed=s, state_dir=tmp_path / f"alone{s}", **kw)
        alone, grouped = weights(tmp_path / f"alone{s}", 6), weights(tmp_path / f"grouped{s}", 6)
        for name in alone:
            torch.testing.assert_close(grouped[name], alone[name], rtol=1e-5, atol=1e-6)
    # and dropout really changed the trajectory
    run_training(xs[0], test, seed=0, state_dir=tmp_path / "nodrop", model_cfg=unet_cfg(), train_cfg=tc,
                 data_shape=SHAPE, device=CPU, log=lambda m: None)
    assert not torch.equal(weights(tmp_path / "nodrop", 6)["net.inp.weight"],
                           weights(tmp_path / "alone0", 6)["net.inp.weight"])


def test_dropout_run_resumes_exactly(tmp_path):
    mc = unet_cfg(dropout=0.2)
    x, test = digits_like(8, 1), digits_like(10, 3)
    kw = dict(model_cfg=mc, data_shape=SHAPE, device=CPU, log=lambda m: None)
    run_training(x, test, seed=0, state_dir=tmp_path / "straight", train_cfg=train_cfg(), **kw)
    run_training(x, test, seed=0, state_dir=tmp_path / "resumed", train_cfg=train_cfg(max_steps=3), **kw)
    run_training(x, test, seed=0, state_dir=tmp_path / "resumed", train_cfg=train_cfg(), **kw)
    a, b = weights(tmp_path / "straight", 6), weights(tmp_path / "resumed", 6)
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ---- centring


def test_data_offset_channel_and_pixel():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    chan = data_offset(x, "channel")
    assert chan.shape == (3, 2, 2)
    for c in range(3):
        assert torch.all(chan[c] == x[:, c].mean())
    torch.testing.assert_close(data_offset(x, "pixel"), x.mean(dim=0))
    assert data_offset(x, "none") is None
    flat = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    assert torch.equal(data_offset(flat, "channel"), torch.full((2,), 4.0))  # flat data: one channel


def test_centring_makes_training_blind_to_a_shift_and_samples_are_shifted_back(tmp_path):
    """Training on x and on x + 0.7 with train.center is the same computation on the same centred data;
    the checkpoints carry the offset and the samples come back in data coordinates."""
    mc, tc = unet_cfg(), train_cfg(center="channel")
    x, test = digits_like(8, 1), digits_like(10, 3)
    kw = dict(model_cfg=mc, train_cfg=tc, data_shape=SHAPE, device=CPU, log=lambda m: None)
    run_training(x, test, seed=0, state_dir=tmp_path / "a", **kw)
    run_training(x + 0.7, test + 0.7, seed=0, state_dir=tmp_path / "b", **kw)
    ca, cb = (load_checkpoint(checkpoint_path(tmp_path / d, 6)) for d in "ab")
    for name in ca["model"]:
        torch.testing.assert_close(ca["model"][name], cb["model"][name], rtol=1e-5, atol=1e-6)
    assert torch.allclose(cb[DATA_OFFSET] - ca[DATA_OFFSET], torch.tensor(0.7), atol=1e-6)
    assert torch.allclose(ca[DATA_OFFSET], torch.tensor(float(x.mean())), atol=1e-6)  # one channel

    sc = SampleConfig.from_dict({"num_samples": 6, "num_steps": 5})
    da, db = (denoiser_from_checkpoint(c, use_ema=False, device=CPU) for c in (ca, cb))
    assert isinstance(da, ShiftedDenoiser)
    sa, sb = (generate(d, sc, data_shape=SHAPE, device=CPU) for d in (da, db))
    np.testing.assert_allclose(sb - sa, 0.7, atol=1e-4)
    # the samples are the centred network's samples plus the offset
    inner = generate(da.inner, sc, data_shape=SHAPE, device=CPU)
    np.testing.assert_allclose(sa, inner + ca[DATA_OFFSET].reshape(1, -1).numpy(), atol=1e-6)
    # stacked sampling of several checkpoints adds each one's offset too
    s3, s6 = generate_stack([denoiser_from_checkpoint(load_checkpoint(checkpoint_path(tmp_path / "b", s)),
                                                      use_ema=False, device=CPU) for s in (3, 6)],
                            sc, data_shape=SHAPE, device=CPU)
    np.testing.assert_allclose(s6, sb, rtol=1e-5, atol=1e-4)  # stacked vs alone: float rounding
    s3_alone = generate(denoiser_from_checkpoint(load_checkpoint(checkpoint_path(tmp_path / "b", 3)), use_ema=False,
                                                 device=CPU), sc, data_shape=SHAPE, device=CPU)
    np.testing.assert_allclose(s3, s3_alone, rtol=1e-5, atol=1e-4)


def test_shifted_denoiser_is_the_centred_one_in_data_coordinates():
    torch.manual_seed(0)
    inner = build_denoiser(unet_cfg(), data_shape=SHAPE).eval()
    with torch.no_grad():
        inner.net.out.weight.normal_()
    offset = torch.full(SHAPE, 0.25)
    shifted = ShiftedDenoiser(inner, offset)
    x, sigma = torch.randn(3, *SHAPE), torch.tensor([0.1, 1.0, 10.0])
    torch.testing.assert_close(shifted(x + offset, sigma), inner(x, sigma) + offset, rtol=1e-4, atol=1e-4)
    assert torch.equal(shifted.sigmas, inner.sigmas)


def test_centring_is_for_trained_networks():
    cfg = {"run": ["e"], "experiments": {"e": {"data": {"dataset": "digits", "n_train": [16], "seeds": [0]},
                                              "model": {"family": "empirical"}, "train": {"center": "channel"}}}}
    with pytest.raises(ConfigError, match="train.center"):
        validate_config(cfg)


# ---- the pixel scale


def test_pixel_scale_unit_is_the_papers_zero_one_range():
    from diffmem.config import DataConfig
    from diffmem.data import prepare_dataset

    sym = prepare_dataset(DataConfig.from_dict({"dataset": "digits"}))
    unit = prepare_dataset(DataConfig.from_dict({"dataset": "digits", "pixel_scale": "unit"}))
    assert sym.pool.min() == -1 and sym.pool.max() == 1
    assert unit.pool.min() == 0 and unit.pool.max() == 1
    np.testing.assert_allclose(unit.pool, (sym.pool + 1) / 2)  # same split, same order
    np.testing.assert_allclose(unit.test, (sym.test + 1) / 2)
    assert split_run_settings("data", {"pixel_scale": "symmetric", "dataset": "digits"})[0] == {"dataset": "digits"}
    cfg = {"run": ["e"], "experiments": {"e": {"data": {"dataset": "gmm", "pixel_scale": "unit", "n_train": [16],
                                                        "seeds": [0]}}}}
    with pytest.raises(ConfigError, match="data.pixel_scale"):
        validate_config(cfg)


# ---- the beta schedule, the batch and the grid


def test_ddpm_schedule_is_the_papers_linear_beta():
    """The authors' DiffusionConfig: beta = linspace(1e-4, 0.02, 1000), alpha_bar = cumprod(1 - beta);
    diffmem's noise level of timestep t is sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)."""
    den = build_denoiser(unet_cfg(), data_shape=SHAPE)
    beta = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - beta)
    np.testing.assert_allclose(den.sigmas.double().numpy(), np.sqrt((1 - alpha_bar) / alpha_bar), rtol=1e-5)


@pytest.mark.parametrize("n, batch, expected", [(100, 16, 16), (16, 16, None), (10, 512, None)])
def test_batch_is_min_of_n_and_B(n, batch, expected):
    stream = Stream(torch.Generator().manual_seed(0), torch.randperm(n), 0)
    idx = stream.next_batch(n, batch)
    if expected is None:
        assert idx is None  # the full set, every step
    else:
        seen = torch.cat([idx] + [stream.next_batch(n, batch) for _ in range(n // batch - 1)])
        assert idx.shape == (expected,) and len(set(seen.tolist())) == len(seen)  # an epoch without repeats


def test_paper_grid_is_the_authors_get_training_times():
    # written out from Experiments/src/Utils/cfg.py: three log stretches, each floored to a multiple
    parts = [0]
    for lo, hi, num, mod in ((np.log10(251), 4, 10, 250), (4, 6, 90, 5000), (6, 7, 10, 5000)):
        a = np.logspace(lo, hi, num)
        parts += list(np.unique(a - a % mod).astype(int))
    expected = sorted(set(parts))
    assert paper_checkpoint_steps() == expected
    assert len(expected) == 81 and expected[:6] == [0, 250, 500, 750, 1250, 1750] and expected[-1] == 10**7
    grid = checkpoint_grid({"max_steps": 12_345, "checkpoint_grid": "paper", "checkpoints_per_decade": 8})
    assert grid == [s for s in expected if s <= 12_345] + [12_345]
    explicit = checkpoint_grid({"max_steps": 100, "checkpoint_grid": "paper", "checkpoint_steps": [7],
                                "checkpoints_per_decade": 8})
    assert explicit == [0, 7, 100]


# ---- new keys at their defaults change nothing that exists


def test_new_keys_at_default_leave_params_and_trajectories_as_before():
    train = TrainConfig.from_dict({})
    model = ModelConfig.from_dict({})
    result, _ = split_run_settings("train", {"center": "none", "checkpoint_grid": "log", "lr": 0.1})
    assert result == {"lr": 0.1}
    result, _ = split_run_settings("train", {"center": "channel", "checkpoint_grid": "paper"})
    assert result == {"center": "channel", "checkpoint_grid": "paper"}
    assert split_run_settings("model", {"dropout": 0.0, "width": 8})[0] == {"width": 8}
    x = digits_like(4, 0)
    base = trajectory_hash(model, train, x_train=x, seed=0)
    assert trajectory_hash(ModelConfig.from_dict({"dropout": 0.1}), train, x_train=x, seed=0) != base
    assert trajectory_hash(model, TrainConfig.from_dict({"center": "pixel"}), x_train=x, seed=0) != base
    # the grid decides where training stops, not the trajectory
    assert trajectory_hash(model, TrainConfig.from_dict({"checkpoint_grid": "paper"}), x_train=x, seed=0) == base


# ---- the paper-scale recipe's GPU check (benchmarks/gpu_recipe_check.sh)


def test_the_gpu_recipe_benchmark_trains_celeba_papers_recipe():
    import importlib.util
    import subprocess
    from pathlib import Path
    from types import SimpleNamespace

    repo = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("bench_training", repo / "benchmarks" / "bench_training.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run = SimpleNamespace(device="cpu", precision="fp32", compile=False, channels_last=False, tf32=False)
    model, train, shape = bench.model_setup("celeba_paper", run)
    assert (model.arch, model.width, tuple(model.channel_mult), tuple(model.attn_levels), model.num_res_blocks,
            model.dropout, model.parameterization) == ("unet", 32, (1, 2, 4), (1, 2), 2, 0.1, "ddpm")
    assert (train.optimizer, train.lr, train.momentum, train.batch_size, train.center) == ("sgd", 0.01, 0.95, 512,
                                                                                           "channel")
    assert shape == (1, 32, 32)
    subprocess.run(["bash", "-n", str(repo / "benchmarks" / "gpu_recipe_check.sh")], check=True)
