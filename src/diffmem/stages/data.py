"""The data stages: build the pool and the held-out test split, and write nested training subsets.

Run: `diffmem prepare-data --data '<json>' --out dataset.npz` and
`diffmem subsample --dataset dataset.npz --n 64 --seed 0 --out train.npz`.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from diffmem.config import ConfigError, DataConfig, read_json_arg
from diffmem.data import load_dataset, prepare_dataset, save_dataset, subset_indices
from diffmem.io import atomic_savez, fail
from diffmem.log import configure
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem prepare-data", __doc__, "diffmem.stages.data")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build the pool and the test split")
    p.add_argument("--data", required=True, help="data config slice as JSON (or a path to one)")
    p.add_argument("--out", required=True)
    s = sub.add_parser("subsample", help="write the training set of size n for a seed")
    s.add_argument("--dataset", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--twin", action="store_true", help="the twin model's set: the last n of the permutation")
    s.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "prepare":
            cfg = DataConfig.from_dict(read_json_arg(args.data))
            ds = prepare_dataset(cfg)
            save_dataset(ds, args.out)
            log.info(f"{cfg.dataset}: pool {ds.pool.shape}, test {ds.test.shape} -> {args.out}")
        else:
            ds = load_dataset(args.dataset)
            idx = subset_indices(ds.pool.shape[0], n=args.n, seed=args.seed, twin=args.twin)
            arrays = {"x": ds.pool[idx], "indices": idx}
            if ds.image_shape is not None:
                arrays["image_shape"] = np.asarray(ds.image_shape, dtype=np.int64)
            atomic_savez(args.out, **arrays)
            what = " (twin: last n of the permutation)" if args.twin else ""
            log.info(f"n={args.n} seed={args.seed}{what}: {idx.shape[0]} training points -> {args.out}")
    except ConfigError as exc:
        fail(str(exc))


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
