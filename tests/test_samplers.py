import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffmem import native
from diffmem.models.precond import VPPrecond
from diffmem.samplers import ddim_sampler, heun_sampler, karras_sigmas, per_sample_latents
from diffmem.stages import train as train_stage


def test_latents_independent_of_batching():
    full = per_sample_latents(10, (3,), base_seed=7)
    tail = per_sample_latents(4, (3,), base_seed=7, start=6)
    assert torch.equal(full[6:], tail)
    assert not torch.equal(per_sample_latents(10, (3,), base_seed=8), full)


def gaussian_denoiser(mean, var):
    """Exact posterior mean for N(mean, var I) data under x = x0 + sigma z."""
    def denoise(x, sigma):
        s2 = sigma.double()[:, None] ** 2
        return (mean + var / (var + s2) * (x.double() - mean)).float()
    return denoise


def test_heun_with_exact_gaussian_denoiser_recovers_the_distribution():
    z = per_sample_latents(2000, (2,), base_seed=0)
    x = heun_sampler(gaussian_denoiser(1.5, 0.25), z, num_steps=32)
    assert np.allclose(x.mean(0).numpy(), 1.5, atol=0.05)
    assert np.allclose(x.std(0).numpy(), 0.5, atol=0.05)


def test_ddim_with_exact_gaussian_denoiser_recovers_the_distribution():
    pre = VPPrecond(torch.nn.Identity())
    z = per_sample_latents(2000, (2,), base_seed=0)
    x = ddim_sampler(gaussian_denoiser(-1.0, 0.5), z, num_steps=200, vp_sigmas=pre.sigmas)
    assert np.allclose(x.mean(0).numpy(), -1.0, atol=0.06)
    assert np.allclose(x.var(0).numpy(), 0.5, atol=0.06)


def test_karras_schedule_ends():
    s = karras_sigmas(10, sigma_min=0.002, sigma_max=80, rho=7)
    assert s[0] == 80 and abs(float(s[-2]) - 0.002) < 1e-12 and s[-1] == 0
    assert torch.all(s[:-1] > s[1:])


def em(denoiser, num, dim, *, num_steps, base_seed=0, **grid):
    from diffmem.samplers import euler_maruyama_sampler, per_sample_generators

    z = per_sample_latents(num, (dim,), base_seed=base_seed)
    sigmas = karras_sigmas(num_steps, **({"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0} | grid))
    return euler_maruyama_sampler(denoiser, z, sigmas=sigmas,
                                  generators=per_sample_generators(num, base_seed=base_seed))


def test_euler_maruyama_with_exact_gaussian_denoiser_recovers_the_distribution():
    x = em(gaussian_denoiser(1.5, 0.25), 2000, 2, num_steps=200)
    assert np.allclose(x.mean(0).numpy(), 1.5, atol=0.04)
    assert np.allclose(x.std(0).numpy(), 0.5, atol=0.03)


def test_euler_maruyama_is_stochastic_where_heun_is_not():
    z = per_sample_latents(500, (2,), base_seed=0)
    ode = heun_sampler(gaussian_denoiser(0.0, 1.0), z, num_steps=50)
    sde = em(gaussian_denoiser(0.0, 1.0), 500, 2, num_steps=50)
    other = em(gaussian_denoiser(0.0, 1.0), 500, 2, num_steps=50, base_seed=1)
    assert (ode - sde).abs().mean() > 0.3 and (sde - other).abs().mean() > 0.3


def gmm_denoiser(mu, dim):
    """Exact posterior mean for 1/2 N(+mu 1, I) + 1/2 N(-mu 1, I) under x = x0 + sigma z."""
    m = torch.full((dim,), float(mu), dtype=torch.float64)

    def denoise(x, sigma):
        x, s2 = x.double(), sigma.double()[:, None] ** 2
        w_plus = torch.sigmoid(2 * (x @ m)[:, None] / (1 + s2))
        post = lambda c: c + (x - c) / (1 + s2)  # noqa: E731
        return (w_plus * post(m) + (1 - w_plus) * post(-m)).float()
    return denoise


def test_euler_maruyama_samples_the_two_component_mixture():
    # 1,000 steps as in arXiv 2505.17638: with 100-200 Karras steps Euler-Maruyama inflates the
    # variance of unit-variance data by ~8 % (measured), at 1,000 by < 1 %
    x = em(gmm_denoiser(1.0, 8), 1000, 8, num_steps=1000).double()
    side = x.mean(1) > 0
    assert abs(float(side.double().mean()) - 0.5) < 0.06
    for sign, rows in ((1.0, x[side]), (-1.0, x[~side])):
        assert np.allclose(rows.mean(0).numpy(), sign, atol=0.12)
        assert abs(float(rows.var(0).mean()) - 1.0) < 0.07


def test_sampler_option_in_generate_is_batch_independent():
    from diffmem.config import SampleConfig
    from diffmem.generation import generate, sample_cache_dir

    class Exact(torch.nn.Module):
        def forward(self, x, sigma):
            return gaussian_denoiser(0.0, 1.0)(x, sigma)

    cfg = SampleConfig(num_samples=10, num_steps=20, sampler="euler_maruyama", batch_size=3)
    a = generate(Exact(), cfg, data_shape=(4,), device=torch.device("cpu"))
    b = generate(Exact(), SampleConfig(**{**cfg.__dict__, "batch_size": 64}), data_shape=(4,), device=torch.device("cpu"))
    assert np.array_equal(a, b)
    heun = generate(Exact(), SampleConfig(num_samples=10, num_steps=20), data_shape=(4,), device=torch.device("cpu"))
    assert not np.allclose(a, heun)
    # the sampler is part of the cache key, and so is what was sampled (a trajectory, a closed-form model)
    assert sample_cache_dir("s", cfg, source="t") != sample_cache_dir("s", SampleConfig(num_samples=10, num_steps=20), source="t")
    assert sample_cache_dir("s", cfg, source="t") != sample_cache_dir("s", cfg, source="u")
    assert sample_cache_dir("s", cfg, source="t").parent == Path("s") / "samples"


def test_sampler_must_match_the_parameterization():
    import pytest

    from diffmem.config import ConfigError, validate_config

    def cfg(parameterization, sampler):
        return {"experiments": {"x": {"data": {"dataset": "digits", "n_train": [8], "seeds": [0]},
                                      "model": {"parameterization": parameterization}, "sample": {"sampler": sampler}}}}

    with pytest.raises(ConfigError, match="sample.sampler"):
        validate_config(cfg("ddpm", "heun"))
    for parameterization in ("edm", "ddpm"):
        assert validate_config(cfg(parameterization, "euler_maruyama"))["experiments"]["x"]["sample"]["sampler"] == "euler_maruyama"


@pytest.mark.parametrize("parameterization,sampler,arch", [("edm", "auto", "mlp"), ("ddpm", "auto", "mlp"),
                                                             ("edm", "euler_maruyama", "mlp"), ("ddpm", "auto", "time_mlp")])
def test_stacked_checkpoints_sample_as_each_alone(parameterization, sampler, arch):
    """sample.stack_checkpoints: k denoisers sampled together give each its own samples (same latents and
    noise streams), to the float rounding of the batched kernels."""
    from diffmem.config import ModelConfig, SampleConfig
    from diffmem.generation import generate, generate_stack
    from diffmem.models import build_denoiser

    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_denoiser(ModelConfig(arch=arch, width=16, depth=1, emb_dim=8,
                                               parameterization=parameterization), data_shape=(4,)).eval())
    cfg = SampleConfig(num_samples=7, num_steps=6, sampler=sampler, batch_size=8)
    together = generate_stack(nets, cfg, data_shape=(4,), device=torch.device("cpu"))
    for net, got in zip(nets, together):
        alone = generate(net, cfg, data_shape=(4,), device=torch.device("cpu"))
        assert got.shape == alone.shape == (7, 4)
        np.testing.assert_allclose(got, alone, rtol=1e-4, atol=1e-5)
    assert not np.allclose(together[0], together[1])  # each checkpoint its own samples


def train_small_run(tmp_path, *, dim: int, max_steps: int, per_decade: int) -> None:
    """`diffmem train` of a width-16 MLP on 20 of 60 normal points in `dim` dimensions: checkpoints in
    tmp_path/checkpoints, train metrics tmp_path/tm.nc (what `diffmem sample` reads)."""
    pool = np.random.default_rng(0).normal(size=(60, dim)).astype(np.float32)
    np.savez(tmp_path / "dataset.npz", pool=pool, test=pool[:10])
    np.savez(tmp_path / "train.npz", x=pool[:20], indices=np.arange(20))
    train_cfg = json.dumps({"max_steps": max_steps, "checkpoints_per_decade": per_decade, "probe_size": 16,
                            "device": "cpu"})
    train_stage.main(["--train", str(tmp_path / "train.npz"), "--dataset", str(tmp_path / "dataset.npz"),
                      "--model", '{"width": 16, "depth": 1, "emb_dim": 8}', "--train-cfg", train_cfg,
                      "--seed", "0", "--checkpoints", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "tm.nc")])


def test_sample_stage_stacks_checkpoints_into_the_same_files(tmp_path):
    """`diffmem sample` with stack_checkpoints 3 writes every checkpoint's samples, as 1 does."""
    from diffmem.stages import sample

    train_small_run(tmp_path, dim=4, max_steps=30, per_decade=2)
    manifests = {}
    for k in (1, 3):
        cfg = json.dumps({"num_samples": 5, "num_steps": 4, "stack_checkpoints": k, "batch_size": 6})
        out = tmp_path / f"samples{k}.json"
        sample.main(["--train-metrics", str(tmp_path / "tm.nc"), "--sample-cfg", cfg, "--device", "cpu", "--out", str(out)])
        manifests[k] = json.loads(out.read_text())
        if k == 1:  # the cache key ignores stack_checkpoints: clear it so that k = 3 samples afresh
            arrays = {step: np.load(path) for step, path in manifests[1]["files"].items()}
            for path in manifests[1]["files"].values():
                Path(path).unlink()
    assert manifests[1]["steps"] == manifests[3]["steps"] == [0, 1, 3, 10, 30]
    assert manifests[1]["files"] == manifests[3]["files"]  # the same cache folder
    for step, path in manifests[3]["files"].items():
        np.testing.assert_allclose(np.load(path), arrays[step], rtol=1e-4, atol=1e-5)


def _mlps(parameterization="edm", arch="mlp", count=2):
    from diffmem.config import ModelConfig
    from diffmem.models import build_denoiser

    nets = []
    for seed in range(count):
        torch.manual_seed(seed)
        net = build_denoiser(ModelConfig(arch=arch, width=32, depth=2, emb_dim=8, parameterization=parameterization),
                             data_shape=(12,)).eval()
        with torch.no_grad():  # off the initial values, so every layer matters
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        nets.append(net)
    return nets


needs_native = pytest.mark.skipif(native.available() is not None, reason="the native kernel does not run here")


@needs_native
@pytest.mark.parametrize("parameterization,sampler", [("edm", "auto"), ("ddpm", "auto"), ("edm", "euler_maruyama")])
def test_native_kernel_samples_torchs_samples_to_float_rounding(parameterization, sampler):
    """sample.kernel native: the same samples as torch's kernels to float rounding, not bit for bit."""
    from diffmem.config import SampleConfig
    from diffmem.generation import generate

    net = _mlps(parameterization, count=1)[0]
    cfg = SampleConfig(num_samples=40, num_steps=8, sampler=sampler, batch_size=16)
    cpu = torch.device("cpu")
    ours, theirs = (generate(net, cfg, data_shape=(12,), device=cpu, kernel=k) for k in ("native", "torch"))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert not np.array_equal(ours, theirs)


@needs_native
def test_native_samples_do_not_depend_on_the_batch_or_the_stack():
    """Under the native kernel a sample is the same bit for bit in any batch size and with stacked checkpoints."""
    from diffmem.config import SampleConfig
    from diffmem.generation import generate, generate_stack

    nets, cpu = _mlps(), torch.device("cpu")
    cfg = SampleConfig(num_samples=21, num_steps=6, batch_size=64)
    alone = [generate(net, cfg, data_shape=(12,), device=cpu, kernel="native") for net in nets]
    small = generate(nets[0], SampleConfig(**{**cfg.__dict__, "batch_size": 5}), data_shape=(12,), device=cpu,
                     kernel="native")
    together = generate_stack(nets, SampleConfig(**{**cfg.__dict__, "stack_checkpoints": 2}), data_shape=(12,),
                              device=cpu, kernel="native")
    assert np.array_equal(small, alone[0])
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
    assert not np.allclose(alone[0], alone[1])


def test_sampling_kernel_is_native_only_where_it_can_run(monkeypatch):
    """auto: native for the default MLP on CPU where the kernel runs, torch otherwise; native where it cannot run is
    a one-line error; torch is torch everywhere."""
    from diffmem import generation

    mlp, time_mlp = _mlps(count=1)[0], _mlps(arch="time_mlp", count=1)[0]
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(generation.native, "available", lambda: None)
    assert generation.sampling_kernel("auto", mlp, device=cpu) == "native"
    assert generation.sampling_kernel("native", mlp, device=cpu) == "native"
    assert generation.sampling_kernel("torch", mlp, device=cpu) == "torch"
    assert generation.sampling_kernel("auto", time_mlp, device=cpu) == "torch"
    assert generation.sampling_kernel("auto", mlp, device=gpu) == "torch"
    with pytest.raises(ValueError, match="not the default MLP") as exc:
        generation.sampling_kernel("native", time_mlp, device=cpu)
    assert "\n" not in str(exc.value)
    monkeypatch.setattr(generation.native, "available", lambda: "no C compiler to build the native kernels")
    assert generation.sampling_kernel("auto", mlp, device=cpu) == "torch"
    with pytest.raises(ValueError, match="sample.kernel: native cannot sample this run: no C compiler"):
        generation.sampling_kernel("native", mlp, device=cpu)


def test_the_kernel_as_used_keys_the_sample_cache():
    """torch's samples keep the cache of the samples before sample.kernel existed (its key leaves the kernel
    out, whatever the setting); the native kernel's go elsewhere."""
    from diffmem.config import SampleConfig, stable_hash
    from diffmem.generation import sample_cache_dir

    auto, torch_cfg = SampleConfig(), SampleConfig(kernel="torch")
    before = {k: v for k, v in auto.__dict__.items() if k not in ("batch_size", "stack_checkpoints", "kernel", "sampler")}
    assert sample_cache_dir("r", auto, source="t", kernel="torch") == Path("r") / "samples" / f"t-{stable_hash(before)}"
    assert sample_cache_dir("r", torch_cfg, source="t", kernel="torch") == sample_cache_dir("r", auto, source="t")
    assert sample_cache_dir("r", auto, source="t", kernel="native") != sample_cache_dir("r", auto, source="t")
    with pytest.raises(ValueError, match="torch or native"):
        sample_cache_dir("r", auto, source="t", kernel="auto")


@pytest.mark.parametrize("centred", [False, True])
def test_a_denoiser_given_another_checkpoints_weights_is_the_one_built_for_it(centred):
    """denoiser_from_checkpoint(into=...): the sampling stage loads each checkpoint into the last one's denoiser;
    it computes what a denoiser built for that checkpoint computes, bit for bit; another run's is refused."""
    import dataclasses

    from diffmem.checkpoint import DATA_OFFSET
    from diffmem.config import ModelConfig
    from diffmem.generation import denoiser_from_checkpoint

    nets, cpu = _mlps(), torch.device("cpu")
    cfg = {"model": dataclasses.asdict(ModelConfig(width=32, depth=2, emb_dim=8)), "data_shape": [12]}
    ckpts = [{"config": cfg, "model": net.state_dict(), "ema": None,
              DATA_OFFSET: np.full(12, 0.1 * (i + 1), dtype=np.float32) if centred else None}
             for i, net in enumerate(nets)]
    x, sigma = torch.randn(5, 12), torch.full((5,), 0.7)
    first = denoiser_from_checkpoint(ckpts[0], use_ema=True, device=cpu)
    before = first(x, sigma)
    reused = denoiser_from_checkpoint(ckpts[1], use_ema=True, device=cpu, into=first)
    fresh = denoiser_from_checkpoint(ckpts[1], use_ema=True, device=cpu)
    assert reused is first
    assert torch.equal(reused(x, sigma), fresh(x, sigma))
    assert not torch.equal(reused(x, sigma), before)
    other = dict(ckpts[0], **{DATA_OFFSET: None if centred else np.zeros(12, dtype=np.float32)})
    with pytest.raises(ValueError, match="another run"):
        denoiser_from_checkpoint(other, use_ema=True, device=cpu, into=first)


def test_sample_stage_samples_in_the_kernel_it_can_run_and_says_so(tmp_path, monkeypatch, caplog, capsys):
    """`diffmem sample`, sample.kernel auto: the native kernel's samples where it runs, in a cache apart from torch's;
    torch's where it does not, with the reason in the log; sample.kernel native there: one line, no samples."""
    import logging

    from diffmem import generation
    from diffmem.stages import sample

    train_small_run(tmp_path, dim=8, max_steps=10, per_decade=1)

    def run(kernel: str, name: str) -> dict:
        cfg = json.dumps({"num_samples": 5, "num_steps": 4, "kernel": kernel})
        out = tmp_path / f"{name}.json"
        sample.main(["--train-metrics", str(tmp_path / "tm.nc"), "--sample-cfg", cfg, "--device", "cpu", "--out", str(out)])
        return json.loads(out.read_text())

    theirs = run("torch", "torch")
    assert theirs["kernel"] == "torch"
    if native.available() is None:
        ours = run("auto", "auto")
        assert ours["kernel"] == "native"
        assert Path(ours["files"]["10"]).parent != Path(theirs["files"]["10"]).parent
        np.testing.assert_allclose(np.load(ours["files"]["10"]), np.load(theirs["files"]["10"]), rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(generation.native, "available", lambda: "no C compiler to build the native kernels")
    with caplog.at_level(logging.INFO, logger="diffmem.stages.sample"):
        fallback = run("auto", "fallback")
    assert fallback["kernel"] == "torch" and fallback["files"] == theirs["files"]
    assert "no C compiler to build the native kernels); torch's kernels do" in caplog.text
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run("native", "refused")
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sample.kernel: native cannot sample this run: no C compiler" in err
    assert not (tmp_path / "refused.json").exists()
