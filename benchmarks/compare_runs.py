"""How far two runs of the same experiment drift apart: the same science computed with two kernels (say
eager and `train.compile`), or a run against a reference.

Prints, per (n, seed) both experiments hold, the relative difference of the final weights (when both run
directories keep checkpoints), the first step at which f_mem differs, tau_mem (the fit's readout,
`onsets.onset_step`: the first step with f_mem >= --threshold, log-step interpolated) in each, the
largest |f_mem difference| over steps, the share of final samples whose nearest training point is the same,
and the classifier FD at the last step; then the same table between seeds of one experiment as the
yardstick of a run-to-run difference. A difference at the level of float
rounding shows as weights equal to ~1e-6 and identical f_mem; a chaotic divergence as weights that differ
by O(1) and f_mem curves that differ as much as two seeds do.

    python benchmarks/compare_runs.py /tmp/div/results/div_eager /tmp/div/results/div_compiled
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from machine import cpu_model, load

from diffmem.onsets import onset_step


def final_weights(run_dir: Path) -> dict[str, torch.Tensor] | None:
    ckpts = sorted(run_dir.glob("checkpoints/step*.pt"))
    if not ckpts:
        return None
    payload = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
    state = payload.get("model", payload) if isinstance(payload, dict) else payload
    return {k: v.float() for k, v in state.items() if torch.is_tensor(v)}


def weight_difference(a: Path, b: Path) -> float:
    wa, wb = final_weights(a), final_weights(b)
    if wa is None or wb is None or wa.keys() != wb.keys():
        return float("nan")
    num = sum(float((wa[k] - wb[k]).pow(2).sum()) for k in wa)
    den = sum(float(wa[k].pow(2).sum()) for k in wa)
    return (num / den) ** 0.5 if den else float("nan")


def row(label: str, ca: xr.Dataset, cb: xr.Dataset, sel_a: dict, sel_b: dict, dirs: tuple[Path, Path] | None,
        threshold: float) -> str:
    steps = ca["step"].values
    fa, fb = ca["f_mem"].sel(sel_a).values, cb["f_mem"].sel(sel_b).values
    differ = np.flatnonzero(fa != fb)
    first = f"{int(steps[differ[0]])}" if differ.size else "never"
    # the nearest training point is comparable only between runs on the same training subset
    same_nn = (f'{float(np.mean(ca["nearest_train"].sel(sel_a).isel(step=-1).values == cb["nearest_train"].sel(sel_b).isel(step=-1).values)):.3f}'
               if sel_a == sel_b else "-")
    fd = "fd_classifier" in ca and "fd_classifier" in cb
    fds = (f"{float(ca['fd_classifier'].sel(sel_a).isel(step=-1)):.1f} / "
           f"{float(cb['fd_classifier'].sel(sel_b).isel(step=-1)):.1f}") if fd else "-"
    dw = f"{weight_difference(*dirs):.3g}" if dirs else "-"
    return (f"| {label} | {dw} | {first} | {onset_step(steps, fa, threshold=threshold):.0f} / {onset_step(steps, fb, threshold=threshold):.0f} | "
            f"{np.max(np.abs(fa - fb)):.3f} | {fa[-1]:.3f} / {fb[-1]:.3f} | {same_nn} | {fds} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="results/<experiment> directory (cube.nc, runs/)")
    parser.add_argument("b", type=Path, help="the other experiment's directory")
    parser.add_argument("--threshold", type=float, default=0.1, help="f_mem level of tau_mem")
    args = parser.parse_args()
    ca = xr.open_dataset(args.a / "cube.nc", engine="h5netcdf").load()
    cb = xr.open_dataset(args.b / "cube.nc", engine="h5netcdf").load()
    if not np.array_equal(ca["step"].values, cb["step"].values):
        raise SystemExit("the two cubes have different step grids: not the same science")
    print(f"# {args.a.name} against {args.b.name} ({cpu_model()}, torch {torch.__version__}, load {load()})\n")
    head = ("| run | relative weight difference at the end | first step where f_mem differs | tau_mem a / b | "
            "max abs f_mem difference | final f_mem a / b | same nearest training point (final samples) | "
            "FD classifier, last step, a / b |")
    print(head)
    print("|" + "---|" * 8)
    ns = sorted(set(ca["n"].values) & set(cb["n"].values))
    seeds = sorted(set(ca["seed"].values) & set(cb["seed"].values))
    for n in ns:
        for s in seeds:
            sel = {"n": n, "seed": s}
            dirs = (args.a / "runs" / f"n{n}_seed{s}", args.b / "runs" / f"n{n}_seed{s}")
            print(row(f"n = {n}, seed {s}", ca, cb, sel, sel, dirs, args.threshold))
    print("\nYardstick, seed against seed within the first experiment (another training subset and init):\n")
    print(head)
    print("|" + "---|" * 8)
    for n in ns:
        for s, t in zip(seeds[:-1], seeds[1:]):
            print(row(f"n = {n}, seed {s} / {t}", ca, ca, {"n": n, "seed": s}, {"n": n, "seed": t}, None,
                      args.threshold))


if __name__ == "__main__":
    main()
