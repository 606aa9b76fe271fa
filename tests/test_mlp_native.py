"""models/mlp_native.py and native/: diffmem's C kernel for the default MLP's training step.

It computes the loss and gradients autograd computes on the module, to float32 rounding; a member trains
in a stack exactly as alone; training resumes exactly; a run differs from torch's only by rounding; and a
machine where the kernel cannot run gets a one-line reason (train.kernel: native) or torch's kernels
(train.kernel: auto)."""

import dataclasses

import numpy as np
import pytest
import torch

from diffmem import engine, native
from diffmem.checkpoint import checkpoint_path, load_checkpoint
from diffmem.config import ModelConfig, TrainConfig
from diffmem.engine import KernelRefused, Run, make_step_loss, stack_width, train_runs
from diffmem.loss import denoising_loss, sample_sigma
from diffmem.models import build_denoiser, mlp_native
from diffmem.optim import ADAM_BETAS, ADAM_EPS
from diffmem.samplers import heun_sampler

REASON = native.available()
needs_native = pytest.mark.skipif(REASON is not None, reason=f"the native kernel does not run here: {REASON}")
CPU = torch.device("cpu")
CASES = {  # (data dim, width, depth, emb_dim, batch, members, padded rows of member 0)
    "digits": (64, 128, 3, 64, 16, 1, 0),
    "digits-stack-masked": (64, 128, 3, 64, 16, 3, 5),
    "gmm": (8, 128, 2, 16, 256, 1, 0),
    "odd-sizes": (10, 40, 1, 8, 5, 2, 0),  # D and B not multiples of 8: the plain loops and padded columns
}


def members_and_batch(parameterization, case, seed=0):
    dim, width, depth, emb_dim, batch, k, padded = CASES[case]
    cfg = ModelConfig(arch="mlp", parameterization=parameterization, width=width, depth=depth, emb_dim=emb_dim)
    torch.manual_seed(seed)
    nets = [build_denoiser(cfg, data_shape=(dim,)) for _ in range(k)]
    with torch.no_grad():  # off the initial values, so no gradient is trivially zero
        for net in nets:
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(seed + 1)
    vp = nets[0].sigmas if parameterization == "ddpm" else None
    sigma = torch.stack([sample_sigma(batch, parameterization=parameterization, p_mean=-1.2, p_std=1.2, vp_sigmas=vp,
                                      generator=gen, device=CPU) for _ in range(k)])
    x0, noise = torch.randn(k, batch, dim, generator=gen), torch.randn(k, batch, dim, generator=gen)
    mask = None
    if padded:
        mask = torch.ones(k, batch)
        mask[0, batch - padded:] = 0
    params = {name: torch.stack([dict(n.named_parameters())[name].detach() for n in nets]).contiguous()
              for name, _ in nets[0].named_parameters()}
    return nets, params, x0, sigma, noise, mask


@needs_native
@pytest.mark.parametrize("parameterization", ["edm", "ddpm"])
@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_gradients_equal_autograds_to_float_rounding(parameterization, case):
    nets, params, x0, sigma, noise, mask = members_and_batch(parameterization, case)
    losses, grads = mlp_native.NativeMLPStep(nets[0], params)(x0, sigma, noise, mask)
    assert losses.shape == (len(nets),)
    for m, net in enumerate(nets):
        per_sample = denoising_loss(net, x0[m], sigma[m], noise[m])
        loss = per_sample.mean() if mask is None else (per_sample * mask[m]).sum() / mask[m].sum()
        reference = torch.autograd.grad(loss, list(net.parameters()))
        assert float(losses[m]) == pytest.approx(float(loss.detach()), rel=2e-6)
        for name, g, r in zip(params, grads, reference):
            assert g.shape[1:] == r.shape, name
            err = float((g[m] - r).norm() / r.norm())
            assert err < 2e-5, f"{name}: relative error {err:.2e}"
            assert bool(r.abs().sum() > 0), name


@needs_native
def test_padded_rows_add_nothing():
    """Rows masked out of the loss may hold anything finite: the loss and gradients do not move."""
    nets, params, x0, sigma, noise, mask = members_and_batch("edm", "digits-stack-masked")
    step = mlp_native.NativeMLPStep(nets[0], params)
    losses, grads = step(x0, sigma, noise, mask)
    losses, grads = losses.clone(), [g.clone() for g in grads]
    x0[0, -5:] += 3.0
    noise[0, -5:] *= -2.0
    again, grads_again = step(x0, sigma, noise, mask)
    assert torch.equal(losses, again)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_again))


@needs_native
def test_a_member_gets_in_a_stack_exactly_what_it_gets_alone():
    nets, params, x0, sigma, noise, _ = members_and_batch("edm", "digits-stack-masked")
    losses, grads = mlp_native.NativeMLPStep(nets[0], params)(x0, sigma, noise)
    grads = [g.clone() for g in grads]
    for m in range(len(nets)):
        alone = {name: t[m:m + 1].clone() for name, t in params.items()}
        one_loss, one_grads = mlp_native.NativeMLPStep(nets[0], alone)(x0[m:m + 1], sigma[m:m + 1], noise[m:m + 1])
        assert torch.equal(one_loss[0], losses[m])
        assert all(torch.equal(a[0], b[m]) for a, b in zip(one_grads, grads))


@needs_native
def test_forward_equals_the_module_to_float_rounding():
    nets, _, x0, sigma, _, _ = members_and_batch("edm", "digits")
    net = nets[0]
    _, _, c_in, c_noise = net.coefficients(sigma[0])
    x_in = c_in[:, None] * x0[0]
    with torch.no_grad():
        want = net.net(x_in, c_noise)
    got = mlp_native.NativeMLPForward(net)(x_in, c_noise)
    assert float((got - want).norm() / want.norm()) < 2e-6


@needs_native
@pytest.mark.parametrize("case", ["digits", "odd-sizes"])
def test_forward_computes_each_row_as_alone_at_its_own_noise_level(case):
    """The forward computes the time embedding once per run of rows at one noise level: a batch of mixed levels
    gives every row what it gets alone, bit for bit, and torch's forward to float rounding."""
    nets, _, x0, sigma, _, _ = members_and_batch("edm", case)
    net = nets[0]
    rows = torch.cat([x0[0]] * 10)[:150]  # 150 rows: three chunks of columns, the last one padded
    c_noise = torch.tensor([float(i // 4 % 13) * 50.0 - 300.0 for i in range(rows.shape[0])])
    forward = mlp_native.NativeMLPForward(net)
    together = forward(rows, c_noise)
    alone = torch.cat([forward(rows[i:i + 1], c_noise[i:i + 1]) for i in range(rows.shape[0])])
    assert torch.equal(together, alone)
    with torch.no_grad():
        want = net.net(rows, c_noise)
    assert float((together - want).norm() / want.norm()) < 2e-6


@needs_native
@pytest.mark.parametrize("case", ["digits", "odd-sizes"])
@pytest.mark.parametrize("rows", [500, 37])
def test_heun_in_one_call_equals_the_samplers_loop_bit_for_bit(case, rows):
    """heun_sampler hands its loop to NativeDenoiser.heun_steps (mlp_step.c's mlp_heun): the same samples bit for bit
    as its own loop over the same denoiser, for batches whose size is no multiple of torch's vector width."""
    nets, _, _, _, _, _ = members_and_batch("edm", case)
    latents = torch.randn(rows, CASES[case][0], generator=torch.Generator().manual_seed(3))
    denoiser = mlp_native.NativeDenoiser(nets[0])
    assert hasattr(denoiser, "heun_steps")
    fused = heun_sampler(denoiser, latents, num_steps=18)
    del denoiser.heun_steps  # the sampler's own loop, each half-step one call of the denoiser
    loop = heun_sampler(denoiser, latents, num_steps=18)
    assert torch.equal(fused, loop)
    assert torch.equal(heun_sampler(mlp_native.NativeDenoiser(nets[0]), latents[:7], num_steps=18), fused[:7])
    with torch.no_grad():
        torch_samples = heun_sampler(nets[0], latents, num_steps=18)
    assert float((fused - torch_samples).norm() / torch_samples.norm()) < 1e-4


@needs_native
def test_heun_in_one_call_is_offered_under_edm_only_and_takes_double_samples():
    ddpm, _, _, _, _, _ = members_and_batch("ddpm", "odd-sizes")
    assert not hasattr(mlp_native.NativeDenoiser(ddpm[0]), "heun_steps")
    edm, _, _, _, _, _ = members_and_batch("edm", "odd-sizes")
    with pytest.raises(ValueError, match="double CPU samples"):
        mlp_native.NativeDenoiser(edm[0]).heun_steps(torch.zeros(2, 10), torch.ones(3, dtype=torch.float64))


def train(tmp_path, kernel, *, max_steps=60, members=((40, 0),), name="run", extra=None):
    """Train `members` ((n, seed), ...) as one stack; their checkpoints at `max_steps`. Every tensor's size is a
    multiple of 8 (data dim 8), so torch's fused Adam updates a stack's members with the kernels it uses alone."""
    pool = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    xt = np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32)
    model = ModelConfig(width=32, depth=1, emb_dim=8)
    cfg = TrainConfig(max_steps=max_steps, batch_size=16, checkpoints_per_decade=2, probe_size=32, lr=3e-3,
                      log_every=10**6, keep="all", kernel=kernel, **(extra or {}))
    runs = [Run(pool[:n], seed, tmp_path / f"{name}_n{n}_s{seed}") for n, seed in members]
    train_runs(runs, xt, model_cfg=model, train_cfg=cfg, data_shape=(8,), device=CPU, log=lambda m: None)
    return [load_checkpoint(checkpoint_path(r.state_dir, max_steps)) for r in runs]


@needs_native
def test_a_run_differs_from_torchs_only_by_rounding(tmp_path):
    """60 Adam steps: the same draws (random streams equal), weights within 1e-4 of torch's, not equal."""
    (ours,) = train(tmp_path, "native", name="native")
    (theirs,) = train(tmp_path, "torch", name="torch")
    assert torch.equal(ours["rng"], theirs["rng"]) and torch.equal(ours["perm"], theirs["perm"])
    worst = max(float((ours["model"][k] - theirs["model"][k]).abs().max()) for k in theirs["model"])
    assert 0 < worst < 1e-4


def same_state(a, b):
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for i, state in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][i][key]) for key, v in state.items())
    assert torch.equal(a["rng"], b["rng"])


@needs_native
def test_grouped_and_resumed_runs_equal_the_run_alone_exactly(tmp_path):
    alone = [train(tmp_path, "native", members=(member,), name="alone")[0] for member in ((40, 0), (24, 1))]
    stacked = train(tmp_path, "native", members=((40, 0), (24, 1)), name="group", extra={"stack": 2})
    in_turn = train(tmp_path, "native", members=((40, 0), (24, 1)), name="turns")  # train.stack auto: one at a time
    (first,) = train(tmp_path, "native", members=((40, 0),), name="resumed", max_steps=20)
    (resumed,) = train(tmp_path, "native", members=((40, 0),), name="resumed")  # from step 20
    assert first["step"] == 20
    for a, g, t in zip(alone, stacked, in_turn):
        same_state(a, g)
        same_state(a, t)
    same_state(alone[0], resumed)


@needs_native
def test_stack_width_is_one_run_under_the_native_kernel_and_the_job_under_torchs():
    base = build_denoiser(ModelConfig(arch="mlp", width=16, depth=1, emb_dim=8), data_shape=(4,))
    auto = TrainConfig(max_steps=10)
    assert auto.stack == "auto"
    assert stack_width(base, auto, CPU, 6) == 1
    assert stack_width(base, dataclasses.replace(auto, kernel="torch"), CPU, 6) == 6
    assert stack_width(base, dataclasses.replace(auto, tikhonov=0.1), CPU, 6) == 6
    assert stack_width(base, dataclasses.replace(auto, compile=True), CPU, 6) == 6
    assert stack_width(base, dataclasses.replace(auto, stack=4), CPU, 6) == 4
    assert stack_width(base, dataclasses.replace(auto, stack=4, kernel="torch"), CPU, 3) == 3


@needs_native
def test_the_engine_uses_the_kernel_where_asked_and_where_it_runs():
    base = build_denoiser(ModelConfig(arch="mlp", width=16, depth=1, emb_dim=8), data_shape=(4,))
    auto = TrainConfig(max_steps=10)
    assert auto.kernel == "auto"
    assert make_step_loss(base, auto, CPU).kernel == "native"
    assert make_step_loss(base, dataclasses.replace(auto, kernel="torch"), CPU).kernel == "torch"
    # what the kernel does not compute keeps torch's kernels under auto and is refused under native
    for cfg, net in [(dataclasses.replace(auto, tikhonov=0.1), base),
                     (auto, build_denoiser(ModelConfig(arch="time_mlp", width=16, depth=1), data_shape=(4,)))]:
        assert make_step_loss(net, cfg, CPU).kernel == "torch"
        with pytest.raises(KernelRefused, match="train.kernel: native cannot run this job"):
            make_step_loss(net, dataclasses.replace(cfg, kernel="native"), CPU)


def test_no_compiler_is_a_one_line_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(native.NativeUnavailable, match="no C compiler") as info:
        native.build(directory=tmp_path / "cache")
    assert "\n" not in str(info.value)


def test_a_source_that_does_not_compile_is_a_one_line_reason(monkeypatch, tmp_path):
    bad = tmp_path / "mlp_step.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(native, "SOURCE", bad)
    try:
        cc = native.compiler()
    except native.NativeUnavailable:
        pytest.skip("no C compiler here")
    with pytest.raises(native.NativeUnavailable, match="building the native kernels failed") as info:
        native.build(cc, directory=tmp_path / "cache")
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "cache").iterdir())  # nothing half-built is left to load


@needs_native
def test_the_build_is_cached_by_source(tmp_path):
    first = native.build(directory=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert native.build(directory=tmp_path) == first and first.stat().st_mtime_ns == stamp


def test_a_cpu_without_avx2_is_refused(monkeypatch):
    monkeypatch.setattr(native.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(native, "cpu_flags", lambda: {"sse2", "avx"})
    with pytest.raises(native.NativeUnavailable, match="lacks avx2, fma"):
        native.check_cpu()
    monkeypatch.setattr(native.platform, "machine", lambda: "arm64")
    with pytest.raises(native.NativeUnavailable, match="x86-64"):
        native.check_cpu()


def test_diffmem_train_refuses_native_for_another_network_in_one_line(tmp_path, capsys):
    """`train.kernel: native` on a network the kernel does not compute: the job exits with one line naming it,
    before writing anything."""
    from diffmem.stages import train as train_stage

    pool = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    dataset, data = tmp_path / "dataset.npz", tmp_path / "train.npz"
    np.savez(dataset, pool=pool, test=pool[:10])
    np.savez(data, x=pool[:20], indices=np.arange(20))
    cfg = '{"batch_size": 16, "max_steps": 5, "device": "cpu", "kernel": "native"}'
    with pytest.raises(SystemExit) as info:
        train_stage.main(["--train", str(data), "--dataset", str(dataset), "--seed", "0",
                          "--model", '{"arch": "time_mlp", "width": 16, "depth": 1}', "--train-cfg", cfg,
                          "--checkpoints", str(tmp_path / "ckpt"), "--out", str(tmp_path / "m.nc")])
    assert info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "train.kernel: native cannot run this job" in err[-1]
    assert not (tmp_path / "m.nc").exists()


@needs_native
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_the_kernels_adam_is_torchs_fused_adam_to_float_rounding(weight_decay):
    """adam_ against torch.optim.Adam(fused=True) on the same gradients, 5 steps: the moments and weights agree
    to float32 rounding (the update's products are fused differently)."""
    nets, params, x0, sigma, noise, _ = members_and_batch("edm", "digits")
    net = nets[0]
    step = mlp_native.NativeMLPStep(net, params)
    opt, ref = {}, torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=weight_decay, fused=True)
    for t in range(1, 6):
        _, grads = step(x0 * (1 + 0.1 * t), sigma, noise)  # other gradients at every step
        for p, g in zip(net.parameters(), grads):
            p.grad = g[0].clone()
        step.adam_(opt, step=t, lr=2e-3, weight_decay=weight_decay)
        ref.step()
        with torch.no_grad():  # the next gradients are taken at the weights the kernel updated: keep both equal
            for (name, p) in net.named_parameters():
                gap = float((params[name][0] - p).abs().max() / p.abs().max())
                assert gap < 1e-6, (t, name, gap)
                p.copy_(params[name][0])
    state = ref.state_dict()["state"]
    for i, (name, _) in enumerate(net.named_parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            want, got = state[i][key], opt[name][key][0]
            assert float((got - want).abs().max()) <= 1e-6 * float(want.abs().max()) + 1e-30, (name, key)


def fma32(a, b, c):
    """fl32(a b + c) with one rounding (a b is exact in float64; the float64 sum's second rounding to float32 can
    differ only where it lands on a float32 midpoint, which these draws do not hit)."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


@needs_native
@pytest.mark.parametrize("step", [1, 1000, 16627, 16628, 40000])  # (float) bias correction 1 from step 16628 on
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_the_kernels_adam_is_its_formula_in_float32_bit_for_bit(step, weight_decay):
    """adam_update against its formula in float32, each operation rounded once, bit for bit: also late in a run,
    where the kernel skips dividing by a bias correction that is 1 in float32."""
    rng = np.random.default_rng(step)
    n = 4096
    p, g, m = (rng.normal(scale=s, size=n).astype(np.float32) for s in (1.0, 1e-2, 1e-3))
    v = (rng.normal(scale=1e-3, size=n) ** 2).astype(np.float32)
    step_size, bc = mlp_native.adam_scalars(step, 2e-3, ADAM_BETAS)
    tensors = [torch.from_numpy(a.copy()) for a in (p, g, m, v)]
    numel = torch.tensor([n], dtype=torch.int64)
    ptrs = [mlp_native._pointers([t]) for t in tensors]
    native.library().adam_update(1, *ptrs, numel.data_ptr(), *ADAM_BETAS, ADAM_EPS, weight_decay, step_size, bc)
    f = np.float32
    g = fma32(p, f(weight_decay), g) if weight_decay else g
    m = fma32(f(1 - ADAM_BETAS[0]), g - m, m)
    v = fma32(g * g, f(1 - ADAM_BETAS[1]), v * f(ADAM_BETAS[1]))
    p = p - f(step_size) * (m / (np.sqrt(v) / f(bc) + f(ADAM_EPS)))
    for want, got in zip((p, m, v), (tensors[0], tensors[2], tensors[3])):
        assert np.array_equal(want.view(np.int32), got.numpy().view(np.int32))


# ----------------------------------------------------------------------------- chunks of steps (engine.train_chunk)


def one_run(n, *, batch=16, dim=8, seed=0, **extra):
    """A fresh stack of one native-kernel run on n rows, its data, step loss and configs."""
    model = ModelConfig(width=32, depth=1, emb_dim=8)
    cfg = TrainConfig(max_steps=400, batch_size=batch, kernel="native", **{"lr": 3e-3, **extra})
    pool = np.random.default_rng(0).normal(size=(200, dim)).astype(np.float32)
    run = Run(pool[:n], seed, None)
    stack = engine.start_stack([run], [None], model_cfg=model, train_cfg=cfg, data_shape=(dim,), device=CPU,
                               log=lambda m: None)
    data = engine.StackData.stack([torch.as_tensor(pool[:n])])
    step_loss = make_step_loss(build_denoiser(model, data_shape=(dim,)), cfg, CPU)
    return stack, data, step_loss, model, cfg


def assert_same_stack(a, b):
    assert a.step == b.step
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert a.opt.keys() == b.opt.keys()
    assert all(torch.equal(a.opt[k][j], b.opt[k][j]) for k in a.opt for j in a.opt[k])
    sa, sb = a.streams[0], b.streams[0]
    assert torch.equal(sa.generator.get_state(), sb.generator.get_state())
    assert torch.equal(sa.perm, sb.perm) and sa.cursor == sb.cursor


@needs_native
@pytest.mark.parametrize("n", [16, 40, 64, 128])  # full batch; B = 16 not dividing n; epochs of 4 and 8 steps
def test_chunks_of_steps_equal_the_steps_one_at_a_time_bit_for_bit(n):
    stepwise, chunked = one_run(n), one_run(n)
    stack, data, step_loss, model, cfg = chunked
    assert engine.chunked_native(stack, data, step_loss, model_cfg=model, train_cfg=cfg)
    want = torch.cat([engine.train_step(stepwise[0], stepwise[1], step_loss=stepwise[2], model_cfg=model,
                                        train_cfg=cfg, vp_sigmas=None) for _ in range(300)])
    got, sizes = [], np.random.default_rng(n).integers(1, 40, size=300)  # chunks across epochs, of every length
    for size in sizes:
        if stack.step == 300:
            break
        got.append(engine.train_chunk(stack, data, step_loss, steps=int(min(size, 300 - stack.step)), train_cfg=cfg))
    got = torch.cat(got)
    assert got.shape == (300, 1)
    assert torch.equal(got[:, 0], want)
    assert_same_stack(stepwise[0], stack)


def train_one(tmp_path, name, *, chunked, n=40, batch=16, max_steps=300, monkeypatch=None, log=None, **extra):
    """One run through train_runs (grid steps 1, 3, 10, 32, 100, 300; a progress line every 50 steps), with the
    chunks where they apply or (chunked False) one step at a time; returns its checkpoints and progress lines."""
    if not chunked:
        monkeypatch.setattr(engine, "chunked_native", lambda *a, **k: False)
    pool = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    xt = np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32)
    cfg = TrainConfig(max_steps=max_steps, batch_size=batch, checkpoints_per_decade=2, probe_size=32,
                      log_every=50, keep="all", kernel="native", **{"lr": 3e-3, **extra})
    lines = []
    run = Run(pool[:n], 0, tmp_path / name)
    train_runs([run], xt, model_cfg=ModelConfig(width=32, depth=1, emb_dim=8), train_cfg=cfg, data_shape=(8,),
               device=CPU, log=log or lines.append)
    if not chunked:
        monkeypatch.undo()
    grid = [s for s in (1, 3, 10, 32, 100, 300) if s <= max_steps]
    return [load_checkpoint(checkpoint_path(run.state_dir, s)) for s in grid], lines


def progress(lines):
    """The progress lines without their rates."""
    return [line.split("  ")[:2] for line in lines if line.startswith("step ")]


def same_checkpoint(a, b):
    same_state(a, b)
    assert torch.equal(a["perm"], b["perm"]) and a["cursor"] == b["cursor"] and a["metrics"] == b["metrics"]


@needs_native
@pytest.mark.parametrize("n", [16, 40, 64, 128])
def test_a_run_in_chunks_equals_the_run_step_by_step(tmp_path, monkeypatch, n):
    """Through the engine: every grid checkpoint (weights, Adam moments, generator, order, position, probe losses)
    and every progress line's loss equal."""
    calls = []
    chunk = engine.train_chunk
    monkeypatch.setattr(engine, "train_chunk", lambda *a, **k: calls.append(k["steps"]) or chunk(*a, **k))
    fast, fast_lines = train_one(tmp_path, "fast", chunked=True, n=n)
    assert calls and max(calls) > 1
    slow, slow_lines = train_one(tmp_path, "slow", chunked=False, n=n, monkeypatch=monkeypatch)
    for a, b in zip(fast, slow):
        same_checkpoint(a, b)
    assert progress(fast_lines) == progress(slow_lines) and len(progress(fast_lines)) == 6


@needs_native
def test_a_run_stopped_in_chunks_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    import signal

    def stop_at_150(line):
        if line.startswith("step       150/"):
            signal.raise_signal(signal.SIGTERM)

    straight, _ = train_one(tmp_path, "straight", chunked=False, monkeypatch=monkeypatch)
    with pytest.raises(engine.TrainingInterrupted) as info:
        train_one(tmp_path, "stopped", chunked=True, log=stop_at_150)
    assert info.value.step == 151  # a pending request makes the next chunk one step
    resumed, _ = train_one(tmp_path, "stopped", chunked=True)
    for a, b in zip(straight, resumed):
        same_checkpoint(a, b)


@needs_native
def test_draws_that_do_not_split_keep_the_steps_one_at_a_time(tmp_path, monkeypatch):
    """B = 12: torch draws 12 normals in another way than 16 of a larger draw; the check sees it and the run
    takes its steps one at a time, as it would without the chunks."""
    stack, data, step_loss, model, cfg = one_run(40, batch=12)
    assert not engine.chunked_native(stack, data, step_loss, model_cfg=model, train_cfg=cfg)
    calls = []
    chunk = engine.train_chunk
    monkeypatch.setattr(engine, "train_chunk", lambda *a, **k: calls.append(k["steps"]) or chunk(*a, **k))
    fast, fast_lines = train_one(tmp_path, "fast", chunked=True, batch=12)
    assert not calls
    slow, slow_lines = train_one(tmp_path, "slow", chunked=False, batch=12, monkeypatch=monkeypatch)
    for a, b in zip(fast, slow):
        same_checkpoint(a, b)
    assert progress(fast_lines) == progress(slow_lines)


@needs_native
def test_a_divergence_in_a_chunk_is_reported_at_its_first_step(tmp_path, monkeypatch):
    with pytest.raises(engine.TrainingDiverged) as fast:
        train_one(tmp_path, "fast", chunked=True, lr=2e8, checkpoint_steps=[300])  # grid 0, 300: the first chunk 1..50
    with pytest.raises(engine.TrainingDiverged) as slow:
        train_one(tmp_path, "slow", chunked=False, lr=2e8, checkpoint_steps=[300], monkeypatch=monkeypatch)
    assert "non-finite training loss at step 8;" in str(slow.value)
    assert str(fast.value).replace("fast", "slow") == str(slow.value)


@needs_native
def test_the_chunks_keep_to_their_conditions():
    """VP, EMA, SGD and gradient clipping keep the steps one at a time."""
    for extra, model in [({}, ModelConfig(width=32, depth=1, emb_dim=8, parameterization="ddpm")),
                         ({"ema_decay": 0.9}, None), ({"optimizer": "sgd"}, None), ({"grad_clip": 1.0}, None)]:
        stack, data, step_loss, default_model, cfg = one_run(40, **extra)
        model = model or default_model
        if model.parameterization == "ddpm":
            step_loss = make_step_loss(build_denoiser(model, data_shape=(8,)), cfg, CPU)
        assert not engine.chunked_native(stack, data, step_loss, model_cfg=model, train_cfg=cfg), extra
