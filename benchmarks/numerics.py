"""How much the engine's run settings move a training trajectory: prints one markdown table.

Each variant trains the same run (same data, seed and steps) and is compared with the eager fp32
run of one model: the largest weight difference relative to the largest weight, and the relative
difference of the final train and test probe losses. Variants: `train.compile` (torch.compile of the
loss and its backward), `train.precision: bf16` (autocast), the run as member 0 of a stack of four
(batched kernels), for the MLPs `train.kernel: native` (diffmem's C kernel; the reference and the other
variants use torch's kernels, `train.kernel: torch`) and, for the U-Net, `train.channels_last`. `train.tf32` has no effect on CPU.

    python benchmarks/numerics.py --device cpu --steps 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from diffmem.checkpoint import checkpoint_path, load_checkpoint  # noqa: E402
from diffmem.config import ModelConfig, TrainConfig  # noqa: E402
from diffmem.data import gmm_sample  # noqa: E402
from diffmem.engine import Run, train_runs  # noqa: E402

MODELS = {
    # the synthetic setting of arXiv 2505.17638: GMM in d = 8, batch 256, Adam 6e-4, DDPM
    "gmm": (ModelConfig(arch="mlp", width=128, depth=2, emb_dim=16, parameterization="ddpm"), (8,),
            {"batch_size": 256, "lr": 6e-4}),
    "digits": (ModelConfig(arch="mlp", width=128, depth=2, emb_dim=32), (64,), {"batch_size": 16, "lr": 1e-3}),
    "unet": (ModelConfig(arch="unet", width=8, channel_mult=[1, 2], num_res_blocks=1, attn_levels=[]), (1, 8, 8),
             {"batch_size": 8, "lr": 1e-3}),
}


def gmm(n: int, d: int, seed: int) -> np.ndarray:
    return gmm_sample(n, dim=d, mu=1.0, rng=np.random.default_rng(seed))[0]


def run(model: str, *, steps: int, device: str, stack: int = 1, **extra) -> tuple[dict, dict, float]:
    cfg, shape, settings = MODELS[model]
    dim = int(np.prod(shape))
    train_cfg = TrainConfig(max_steps=steps, checkpoint_steps=(steps,), probe_size=1024, log_every=10**9,
                            device=device, **settings, **{"kernel": "torch", **extra})
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Run(gmm(256 if m == 0 else 128 + 32 * m, dim, m), m, Path(tmp) / f"m{m}") for m in range(stack)]
        t0 = time.perf_counter()
        metrics = train_runs(runs, gmm(512, dim, 99), model_cfg=cfg, train_cfg=train_cfg, data_shape=shape,
                             device=torch.device(device), log=lambda line: None)
        seconds = time.perf_counter() - t0
        weights = load_checkpoint(checkpoint_path(runs[0].state_dir, steps))["model"]
    return weights, metrics[0][steps], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gmm", "digits", "unet"], choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--unet-steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe(torch.device(args.device)))
    print("\n| model | steps | variant | max abs weight diff / max abs weight | train loss rel. diff | "
          "test loss rel. diff | seconds |\n|---|---:|---|---:|---:|---:|---:|")
    for model in args.models:
        steps = args.unet_steps if model == "unet" else args.steps
        ref_w, ref_m, ref_s = run(model, steps=steps, device=args.device)
        print(f"| {model} | {steps} | eager fp32, alone (reference) | 0 | 0 | 0 | {ref_s:.1f} |", flush=True)
        variants = {"stack of 4, member 0": {"stack": 4}, "bf16 autocast": {"precision": "bf16"}}
        if not args.skip_compile:
            variants["compile"] = {"compile": True}
        if model == "unet":
            variants["channels_last"] = {"channels_last": True}
        else:
            variants["native kernel"] = {"kernel": "native"}
        scale = max(float(v.abs().max()) for v in ref_w.values() if v.is_floating_point())
        for name, extra in variants.items():
            w, m, s = run(model, steps=steps, device=args.device, **extra)
            diff = max(float((w[k].cpu() - ref_w[k].cpu()).abs().max()) for k in ref_w if ref_w[k].is_floating_point())
            rel = {key: abs(m[key] - ref_m[key]) / abs(ref_m[key]) for key in ("train_loss", "test_loss")}
            print(f"| {model} | {steps} | {name} | {diff / scale:.1e} | {rel['train_loss']:.1e} | "
                  f"{rel['test_loss']:.1e} | {s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
