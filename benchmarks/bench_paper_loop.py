"""Training speed of `diffmem train` against the training loop of arXiv 2505.17638's own code.

The paper's synthetic setting (Experiments/src/Training/run_GMM.py in
github.com/tbonnair/Why-Diffusion-Models-Don-t-Memorize): two Gaussians at +-1 in d = 8 with unit
variance, a `TinyModels.SimpleTimeModel(d=8, d_model=128)` (~100k parameters, integer DDPM times
through a positional-encoding lookup), Adam at lr 6e-4, batch 256 drawn by a shuffling DataLoader,
`Diffusion.train()` doing one Adam step per batch with an epsilon-MSE loss and `.item()` each step.

Each side runs in a fresh subprocess with one torch thread (OMP/MKL threads 1 too), on the same
training-set size n and the same number of steps:
- diffmem: the real CLI, `python -m diffmem.cli train`, on a GMM training set made by
  `diffmem prepare-data` and `diffmem subsample` (as the workflow's data rules do), with the first
  --diffmem network: `mlp` (diffmem's own MLP: width --width, depth 2, emb_dim 16; 120,712
  parameters at width 128, 18 % more matmul work per step than theirs) or `time_mlp` (the paper's
  network, written in diffmem: width --width, depth 3, their 102,024 parameters at width 128); DDPM
  parameterization, Adam 6e-4, batch --batch, 1 thread, a checkpoint grid of {0, steps} only and a
  small probe;
- paper: this script in worker mode, which imports the paper's Utils/Diffusion.py, TinyModels.py and
  GMM_data_scores.py from --paper-repo (nothing is downloaded), builds the run as run_GMM.py does with
  DEVICE 'cpu', and calls their `Diffusion.train()` with no save times and path_save in a temp folder
  (bytecode writing is off, so the checkout is left as it was; the script checks that).

Two measures per run: the whole process (wall clock from start to exit, imports and startup
included; steps / seconds) and the steady state (steps/s over the steps after the first
--log-every, timed by this script from the moment each side reports step --log-every and step
--steps: diffmem's `[train] step ...` log lines, the worker's own lines). Pairs alternate the order
(ABBA) to cancel drift; the ratio is diffmem / paper per pair, then the median over pairs.

With --interleaved, the paper's loop and every --diffmem side run in one process instead, in
alternating blocks of 100 steps on CPU time, and each side's FLOPs per step are counted: the figure to
trust on a loaded machine (see `interleaved`).

Run: `python benchmarks/bench_paper_loop.py --paper-repo /tmp/paper_repo --steps 20000 --pairs 3`
     `python benchmarks/bench_paper_loop.py --paper-repo /tmp/paper_repo --interleaved --steps 4000 \
          --diffmem mlp time_mlp time_mlp+compile`
     (--diffmem-extra-train '{"precision": "bf16"}' merges extra keys into diffmem's train slice)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTING_D = 8  # data dimension of the paper's GMM runs
PAPER_LR = 6e-4  # run_GMM.py's Adam learning rate
PAPER_UTILS = Path("Experiments") / "src" / "Utils"
DIFFMEM_LOG = re.compile(r"diffmem\.engine: step\s+(\d+)/\d+\s+loss\s+(\S+)\s+([\d,.]+) steps/s")
DIFFMEM_PARAMS = re.compile(r"starting from scratch, ([\d,]+) parameters")
PAPER_LOG = re.compile(r"\[paper\] step\s+(\d+)\s+loss\s+(\S+)")
DEPTHS = {"mlp": 2, "time_mlp": 3}  # default depth per diffmem arch: time_mlp is the paper's network (3 blocks)


def one_thread_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    return env


# ---------------------------------------------------------------- paper side (worker subprocess)

def import_paper_modules(paper_repo: Path) -> tuple:
    """(Diffusion, TinyModels, GMM_data_scores, notes) imported from the checkout, stand-ins for what is missing."""
    import types
    from importlib.machinery import ModuleSpec

    def stand_in(name: str, **attrs) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__spec__ = ModuleSpec(name, None)  # torch._dynamo calls find_spec on tqdm
        module.__dict__.update(attrs)
        sys.modules[name] = module
        return module

    sys.dont_write_bytecode = True  # no __pycache__ in their checkout
    sys.path.insert(1, str(paper_repo / PAPER_UTILS))
    notes = []
    try:
        import tqdm  # noqa: F401
    except ImportError:
        # Diffusion.train only calls trange(...).update / set_description every 100 steps
        class _Bar:
            def __init__(self, *a, **k): pass
            def update(self, *a, **k): pass
            def set_description(self, *a, **k): pass

        stand_in("tqdm", trange=_Bar, tqdm=_Bar)
        notes.append("tqdm missing: a no-op progress bar stands in")
    try:
        import Plot  # noqa: F401 - imports torchvision; train() uses it only with generate=True
    except ImportError as exc:
        stand_in("Plot")
        notes.append(f"their Plot.py not importable ({exc}): an empty module stands in (used only to plot samples)")
    import Diffusion
    import GMM_data_scores
    import TinyModels
    return Diffusion, TinyModels, GMM_data_scores, notes


def paper_setup(args, *, save_dir: str) -> tuple:
    """run_GMM.py's setup on CPU: (Diffusion module, config, DataLoader, model, optimizer, DiffusionConfig, notes)."""
    import torch
    from torch.utils.data import DataLoader

    Diffusion, TM, GMM, notes = import_paper_modules(Path(args.paper_repo))
    config = Diffusion.TrainingConfig()
    config.DATASET = "GMM"
    config.n_images = args.n
    config.IMG_SHAPE = (1, SETTING_D)
    config.BATCH_SIZE = args.batch
    config.N_STEPS = args.steps
    config.LOSS_SCORE_EMP = False
    config.OPTIM = "Adam"
    config.LR = PAPER_LR
    config.mode = "normal"
    config.time_step = -1
    config.DEVICE = "cpu"
    config.path_save = save_dir + "/"
    x_train, _ = GMM.generate_GMM(args.n, SETTING_D, 1, 1, args.seed)
    loader = DataLoader(x_train.to(torch.float32).to(config.DEVICE), batch_size=args.batch, shuffle=True)
    model = TM.SimpleTimeModel(d=SETTING_D, d_model=args.width).to(config.DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.LR)
    df = Diffusion.DiffusionConfig(n_steps=config.TIMESTEPS, img_shape=config.IMG_SHAPE, device=config.DEVICE)
    return Diffusion, config, loader, model, optimizer, df, notes


def paper_worker(args) -> None:
    """Runs in a fresh subprocess: run_GMM.py's setup on CPU, then their Diffusion.train()."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as save_dir:
        Diffusion, config, loader, model, optimizer, df, notes = paper_setup(args, save_dir=save_dir)
        for note in notes:
            print(f"[paper] note: {note}", flush=True)
        print(f"[paper] {sum(p.numel() for p in model.parameters())} parameters", flush=True)

        # Count steps around their train_one_batch (train() looks it up in its module at each call) and
        # report step log_every and the last step, as diffmem's log lines do; the wrapper adds ~1 us/step.
        inner, losses, done = Diffusion.train_one_batch, [], [0]

        def counted(*a, **k):
            loss, x_t = inner(*a, **k)
            done[0] += 1
            losses.append(loss)
            if done[0] % args.log_every == 0:
                mean = sum(losses) / len(losses)
                losses.clear()
                print(f"[paper] step {done[0]} loss {mean:.4f}", flush=True)
            return loss, x_t

        Diffusion.train_one_batch = counted
        t0 = time.perf_counter()
        Diffusion.train(model, loader, optimizer, config, df, nn.MSELoss(), 1.0, [], 0, "run/")
        loop_s = time.perf_counter() - t0
        print(f"[paper] loop {done[0]} steps in {loop_s:.3f} s", flush=True)
        if any(Path(save_dir).iterdir()):
            print("[paper] note: their train() wrote into the temp folder", flush=True)


def parse_side(spec: str) -> dict:
    """A diffmem side of --diffmem: 'ARCH' or 'ARCH+compile' (arch mlp or time_mlp)."""
    arch, _, option = spec.partition("+")
    if arch not in DEPTHS or option not in ("", "compile"):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected mlp or time_mlp, optionally with +compile")
    return {"label": spec, "arch": arch, "compile": option == "compile"}


def diffmem_model(args, arch: str) -> dict:
    """diffmem's model slice for a side: the paper's d_model as width; depth --depth or the arch's default."""
    model = {"family": "network", "arch": arch, "parameterization": "ddpm", "width": args.width,
             "depth": args.depth or DEPTHS[arch]}
    if arch == "mlp":
        model["emb_dim"] = 16
    return model


def step_flops(fn) -> float:
    """FLOPs (matmuls) of one call of `fn`, counted by torch.utils.flop_counter.FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def interleaved(args) -> None:
    """The paper's loop and every --diffmem side in this one process, alternating blocks of steps, on CPU time.

    A shared, noisy machine moves whole-process timings by 2x between runs; alternating blocks of 100
    steps in one process, on process CPU time, puts every side under the same load, so the ratio of
    the medians is the figure to trust there. The paper side calls their train_one_batch on batches
    from their DataLoader (what their train() does each step); each diffmem side is the engine's
    train_step on a stack of one (what `diffmem train` does each step), on their training set.
    FLOPs per step (forward + backward matmuls, FlopCounterMode) turn steps/s into GFLOP/s, which
    separates the loop's overhead from the network's size: diffmem's mlp does more work per step
    than the paper's network; time_mlp is the paper's network.
    """
    import dataclasses

    import numpy as np
    import torch
    from torch import nn

    from diffmem import engine as train
    from diffmem.config import ModelConfig, TrainConfig
    from diffmem.models import build_denoiser

    torch.set_num_threads(1)
    save_dir = tempfile.TemporaryDirectory()  # train_one_batch writes nothing there; removed at exit
    Diffusion, config, loader, model, optimizer, df, _ = paper_setup(args, save_dir=save_dir.name)
    loss_fn, batches = nn.MSELoss(), iter(loader)

    def paper_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    def paper_step():
        Diffusion.train_one_batch(paper_batch(), model, optimizer, loss_fn, config, df)

    def paper_fwd_bwd():
        x = paper_batch()
        ts = torch.randint(1, config.TIMESTEPS, (x.shape[0],))
        x_t, noise = Diffusion.forward_diffusion(df, x, ts, config)
        loss_fn(noise, model(x_t.float(), ts)).backward()
        optimizer.zero_grad()

    x = loader.dataset.numpy()  # their training set: the tensor their DataLoader batches
    sides = {"paper": {"step": paper_step, "params": sum(t.numel() for t in model.parameters()),
                       "flops": step_flops(paper_fwd_bwd), "net": f"SimpleTimeModel(d=8, d_model={args.width})"}}
    for side in args.diffmem:
        model_cfg = ModelConfig(**diffmem_model(args, side["arch"]))
        train_cfg = TrainConfig(batch_size=args.batch, lr=PAPER_LR, **{**args.extra_train, "compile": side["compile"]})
        stack = train.start_stack([train.Run(x, args.seed, None)], [None], model_cfg=model_cfg, train_cfg=train_cfg,
                                  data_shape=(SETTING_D,), device=torch.device("cpu"), log=lambda line: None)
        data = train.StackData.stack([torch.as_tensor(x)])
        base = build_denoiser(model_cfg, data_shape=(SETTING_D,))
        step_loss = train.make_step_loss(base, train_cfg, torch.device("cpu"))
        eager = train.make_step_loss(base, dataclasses.replace(train_cfg, compile=False), torch.device("cpu"))

        def diffmem_step(stack=stack, data=data, step_loss=step_loss, model_cfg=model_cfg, train_cfg=train_cfg,
                         base=base):
            losses = train.train_step(stack, data, step_loss=step_loss, model_cfg=model_cfg, train_cfg=train_cfg,
                                      vp_sigmas=base.sigmas)
            float(losses[0])  # the engine checks finiteness every step on CPU

        def fwd_bwd(stack=stack, data=data, eager=eager, model_cfg=model_cfg, train_cfg=train_cfg, base=base):
            batch = train.draw_batch(stack, data, model_cfg=model_cfg, train_cfg=train_cfg, vp_sigmas=base.sigmas)
            train.loss_and_grads(stack, eager, *batch)

        net = (f"mlp width {model_cfg.width}, depth {model_cfg.depth}, emb_dim 16" if side["arch"] == "mlp"
               else f"time_mlp width {model_cfg.width}, depth {model_cfg.depth}")
        sides[side["label"]] = {"step": diffmem_step, "params": sum(t.numel() for t in stack.leaves.values()),
                                "flops": step_flops(fwd_bwd), "net": net + (", train.compile" if side["compile"] else "")}

    for side in sides.values():  # warm-up (and compilation, with train.compile)
        for _ in range(50):
            side["step"]()
    names = list(sides)
    rates = {name: [] for name in names}
    block = 100
    for r in range(2 * max(1, args.steps // (2 * block))):
        for name in names if r % 2 == 0 else names[::-1]:
            c0 = time.process_time()
            for _ in range(block):
                sides[name]["step"]()
            rates[name].append(block / (time.process_time() - c0))
    med = {name: float(np.median(v)) for name, v in rates.items()}
    paper = np.array(rates["paper"])
    print(f"\n### interleaved in one process ({len(paper)} rounds of {block} steps per side, CPU seconds)\n")
    print("| side | network | parameters | GFLOP / step | median steps/CPU-s | GFLOP/CPU-s | ratio to paper "
          "| per round: min, median, max |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in names:
        side, per_round = sides[name], np.sort(np.array(rates[name]) / paper)
        print(f"| {name} | {side['net']} | {side['params']:,} | {side['flops'] / 1e9:.3f} | {med[name]:.0f} "
              f"| {med[name] * side['flops'] / 1e9:.1f} | **{med[name] / med['paper']:.2f}x** "
              f"| {per_round[0]:.2f}, {float(np.median(per_round)):.2f}, {per_round[-1]:.2f} |")
    print("\nratio to paper = ratio of the medians of steps per CPU-second; GFLOP counts forward + backward "
          "matmuls (FlopCounterMode), not the elementwise work or the optimizer.")


# ---------------------------------------------------------------- driver

def run_timed(cmd: list[str], *, log_re: re.Pattern, log_every: int, steps: int) -> dict:
    """Run `cmd`, stamping the lines that report steps; whole-process and steady-state timings."""
    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=one_thread_env(),
                            bufsize=1)
    stamps, losses, lines = {}, {}, []
    for line in proc.stdout:
        now = time.perf_counter()
        lines.append(line.rstrip("\n"))
        for part in line.split("\r"):  # tqdm's bar redraws with \r on the same stream
            m = log_re.search(part)
            if m:
                stamps[int(m.group(1))] = now
                losses[int(m.group(1))] = m.group(2)
    proc.wait()
    wall = time.perf_counter() - t_start
    if proc.returncode != 0 or log_every not in stamps or steps not in stamps:
        tail = "\n".join(lines[-15:])
        raise RuntimeError(f"{cmd[:4]} failed (exit {proc.returncode}); last output:\n{tail}")
    text = "\n".join(lines)
    return {
        "wall_s": wall,
        "whole_steps_per_s": steps / wall,
        "steady_steps_per_s": (steps - log_every) / (stamps[steps] - stamps[log_every]),
        "final_loss": losses[steps],
        "text": text,
    }


def prepare_data(workdir: Path, *, n: int, n_test: int) -> tuple[Path, Path]:
    """GMM dataset and training set of size n through diffmem's own CLI stages."""
    data = {"dataset": "gmm", "dim": SETTING_D, "gmm_mu": 1.0, "pool_size": n, "n_test": n_test, "split_seed": 0}
    dataset, train = workdir / "dataset.npz", workdir / "train.npz"
    cli = [sys.executable, "-m", "diffmem.cli"]
    subprocess.run([*cli, "prepare-data", "--data", json.dumps(data), "--out", str(dataset)], check=True)
    subprocess.run([*cli, "subsample", "--dataset", str(dataset), "--n", str(n), "--seed", "0", "--out", str(train)],
                   check=True)
    return dataset, train


def diffmem_cmd(args, *, dataset: Path, train: Path, run_dir: Path) -> list[str]:
    model = diffmem_model(args, args.diffmem[0]["arch"])
    train_cfg = {"optimizer": "adam", "lr": PAPER_LR, "batch_size": args.batch, "max_steps": args.steps,
                 "checkpoint_steps": [args.steps], "probe_size": 256, "device": "cpu", "threads": 1,
                 "log_every": args.log_every, **args.extra_train,
                 **({"compile": True} if args.diffmem[0]["compile"] else {})}
    return [sys.executable, "-m", "diffmem.cli", "train", "--train", str(train), "--dataset", str(dataset),
            "--model", json.dumps(model), "--train-cfg", json.dumps(train_cfg), "--seed", "0",
            "--checkpoints", str(run_dir / "checkpoints"), "--out", str(run_dir / "train_metrics.nc")]


def paper_cmd(args) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--worker", "paper", "--paper-repo", str(args.paper_repo),
            "--steps", str(args.steps), "--n", str(args.n), "--batch", str(args.batch), "--width", str(args.width),
            "--log-every", str(args.log_every)]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime_ns)} of every file under root: the checkout must be unchanged by a run."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-repo", type=Path, required=True,
                        help="checkout (or `git archive` extraction) of tbonnair/Why-Diffusion-Models-Don-t-Memorize")
    parser.add_argument("--steps", type=int, default=20000, help="optimizer steps per run (a multiple of --log-every)")
    parser.add_argument("--pairs", type=int, default=3, help="paired runs, order alternating (ABBA)")
    parser.add_argument("--n", type=int, default=1024, help="training-set size (even; > batch for true minibatches)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=128, help="diffmem's width and the paper's d_model")
    parser.add_argument("--depth", type=int, default=None, help="diffmem's residual blocks (default: 2 for mlp, "
                        "whose blocks have 3 linears beside a time-embedding MLP; 3 for time_mlp, the paper's)")
    parser.add_argument("--diffmem", nargs="+", type=parse_side, default=[parse_side("mlp")], metavar="ARCH[+compile]",
                        help="diffmem side(s): mlp (diffmem's MLP) and/or time_mlp (the paper's network), each "
                             "optionally +compile (train.compile); whole-process mode runs the first")
    parser.add_argument("--log-every", type=int, default=1000,
                        help="steady state = steps/s from this step to the last")
    parser.add_argument("--diffmem-extra-train", default="{}", metavar="JSON",
                        help='extra keys merged into diffmem\'s train slice, e.g. \'{"compile": true}\'')
    parser.add_argument("--interleaved", action="store_true",
                        help="instead of whole processes: both loops in this process, alternating blocks of 100 steps "
                             "on CPU time (robust on a loaded machine); --steps is then the steps per side")
    parser.add_argument("--worker", choices=["paper"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        paper_worker(args)
        return
    if args.steps % args.log_every or args.steps <= args.log_every:
        parser.error(f"--steps ({args.steps}) must be a multiple of --log-every ({args.log_every}) and larger")
    if args.n % 2:
        parser.error("--n must be even (the paper's generate_GMM puts n/2 points in each component)")
    if not (args.paper_repo / PAPER_UTILS / "Diffusion.py").exists():
        parser.error(f"{args.paper_repo} has no {PAPER_UTILS / 'Diffusion.py'}; pass the paper repository's root")
    args.extra_train = json.loads(args.diffmem_extra_train)
    if args.interleaved:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from machine import describe

        torch_ = __import__("torch")
        torch_.set_num_threads(1)
        print(describe(torch_.device("cpu")))
        interleaved(args)
        return

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import describe, load

    torch.set_num_threads(1)
    print("## diffmem train vs the training loop of arXiv 2505.17638 (GMM, d = 8)\n")
    print(describe(torch.device("cpu")))
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"- settings: n = {args.n}, batch {args.batch}, {args.steps} steps per run, {args.pairs} pairs, "
          f"1 thread per process, steady state over steps {args.log_every}-{args.steps}")
    print(f"- diffmem: {json.dumps(diffmem_model(args, args.diffmem[0]['arch']))}, adam lr {PAPER_LR}"
          + (", train.compile" if args.diffmem[0]["compile"] else "")
          + (f", extra train keys {json.dumps(args.extra_train)}" if args.extra_train else ""))
    print(f"- paper: SimpleTimeModel(d=8, d_model={args.width}), Adam lr {PAPER_LR}, DataLoader(shuffle=True), "
          f"their Diffusion.train() on cpu\n", flush=True)

    before = snapshot(args.paper_repo)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_paper_loop_") as tmp:
        tmp = Path(tmp)
        dataset, train = prepare_data(tmp, n=args.n, n_test=256)
        print("| pair | order | diffmem process (s) | paper process (s) | whole-process ratio | "
              "diffmem steady steps/s | paper steady steps/s | steady ratio |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for pair in range(args.pairs):
            order = ["diffmem", "paper"] if pair % 2 == 0 else ["paper", "diffmem"]
            res = {}
            for side in order:
                if side == "diffmem":
                    run_dir = tmp / f"run{pair}"
                    cmd = diffmem_cmd(args, dataset=dataset, train=train, run_dir=run_dir)
                    res[side] = run_timed(cmd, log_re=DIFFMEM_LOG, log_every=args.log_every, steps=args.steps)
                else:
                    res[side] = run_timed(paper_cmd(args), log_re=PAPER_LOG, log_every=args.log_every,
                                          steps=args.steps)
            d, p = res["diffmem"], res["paper"]
            whole, steady = p["wall_s"] / d["wall_s"], d["steady_steps_per_s"] / p["steady_steps_per_s"]
            rows.append({"diffmem": d, "paper": p, "whole": whole, "steady": steady})
            print(f"| {pair + 1} | {' → '.join(order)} | {d['wall_s']:.2f} | {p['wall_s']:.2f} | {whole:.2f}x "
                  f"| {d['steady_steps_per_s']:,.0f} | {p['steady_steps_per_s']:,.0f} | {steady:.2f}x |", flush=True)
    after = snapshot(args.paper_repo)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    med = {key: statistics.median(r[key] for r in rows) for key in ("whole", "steady")}
    print(f"| median | | {statistics.median(r['diffmem']['wall_s'] for r in rows):.2f} "
          f"| {statistics.median(r['paper']['wall_s'] for r in rows):.2f} | **{med['whole']:.2f}x** "
          f"| {statistics.median(r['diffmem']['steady_steps_per_s'] for r in rows):,.0f} "
          f"| {statistics.median(r['paper']['steady_steps_per_s'] for r in rows):,.0f} | **{med['steady']:.2f}x** |\n")
    last = rows[-1]
    d_params = DIFFMEM_PARAMS.search(last["diffmem"]["text"])
    p_params = re.search(r"\[paper\] (\d+) parameters", last["paper"]["text"])
    p_count = f"{int(p_params.group(1)):,}" if p_params else "?"
    print(f"- parameters: diffmem {d_params.group(1) if d_params else '?'}, paper {p_count}")
    print(f"- mean batch loss over the last {args.log_every} steps (epsilon MSE on both sides): "
          f"diffmem {last['diffmem']['final_loss']}, paper {last['paper']['final_loss']}")
    print(f"- whole-process steps/s (median): diffmem "
          f"{statistics.median(r['diffmem']['whole_steps_per_s'] for r in rows):,.0f}, paper "
          f"{statistics.median(r['paper']['whole_steps_per_s'] for r in rows):,.0f}")
    for note in sorted({ln for ln in last["paper"]["text"].splitlines() if ln.startswith("[paper] note")}):
        print(f"- {note}")
    print(f"- paper checkout {'unchanged' if not changed else f'CHANGED: {changed[:5]}'}")
    print(f"- load average at end {load()}")


if __name__ == "__main__":
    main()
