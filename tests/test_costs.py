"""Where the time goes: each job's cost line, Snakemake's benchmark files, and the per-stage table."""

import subprocess
import sys

import numpy as np
import pytest

from diffmem.costs import COST_PREFIX, format_table, job_costs, read_benchmark, read_cost_line, stage_costs
from diffmem.stages import costs as costs_stage

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(path, wall, rss, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t0\t{cpu}\n")


def test_a_job_logs_its_cost_with_its_start_up(tmp_path):
    """A real job: the cost line is the log's last line; start-up (imports) is part of the wall time."""
    np.savez(tmp_path / "dataset.npz", pool=np.zeros((20, 3), np.float32), test=np.zeros((4, 3), np.float32))
    proc = subprocess.run([sys.executable, "-m", "diffmem", "subsample", "--dataset", str(tmp_path / "dataset.npz"),
                           "--n", "5", "--seed", "0", "--out", str(tmp_path / "train.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "job.log").write_text(proc.stderr)
    assert COST_PREFIX in proc.stderr.strip().splitlines()[-1]
    cost = read_cost_line(tmp_path / "job.log")
    assert set(cost) == {"wall_s", "cpu_s", "startup_s", "peak_rss_mb"}
    assert 0 < cost["startup_s"] <= cost["wall_s"] < 120 and cost["cpu_s"] > 0 and cost["peak_rss_mb"] > 10


def test_a_failed_job_still_logs_its_cost(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "diffmem", "subsample", "--dataset", str(tmp_path / "missing.npz"),
                           "--n", "5", "--seed", "0", "--out", str(tmp_path / "train.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and COST_PREFIX in proc.stderr


def test_stage_table_sums_jobs_and_prefers_the_jobs_own_numbers(tmp_path):
    exp = tmp_path / "exp"
    bench(exp / "benchmarks/train/n8_seed0.tsv", 10.0, 300, 9.0)
    bench(exp / "benchmarks/train/n8_seed1.tsv", 20.0, 500, 19.0)
    bench(exp / "benchmarks/cube.tsv", 2.0, 100, "NA")  # a short job: Snakemake's poll saw nothing
    (exp / "logs/train").mkdir(parents=True)
    (exp / "logs/train/n8_seed0.log").write_text(f"x\n{COST_PREFIX} train wall_s=10.1 cpu_s=9.5 startup_s=2.0 peak_rss_mb=320.0\n")
    (exp / "logs/cube.log").write_text(f"{COST_PREFIX} cube wall_s=2.1 cpu_s=1.5 startup_s=1.0 peak_rss_mb=150.0\n")
    assert read_benchmark(exp / "benchmarks/cube.tsv") == {"wall_s": 2.0, "peak_rss_mb": 100.0}
    jobs = job_costs(exp)
    assert {j["job"] for j in jobs} == {"train/n8_seed0", "train/n8_seed1", "cube"}
    rows = {r["stage"]: r for r in stage_costs(jobs)}
    train, cube = rows["train"], rows["cube"]
    assert train["jobs"] == 2 and train["wall_s"] == 30.0  # Snakemake's wall clock
    assert train["cpu_s"] == pytest.approx(9.5 + 19.0)  # the log's exact CPU where there is one, else the poll's
    assert train["peak_rss_mb"] == 500.0 and train["startup_s"] == 2.0
    assert cube["cpu_s"] == 1.5 and cube["startup_share"] == pytest.approx(0.5)
    assert [r["stage"] for r in stage_costs(jobs)] == ["train", "cube"]  # most wall time first
    table = format_table(stage_costs(jobs), title="exp")
    assert table.splitlines()[-1].split()[:4] == ["total", "3", "32.0", "30.0"]


def test_costs_command_names_a_folder_without_benchmarks(tmp_path, capsys):
    with pytest.raises(SystemExit):
        costs_stage.main([str(tmp_path)])
    assert "has no benchmarks/ folder" in capsys.readouterr().err


def test_an_experiments_figures_are_one_job_of_the_plot_stage(tmp_path):
    """plot.smk's one job per experiment writes benchmarks/plot.tsv and logs/plot.log (its cost line read from
    there); the horizons figure's job (benchmarks/plot/horizons.tsv) is a second job of the same stage."""
    exp = tmp_path / "exp"
    bench(exp / "benchmarks/plot.tsv", 17.0, 250, 16.0)
    (exp / "logs").mkdir(parents=True)
    (exp / "logs/plot.log").write_text(f"x\n{COST_PREFIX} plot wall_s=17.1 cpu_s=17.2 startup_s=3.4 peak_rss_mb=252.0\n")
    (plot,) = stage_costs(job_costs(exp))
    assert (plot["stage"], plot["jobs"], plot["cpu_s"], plot["startup_s"]) == ("plot", 1, 17.2, 3.4)
    bench(exp / "benchmarks/plot/horizons.tsv", 3.0, 200, 2.5)
    jobs = job_costs(exp)
    assert sorted(j["job"] for j in jobs) == ["plot", "plot/horizons"]
    assert [(r["stage"], r["jobs"]) for r in stage_costs(jobs)] == [("plot", 2)]
