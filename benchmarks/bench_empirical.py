"""The empirical optimal denoiser at scale: time and peak memory of sampling with n training points.

`EmpiricalDenoiser` streams a log-sum-exp over chunks of training points and of queries, so its
working memory does not grow with n; this prints, for each (n, D), the seconds per denoiser
evaluation, the seconds for the whole Heun sampler (18 steps = 35 evaluations) and the peak resident
memory of the process, next to the size of the stored training set.

Run: `python benchmarks/bench_empirical.py --n 50000 --dims 64 3072 --num-samples 64`
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, load  # noqa: E402

from diffmem.families import EmpiricalDenoiser  # noqa: E402
from diffmem.samplers import heun_sampler, per_sample_latents  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[50_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 3072])
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(describe(torch.device("cpu")))
    print(f"- load average at start: {load()}\n")
    print("| n | D | training set (MiB) | one evaluation, 64 queries (s) | Heun sampler, "
          f"{args.num_samples} samples (s) | peak RSS so far (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        for dim in args.dims:
            train = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
            den = EmpiricalDenoiser(train, compute_dtype=torch.float64)
            x = torch.randn(64, dim) * 2.0
            t0 = time.perf_counter()
            den(x, torch.full((64,), 2.0))
            one = time.perf_counter() - t0
            z = per_sample_latents(args.num_samples, (dim,), base_seed=0)
            t0 = time.perf_counter()
            out = heun_sampler(den, z, num_steps=18)
            full = time.perf_counter() - t0
            assert torch.isfinite(out).all()
            print(f"| {n:,} | {dim} | {train.numel() * 4 / 2**20:,.0f} | {one:.2f} | {full:.1f} | {peak_rss_mib():,.0f} |",
                  flush=True)
            del train, den
    print(f"\n- load average at end: {load()}")


if __name__ == "__main__":
    main(sys.argv[1:])
