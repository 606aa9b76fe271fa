"""What tracking a user's image folder by content costs: `diffmem.fingerprint` on N small PNG files.

Writes N 32x32 grayscale PNGs (default 200,000, CelebA's order of size, one flat folder like
img_align_celeba) unless the folder already holds them, then times
- listing: `images.list_image_files`, the walk the config checks already do (the floor);
- cold: the first `data_fingerprint` (every file read and hashed; the files are likely in the page
  cache, having just been written, so a cold disk is slower);
- warm: the second (every file stat'ed, no file read: the per-file cache hits);
- and, unless --no-snakemake, `snakemake -n` on a one-experiment config reading the folder, twice: the
  first with an empty fingerprint cache, the second a dry run with nothing changed, and the same dry
  run on the digits for Snakemake's own start-up.

Run: `python benchmarks/bench_fingerprint.py [--num-files 200000] [--folder /tmp/fp_bench]
[--no-snakemake]`
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from diffmem.fingerprint import RACY_NS, data_fingerprint
from diffmem.images import list_image_files

REPO = Path(__file__).resolve().parents[1]


def make_pngs(folder: Path, num_files: int, seed: int = 0) -> float:
    """num_files distinct 32x32 grayscale PNGs in folder (kept if already there); seconds spent."""
    folder.mkdir(parents=True, exist_ok=True)
    have = sum(1 for p in folder.iterdir() if p.suffix == ".png")
    if have == num_files:
        return 0.0
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    for i in range(num_files):
        pixels = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:06d}.png")
        if (i + 1) % 20000 == 0:
            print(f"  wrote {i + 1}/{num_files} files ({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def dry_run(workdir: Path, cfg: dict) -> float:
    workdir.mkdir(exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "1", "-n", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return seconds


def experiment(data: dict) -> dict:
    return {"data": {"n_train": [16], "seeds": [0], "n_test": 100, **data},
            "model": {"width": 32, "depth": 1, "emb_dim": 16}, "train": {"max_steps": 10}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-files", type=int, default=200_000)
    ap.add_argument("--folder", type=Path, default=None, help="where the PNGs are written (kept; default: a temp folder)")
    ap.add_argument("--no-snakemake", action="store_true", help="skip the snakemake -n timings")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_fingerprint_"))
    folder = args.folder or scratch / "images"
    try:
        print(f"writing {args.num_files} PNGs to {folder} ...", flush=True)
        made = make_pngs(folder, args.num_files)
        time.sleep(RACY_NS / 1e9)  # files younger than this are hashed every time, by design
        data = {"dataset": "images", "path": str(folder)}
        listing, files = timed(lambda: list_image_files(folder))
        assert len(files) == args.num_files, len(files)
        cache = scratch / "cache"
        cold, first = timed(lambda: data_fingerprint(data, cache_dir=cache))
        warm, second = timed(lambda: data_fingerprint(data, cache_dir=cache))
        assert first == second
        cache_mb = sum(p.stat().st_size for p in cache.iterdir()) / 1e6
        rows = [("write the PNGs", made), ("list them (list_image_files)", listing),
                ("fingerprint, cold (hash every file)", cold), ("fingerprint, warm (cache hit)", warm)]
        if not args.no_snakemake:
            work = scratch / "wf"
            cfg = {"results_dir": "results", "experiments": {"folder": experiment(data)}}
            rows.append(("snakemake -n, empty fingerprint cache", dry_run(work, cfg)))
            rows.append(("snakemake -n, nothing changed", dry_run(work, cfg)))
            digits = {"results_dir": "results", "experiments": {"digits": experiment({"dataset": "digits"})}}
            rows.append(("snakemake -n on the digits (start-up)", dry_run(scratch / "wf_digits", digits)))
        print(f"\n{args.num_files:,} files of 32x32 grayscale PNG; fingerprint cache {cache_mb:.1f} MB\n")
        print("| step | seconds |\n|---|---|")
        for what, seconds in rows:
            print(f"| {what} | {seconds:.2f} |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
