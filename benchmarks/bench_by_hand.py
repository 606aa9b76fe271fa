"""Training steps by hand (models/mlp_grad.py) and in the native kernel (models/mlp_native.py) against autograd,
and stacks against one model, side by side.

Every configuration is a training engine driven as `bench_training.py` drives it (`start_stack`,
`make_step_loss`, `train_step`: batch draws, forward, backward, Adam) on random data, all of them built
in this one process and timed in interleaved rounds, so machine drift hits every row alike. One thread.
Rows: k members (k = 1: one model, the per-run job; k > 1: a grouped job), gradients by autograd, by
hand (`train.kernel: torch`) or by diffmem's C kernel (`native`; --modes picks). Each figure is the
median over rounds of model-steps/s; "x single <mode>" is the median over rounds of the ratio to the
k = 1 row of the first mode in the same round (autograd first: what a per-run job did before). Mode `native
chunks` (k = 1 only) is the native kernel as `diffmem train` drives one run: `engine.train_chunk`, up to
`engine.CHUNK_STEPS` steps per call, bounded by --chunk (the engine's chunks also end at grid steps and progress
lines); `native` is the same kernel one `train_step` at a time. `--n` trains on n rows instead of
bench_training.py's 1024 (the default experiment's n is 16 to 128: with B = 16, n = 16 is full-batch).

It also checks, after timing, that the one-model engines by hand and by autograd hold the same weights
(both took the same steps from the same start): "equal" is torch.equal on every tensor; the native
kernel's engine differs from them by float rounding, printed as the largest difference over the largest
weight. (A stack
by hand computes each member as it is computed alone, not as autograd's stacked forward does;
tests/test_mlp_grad.py holds grouped runs of the default experiment to their runs alone, bit for bit.)

With `--procs P`, every configuration instead runs as P single-thread processes at once (P jobs of the
workflow on P cores: they share the caches and memory bandwidth, which a stack's larger working set
feels), each timed over its own steps after warm-up; the row is their summed model-steps/s, the median
over rounds. Rounds alternate the configurations.

With `--floor`, it instead times, per model, a one-model step by hand against the step's matmuls alone
(every nn.Linear's forward addmm, weight-gradient mm and, where the input needs one, input-gradient mm,
at the step's shapes, back to back on the same hot tensors): the time no implementation of this step
with these kernels can go below.

Run: `python benchmarks/bench_by_hand.py --models digits gmm --ks 1 6 12 --rounds 5`
     `python benchmarks/bench_by_hand.py --models digits --floor --rounds 5`
     `python benchmarks/bench_by_hand.py --models digits --ks 1 3 6 --procs 2 --rounds 3`
     `python benchmarks/bench_by_hand.py --models digits --ks 1 --modes native "native chunks" --n 32 --rounds 5`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import Engine  # noqa: E402
from machine import cpu_model, load  # noqa: E402

from diffmem import engine as train  # noqa: E402

# how the gradients are computed: autograd; train.kernel torch; native, one step at a time or in chunks
MODES = ("autograd", "by hand", "native", "native chunks")


def engine_for(model: str, k: int, *, mode: str, n: int | None = None) -> Engine:
    args = argparse.Namespace(unet_batch=4, device="cpu", precision="fp32", compile=False, tf32=False,
                              channels_last=False, kernel="native" if mode.startswith("native") else "torch")
    engine = Engine(model, k, 0, args, torch.device("cpu"))
    if n is not None:  # the first n rows of each member's data, and a fresh epoch order of them
        engine.data = train.StackData.stack([engine.data.x[m, :n] for m in range(k)])
        for stream in engine.stack.streams:
            stream.perm, stream.cursor = torch.randperm(n, generator=stream.generator), 0
    engine.step_loss = train.make_step_loss(engine.base, engine.train_cfg, torch.device("cpu"),
                                            by_hand=mode != "autograd")
    if mode == "by hand" and getattr(engine.step_loss, "by_hand", None) is None:
        raise SystemExit(f"{model}: the network is not one models/mlp_grad.py differentiates by hand")
    if mode == "native chunks" and not train.chunked_native(engine.stack, engine.data, engine.step_loss,
                                                            model_cfg=engine.model_cfg, train_cfg=engine.train_cfg):
        raise SystemExit(f"{model}, k = {k}: the engine does not take these steps in chunks (engine.chunked_native)")
    return engine


def advance(engine: Engine, mode: str, steps: int, chunk: int = train.CHUNK_STEPS) -> None:
    """`steps` steps of the engine: one train_step at a time, or (native chunks) train_chunk's of up to `chunk`."""
    if mode != "native chunks":
        for _ in range(steps):
            engine.step()
        return
    end = engine.stack.step + steps
    while engine.stack.step < end:
        train.train_chunk(engine.stack, engine.data, engine.step_loss, steps=min(chunk, end - engine.stack.step),
                          train_cfg=engine.train_cfg)


def worker(model: str, k: int, mode: str, steps: int, warmup: int, n: int | None, chunk: int) -> None:
    """One process of a --procs measurement: prints {"rate": model-steps/s} as its last line."""
    torch.set_num_threads(1)
    engine = engine_for(model, k, mode=mode, n=n)
    advance(engine, mode, warmup, chunk)
    count = max(5, steps // k)
    t0 = time.perf_counter()
    advance(engine, mode, count, chunk)
    print(json.dumps({"rate": k * count / (time.perf_counter() - t0)}))


def concurrent(args, model: str, k: int, mode: str) -> float:
    """Summed model-steps/s of args.procs single-thread processes running the configuration at once."""
    cmd = [sys.executable, __file__, "--worker", model, str(k), mode, str(args.steps), str(args.warmup),
           str(args.n or 0), str(args.chunk)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(args.procs)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {cmd}")
    return sum(json.loads(out.strip().splitlines()[-1])["rate"] for out in outs)


def matmul_floor(engine: Engine) -> Callable[[], None]:
    """The one-model step's matmuls alone, at its shapes (see the module docstring)."""
    batch = engine.train_cfg.batch_size
    no_input_grad = ("net.inp.weight", "net.emb_mlp.0.weight")  # their inputs are data and a fixed encoding
    calls = []
    for name, w in engine.base.named_parameters():
        if not name.endswith("weight") or w.ndim != 2:
            continue
        out_f, in_f = w.shape
        x, g, b, weight = torch.randn(batch, in_f), torch.randn(batch, out_f), torch.randn(out_f), w.detach().clone()
        calls.append(lambda b=b, x=x, weight=weight: torch.addmm(b, x, weight.t()))
        calls.append(lambda g=g, x=x: g.t().mm(x))
        if name not in no_input_grad:
            calls.append(lambda g=g, weight=weight: g.mm(weight))

    def run() -> None:
        for call in calls:
            call()

    run.count = len(calls)
    return run


def main_floor(args) -> None:
    for model in args.models:
        engine = engine_for(model, 1, mode="by hand")
        floor = matmul_floor(engine)
        for _ in range(args.warmup):
            engine.step()
            floor()
        step_ms, floor_ms = [], []
        for _ in range(args.rounds):
            for fn, out in ((engine.step, step_ms), (floor, floor_ms)):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                out.append(1e3 * (time.perf_counter() - t0) / args.steps)
        print(f"### {model}: one step by hand against its {floor.count} matmuls alone\n")
        print("| | ms per step, median | range over rounds |")
        print("|---|---:|---|")
        for label, v in (("step by hand", step_ms), (f"its {floor.count} matmuls alone", floor_ms)):
            print(f"| {label} | {statistics.median(v):.3f} | {min(v):.3f}–{max(v):.3f} |")
        print(f"\n- load average at end: {load()}\n")


def main_concurrent(args) -> None:
    for model in args.models:
        keys = [(k, mode) for k in args.ks for mode in args.modes]
        rates: dict[tuple[int, str], list[float]] = {key: [] for key in keys}
        for _ in range(args.rounds):
            for k, mode in keys:
                rates[(k, mode)].append(concurrent(args, model, k, mode))
        ref = rates[keys[0]]
        print(f"### {model}: {args.procs} processes at once, one thread each\n")
        print(f"| k per process | gradients | model-steps/s, {args.procs} processes | x {keys[0][0]} {keys[0][1]} |")
        print("|---:|---|---:|---:|")
        for (k, mode), r in rates.items():
            ratio = statistics.median(a / b for a, b in zip(r, ref))
            print(f"| {k} | {mode} | {statistics.median(r):,.0f} | {ratio:.2f} |")
        print(f"\n- load average at end: {load()}\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        model, k, mode, steps, warmup, n, chunk = argv[1:8]
        worker(model, int(k), mode, int(steps), int(warmup), int(n) or None, int(chunk))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits", "gmm"], help="bench_training.py's model names")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 6, 12], help="stack sizes (1: one model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=240, help="model-steps per configuration per round")
    parser.add_argument("--warmup", type=int, default=20, help="stack steps before timing")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="how the gradients are computed; the first is the reference of the ratios")
    parser.add_argument("--n", type=int, default=None, help="training rows per member (default: bench_training's 1024)")
    parser.add_argument("--chunk", type=int, default=train.CHUNK_STEPS, help="the most steps of one native chunk")
    parser.add_argument("--floor", action="store_true", help="time a step against its matmuls alone")
    parser.add_argument("--procs", type=int, default=1,
                        help="run each configuration as this many single-thread processes at once")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"## Training by hand against autograd, cpu ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n")
    print(f"- host CPU: {cpu_model()}, 1 thread per process; load average at start {load()}; torch {torch.__version__}")
    print(f"- {args.rounds} interleaved rounds of {args.steps} model-steps per configuration after {args.warmup} "
          "warm-up steps; medians over rounds\n")
    if args.floor:
        main_floor(args)
        return
    if args.procs > 1:
        main_concurrent(args)
        return
    for model in args.models:
        engines = {(k, mode): engine_for(model, k, mode=mode, n=args.n) for k in args.ks for mode in args.modes}
        for (_k, mode), engine in engines.items():
            advance(engine, mode, args.warmup, args.chunk)
        rates: dict[tuple[int, str], list[float]] = {key: [] for key in engines}
        for _ in range(args.rounds):
            for (k, mode), engine in engines.items():
                steps = max(5, args.steps // k)
                t0 = time.perf_counter()
                advance(engine, mode, steps, args.chunk)
                rates[(k, mode)].append(k * steps / (time.perf_counter() - t0))
        first = args.modes[0]
        ref = rates[(min(args.ks), first)] if 1 not in args.ks else rates[(1, first)]
        print(f"### {model}\n")
        print(f"| k | gradients | model-steps/s | x single {first} | weights against {first}, k = 1 |")
        print("|---:|---|---:|---:|---|")
        for (k, mode), r in rates.items():
            ratio = statistics.median(a / b for a, b in zip(r, ref))
            same = "—"
            if mode != first and k == 1 and (1, first) in engines:
                other, mine = engines[(1, first)].stack, engines[(1, mode)].stack
                gap = max(float((mine.params[n] - other.params[n]).abs().max()) for n in mine.params)
                scale = max(float(other.params[n].abs().max()) for n in mine.params)
                same = "equal" if gap == 0 else f"differ by {gap / scale:.1e} of the largest"
            print(f"| {k} | {mode} | {statistics.median(r):,.0f} | {ratio:.2f} | {same} |")
        print(f"\n- load average at end: {load()}\n")


if __name__ == "__main__":
    main()
