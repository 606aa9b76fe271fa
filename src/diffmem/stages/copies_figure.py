"""The copies-figure stage: memorization per training example (`diffmem.figures.copies` says what it shows).

Run: `diffmem copies-figure --cube cube.nc --runs 64:0:runs/n64_seed0/train.npz ... --out copies.png`
"""

from __future__ import annotations

import logging
import sys

import xarray as xr

from diffmem import names
from diffmem.data import load_train
from diffmem.figures.copies import VARIABLES, make_copies_figure
from diffmem.io import NETCDF_ENGINE, fail
from diffmem.log import configure
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def parse_runs(tokens: list[str]) -> dict[tuple[int, int], str]:
    runs = {}
    for token in tokens:
        try:
            n, seed, path = token.split(":", 2)
            runs[(int(n), int(seed))] = path
        except ValueError:
            fail(f"--runs expects N:SEED:PATH, got {token!r}")
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem copies-figure", __doc__, "diffmem.stages.copies_figure")
    parser.add_argument("--cube", required=True)
    parser.add_argument("--runs", nargs="+", required=True, help="N:SEED:train.npz of every run")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--title", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with xr.open_dataset(args.cube, engine=NETCDF_ENGINE) as ds:
        missing = [v for v in VARIABLES if v not in ds]
        if missing:
            fail(f"{args.cube} has no per-training-example variables {missing} (rerun the score stage)")
        cube = ds[list(VARIABLES)].load()
    train_sets, image_shape = {}, None
    for key, path in parse_runs(args.runs).items():
        x, _, shape = load_train(path)
        train_sets[key], image_shape = x, shape
    n_top, rows, corr = make_copies_figure(cube, train_sets=train_sets, image_shape=image_shape, out=args.out,
                                           title=args.title, top=args.top)
    for n, c in corr.items():
        log.info(f"n={n}: {c['copied']:.3f} of training points ever copied; Spearman(first copy step, "
                 f"nn distance) = {c[names.TRAIN_NN_DISTANCE]:+.3f}, (first copy step, distance to mean) = "
                 f"{c[names.TRAIN_MEAN_DISTANCE]:+.3f}")
    if n_top is not None:
        log.info(f"most copied at n={n_top}: " + ", ".join(f"{r['count']}x (seed {r['seed']}, pool #{r['pool']})"
                                                         for r in rows[:5]) + f" -> {args.out}")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
