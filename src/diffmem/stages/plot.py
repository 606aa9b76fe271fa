"""The plot stage: the figures of one experiment from its cube.nc and fit.nc (`diffmem.figures.experiment`
says what each figure shows). One call draws any of them, memorization and quality figures together,
reading the cube and the fit once: the workflow draws all of an experiment's figures in one job.

Run: `diffmem plot --cube cube.nc --fit fit.nc --outdir figures/ [--figures NAME ...] [--quality] [--closed-form]`
"""

from __future__ import annotations

import logging
import sys

import xarray as xr

from diffmem.cube import load_parts
from diffmem.figures.experiment import compare_p_delta, make_experiment_figures
from diffmem.fitfile import read_fit
from diffmem.io import NETCDF_ENGINE, fail
from diffmem.log import configure
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem plot", __doc__, "diffmem.stages.plot")
    parser.add_argument("--cube")
    parser.add_argument("--fit")
    parser.add_argument("--outdir")
    parser.add_argument("--title", default="")
    parser.add_argument("--quality", action="store_true",
                        help="without --figures: the quality figures the cube and fit can fill, too")
    parser.add_argument("--data-dim", type=int, default=None, help="d, to plot P(Delta > 0) against n/d")
    parser.add_argument("--closed-form", action="store_true", help="figures of a closed-form family (one step)")
    parser.add_argument("--compare", nargs="+", default=None, metavar="CUBE",
                        help="overlay P(Delta > 0) vs n/d of these cubes (with --dims) into --out")
    parser.add_argument("--dims", nargs="+", type=int, default=None, help="d of each --compare cube")
    parser.add_argument("--out", default=None, help="figure file of --compare")
    parser.add_argument("--figures", nargs="+", default=None, metavar="NAME",
                        help="draw these figures (names without .png), memorization and quality ones together; "
                             "default every memorization figure (with --quality also the quality ones)")
    args = parser.parse_args(argv)
    if not args.compare and not (args.cube and args.fit and args.outdir):
        parser.error("--cube, --fit and --outdir are required (or --compare CUBE ... --dims D ... --out FILE)")
    if args.compare:
        if not args.dims or len(args.dims) != len(args.compare) or not args.out:
            parser.error("--compare needs one --dims entry per cube and --out")
        log.info(f"wrote {compare_p_delta(load_parts(args.compare), args.dims, args.out, title=args.title)}")
        return
    fit = read_fit(args.fit)
    with xr.open_dataset(args.cube, engine=NETCDF_ENGINE) as cube:
        title = args.title or cube.attrs.get("experiment", "")
        try:
            paths = make_experiment_figures(cube.load(), fit.load(), args.outdir, figures=args.figures,
                                            quality=args.quality, closed_form=args.closed_form, title=title,
                                            data_dim=args.data_dim)
        except ValueError as exc:
            fail(f"plot: {exc}")
    if args.figures and {p.stem for p in paths} != set(args.figures):  # a family drew fewer than asked
        fail(f"plot: no figure(s) {sorted(set(args.figures) - {p.stem for p in paths})} drawn")
    log.info(f"wrote {len(paths)} figures to {args.outdir}")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
