"""The gallery stage: one copy gallery per (n, seed) run (`diffmem.figures.gallery` says what it shows).

Run: `diffmem gallery --samples a/samples.json b/samples.json --scores a/scores.nc b/scores.nc
--train a/train.npz b/train.npz --fit fit.nc --out figures/gallery/n64_seed0.png figures/gallery/n64_seed1.png`
(one process draws all runs of an experiment, in the order given)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import xarray as xr

from diffmem import names
from diffmem.data import load_train
from diffmem.figures.gallery import make_gallery
from diffmem.fitfile import read_fit
from diffmem.io import NETCDF_ENGINE, fail
from diffmem.log import configure
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem gallery", __doc__, "diffmem.stages.gallery")
    parser.add_argument("--samples", nargs="+", required=True, help="samples.json manifest of each run")
    parser.add_argument("--scores", nargs="+", required=True, help="scores.nc of each run (same order)")
    parser.add_argument("--train", nargs="+", required=True, help="train.npz of each run (same order)")
    parser.add_argument("--fit", default=None, help="fit.nc of the experiment (tau_gen, tau_mem)")
    parser.add_argument("--num-pairs", type=int, default=8, help="sample / nearest-training pairs per checkpoint")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", nargs="+", required=True, help="PNG path of each run (same order)")
    args = parser.parse_args(argv)
    if not len(args.samples) == len(args.scores) == len(args.train) == len(args.out):
        fail("give one --samples, --scores, --train and --out file per run, in the same order")
    fit = None
    if args.fit:
        fit = read_fit(args.fit)
    # one process draws every run of an experiment: the imports cost more than a gallery
    for samples, scores_path, train_path, out in zip(args.samples, args.scores, args.train, args.out):
        manifest = json.loads(Path(samples).read_text())
        train, pool_index, image_shape = load_train(train_path)
        with xr.open_dataset(scores_path, engine=NETCDF_ENGINE) as ds:
            scores = ds[[names.F_MEM, names.RATIO, names.D1, names.NEAREST]].load()
        missing = [s for s in scores[names.STEP].values if str(int(s)) not in manifest["files"]]
        if missing:
            fail(f"{samples} has no samples for steps {missing[:5]} of {scores_path} (rerun sampling)")
        chosen = make_gallery(manifest=manifest, scores=scores, train=train, pool_index=pool_index,
                              image_shape=image_shape, fit=fit, out=out, num_pairs=args.num_pairs, title=args.title)
        log.info(f"n={manifest['n']} seed={manifest['seed']}: steps "
                 + ", ".join(f"{s} ({label})" for label, s in chosen) + f" -> {out}")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
