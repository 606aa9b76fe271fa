import contextlib
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


@pytest.fixture(autouse=True)
def _diffmem_logger():
    """Each test starts and ends with the `diffmem` logger as imported. `diffmem.cli.main` configures
    it (a handler on the stderr of that moment, no propagation), which would hide later tests' records
    from caplog and write to a closed capture."""
    import logging

    logger = logging.getLogger("diffmem")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


class Drawn:
    """The figures a figure module hands to its `save_figure`, by file name, after `watch(module)`.

    They are still written; what was drawn (axes, lines, collections, texts) stays readable after
    save_figure closes them. A module that did `from diffmem.figures.common import save_figure` keeps
    its own name for it, so each module under test is watched on its own."""

    def __init__(self, monkeypatch):
        self.figures = {}
        self._monkeypatch = monkeypatch

    def watch(self, module) -> dict:
        from pathlib import Path

        real = module.save_figure

        def save_figure(fig, path):
            self.figures[Path(path).name] = fig
            real(fig, path)

        self._monkeypatch.setattr(module, "save_figure", save_figure)
        return self.figures

    def __getitem__(self, name: str):
        return self.figures[name]

    @staticmethod
    @contextlib.contextmanager
    def as_a_new_process():
        """matplotlib's settings as a new `diffmem` process starts with, so that a redraw here matches the
        workflow's figure pixel for pixel: a test before may have left seaborn's theme, which also sets the
        one-letter colours ("k" is then dark grey) outside rcParams."""
        import matplotlib
        import matplotlib.colors

        codes = matplotlib.colors.colorConverter.colors
        before = {code: codes[code] for code in matplotlib.colors.BASE_COLORS}
        for code, rgb in matplotlib.colors.BASE_COLORS.items():
            codes[code] = rgb  # item by item: the mapping clears its cache on __setitem__
        try:
            with matplotlib.rc_context({k: v for k, v in matplotlib.rc_params().items() if k != "backend"}):
                yield
        finally:
            for code, rgb in before.items():
                codes[code] = rgb

    @staticmethod
    def same_pixels(a, b) -> bool:
        """Two PNG files decode to the same pixels (e.g. a workflow's figure and its redraw here)."""
        import matplotlib.image
        import numpy as np

        x, y = matplotlib.image.imread(a), matplotlib.image.imread(b)
        return x.shape == y.shape and bool(np.array_equal(x, y))


@pytest.fixture
def drawn(monkeypatch):
    return Drawn(monkeypatch)


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
