import os

import pytest
import torch

# Keep unit tests on one thread so two CI cores stay predictable.
torch.set_num_threads(1)
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A finished local run of tests/smoke_config.yaml (through the default workflow profile), shared
    read-only by the tests that dry-run against it, build its report or compare with it."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    workdir = tmp_path_factory.mktemp("smoke_run")
    shutil.copy(repo / "tests" / "smoke_config.yaml", workdir / "config.yaml")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
                           "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return workdir
