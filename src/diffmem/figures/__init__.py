"""Figures of diffmem's results: pure functions from cubes and fits to PNG files.

`common` holds what all share (`save_figure`, `plain_log_ticks`); `experiment` the figures of one
experiment (memorization, scaling, losses, quality); `gallery`, `copies` and `twin` the pictures of a
run; `sweep`, `rf` and `linear_exact` those of their stages. Figure modules import the library and
never a stage.
"""

import matplotlib

matplotlib.use("Agg")  # files only, no display: before any submodule imports pyplot
