"""Sampling throughput (samples/s) of the Heun sampler with the MLP and the U-Net.

Times `samplers.heun_sampler` (EDM Heun, --num-steps steps = 2 x steps - 1 network evaluations) on
an untrained denoiser (speed does not depend on the weights), and `sample.generate`, which adds the
per-sample seeded latents that `diffmem sample` uses, in batches of --batch-size.
Models: MLP width 256, depth 3 on 64-d data; U-Net width 32 on 32x32 one-channel images.

Run: `python benchmarks/bench_sampling.py --device cpu --arch mlp unet --unet-num-samples 64`
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, load, sync  # noqa: E402

from diffmem.config import ModelConfig, SampleConfig  # noqa: E402
from diffmem.engine import set_tf32  # noqa: E402
from diffmem.generation import generate  # noqa: E402
from diffmem.models import build_denoiser  # noqa: E402
from diffmem.samplers import heun_sampler  # noqa: E402


def model_for(arch: str) -> tuple[ModelConfig, tuple[int, ...]]:
    if arch == "mlp":
        return ModelConfig(arch="mlp", width=256, depth=3, emb_dim=64), (64,)
    import diffmem.models.unet  # noqa: F401 - lazily: fails here, clearly, if the U-Net is missing

    return ModelConfig(arch="unet", width=32), (1, 32, 32)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", nargs="+", default=["mlp", "unet"], choices=["mlp", "unet"])
    parser.add_argument("--num-samples", type=int, default=2048)
    parser.add_argument("--unet-num-samples", type=int, default=None, help="default --num-samples")
    parser.add_argument("--batch-size", type=int, default=2048, help="as sample.batch_size")
    parser.add_argument("--num-steps", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timed runs")
    parser.add_argument("--tf32", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    set_tf32(args.tf32)
    print(f"## Sampling throughput: Heun, {args.num_steps} steps ({2 * args.num_steps - 1} network evaluations)\n")
    print(describe(device) + f"\n- tf32 {args.tf32}\n")
    print("| model | samples | batch | heun_sampler (samples/s) "
          "| sample.generate incl. per-sample latents (samples/s) |")
    print("|---|---:|---:|---:|---:|")
    for arch in args.arch:
        try:
            model_cfg, shape = model_for(arch)
        except ImportError as exc:
            print(f"| {arch} | skipped: {exc} | | | |")
            continue
        num = args.unet_num_samples if (arch == "unet" and args.unet_num_samples) else args.num_samples
        batch = min(args.batch_size, num)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            denoiser = build_denoiser(model_cfg, data_shape=shape).to(device).eval()
        latents = torch.randn((num, *shape), generator=torch.Generator().manual_seed(0)).to(device)

        def sampler_only():
            for start in range(0, num, batch):
                heun_sampler(denoiser, latents[start : start + batch], num_steps=args.num_steps)

        cfg = SampleConfig(num_samples=num, num_steps=args.num_steps, batch_size=batch)
        t_sampler = timed(sampler_only, device, args.repeats)
        t_generate = timed(lambda: generate(denoiser, cfg, data_shape=shape, device=device), device, args.repeats)
        label = "MLP w256 d3, 64-d" if arch == "mlp" else "U-Net w32, 1x32x32"
        print(f"| {label} | {num} | {batch} | {num / t_sampler:,.0f} | {num / t_generate:,.0f} |", flush=True)
    print(f"\n- load average at end: {load()}")


if __name__ == "__main__":
    main()
