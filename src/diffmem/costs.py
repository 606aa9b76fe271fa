"""What each job of a run costs, and where an experiment's time goes, stage by stage.

Two records per job:
- Snakemake's `benchmark:` file (`results/<exp>/benchmarks/<stage>/...tsv`, beside the job's log):
  wall seconds exactly; CPU time and peak memory sampled by polling the job's processes (every 0.5 s
  for 30 s, then every 30 s), so a job shorter than a poll under-reports them.
- The job's own last line (`cost_line`, written by the `diffmem` command into the job's log): wall
  seconds since the process started, CPU seconds of the process and its children, peak resident
  memory, and its start-up: the time from the process start to the moment the stage began its work
  (interpreter, imports of torch and the stage, argument parsing), which repeats in every job.

`stage_costs` combines both per stage; `diffmem costs results/<exp>` prints the table.
"""

from __future__ import annotations

import csv
import os
import re
import resource
from pathlib import Path

COST_PREFIX = "diffmem cost:"
_FIELDS = ("wall_s", "cpu_s", "startup_s", "peak_rss_mb")
_started: dict[str, float] = {}


def process_age() -> float | None:
    """Seconds since this process started, to the kernel's clock tick (10 ms), from /proc; None where
    there is no /proc. (Uptime minus the process's start tick: both count from boot, so no wall-clock
    rounding enters, unlike the whole seconds of /proc/stat's boot time.)"""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)


def mark_stage_start() -> None:
    """Note that the stage begins its work now (stages.stage_parser calls it): what came before is start-up."""
    age = process_age()
    if age is not None:
        _started.setdefault("age", age)


def cost_line(command: str) -> str:
    """This process's cost so far, as the one line `read_cost_line` parses."""
    age = process_age()
    times = os.times()
    cpu = times.user + times.system + times.children_user + times.children_system
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    values = {
        "wall_s": age,
        "cpu_s": cpu,
        "startup_s": _started.get("age"),
        "peak_rss_mb": peak_kb / 1024,  # Linux reports kilobytes
    }
    return f"{COST_PREFIX} {command} " + " ".join(f"{k}={'NA' if v is None else f'{v:.3f}'}" for k, v in values.items())


def read_cost_line(log: str | Path) -> dict[str, float] | None:
    """The values of the last cost line in a job's log (None: no such line, e.g. a job killed first)."""
    try:
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if COST_PREFIX in line]
    except OSError:
        return None
    if not lines:
        return None
    found = dict(re.findall(r"(\w+)=([0-9.]+|NA)", lines[-1].split(COST_PREFIX, 1)[1]))
    return {k: float(found[k]) for k in _FIELDS if found.get(k, "NA") != "NA"}


def read_benchmark(path: str | Path) -> dict[str, float]:
    """A Snakemake benchmark file's wall seconds, CPU seconds and peak RSS (MB); NA fields left out."""
    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh, delimiter="\t"))
    out = {}
    for key, name in (("s", "wall_s"), ("cpu_time", "cpu_s"), ("max_rss", "peak_rss_mb")):
        try:
            out[name] = float(row[key])
        except (KeyError, TypeError, ValueError):
            pass
    return out


def job_costs(experiment: str | Path) -> list[dict]:
    """One record per job of an experiment folder: its stage (the benchmark file's folder under
    benchmarks/, or its name for a once-per-experiment job), the benchmark values, and the job's own
    cost line where its log has one (exact CPU, peak memory and start-up)."""
    root = Path(experiment) / "benchmarks"
    jobs = []
    for tsv in sorted(root.rglob("*.tsv")):
        rel = tsv.relative_to(root)
        bench = read_benchmark(tsv)
        own = read_cost_line(Path(experiment) / "logs" / rel.with_suffix(".log")) or {}
        jobs.append({"stage": rel.parts[0] if len(rel.parts) > 1 else rel.stem, "job": str(rel.with_suffix("")),
                     "wall_s": bench.get("wall_s", own.get("wall_s")),
                     "cpu_s": own.get("cpu_s", bench.get("cpu_s")),
                     "peak_rss_mb": own.get("peak_rss_mb", bench.get("peak_rss_mb")),
                     "startup_s": own.get("startup_s")})
    return jobs


def stage_costs(jobs: list[dict]) -> list[dict]:
    """Per stage, in order of wall time: jobs, summed wall and CPU seconds, the largest peak memory,
    summed start-up seconds and their share of the stage's wall time."""
    stages: dict[str, dict] = {}
    for job in jobs:
        row = stages.setdefault(job["stage"], {"stage": job["stage"], "jobs": 0, "wall_s": 0.0, "cpu_s": 0.0,
                                               "peak_rss_mb": 0.0, "startup_s": 0.0, "startup_known": 0})
        row["jobs"] += 1
        row["wall_s"] += job["wall_s"] or 0.0
        row["cpu_s"] += job["cpu_s"] or 0.0
        row["peak_rss_mb"] = max(row["peak_rss_mb"], job["peak_rss_mb"] or 0.0)
        if job["startup_s"] is not None:
            row["startup_s"] += job["startup_s"]
            row["startup_known"] += 1
    for row in stages.values():
        row["startup_share"] = row["startup_s"] / row["wall_s"] if row["startup_known"] and row["wall_s"] else None
    return sorted(stages.values(), key=lambda r: -r["wall_s"])


def format_table(rows: list[dict], *, title: str) -> str:
    """The stage table as plain text, with a total row."""
    head = f"{'stage':<16}{'jobs':>6}{'wall s':>10}{'CPU s':>10}{'peak MB':>10}{'start-up s':>12}{'start-up':>10}"
    lines = [title, head, "-" * len(head)]

    def fmt(row: dict) -> str:
        share = "—" if row["startup_share"] is None else f"{100 * row['startup_share']:.0f} %"
        start = "—" if not row["startup_known"] else f"{row['startup_s']:.1f}"
        return (f"{row['stage']:<16}{row['jobs']:>6}{row['wall_s']:>10.1f}{row['cpu_s']:>10.1f}"
                f"{row['peak_rss_mb']:>10.0f}{start:>12}{share:>10}")

    lines += [fmt(row) for row in rows]
    total = {"stage": "total", "jobs": sum(r["jobs"] for r in rows), "wall_s": sum(r["wall_s"] for r in rows),
             "cpu_s": sum(r["cpu_s"] for r in rows), "peak_rss_mb": max((r["peak_rss_mb"] for r in rows), default=0.0),
             "startup_s": sum(r["startup_s"] for r in rows), "startup_known": sum(r["startup_known"] for r in rows)}
    total["startup_share"] = total["startup_s"] / total["wall_s"] if total["startup_known"] and total["wall_s"] else None
    lines += ["-" * len(head), fmt(total)]
    return "\n".join(lines)
