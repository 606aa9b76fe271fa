"""Messages of the `diffmem` command: `logging` with timestamps, `-v` for debug, `-q` for warnings only.

Every module logs through `logging.getLogger(__name__)`; `configure` (called once by the CLI) sends
the `diffmem` loggers to stderr, which the Snakemake rules redirect into each job's log file. A stage
run as `python -m diffmem.stages.X` logs as `__main__`; `configure` shows its lines under its module's
name too.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def level_of(verbosity: int) -> int:
    """INFO at 0; each -v one level down (DEBUG), each -q one level up (WARNING, ERROR)."""
    return min(max(logging.INFO - 10 * verbosity, logging.DEBUG), logging.CRITICAL)


class _MainAsModule(logging.Filter):
    """Names the records of the `__main__` logger after the module run with `python -m`."""

    def __init__(self, module: str) -> None:
        super().__init__()
        self.module = module

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "__main__":
            record.name = self.module
        return True


def configure(verbosity: int = 0, stream=None) -> None:
    """Route the `diffmem` loggers to `stream` (stderr) at the level of `verbosity`, replacing a previous call's."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt=DATE_FORMAT))
    names = ["diffmem"]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith("diffmem."):  # python -m diffmem.stages.X
        handler.addFilter(_MainAsModule(spec.name))
        names.append("__main__")
    for name in names:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level_of(verbosity))
        logger.propagate = False
