"""An image-folder dataset through the real Snakemake workflow with the U-Net (about a minute)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import yaml
from PIL import Image
from test_figures import check_experiment_figures
from test_workflow import REPO, snakemake, write_config

from diffmem.checkpoint import DATA_OFFSET, checkpoint_path, load_checkpoint
from diffmem.figures import experiment
from diffmem.fitfile import read_fit

pytestmark = pytest.mark.snakemake


def write_digits_png(folder, *, count: int = 300) -> np.ndarray:
    """scikit-learn's digits as 16x16 grayscale PNGs (each pixel doubled), one folder per class."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images[:count] * 255 / 16).astype(np.uint8)  # [count, 8, 8]
    for i, (img, label) in enumerate(zip(images, bunch.target[:count])):
        path = folder / str(label) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.kron(img, np.ones((2, 2), dtype=np.uint8))).save(path)
    return images


def test_png_folder_through_the_workflow(tmp_path, drawn):
    write_digits_png(tmp_path / "digits_png")
    cfg = yaml.safe_load((REPO / "tests" / "smoke_images.yaml").read_text())
    cfg["experiments"]["png"]["data"]["path"] = str(tmp_path / "digits_png")
    write_config(tmp_path, cfg)
    snakemake(tmp_path)
    exp = tmp_path / "results" / "png"
    with np.load(exp / "data" / "dataset.npz") as f:
        assert tuple(f["image_shape"]) == (1, 8, 8) and f["pool"].shape == (200, 64)
        assert -1 <= f["pool"].min() and f["pool"].max() <= 1
    # train.center: every checkpoint carries its run's per-channel training mean, added back to its samples
    with np.load(exp / "runs" / "n16_seed0" / "train.npz") as f:
        mean = float(f["x"].mean())
    ckpt = load_checkpoint(checkpoint_path(exp / "runs" / "n16_seed0" / "checkpoints", 40))
    assert ckpt[DATA_OFFSET].shape == (1, 8, 8) and np.allclose(ckpt[DATA_OFFSET].numpy(), mean, atol=1e-6)
    with xr.open_dataset(exp / "cube.nc", engine="h5netcdf") as cube:
        assert list(cube["n"].values) == [16, 32] and cube["ratio"].dims == ("n", "seed", "step", "sample")
        assert np.isfinite(cube["f_mem"].values).all() and "fd_data" in cube
    # the overview shows the cube and the fit: redrawn here on its own, the same pixels as the plot job's file
    cube, fit = xr.load_dataset(exp / "cube.nc", engine="h5netcdf"), read_fit(exp / "fit.nc")
    figs = drawn.watch(experiment)
    with drawn.as_a_new_process():
        experiment.make_figures(cube, fit, tmp_path / "redrawn", title="png", only={"overview"})
    assert drawn.same_pixels(tmp_path / "redrawn" / "overview.png", exp / "figures" / "overview.png")
    check_experiment_figures(figs, cube, fit, only={"overview.png"})
