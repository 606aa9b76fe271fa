"""The docs: mkdocs builds them in strict mode, the configuration reference covers every key of the
schema with its default, and the README stays a front door whose commands and links work.

Run: python -m pytest tests/test_docs.py
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from diffmem.config import load_schema
from diffmem.config_docs import reference_markdown

REPO = Path(__file__).resolve().parents[1]
INSTALL_COMMAND = "pip install torch==2.13.0 -e . && snakemake --cores all"
TEST_COMMAND = 'pip install torch==2.13.0 -e ".[test]" && python -m pytest'
README_MAX_LINES = 260
MARKER = "<!-- config-reference -->"


def _resolve(node: dict, root: dict) -> dict:
    ref = node.get("$ref")
    if ref is None:
        return node
    target = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def schema_keys() -> list[tuple[str, dict]]:
    """(dotted key, its resolved schema) for the top-level keys and every key of every section."""
    root = load_schema()
    keys = [(key, _resolve(node, root)) for key, node in root["properties"].items()]
    experiment = _resolve(root["$defs"]["experiment"], root)
    for section, node in experiment["properties"].items():
        for key, sub in _resolve(node, root).get("properties", {}).items():
            keys.append((f"{section}.{key}", _resolve(sub, root)))
    return keys


def reference_row(markdown: str, key: str) -> list[str]:
    """The cells of the reference table's row for `key`."""
    rows = [line for line in markdown.splitlines() if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, f"expected one row for {key}, found {len(rows)}"
    return [cell.strip() for cell in rows[0].strip("|").split(" | ")]


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, site


def test_mkdocs_builds_strict_without_warnings(built_site):
    proc, site = built_site
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    assert (site / "index.html").is_file()
    # the hooks folder and issue 11's data stay out of the site
    assert not (site / "hooks").exists()
    assert not (site / "issue11").exists()


def test_built_configuration_page_holds_every_schema_key(built_site):
    proc, site = built_site
    assert proc.returncode == 0, proc.stdout + proc.stderr
    html = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert MARKER not in html, "the hook did not replace the marker"
    missing = [key for key, _ in schema_keys() if f"<td><code>{key}</code></td>" not in html]
    assert not missing, f"configuration page lacks rows for {missing}"
    # a section is one table: its keys are there with the section name in front
    assert "<td><code>train.lr</code></td>" in html
    assert "<td><code>score.ratio_threshold</code></td>" in html


def test_reference_shows_every_schema_default():
    markdown = reference_markdown()
    keys = schema_keys()
    assert len(keys) > 100  # every section's keys, not only the top level
    for key, node in keys:
        cells = reference_row(markdown, key)
        assert len(cells) == 4, cells
        if "default" in node:
            default = node["default"]
            shown = default if isinstance(default, str) else json.dumps(default)
            assert cells[2] == f"`{shown}`", (key, cells)
        else:
            assert cells[2] == "—", (key, cells)
    assert reference_row(markdown, "train.lr")[2] == "`0.001`"
    assert reference_row(markdown, "data.n_test")[2] == "`297`"
    assert reference_row(markdown, "fit.tau_mem_levels")[2] == "`[0.01, 0.05, 0.1, 0.3, 0.5]`"


def test_reference_resolves_refs_and_describes_types():
    markdown = reference_markdown()
    # data.n_train is a $ref to positive_int_list, with its own description beside the $ref
    n_train = reference_row(markdown, "data.n_train")
    assert n_train[1].startswith("list of integer (≥ 1)"), n_train
    assert "Training-set sizes n" in n_train[3]
    assert reference_row(markdown, "train.optimizer")[1] == "one of `adam`, `sgd`"
    assert "$ref" not in markdown
    for section in ("data", "model", "train", "sample", "score", "fit", "quality", "resources"):
        assert f"\n### {section}\n" in markdown


def _load_hook():
    path = REPO / "docs" / "hooks" / "config_reference.py"
    spec = importlib.util.spec_from_file_location("config_reference_hook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hook_fills_the_marker_only_on_the_configuration_page():
    hook = _load_hook()
    config_page = SimpleNamespace(file=SimpleNamespace(src_uri="configuration.md"))
    other_page = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    filled = hook.on_page_markdown(f"# Configuration\n\n{MARKER}\n", page=config_page, config={}, files=[])
    assert MARKER not in filled
    assert "| `train.lr` |" in filled
    untouched = f"text\n{MARKER}\n"
    assert hook.on_page_markdown(untouched, page=other_page, config={}, files=[]) == untouched
    with pytest.raises(ValueError, match="lost its marker"):
        hook.on_page_markdown("# Configuration\n", page=config_page, config={}, files=[])


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["strict"] is True
    assert config["docs_dir"] == "docs"

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            if isinstance(value, list):
                yield from pages(value)
            else:
                yield value

    in_nav = set(pages(config["nav"]))
    docs = REPO / "docs"
    on_disk = {
        p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if p.relative_to(docs).parts[0] not in ("hooks", "issue11")
    }
    assert on_disk, "no pages under docs/"
    assert on_disk == in_nav, (sorted(on_disk - in_nav), sorted(in_nav - on_disk))


def test_readme_is_a_short_front_door():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    assert INSTALL_COMMAND in lines, "the install-and-run command must stand on its own line, verbatim"
    assert TEST_COMMAND in lines, "the test command must stand on its own line, verbatim"


def test_readme_links_point_at_existing_files():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    relative = [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert "docs/digits_overview.png" in relative, "the headline figure is missing"
    assert len(relative) >= 10
    broken = [t for t in relative if not (REPO / t.split("#", 1)[0]).exists()]
    assert not broken, f"README.md links to missing files: {broken}"


def test_no_docs_file_is_ignored_by_git():
    """Every file of docs/ is one git tracks: an ignore rule meant for the pipeline's results/ once hid
    docs/results/*.md, so the pages existed here and not in a fresh checkout (where CI runs)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = [str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr  # 1: nothing ignored
    assert proc.stdout.split() == [], f"ignored by .gitignore: {proc.stdout.split()}"
