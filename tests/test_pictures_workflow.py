"""End-to-end: the smoke config with data.twin on builds the twin runs through the ordinary rules,
the per-run twin.nc, the twin / copy variables in the cube, the galleries and the copies and twin figures,
and `diffmem summary` reads the result. About a minute on two cores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from diffmem.data import load_train
from diffmem.config import TWIN_SEED_OFFSET

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.snakemake


def test_twin_smoke_run(tmp_path):
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
        assert (root / f"twin/state/n{n}_seed{TWIN_SEED_OFFSET}").is_dir()  # trained by the ordinary rule
    with xr.open_dataset(root / "cube.nc", engine="h5netcdf") as cube:
        assert cube["twin_closer"].dims == ("n", "seed", "step")
        assert cube["twin_distance"].dims == ("n", "seed", "step", "sample")
        assert float(cube["twin_distance"].min()) > 0  # different models (own seeds): never identical samples
        assert cube["copy_count"].dims == ("n", "seed", "train_index")
        assert cube["copy_count"].attrs["long_name"]
    for name in ("gallery/n8_seed0", "gallery/n16_seed0", "copies", "twin"):
        assert (root / "figures" / f"{name}.png").stat().st_size > 5000
    out = subprocess.run([sys.executable, "-m", "diffmem.cli", "summary", str(root)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "twin models" in out.stdout and "tau_mem" in out.stdout
