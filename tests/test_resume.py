"""resume.pt: a run stopped by SIGTERM / SIGUSR1 or saved on the timer continues exactly where it was."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import diffmem
from diffmem.checkpoint import (
    checkpoint_path,
    existing_steps,
    load_checkpoint,
    load_resume,
    partial_dir,
    resume_path,
)
from diffmem.config import ModelConfig, TrainConfig, checkpoint_grid
from diffmem.engine import Run, TrainingInterrupted, run_training, train_runs

MODEL = ModelConfig(width=16, depth=1, emb_dim=8)
POOL = np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32)
XT = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)
CPU = torch.device("cpu")
# keep: all, so every grid checkpoint keeps the optimizer and stream state these tests compare and resume from
SETTINGS = {"batch_size": 16, "checkpoints_per_decade": 2, "probe_size": 32, "lr": 3e-3, "log_every": 50, "keep": "all"}
MAX_STEPS = 300
BEFORE_151 = [0, 1, 3, 10, 32, 100]  # the grid checkpoints (two per decade) before step 151


def cfg(max_steps=MAX_STEPS, **extra):
    return TrainConfig(max_steps=max_steps, **{**SETTINGS, **extra})


def single(state_dir, *, seed=0, x=POOL[:40], log=lambda m: None, **extra):
    return run_training(x, XT, model_cfg=MODEL, train_cfg=cfg(**extra), seed=seed, state_dir=state_dir,
                        data_shape=(6,), device=CPU, log=log)


def group(dirs, *, log=lambda m: None, sizes=(40, 24), **extra):
    """The runs of `dirs` as one job, trained as one stack (train.stack; `stack="auto"` trains them in turn where
    the native kernel runs)."""
    runs = [Run(POOL[:n], seed, d) for seed, (n, d) in enumerate(zip(sizes, dirs))]
    extra = {"stack": len(dirs), **extra}
    return train_runs(runs, XT, model_cfg=MODEL, train_cfg=cfg(**extra), data_shape=(6,), device=CPU, log=log)


def stop_at(step, signum=signal.SIGTERM):
    """A log callback that sends `signum` to this process on the progress line of `step`.

    The line is printed after that step's resume check, so the run stops one step later.
    """
    def log(line):
        if re.search(rf"^step\s+{step}/", line):
            signal.raise_signal(signum)

    return log


def assert_same(a, b, *, atol=0.0, where="ckpt"):
    """Nested checkpoint contents agree: integer tensors and everything else exactly, floats to `atol`."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        if atol and a.is_floating_point():
            assert torch.allclose(a, b, rtol=0, atol=atol), where
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], atol=atol, where=f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, atol=atol, where=f"{where}[{i}]")
    elif atol and isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), where
    else:
        assert a == b, where


def final(state_dir, step=MAX_STEPS, *, without=()):
    ckpt = load_checkpoint(checkpoint_path(state_dir, step))
    return {k: v for k, v in ckpt.items() if k not in without}


def interrupted_at(run, step):
    """Call `run`, which must stop on a signal after `step`; return the TrainingInterrupted."""
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIG\w+ after step \d+.*rerun") as err:
        run()
    assert err.value.step == step
    return err.value


# ----------------------------------------------------------------------------- single path


@pytest.mark.parametrize(("signum", "extra"), [(signal.SIGTERM, {}),
                                                (signal.SIGUSR1, {"optimizer": "sgd", "ema_decay": 0.9})],
                         ids=["sigterm-adam", "sigusr1-sgd-ema"])
def test_stopped_run_resumes_to_the_uninterrupted_result(tmp_path, signum, extra):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    straight = single(tmp_path / "a", **extra)
    exc = interrupted_at(lambda: single(tmp_path / "b", log=stop_at(150, signum), **extra), 151)
    assert exc.signum == signum
    assert {s: signal.getsignal(s) for s in before} == before  # handlers put back after training
    assert load_resume(tmp_path / "b")["step"] == 151
    assert existing_steps(tmp_path / "b") == BEFORE_151  # nothing past the stop
    assert "metrics" not in load_resume(tmp_path / "b")

    lines = []
    resumed = single(tmp_path / "b", log=lines.append, **extra)
    assert any(f"resuming from step 151 ({resume_path(tmp_path / 'b')})" in line for line in lines)
    assert resumed == straight
    assert existing_steps(tmp_path / "b") == existing_steps(tmp_path / "a")
    assert_same(final(tmp_path / "a"), final(tmp_path / "b"))
    assert not resume_path(tmp_path / "b").exists()  # stale once the grid is complete


def test_corrupt_resume_file_falls_back_to_the_grid_checkpoint(tmp_path):
    single(tmp_path / "a")
    interrupted_at(lambda: single(tmp_path / "b", log=stop_at(150)), 151)
    path = resume_path(tmp_path / "b")
    path.write_bytes(path.read_bytes()[:100])
    lines = []
    single(tmp_path / "b", log=lines.append)
    assert any(f"ignoring resume file {path} is corrupt or unreadable" in line
               and "training continues from the grid checkpoints" in line for line in lines)
    assert any(f"resuming from step 100 ({checkpoint_path(tmp_path / 'b', 100)})" in line for line in lines)
    assert_same(final(tmp_path / "a"), final(tmp_path / "b"))
    assert not path.exists()


def test_resume_file_past_a_missing_grid_step_is_not_used(tmp_path):
    single(tmp_path / "a", checkpoints_per_decade=4)
    interrupted_at(lambda: single(tmp_path / "b", log=stop_at(150)), 151)
    # a shorter run finds its grid complete and keeps the longer run's resume state
    lines = []
    single(tmp_path / "b", max_steps=100, log=lines.append)
    assert load_resume(tmp_path / "b")["step"] == 151
    assert any("its step 151 is beyond max_steps 100" in line for line in lines)
    # a finer grid misses step 2 < 151: starting at 151 would skip it
    lines = []
    single(tmp_path / "b", checkpoints_per_decade=4, log=lines.append)
    assert any("resume.pt at step 151: after the missing grid step 2" in line for line in lines)
    assert any("resuming from step 1 (" in line for line in lines)
    assert existing_steps(tmp_path / "b") == existing_steps(tmp_path / "a")
    assert_same(final(tmp_path / "a"), final(tmp_path / "b"))


def test_training_off_the_main_thread_runs_without_signal_handlers(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    result, errors = {}, []

    def work():
        try:
            result.update(single(tmp_path, max_steps=10))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors and sorted(result) == [0, 1, 3, 10]
    assert signal.getsignal(signal.SIGTERM) is before


# ----------------------------------------------------------------------------- grouped path


def test_stopped_group_resumes_to_the_uninterrupted_result(tmp_path):
    straight = group([tmp_path / "a0", tmp_path / "a1"])
    dirs = [tmp_path / "b0", tmp_path / "b1"]
    interrupted_at(lambda: group(dirs, log=stop_at(150)), 151)
    for d in dirs:  # every member saved at the same step, nothing past it
        assert load_resume(d)["step"] == 151
        assert existing_steps(d) == BEFORE_151
    # a copy where member 1 lost its resume.pt: the members now start at different steps
    split = [tmp_path / "c0", tmp_path / "c1"]
    for src, dst in zip(dirs, split):
        shutil.copytree(src, dst)
    resume_path(split[1]).unlink()

    lines = []
    assert group(dirs, log=lines.append) == straight
    assert sum("resuming from step 151" in line and "resume.pt" in line for line in lines) == 2
    for a, b in zip([tmp_path / "a0", tmp_path / "a1"], dirs):
        assert_same(final(a), final(b))  # the same batched computation: exact
        assert not resume_path(b).exists()

    lines = []
    group(split, log=lines.append)
    assert sum("training 1 run from" in line for line in lines) == 2
    assert any("seed=0: resuming from step 151" in line for line in lines)
    assert any("seed=1: resuming from step 100" in line for line in lines)
    for a, c in zip([tmp_path / "a0", tmp_path / "a1"], split):
        # sub-groups of one run the single-model kernels: equal to float rounding of the batched ones
        assert_same(final(a), final(c), atol=1e-5)


def test_a_job_stopped_in_its_second_run_resumes_that_run_alone(tmp_path):
    """train.stack 1: the runs of a job train in turn; a stop during the second leaves the first finished."""
    straight = group([tmp_path / "a0", tmp_path / "a1"], stack=1)
    dirs = [tmp_path / "b0", tmp_path / "b1"]
    starts, stop = [], stop_at(150)

    def log(line):  # the stop, in the second run only
        starts.extend([line] if line.startswith("training 1 run") else [])
        if len(starts) == 2:
            stop(line)

    interrupted_at(lambda: group(dirs, stack=1, log=log), 151)
    assert existing_steps(dirs[0]) == existing_steps(tmp_path / "a0") and not resume_path(dirs[0]).exists()
    assert load_resume(dirs[1])["step"] == 151 and existing_steps(dirs[1]) == BEFORE_151
    lines = []
    assert group(dirs, stack=1, log=lines.append) == straight
    assert any("seed=0: every checkpoint of the grid exists" in line for line in lines)
    assert any("seed=1: resuming from step 151" in line for line in lines)
    for a, b in zip([tmp_path / "a0", tmp_path / "a1"], dirs):
        assert_same(final(a), final(b))


@pytest.mark.parametrize("first", ["grouped", "single"])
def test_resume_file_crosses_between_group_sizes(tmp_path, first):
    """A run stopped in a stack of two continues alone from its resume.pt, and the other way round."""
    extra = {"optimizer": "sgd", "ema_decay": 0.9}
    runs = {"single": lambda d, log: single(d, log=log, **extra),
            # the run is member 0 (seed 0, 40 points), beside a second run
            "grouped": lambda d, log: group([d, d.parent / f"{d.name}-other"], log=log, **extra)}
    then = "single" if first == "grouped" else "grouped"
    single(tmp_path / "ref", **extra)
    interrupted_at(lambda: runs[first](tmp_path / "run", stop_at(150)), 151)
    lines = []
    runs[then](tmp_path / "run", lines.append)
    assert any("seed=0: resuming from step 151" in line and "resume.pt" in line for line in lines)
    # part of the trajectory ran in batched kernels: equal to their float rounding (the configs differ in train.stack)
    assert_same(final(tmp_path / "ref", without=("config",)), final(tmp_path / "run", without=("config",)), atol=1e-5)


# ----------------------------------------------------------------------------- timer


@pytest.mark.parametrize("path", ["single", "grouped"])
def test_timer_writes_resume_state_during_training(tmp_path, path):
    dirs = [tmp_path / "b0", tmp_path / "b1"] if path == "grouped" else [tmp_path / "b"]
    grid = checkpoint_grid({"max_steps": 100, "checkpoints_per_decade": 2})
    saved_steps = []

    def log(line):
        match = re.search(r"resume state at step (\d+) saved", line)
        if match:
            step = int(match.group(1))
            saved_steps.append(step)
            assert all(load_resume(d)["step"] == step for d in dirs)  # on disk, for every member, now

    if path == "grouped":
        group([tmp_path / "a0", tmp_path / "a1"], max_steps=100)
        group(dirs, max_steps=100, resume_every_min=1e-6, log=log)
        pairs = zip([tmp_path / "a0", tmp_path / "a1"], dirs)
    else:
        single(tmp_path / "a", max_steps=100)
        single(dirs[0], max_steps=100, resume_every_min=1e-6, log=log)
        pairs = [(tmp_path / "a", dirs[0])]
    assert saved_steps and not set(saved_steps) & set(grid)  # grid steps already have a checkpoint
    assert saved_steps == sorted(saved_steps)
    for a, b in pairs:
        assert not resume_path(b).exists()  # deleted once the grid is complete
        # saving the resume state does not touch the trajectory
        assert_same(final(a, 100, without=("config",)), final(b, 100, without=("config",)))


# ----------------------------------------------------------------------------- CLI


def test_cli_stops_on_sigterm_without_metrics_and_reruns_to_the_same_result(tmp_path):
    dataset, train_npz = tmp_path / "dataset.npz", tmp_path / "train.npz"
    np.savez(dataset, pool=POOL, test=XT)
    np.savez(train_npz, x=POOL[:40], indices=np.arange(40))
    model = {"width": 16, "depth": 1, "emb_dim": 8}
    train = {**SETTINGS, "max_steps": 2000, "device": "cpu", "log_every": 100}
    out, root = tmp_path / "train_metrics.nc", tmp_path / "checkpoints"
    cmd = [sys.executable, "-m", "diffmem.stages.train", "--train", str(train_npz), "--dataset", str(dataset),
           "--model", json.dumps(model), "--train-cfg", json.dumps(train), "--seed", "0", "--checkpoints", str(root),
           "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(diffmem.__file__).resolve().parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])}

    log_path = tmp_path / "train.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and "diffmem.engine: step" not in log_path.read_text():
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log_path.read_text()
    assert rc == 128 + signal.SIGTERM, text
    assert "stopped by SIGTERM" in text and "rerun the same command to continue" in text
    assert not out.exists() and not root.exists()  # the run trains in checkpoints.partial until it finishes
    state_dir = partial_dir(root)
    stop_step = load_resume(state_dir)["step"]
    assert f"resume state at step {stop_step} saved to {resume_path(state_dir)}" in text
    assert 100 <= stop_step < 2000 and max(existing_steps(state_dir)) < stop_step

    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"resuming from step {stop_step} ({resume_path(state_dir)})" in proc.stderr
    assert out.exists() and not state_dir.exists() and not resume_path(root).exists()  # keep: all needs none
    single(tmp_path / "ref", max_steps=2000, log_every=100, device="cpu")
    assert_same(final(tmp_path / "ref", 2000), final(root, 2000))
