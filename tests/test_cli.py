"""The `diffmem` command: its version, its help and each command's, unknown commands, and its messages
(`logging` to stderr with timestamps; -q for warnings only, -v for debug)."""

from __future__ import annotations

import ast
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import diffmem
from diffmem import cli, names
from diffmem.fitfile import read_fit

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def run_diffmem(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffmem", *args], capture_output=True, text=True, timeout=120)


def levels(stderr: str) -> list[str]:
    """The level of every log line (the format: date time LEVEL logger: message)."""
    lines = stderr.splitlines()
    for line in lines:
        assert TIMESTAMP.match(line), line
    return [line.split()[2] for line in lines]


def test_version():
    proc = run_diffmem("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"diffmem {diffmem.__version__}"


def test_help_is_short_and_lists_every_command():
    proc = run_diffmem("--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) < 45
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.strip()]
    assert set(cli.COMMANDS) <= set(listed), set(cli.COMMANDS) - set(listed)


def test_an_unknown_command_exits_2_in_one_line_naming_it():
    proc = run_diffmem("fitt", "--cube", "x.nc")
    assert proc.returncode == 2
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("diffmem: error:") and "'fitt'" in line


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_is_short(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage: diffmem")
    assert len(lines) <= 35, "\n".join(lines)
    # the options (or sub-commands) come within the first ~15 lines, not after the module docstring
    assert any(line.startswith(("options:", "positional arguments:")) for line in lines[:15]), "\n".join(lines)


def test_stage_help_is_its_docstring_first_paragraph(capsys):
    from diffmem.stages import train

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert train.__doc__.split("\n\n")[0] in out
    assert train.__doc__.split("\n\n")[1] not in out


def _noisy(argv: list[str]) -> None:
    log = logging.getLogger("diffmem.stages.noisy")
    log.debug("a debug line")
    log.info("an info line")
    log.warning("a warning line")


# the last INFO is the job's cost line (diffmem.costs), which `diffmem costs` reads from the log
@pytest.mark.parametrize("flags, shown", [([], ["INFO", "WARNING", "INFO"]), (["-q"], ["WARNING"]),
                                          (["-v"], ["DEBUG", "DEBUG", "INFO", "WARNING", "INFO"]),
                                          (["-qq"], [])])
def test_quiet_and_verbose_set_the_level(flags, shown, monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "noisy", ("a command that logs at every level", lambda: _noisy))
    cli.main([*flags, "noisy"])
    out, err = capsys.readouterr()
    assert out == ""  # messages go to stderr; stdout is for what a command produces
    assert levels(err) == shown  # with -v, the command line itself comes first (diffmem.cli)
    if "-v" in flags:
        assert err.splitlines()[0].endswith("DEBUG   diffmem.cli: diffmem " + diffmem.__version__ + ": noisy")
    if shown:
        warning = next(i for i, line in enumerate(err.splitlines()) if "WARNING" in line)
        assert err.splitlines()[warning].endswith("WARNING diffmem.stages.noisy: a warning line")
        assert all("diffmem cost: noisy wall_s=" in line for line in err.splitlines()[warning + 1:])


def test_check_config_prints_json_and_logs_only_with_v(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("experiments: {e: {data: {dataset: gaussian, dim: 4, n_train: [16], seeds: [0]}}}\n")
    proc = run_diffmem("check-config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["experiments"]["e"]["data"]["n_train"] == [16]
    assert proc.stderr == ""
    proc = run_diffmem("-v", "check-config", str(config))
    assert proc.returncode == 0 and json.loads(proc.stdout)
    assert set(levels(proc.stderr)) == {"DEBUG"} and "diffmem.cli: diffmem" in proc.stderr


def fit_args(tmp_path) -> list[str]:
    """`diffmem fit`'s arguments for a small cube: f_mem steps to 0.5 at step 10 n."""
    steps = np.array([0, 10, 30, 100, 300, 1000])
    n = np.array([16, 32, 64])
    f_mem = np.where(steps[None, None, :] >= 10 * n[:, None, None], 0.5, 0.0).repeat(2, axis=1)
    cube = xr.Dataset({names.F_MEM: ((names.N, names.SEED, names.STEP), f_mem)},
                      coords={names.N: n, names.SEED: [0, 1], names.STEP: steps})
    cube.to_netcdf(tmp_path / "cube.nc", engine="h5netcdf")
    return ["--cube", str(tmp_path / "cube.nc"), "--fit-cfg", json.dumps({"num_bootstrap": 10}),
            "--out", str(tmp_path / "fit.nc")]


def test_a_stage_logs_its_results_with_timestamps_and_q_silences_them(tmp_path, capsys):
    args = ["fit", *fit_args(tmp_path)]
    cli.main(args)
    out, err = capsys.readouterr()
    assert out == "" and set(levels(err)) == {"INFO"}
    assert "INFO    diffmem.stages.fit: final f_mem n=16: 0.500" in err
    assert "[fit]" not in err  # the logger's name says where a line comes from
    cli.main(["-q", *args])
    assert capsys.readouterr() == ("", "")


def test_a_stage_run_as_a_module_logs_under_its_name(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "diffmem.stages.fit", *fit_args(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and set(levels(proc.stderr)) == {"INFO"}
    assert "INFO    diffmem.stages.fit: final f_mem n=16: 0.500" in proc.stderr


def test_each_command_hides_dask_but_the_cube_and_scipy_stats_where_it_draws_with_seaborn():
    assert set(cli.LAZY_COMMANDS | cli.SEABORN_COMMANDS) <= set(cli.COMMANDS)
    assert cli.unused_modules("cube") == []
    assert cli.unused_modules("fit") == ["dask"]
    assert cli.unused_modules("plot") == ["dask", "scipy.stats", "scipy.cluster"]
    assert all("dask" in cli.unused_modules(command) for command in set(cli.COMMANDS) - {"cube"})


def test_no_diffmem_module_imports_what_the_seaborn_commands_hide():
    """The seaborn commands run with scipy.stats and scipy.cluster marked missing: a module of diffmem that needs
    them would fail there."""
    package = Path(diffmem.__file__).parent
    users = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            imported = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{alias.name}" for alias in node.names] if isinstance(node, ast.ImportFrom) else []
            if any(name == hidden or name.startswith(hidden + ".") for name in imported
                   for hidden in cli.SEABORN_OPTIONAL):
                users.append(str(path.relative_to(package)))
    assert not users


def test_hide_modules_marks_only_what_is_not_imported_and_xarray_then_leaves_dask_alone():
    code = ("import sys, importlib.util\n"
            "from diffmem.cli import hide_modules\n"
            "print(hide_modules(['json', 'dask']), importlib.util.find_spec('dask'))\n"
            "import numpy as np, xarray as xr\n"
            "print(float(xr.Dataset({'a': ('x', np.arange(3.0))})['a'].sum()), 'dask.array' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['dask'] None", "3.0 False"]


def test_a_command_run_as_its_own_process_hides_dask_and_writes_what_it_writes_in_process(tmp_path):
    """`diffmem fit` as a process marks dask missing; its fit equals the one written in this process, where
    xarray had dask."""
    (tmp_path / "own").mkdir()
    (tmp_path / "in").mkdir()
    proc = run_diffmem("-v", "fit", *fit_args(tmp_path / "own"))
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG   diffmem.cli: marked missing for fit: dask" in proc.stderr
    cli.main(["fit", *fit_args(tmp_path / "in")])
    own, inside = (read_fit(tmp_path / where / "fit.nc") for where in ("own", "in"))
    assert own.equals(inside)
    for ds in (own, inside):  # when each was written
        del ds.attrs["date_created"], ds.attrs["history"]
    xr.testing.assert_identical(own, inside)


def test_quiet_imports_collects_nothing_while_importing_then_freezes_what_was_imported():
    import gc
    frozen = gc.get_freeze_count()
    try:
        with cli.quiet_imports():
            assert not gc.isenabled()
            made = [[i] for i in range(1000)]  # what an import would leave behind, alive
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(made)
        gc.disable()  # a process that runs without the collector keeps it off
        with cli.quiet_imports():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
