"""The environments diffmem installs into: pyproject.toml, the lock CI installs from, the conda environment of
`--sdm conda`, and how a job finds diffmem (never through PATH).

No conda is reachable here (nor conda-forge), so the `--sdm conda` job runs with a stand-in for conda (a
shell script answering what Snakemake asks) whose environment's `python` holds the dependencies but not
diffmem; that the real file solves on conda-forge is not tested.

Run: python -m pytest tests/test_envs.py
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import diffmem

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
ENV_FILE = REPO / "envs" / "diffmem.yaml"
LOCK = REPO / "requirements" / "lock.txt"
SMOKE = REPO / "tests" / "smoke_config.yaml"
DATASET = "results_smoke/smoke/data/dataset.npz"  # prepare_data of the smoke config: one quick job
# PyPI name -> conda-forge name where they differ (conda-forge's dask, matplotlib, seaborn install more)
CONDA_NAMES = {"dask": "dask-core", "matplotlib": "matplotlib-base", "seaborn": "seaborn-base"}
NOT_IN_ENV = {"snakemake"}  # runs the jobs from outside the environment
CUDA_ONLY = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")
SYSTEM_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def runtime_requirements() -> list[Requirement]:
    return [Requirement(r) for r in project()["dependencies"]]


def env_entries() -> tuple[list[str], list[str]]:
    """(conda entries, pip entries) of envs/diffmem.yaml."""
    env = yaml.safe_load(ENV_FILE.read_text(encoding="utf-8"))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [e for d in env["dependencies"] if isinstance(d, dict) for e in d.get("pip", [])]
    return conda, pip


def conda_spec(entry: str) -> tuple[str, SpecifierSet]:
    """'numpy>=1.24,<3' -> ('numpy', SpecifierSet('>=1.24,<3')); conda's 'python=3.11' means 3.11.*."""
    name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", entry).groups()
    if re.fullmatch(r"=[^=]+", spec):
        spec = f"=={spec[1:]}.*"
    return canonicalize_name(name), SpecifierSet(spec)


def lock_pins() -> dict[str, str]:
    lines = [line.strip() for line in LOCK.read_text(encoding="utf-8").splitlines()]
    pins = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    return {canonicalize_name(name): version for name, version in pins.items()}


def dependency_dirs() -> list[str]:
    """Where this interpreter finds diffmem's dependencies: its site directories, less this checkout."""
    dirs = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    return [p for p in dict.fromkeys(dirs + site.getsitepackages()) if not Path(p).resolve().is_relative_to(REPO)]


def write_env_python(path: Path) -> Path:
    """A `python` like a conda environment's: the dependencies, but not diffmem. It runs this interpreter without
    `site` (so an editable install's .pth stays unread) with the site directories appended to PYTHONPATH, and
    records its arguments in calls.txt beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "$(dirname "$0")/calls.txt"\n'
        f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{os.pathsep.join(dependency_dirs())}" exec {shlex.quote(sys.executable)} -S "$@"\n'
    )
    path.chmod(0o755)
    return path


def system_path() -> str:
    """A PATH of the system's directories, without this interpreter's bin/ and any with a `diffmem` script."""
    own = Path(sys.executable).parent.resolve()
    dirs = [d for d in SYSTEM_DIRS if Path(d).is_dir() and Path(d).resolve() != own and not (Path(d) / "diffmem").exists()]
    path = os.pathsep.join(dict.fromkeys(dirs))
    if shutil.which("bash", path=path) is None:
        pytest.skip(f"no bash on the system's PATH without {own}")
    return path


def write_stand_in_conda(base: Path) -> Path:
    """A stand-in for conda at base/bin/conda: answers Snakemake's checks, `env create --prefix P` writes a
    P/bin/python of `write_env_python`, and base/bin/activate puts an environment's bin/ first on PATH."""
    bin_dir = base / "bin"
    bin_dir.mkdir(parents=True)
    template = write_env_python(base / "template" / "python")
    (bin_dir / "activate").write_text('export PATH="$1/bin:$PATH"\n')
    conda = bin_dir / "conda"
    conda.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {shlex.quote(str(base / "calls.txt"))}\n'
        'case "$1" in\n'
        '  --version) echo "conda 25.1.0" ;;\n'
        f'  info) echo \'{{"conda_prefix": "{base}", "platform": "linux-64"}}\' ;;\n'
        '  config) echo \'{"get": {"channel_priority": "strict"}}\' ;;\n'
        "  clean) ;;\n"
        "  env)\n"
        '    while [ $# -gt 0 ]; do [ "$1" = --prefix ] && prefix="$2"; shift; done\n'
        f'    mkdir -p "$prefix/bin" && cp {shlex.quote(str(template))} "$prefix/bin/python" ;;\n'
        '  *) echo "stand-in conda: unexpected: $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    conda.chmod(0o755)
    return bin_dir


def run_snakemake(workdir: Path, path: str, *args: str) -> subprocess.CompletedProcess:
    """`<this interpreter> -m snakemake` on the smoke config in workdir, with PATH=path and no PYTHONPATH."""
    shutil.copy(SMOKE, workdir / "config.yaml")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = path
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, timeout=300)


def test_env_file_installs_no_path():
    conda, pip = env_entries()
    for entry in conda + pip:  # Snakemake copies the file to .snakemake/conda/: a relative path would point there
        assert not entry.startswith(("-e", "--editable", ".", "/", "file:", "git+")), entry
        assert "/" not in entry and ".." not in entry, entry
    assert "diffmem" not in [conda_spec(e)[0] for e in conda + pip], "the env installs the dependencies, not diffmem"


def test_env_file_mirrors_the_runtime_dependencies():
    conda, pip = env_entries()
    in_env = dict(conda_spec(entry) for entry in conda + pip)
    expected = {}
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        if name not in NOT_IN_ENV:
            expected[CONDA_NAMES.get(name, name)] = req.specifier
    missing = sorted(set(expected) - set(in_env))
    assert not missing, f"envs/diffmem.yaml lacks {missing} of pyproject.toml"
    extra = sorted(set(in_env) - set(expected) - {"python", "pip"})
    assert not extra, f"envs/diffmem.yaml has {extra}, which pyproject.toml does not"
    differ = {name: (str(in_env[name]), str(spec)) for name, spec in expected.items() if in_env[name] != spec}
    assert not differ, f"bounds differ (envs/diffmem.yaml, pyproject.toml): {differ}"
    # torch comes from pip (PyPI's wheels), the rest from conda-forge
    assert [conda_spec(e)[0] for e in pip] == ["torch"]
    python = [e for e in conda if conda_spec(e)[0] == "python"]
    assert python, "envs/diffmem.yaml names no python"
    assert Version(python[0].split("=", 1)[1]) in SpecifierSet(project()["requires-python"])


def test_every_bounded_major_has_an_upper_bound():
    specs = {canonicalize_name(r.name): r.specifier for r in runtime_requirements()}
    specs |= {canonicalize_name(r.name): r.specifier for r in map(Requirement, project()["optional-dependencies"]["test"])}
    unbounded = [name for name, spec in specs.items() if not any(s.operator in ("<", "<=", "==", "~=") for s in spec)]
    assert not unbounded, f"no upper bound on {unbounded}"
    assert not specs["snakemake"].contains("10.0") and specs["snakemake"].contains("9.0")
    assert not specs["snakemake"].contains("8.20")  # the workflow uses Snakemake 9's update() flag


def test_lock_pins_every_requirement_within_its_bounds():
    pins = lock_pins()
    requirements = runtime_requirements() + [Requirement(r) for r in project()["optional-dependencies"]["test"]]
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not in {LOCK.name}: run python requirements/make_lock.py"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req.specifier}"
    cuda = sorted(name for name in pins if CUDA_ONLY.match(name))
    assert not cuda, f"CUDA-only packages in the lock tie it to one torch build: {cuda}"
    assert "diffmem" not in pins
    assert all("+" not in version for version in pins.values()), "a local label (2.13.0+cpu) matches one build only"


def test_ci_installs_from_the_lock_and_runs_the_readme_tests():
    pins = lock_pins()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = next(line for line in ci.splitlines() if "pip install" in line and not line.startswith("#"))
    assert command.endswith("&& python -m pytest -q"), command
    assert "-c requirements/lock.txt" in command
    torch = re.search(r"torch==(\S+)", command).group(1)
    assert torch == pins["torch"], "CI's torch and the lock's differ"
    assert f'pip install torch=={torch} -e ".[test]" && python -m pytest' in readme.splitlines()
    assert command.startswith("python -m pip install") and '-e ".[test]"' in command, command


def test_src_on_pythonpath_runs_diffmem_in_a_python_without_it(tmp_path):
    """What a job does in the conda environment: `PYTHONPATH=<checkout>/src python -m diffmem`, from elsewhere."""
    if any((Path(d) / "diffmem").is_dir() for d in dependency_dirs()):
        pytest.skip("diffmem is installed into site-packages (not editable): the environment's python would have it")
    python = write_env_python(tmp_path / "env" / "bin" / "python")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    without = subprocess.run([str(python), "-c", "import diffmem"], capture_output=True, text=True, env=env, cwd=elsewhere)
    assert without.returncode != 0 and "No module named 'diffmem'" in without.stderr, without.stderr
    env["PYTHONPATH"] = str(SRC)
    version = subprocess.run([str(python), "-m", "diffmem", "--version"], capture_output=True, text=True, env=env, cwd=elsewhere)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"diffmem {diffmem.__version__}"
    where = subprocess.run([str(python), "-c", "import diffmem; print(diffmem.__file__)"], capture_output=True, text=True,
                           env=env, cwd=elsewhere)
    assert Path(where.stdout.strip()) == SRC / "diffmem" / "__init__.py"


@pytest.mark.snakemake
def test_a_job_finds_diffmem_without_path(tmp_path):
    """`python -m snakemake` with the system's PATH, which lacks this interpreter's bin/ and any `diffmem`: the job
    calls diffmem through this interpreter."""
    path = system_path()
    assert shutil.which("diffmem", path=path) is None
    workdir = tmp_path / "wf"
    workdir.mkdir()
    proc = run_snakemake(workdir, path, DATASET)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert (workdir / DATASET).is_file()  # `diffmem` in the command is the prefix's function: this interpreter -m diffmem


@pytest.mark.snakemake
def test_a_job_under_sdm_conda_imports_diffmem_from_the_checkout(tmp_path):
    """`--sdm conda`: the job runs `PYTHONPATH=<checkout>/src... python -m diffmem` with the environment's python,
    which has no diffmem of its own."""
    if any((Path(d) / "diffmem").is_dir() for d in dependency_dirs()):
        pytest.skip("diffmem is installed into site-packages (not editable): the environment's python would have it")
    conda_bin = write_stand_in_conda(tmp_path / "conda")
    path = os.pathsep.join([str(conda_bin), system_path()])
    workdir = tmp_path / "wf"
    workdir.mkdir()

    dry = run_snakemake(workdir, path, DATASET, "--dry-run", "--sdm", "conda")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-5000:]

    proc = run_snakemake(workdir, path, DATASET, "--sdm", "conda")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert (workdir / DATASET).is_file()
    envs = [p for p in (workdir / ".snakemake" / "conda").iterdir() if p.is_dir()]
    assert len(envs) == 1, envs
    # the environment's own python ran the job (not this interpreter), with the checkout's src/ first on its path
    calls = (envs[0] / "bin" / "calls.txt").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("-m diffmem prepare-data --data"), calls
    # Snakemake copied the env file next to the environment, where `..` would have been .snakemake/
    assert (envs[0].parent / f"{envs[0].name}.yaml").read_text() == ENV_FILE.read_text()
