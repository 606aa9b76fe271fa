"""End-to-end: the smoke config with data.twin on builds the twin runs through the ordinary rules,
the per-run twin.nc, the twin / copy variables in the cube, the galleries and the copies and twin figures,
and `diffmem summary` reads the result. About a minute on two cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from test_figures import assert_curves, curves
from test_twin import check_twin_figure

from diffmem import names
from diffmem.cli import main as diffmem
from diffmem.config import TWIN_SEED_OFFSET
from diffmem.data import load_train
from diffmem.figures import copies, gallery, twin
from diffmem.figures.gallery import as_image

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.snakemake


def test_twin_smoke_run(tmp_path, drawn, monkeypatch):
    cfg = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    exp = cfg["experiments"]["smoke"]
    exp["data"]["twin"] = True
    exp["data"]["seeds"] = [0]
    exp["quality"]["feature_spaces"] = ["data"]
    cfg["results_dir"] = "results"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    root = tmp_path / "results" / "smoke"
    for n in (8, 16):
        own = load_train(root / f"runs/n{n}_seed0/train.npz")[1]
        twin = load_train(root / f"twin/runs/n{n}_seed{TWIN_SEED_OFFSET}/train.npz")[1]
        assert own.size == twin.size == n and np.intersect1d(own, twin).size == 0
        assert (root / f"twin/runs/n{n}_seed{TWIN_SEED_OFFSET}/checkpoints").is_dir()  # trained by the ordinary rule
    with xr.open_dataset(root / "cube.nc", engine="h5netcdf") as cube:
        assert cube["twin_closer"].dims == ("n", "seed", "step")
        assert cube["twin_distance"].dims == ("n", "seed", "step", "sample")
        assert float(cube["twin_distance"].min()) > 0  # different models (own seeds): never identical samples
        assert cube["copy_count"].dims == ("n", "seed", "train_index")
        assert cube["copy_count"].attrs["long_name"]
    monkeypatch.chdir(tmp_path)  # the sample manifests name their files relative to the workflow's folder
    check_pictures(root, tmp_path / "redrawn", drawn)
    out = subprocess.run([sys.executable, "-m", "diffmem.cli", "summary", str(root)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "twin models" in out.stdout and "tau_mem" in out.stdout


def check_pictures(root, redrawn, drawn) -> None:
    """The galleries, copies.png and twin.png show the run's numbers: redrawn here by the commands the
    workflow ran (the same pixels as its files), the samples in the galleries are the run's samples at
    the checkpoints named in the headers, the copy-count curves and the twin fractions are the cube's."""
    figs = {}
    for module in (gallery, copies, twin):
        figs = drawn.watch(module)
    runs = [root / f"runs/n{n}_seed0" for n in (8, 16)]
    with drawn.as_a_new_process():
        diffmem(["gallery", "--samples", *[str(r / "samples.json") for r in runs],
                 "--scores", *[str(r / "scores.nc") for r in runs], "--train", *[str(r / "train.npz") for r in runs],
                 "--fit", str(root / "fit.nc"), "--title", "smoke",
                 "--out", *[str(redrawn / f"gallery/{r.name}.png") for r in runs]])
    with drawn.as_a_new_process():
        diffmem(["copies-figure", "--cube", str(root / "cube.nc"),
                 "--runs", *[f"{n}:0:{r / 'train.npz'}" for n, r in zip((8, 16), runs)],
                 "--title", "smoke", "--out", str(redrawn / "copies.png")])
    with drawn.as_a_new_process():
        diffmem(["twin-figure", "--cube", str(root / "cube.nc"), "--title", "smoke", "--out", str(redrawn / "twin.png")])
    for name in ("gallery/n8_seed0", "gallery/n16_seed0", "copies", "twin"):
        assert drawn.same_pixels(redrawn / f"{name}.png", root / "figures" / f"{name}.png"), name
    cube = xr.load_dataset(root / "cube.nc", engine="h5netcdf")
    check_twin_figure(figs["twin.png"], cube)
    (ax,) = [ax for ax in figs["copies.png"].axes if ax.get_title() == "distribution of copy counts"]
    expected = []
    for n in cube[names.N].values:  # fraction of training points copied at least k times, k = 1 .. max
        c = cube[names.COPY_COUNT].sel({names.N: n}).values.ravel()
        c = c[np.isfinite(c)].astype(int)
        k = np.arange(1, max(int(c.max()), 1) + 1)
        expected.append((k, [(c >= v).mean() for v in k]))
    assert_curves(curves(ax), expected)
    for run in runs:
        fig = figs[f"{run.name}.png"]
        manifest = json.loads((run / "samples.json").read_text())
        scores = xr.load_dataset(run / "scores.nc", engine="h5netcdf")
        train, _, image_shape = load_train(run / "train.npz")
        # one header per column: "step S\n<why this checkpoint>\nf_mem = F" (the title is a figure text too)
        headers = [t.get_text() for t in fig.texts if t.get_text().startswith("step ")]
        steps = [int(h.split("\n")[0].removeprefix("step ")) for h in headers]
        assert steps and steps == sorted(steps)
        for j, (step, header) in enumerate(zip(steps, headers)):  # one panel per checkpoint, sample tiles even
            assert header.endswith(f"f_mem = {float(scores[names.F_MEM].sel({names.STEP: step})):.2f}")
            samples = np.load(manifest["files"][str(step)])
            for i in range(8):
                np.testing.assert_allclose(fig.axes[j].images[2 * i].get_array(),
                                           as_image(samples[i], image_shape, float(train.min()), float(train.max())))
