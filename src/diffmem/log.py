"""Messages of the `diffmem` command: `logging` with timestamps, `-v` for debug, `-q` for warnings only.

Every module logs through `logging.getLogger(__name__)`; `configure` (called once by the CLI) sends
the `diffmem` loggers to stderr, which the Snakemake rules redirect into each job's log file.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def level_of(verbosity: int) -> int:
    """INFO at 0; each -v one level down (DEBUG), each -q one level up (WARNING, ERROR)."""
    return min(max(logging.INFO - 10 * verbosity, logging.DEBUG), logging.CRITICAL)


def configure(verbosity: int = 0, stream=None) -> None:
    """Route the `diffmem` loggers to `stream` (stderr) at the level of `verbosity`, replacing a previous call's."""
    logger = logging.getLogger("diffmem")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt=DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level_of(verbosity))
    logger.propagate = False
