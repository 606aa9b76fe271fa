"""Training speed and its distance to the hardware limit: FLOPs per step, achieved TFLOP/s, steps/s.

Every measurement runs the training engine itself (`train.start_stack`, `train.StackData`,
`train.make_step_loss`, `train.train_step`: batch draws, forward, backward, optimizer) on a stack of
k members, each with its own random 1,024-point training set, in a fresh subprocess:
(a) one model alone (k = 1; one thread on CPU, as a Snakemake job with train.threads = 1);
(b) a stack of k models in one process, k = --ks (every core on CPU);
(c) p single-model processes at once, p = min(k, cores) on CPU and k on CUDA for k = --proc-ks; they
    warm up, wait at a barrier, then are timed over the same window; the row is their summed rate.
Each figure is the best of --repeats fresh processes. Timing: --warmup steps (compilation
included), then at least --steps steps and --min-seconds; on CUDA the clock is read only after
torch.cuda.synchronize.

FLOPs: one forward + backward of the stacked step counted by torch.utils.flop_counter.FlopCounterMode
(eager, whatever --compile says; the count is of the model, not of the kernels that run it). It counts
matmuls, convolutions and attention only: elementwise work, the normalisations, the batch draws and
the optimizer's update are not counted, so the achieved TFLOP/s is a lower bound on the work done.
Reported per model-step (the stack's count / k). Achieved TFLOP/s = FLOPs per model-step x
model-steps/s, as a fraction of (i) a measured peak, a large matmul in the precision used, at the
thread count of the row on CPU, and (ii) on CUDA, the device's published dense peak for that precision
(fp32 without TF32: the non-tensor-core rate; --tf32: TF32 tensor cores; bf16: BF16 tensor cores).

Models (--models): mlp (ModelConfig defaults: width 256, depth 3, emb 64, EDM; 64-d, batch 128),
digits (config.yaml's digits experiment: its model, batch and lr; 64-d), gmm (arXiv 2505.17638's
synthetic setting: width 128, depth 2, emb 16, DDPM; d = 8, batch 256, Adam 6e-4), gmm_paper (the
same with the paper's own network, time_mlp width 128, depth 3), unet
(models/unet.py at width 32 on 1x32x32, batch --unet-batch, default 128), celeba_paper (config.yaml's
paper-scale CelebA experiment: the authors' U-Net with dropout 0.1, DDPM, SGD with momentum 0.95, batch
min(n, 512) = 512 on its 1,024 points; dropout masks from the global RNG here, as the cost is the same).

Run: `python benchmarks/bench_training.py --device cpu --models gmm digits mlp --ks 1 4 16 --repeats 2`
     `python benchmarks/bench_training.py --device cuda --models unet --ks --precision bf16 --channels-last --compile`
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, device_name, load, sync, usable_cores  # noqa: E402

from diffmem import engine as train  # noqa: E402
from diffmem.config import ModelConfig, TrainConfig, load_config  # noqa: E402
from diffmem.models import build_denoiser, count_parameters  # noqa: E402
from diffmem.resources import PUBLISHED_PEAKS  # noqa: E402  (published dense peaks by device name)

N_TRAIN = 1024
ROOT = Path(__file__).resolve().parent.parent


def model_setup(name: str, args) -> tuple[ModelConfig, TrainConfig, tuple[int, ...]]:
    """(model config, train config, per-sample data shape) of a benchmark model, with the run options applied."""
    if name == "mlp":
        model, train_cfg, shape = ModelConfig(), TrainConfig(batch_size=128), (64,)
    elif name == "digits":  # the default experiment, read from config.yaml so it cannot drift
        exp = load_config(ROOT / "config.yaml")["experiments"]["digits"]
        model = ModelConfig.from_dict(exp["model"])
        train_cfg = TrainConfig(batch_size=exp["train"]["batch_size"], lr=exp["train"]["lr"],
                                optimizer=exp["train"]["optimizer"])
        shape = (64,)  # 8x8 sklearn digits
    elif name == "gmm":  # bench_paper_loop.py's setting (the paper's run_GMM.py)
        model = ModelConfig(arch="mlp", parameterization="ddpm", width=128, depth=2, emb_dim=16)
        train_cfg, shape = TrainConfig(batch_size=256, lr=6e-4), (8,)
    elif name == "gmm_paper":  # the same with the paper's own network (time_mlp: their SimpleTimeModel)
        model = ModelConfig(arch="time_mlp", parameterization="ddpm", width=128, depth=3)
        train_cfg, shape = TrainConfig(batch_size=256, lr=6e-4), (8,)
    elif name == "unet":
        model, train_cfg, shape = ModelConfig(arch="unet", width=32), TrainConfig(batch_size=args.unet_batch), (1, 32, 32)
    elif name == "celeba_paper":  # config.yaml's paper-scale CelebA recipe (issue 21): its U-Net, optimizer and batch
        exp = load_config(ROOT / "config.yaml")["experiments"]["celeba_paper"]
        model = ModelConfig.from_dict(exp["model"])
        keys = ("optimizer", "lr", "momentum", "batch_size", "center")
        train_cfg = TrainConfig.from_dict({k: exp["train"][k] for k in keys})
        shape = (1, 32, 32)
    else:
        raise ValueError(f"unknown model {name!r}")
    train_cfg = dataclasses.replace(train_cfg, device=args.device, precision=args.precision, compile=args.compile,
                                    channels_last=args.channels_last, tf32=args.tf32, kernel=getattr(args, "kernel", "auto"))
    return model, train_cfg, shape


def describe_model(name: str, args) -> str:
    m, t, shape = model_setup(name, args)
    if m.arch == "unet":
        net = f"U-Net width {m.width}, mult {tuple(m.channel_mult)}"
    elif m.arch == "time_mlp":
        net = f"time_mlp width {m.width}, depth {m.depth}"
    else:
        net = f"MLP width {m.width}, depth {m.depth}, emb {m.emb_dim}"
    return f"{name}: {net}, {m.parameterization}, data {'x'.join(map(str, shape))}, batch {t.batch_size}, " \
           f"{t.optimizer} lr {t.lr:g}"


# ---------------------------------------------------------------------------------------------- worker


class Engine:
    """A stack of k members on random data, driven by the training engine's own functions."""

    def __init__(self, name: str, k: int, seed: int, args, device: torch.device) -> None:
        self.model_cfg, self.train_cfg, self.shape = model_setup(name, args)
        self.device = device
        gens = [torch.Generator().manual_seed(seed * 1000 + m) for m in range(k)]
        xs = [torch.randn((N_TRAIN, *self.shape), generator=g) for g in gens]
        runs = [train.Run(x.numpy(), seed * 1000 + m, None) for m, x in enumerate(xs)]
        self.stack = train.start_stack(runs, [None] * k, model_cfg=self.model_cfg, train_cfg=self.train_cfg,
                                       data_shape=self.shape, device=device, log=lambda _: None)
        self.data = train.StackData.stack([x.to(device) for x in xs])
        with torch.random.fork_rng(devices=[]):
            self.base = build_denoiser(self.model_cfg, data_shape=self.shape).to(device)
        self.vp_sigmas = self.base.sigmas if self.model_cfg.parameterization == "ddpm" else None
        self.step_loss = train.make_step_loss(self.base, self.train_cfg, device)
        self.params_per_model = count_parameters(self.base)

    def step(self) -> torch.Tensor:
        return train.train_step(self.stack, self.data, step_loss=self.step_loss, model_cfg=self.model_cfg,
                                train_cfg=self.train_cfg, vp_sigmas=self.vp_sigmas)

    def draw(self):
        return train.draw_batch(self.stack, self.data, model_cfg=self.model_cfg, train_cfg=self.train_cfg,
                                vp_sigmas=self.vp_sigmas)

    def count_flops(self) -> tuple[float | None, str]:
        """FLOPs of one forward + backward of the whole stack (eager), or None with the reason."""
        from torch.utils.flop_counter import FlopCounterMode

        # torch's kernels: the count is of the model's matmuls, which the native kernel computes too, unseen
        eager = train.make_step_loss(self.base, dataclasses.replace(self.train_cfg, compile=False, kernel="torch"),
                                     self.device)
        x0, sigma, noise, mask = self.draw()
        try:
            with FlopCounterMode(display=False) as counter:
                train.loss_and_grads(self.stack, eager, x0, sigma, noise, mask)
            total = float(counter.get_total_flops())
        except Exception as exc:  # a missing formula or a mode/op clash must not cost the timing
            return None, f"flop count failed: {type(exc).__name__}: {exc}"[:200]
        return (total, "") if total > 0 else (None, "flop counter saw no counted op")

    def breakdown(self, reps: int) -> dict[str, float]:
        """Milliseconds per call of the step's three parts, each timed alone: draw, loss fwd+bwd, optimizer."""

        def timed_ms(fn) -> float:
            fn()
            sync(self.device)
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            sync(self.device)
            return 1e3 * (time.perf_counter() - t0) / reps

        batch = self.draw()
        grads = []

        def fwd_bwd():
            grads[:] = train.loss_and_grads(self.stack, self.step_loss, *batch)[1]

        out = {"draw_ms": timed_ms(self.draw), "loss_fwd_bwd_ms": timed_ms(fwd_bwd)}
        out["optimizer_ms"] = timed_ms(lambda: train.update_(self.stack, grads, self.train_cfg))
        return out


def sync_points(step, steps: int = 3) -> dict:
    """CUDA only: host-device synchronisations per training step, and where (torch's sync debug mode).

    A sync stalls the host until the GPU drains its queue, so launch overhead and GPU time add up
    instead of overlapping; a step meant to be replayed (CUDA graphs) should have none.
    """
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    hits = [w for w in caught if "synchroniz" in str(w.message)]
    where = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in hits})
    return {"syncs_per_step": len(hits) / steps, "sync_sites": where[:8]}


def run_timed(step, device: torch.device, *, steps: int, min_seconds: float) -> tuple[int, float]:
    """(steps done, seconds): at least `steps` steps and `min_seconds`, synchronising only to read the clock."""
    done, todo = 0, steps
    sync(device)
    t0 = time.perf_counter()
    while True:
        for _ in range(todo):
            step()
        done += todo
        sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return done, elapsed
        todo = max(1, math.ceil(done * (min_seconds / elapsed - 1) * 1.05))


def worker(args) -> dict:
    """One measurement in a fresh process; the result is printed as the last line of JSON."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    train.set_tf32(args.tf32)
    eng = Engine(args.models[0], args.k, args.seed, args, device)
    out: dict = {"k": args.k, "threads": args.threads, "params_per_model": eng.params_per_model}
    if not args.no_flops:
        flops, why = eng.count_flops()
        out.update(flops_per_model_step=None if flops is None else flops / args.k, flop_note=why)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        losses = eng.step()
    sync(device)
    out["warmup_s"] = time.perf_counter() - t0
    if args.barrier:  # (c): wait until every process has warmed up, so they are timed together
        print("READY", flush=True)
        sys.stdin.readline()
    done, seconds = run_timed(eng.step, device, steps=args.steps, min_seconds=args.min_seconds)
    losses = eng.step()
    out.update(steps=done, seconds=seconds, steps_per_s=done / seconds, model_steps_per_s=args.k * done / seconds,
               loss_finite=bool(torch.isfinite(losses).all()))
    if args.breakdown:
        out.update(eng.breakdown(max(3, min(args.steps, 50))))
    if args.sync_check and device.type == "cuda":
        out.update(sync_points(eng.step))
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


# ---------------------------------------------------------------------------------------------- parent


def worker_cmd(args, model: str, *, k: int, threads: int, seed: int, barrier: bool, flops: bool) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", "--models", model, "--k", str(k), "--threads", str(threads),
           "--seed", str(seed), "--device", args.device, "--unet-batch", str(args.unet_batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--min-seconds", str(args.min_seconds),
           "--precision", args.precision, "--kernel", args.kernel]
    flags = {"--sync-check": args.sync_check and not barrier, "--tf32": args.tf32, "--compile": args.compile, "--channels-last": args.channels_last,
             "--barrier": barrier, "--no-flops": not flops, "--breakdown": args.breakdown and not barrier}
    return cmd + [f for f, on in flags.items() if on]


def run_workers(args, model: str, *, k: int, threads: int, procs: int) -> dict:
    """`procs` workers of a k-stack each, started together and timed over one window; their summed rate."""
    barrier = procs > 1
    with tempfile.TemporaryDirectory() as tmp:
        running = []
        for s in range(procs):
            err = open(Path(tmp) / f"{s}.err", "w+")
            p = subprocess.Popen(worker_cmd(args, model, k=k, threads=threads, seed=s, barrier=barrier, flops=not barrier),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
            running.append((p, err))
        if barrier:
            for p, _ in running:
                p.stdout.readline()  # READY (or "" if it died)
            for p, _ in running:
                try:
                    p.stdin.write("GO\n")
                    p.stdin.flush()
                except BrokenPipeError:
                    pass
        outs = [p.communicate()[0] for p, _ in running]  # every worker finishes before the folder goes
        results = []
        for (p, err), out in zip(running, outs):
            if p.returncode != 0:
                err.seek(0)
                lines = err.read().strip().splitlines() or [f"exit status {p.returncode}"]
                return {"error": lines[-1][:300]}
            results.append(json.loads(out.strip().splitlines()[-1]))
    if procs == 1:
        return results[0]
    return {"model_steps_per_s": sum(r["model_steps_per_s"] for r in results), "procs": procs,
            "per_process": [round(r["model_steps_per_s"], 1) for r in results],
            "loss_finite": all(r["loss_finite"] for r in results),
            **({"max_memory_gib": max(r["max_memory_gib"] for r in results)} if "max_memory_gib" in results[0] else {})}


def best_of(repeats: int, measure) -> dict:
    runs = [measure() for _ in range(repeats)]
    ok = [r for r in runs if "error" not in r]
    return max(ok, key=lambda r: r["model_steps_per_s"]) if ok else runs[0]


def matmul_peak(device: torch.device, dtype: torch.dtype, *, threads: int, size: int, seconds: float = 1.0) -> float:
    """TFLOP/s of a [size, size] @ [size, size] matmul in `dtype`, best over ~`seconds` of repeats."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn((size, size), generator=gen).to(device=device, dtype=dtype)
        b = torch.randn((size, size), generator=gen).to(device=device, dtype=dtype)
        out = torch.empty((size, size), device=device, dtype=dtype)
        torch.matmul(a, b, out=out)  # warm-up (cuBLAS handle, oneDNN primitive)
        best, start = math.inf, time.perf_counter()
        reps = 10 if device.type == "cuda" else 1
        while time.perf_counter() - start < seconds or best is math.inf:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b, out=out)
            sync(device)
            best = min(best, (time.perf_counter() - t0) / reps)
        return 2 * size**3 / best / 1e12
    finally:
        torch.set_num_threads(old)


def precision_key(args) -> str:
    return "bf16" if args.precision == "bf16" else ("tf32" if args.tf32 else "fp32")


def published_peak(device: torch.device, args) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "no published peak used on CPU"
    name, key = torch.cuda.get_device_name(device), precision_key(args)
    for needle, label, peaks in PUBLISHED_PEAKS:
        if needle in name:
            return peaks[key], f"{label} {key} dense {peaks[key]:g} TFLOP/s"
    return None, f"{name} is not in the table of published peaks"


def fmt(x: float | None, spec: str = ",.1f", none: str = "—") -> str:
    return none if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=["gmm", "digits", "mlp"], choices=["mlp", "digits", "gmm", "gmm_paper", "unet", "celeba_paper"])
    parser.add_argument("--ks", type=int, nargs="*", default=[4, 16, 64], help="stack sizes for (b); none: skip (b)")
    parser.add_argument("--proc-ks", type=int, nargs="*", default=[4, 16],
                        help="(c): k processes at once (min(k, cores) on CPU); none: skip (c)")
    parser.add_argument("--steps", type=int, default=50, help="at least this many timed steps per measurement")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="and at least this long")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many fresh processes per figure")
    parser.add_argument("--unet-batch", type=int, default=128, help="U-Net batch (e.g. 8 on CPU)")
    parser.add_argument("--cores", type=int, default=None, help="cores to use on CPU (default: usable)")
    parser.add_argument("--stack-threads", type=int, default=None,
                        help="threads of a (b) stack process on CPU (default: --cores; 1 compares per core)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--kernel", default="auto", choices=["auto", "native", "torch"],
                        help="train.kernel: the default MLP's step in diffmem's C kernel or torch's (CPU)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the step's parts alone: batch draw, loss forward+backward, optimizer")
    parser.add_argument("--sync-check", action="store_true",
                        help="CUDA: count host-device synchronisations per step (torch.cuda sync debug mode) and where")
    parser.add_argument("--peak-size", type=int, default=None, help="matmul size of the measured peak "
                        "(default 8192 on CUDA, 2048 on CPU)")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    # worker-only
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_training: --device cuda but torch.cuda.is_available() is False")
    cores = args.cores or usable_cores()
    on_cpu = device.type == "cpu"
    stack_threads = (args.stack_threads or cores) if on_cpu else 1  # on a GPU one driving thread is what a job has

    def procs_for(k: int) -> int:
        return min(k, cores) if on_cpu else k

    def rival(k: int) -> int:
        """How many single-model processes a stack of k is compared with: as many as it has cores (CPU), k (GPU)."""
        return min(k, stack_threads) if on_cpu else k

    print(f"## Training speed, {args.device} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"- host CPU: {cpu_model()}, {cores} cores used; load average at start {load()}")
    print(f"- torch {torch.__version__}; device {device} = {device_name(device)}; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"- settings: precision {args.precision}, tf32 {args.tf32}, compile {args.compile}, kernel {args.kernel}, channels_last "
          f"{args.channels_last}; >= {args.steps} steps and >= {args.min_seconds:g} s per measurement after "
          f"{args.warmup} warm-up steps, best of {args.repeats} fresh processes")

    # measured peaks: on CPU at 1 thread (rows (a)) and at every core (rows (b), (c)); on CUDA one device
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    size = args.peak_size or (8192 if not on_cpu else 2048)
    train.set_tf32(args.tf32)
    if on_cpu:
        peaks = {1: matmul_peak(device, dtype, threads=1, size=size)}
        for t in {cores, stack_threads} - {1}:
            peaks[t] = matmul_peak(device, dtype, threads=t, size=size)
        peak_of = lambda threads_used: peaks[threads_used]  # noqa: E731
        print(f"- measured peak ({size}^2 {str(dtype)[6:]} matmul): {peaks[1]:.3f} TFLOP/s on 1 thread"
              + "".join(f", {peaks[t]:.3f} on {t}" for t in sorted(peaks) if t > 1)
              + f"; rows use the peak at their thread count ((c): {cores} threads)")
    else:
        gpu_peak = matmul_peak(device, dtype, threads=1, size=size)
        peak_of = lambda threads_used: gpu_peak  # noqa: E731
        print(f"- measured peak ({size}^2 {str(dtype)[6:]} matmul{', TF32 allowed' if args.tf32 else ''}): "
              f"{gpu_peak:.1f} TFLOP/s")
    pub, pub_note = published_peak(device, args)
    print(f"- published peak: {pub_note}")
    print("- FLOPs: matmuls, convolutions and attention of one forward + backward (FlopCounterMode, eager);"
          " elementwise ops, batch draws and the optimizer's update are not counted\n", flush=True)

    report: dict = {"device": device_name(device), "torch": torch.__version__, "cores": cores,
                    "settings": {k: v for k, v in vars(args).items() if not callable(v)},
                    "peak_published_tflops": pub, "models": {}}
    summary = []
    for name in args.models:
        print(f"### {describe_model(name, args)} (load {load()})\n", flush=True)
        rows: dict[str, dict] = {}
        single = best_of(args.repeats, lambda: run_workers(args, name, k=1, threads=1, procs=1))
        rows["a"] = single
        if "error" in single:
            print(f"**(a) failed**: {single['error']}\n", flush=True)
            report["models"][name] = rows
            continue
        flops = single.get("flops_per_model_step")
        r1 = single["model_steps_per_s"]
        print(f"- {single['params_per_model']:,} parameters; FLOPs per model-step: "
              f"{fmt(flops and flops / 1e9, ',.4f')} GFLOP{' (' + single['flop_note'] + ')' if single.get('flop_note') else ''}")
        print()
        print("| mode | k | processes x threads | model-steps/s | x (a) | stack / processes | TFLOP/s | "
              "% measured peak | % published peak | notes |")
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|---|")

        def row(mode: str, k: int, layout: str, res: dict, threads_used: int, ratio: str = "", note: str = "") -> None:
            if "error" in res:
                print(f"| {mode} | {k} | {layout} | failed | | | | | | {res['error']} |", flush=True)
                return
            rate = res["model_steps_per_s"]
            tflops = None if flops is None else flops * rate / 1e12
            peak = peak_of(threads_used)
            notes = [note] if note else []
            if "max_memory_gib" in res:
                notes.append(f"{res['max_memory_gib']:.2f} GiB")
            if "syncs_per_step" in res:
                notes.append(f"{res['syncs_per_step']:g} host syncs/step at {', '.join(res['sync_sites']) or '-'}")
            if "draw_ms" in res:
                notes.append(f"draw {res['draw_ms']:.2f} / fwd+bwd {res['loss_fwd_bwd_ms']:.2f} / "
                             f"optimizer {res['optimizer_ms']:.2f} ms")
            if not res.get("loss_finite", True):
                notes.append("NON-FINITE LOSS")
            print(f"| {mode} | {k} | {layout} | {rate:,.1f} | {rate / r1:.2f} | {ratio} | {fmt(tflops, '.4f')} | "
                  f"{fmt(tflops and 100 * tflops / peak, '.2f')} | {fmt(tflops and pub and 100 * tflops / pub, '.2f')} | "
                  f"{'; '.join(notes)} |", flush=True)

        row("(a) single", 1, "1 x 1" if on_cpu else "1", single, 1, note=f"{single['steps']} steps in {single['seconds']:.1f} s")
        procs: dict[int, dict] = {1: single}
        for p in sorted({procs_for(k) for k in args.proc_ks} - {1}):
            procs[p] = best_of(args.repeats, lambda p=p: run_workers(args, name, k=1, threads=1, procs=p))
            per = procs[p].get("per_process")
            row("(c) processes", p, f"{p} x 1" if on_cpu else f"{p} on one GPU", procs[p], cores if on_cpu else 1,
                note="" if per is None else f"per process {per}")
            rows[f"c{p}"] = procs[p]
        for k in args.ks:
            res = best_of(args.repeats, lambda k=k: run_workers(args, name, k=k, threads=stack_threads, procs=1))
            rows[f"b{k}"] = res
            p = rival(k)
            ratio = ""
            if "error" not in res and p in procs and "error" not in procs[p]:
                ratio = f"**{res['model_steps_per_s'] / procs[p]['model_steps_per_s']:.2f}** (vs {p})"
            note = "" if "error" in res else f"{res['steps_per_s']:,.1f} stack steps/s"
            if "error" not in res and res.get("flops_per_model_step") and flops and \
                    abs(res["flops_per_model_step"] / flops - 1) > 0.01:
                # torch's convolution_backward formula ignores groups, so vmap's grouped convolutions
                # count k times too many weight-gradient FLOPs; the model's FLOPs do not depend on k
                note += (f"; FlopCounterMode counts {res['flops_per_model_step'] / 1e9:.4f} GFLOP/model-step "
                         "here (stacked), the rows use (a)'s count")
            row("(b) stack", k, f"1 x {stack_threads}" if on_cpu else "1", res, stack_threads, ratio, note)
        print(flush=True)
        report["models"][name] = rows
        summary.append((name, single, flops, procs, rows))

    # the device table: one row per model
    print(f"### {device_name(device)}: summary (model-steps/s; {args.precision}"
          f"{', tf32' if args.tf32 else ''}{', compile' if args.compile else ''}"
          f"{', channels-last' if args.channels_last else ''})\n")
    ks = list(args.ks)
    ps = sorted({procs_for(k) for k in args.proc_ks} - {1})
    head = ["model", "GFLOP/model-step", "(a) single", "(a) TFLOP/s", "(a) % measured peak", "(a) % published peak"]
    head += [f"(b) k={k}" for k in ks] + [f"(c) {p} procs" for p in ps]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for name, single, flops, procs, rows in summary:
        r1 = single["model_steps_per_s"]
        t1 = None if flops is None else flops * r1 / 1e12
        cells = [name, fmt(flops and flops / 1e9, ".4f"), f"{r1:,.1f}", fmt(t1, ".4f"),
                 fmt(t1 and 100 * t1 / peak_of(1), ".2f"), fmt(t1 and pub and 100 * t1 / pub, ".2f")]
        for k in ks:
            res = rows.get(f"b{k}", {})
            p = rival(k)
            cell = fmt(res.get("model_steps_per_s"))
            if "model_steps_per_s" in res and "model_steps_per_s" in procs.get(p, {}):
                cell += f" ({res['model_steps_per_s'] / procs[p]['model_steps_per_s']:.2f}x {p} procs)"
            cells.append(cell)
        cells += [fmt(procs.get(p, {}).get("model_steps_per_s")) for p in ps]
        print("| " + " | ".join(cells) + " |")
    print(f"\n- load average at end: {load()}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
