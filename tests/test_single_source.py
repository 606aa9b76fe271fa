"""Each fact declared once: every config default lives in the schema, thresholds and names in one module.

- The config dataclasses (diffmem.config) get their defaults from the schema (`schema_defaults`); their
  bodies hold no default of their own (tests/test_config_defaults.py checks the values agree).
- The stages and figures read settings from the config slice they get or from the file a stage wrote
  (f_mem's `ratio_threshold`, fit.nc's `tau_mem_threshold` ...), never from a literal copy of a schema
  default: no function default and no `.get(key, fallback)` there equals the schema's default of `key`.
  The numerical library's functions are general-purpose (usable without a config) and keep their
  own signatures' defaults; the stages always pass the config's values.
- The memorization ratio 1/3 is written only in the schema.
- No variable or dimension name is defined in two modules (diffmem.names holds them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from diffmem.config import SCHEMA

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffmem"
CONFIG_FACING = [p for p in PACKAGE.rglob("*.py") if p.parent.name in ("stages", "figures")] + [PACKAGE / "config.py"]


def schema_defaults() -> dict[str, set[str]]:
    """key -> repr of its default in every section that gives one (lists as tuples), None excluded."""
    out: dict[str, set[str]] = {}
    for section in SCHEMA["$defs"].values():
        for key, spec in section.get("properties", {}).items():
            if isinstance(spec, dict) and spec.get("default") is not None:
                value = spec["default"]
                out.setdefault(key, set()).add(repr(tuple(value) if isinstance(value, list) else value))
    return out


def literal(node):
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return None
    return tuple(value) if isinstance(value, list) else value


def restated_defaults(source: str, defaults: dict[str, set[str]]) -> list[str]:
    """Function defaults and .get fallbacks in `source` that equal the schema default of the same key."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                value = literal(default)
                if value is not None and repr(value) in defaults.get(arg.arg, ()):
                    found.append(f"line {node.lineno}: {node.name}({arg.arg}={value!r})")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)):
            value = literal(node.args[1])
            if value is not None and repr(value) in defaults.get(node.args[0].value, ()):
                found.append(f"line {node.lineno}: .get({node.args[0].value!r}, {value!r})")
    return found


def thirds(source: str) -> list[int]:
    """Lines where the code (not a comment or docstring) writes 1/3 or 0.333..."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and literal(node.left) == 1
                and literal(node.right) == 3):
            lines.append(node.lineno)
        if isinstance(node, ast.Constant) and isinstance(node.value, float) and abs(node.value - 1 / 3) < 1e-3:
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", CONFIG_FACING, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_stages_and_figures_do_not_restate_a_schema_default(path):
    found = restated_defaults(path.read_text(), schema_defaults())
    assert not found, f"{path.name} restates schema defaults: " + "; ".join(found)


def test_the_ratio_threshold_is_written_only_in_the_schema():
    found = {str(p.relative_to(PACKAGE)): thirds(p.read_text()) for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in found.items() if v} == {}
    assert SCHEMA["$defs"]["score"]["properties"]["ratio_threshold"]["default"] == pytest.approx(1 / 3)


def test_config_dataclasses_declare_no_default_of_their_own():
    tree = ast.parse((PACKAGE / "config.py").read_text())
    own = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Config")):
        decorated = any(isinstance(d, ast.Call) and getattr(d.func, "id", "") == "schema_defaults"
                        for d in cls.decorator_list)
        assert decorated, f"{cls.name} does not take its defaults from the schema"
        own += [f"{cls.name}.{stmt.target.id}" for stmt in cls.body
                if isinstance(stmt, ast.AnnAssign) and stmt.value is not None
                and stmt.target.id not in ("n_train", "seeds")]  # no schema default: the sizes are required
    assert not own, f"defaults declared in the dataclass instead of the schema: {own}"


def test_no_name_constant_is_defined_in_two_modules():
    """UPPER_CASE string constants naming variables or dimensions (e.g. DIM = "dim") live in diffmem.names."""
    seen: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id.isupper() and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)):
                seen.setdefault(f"{node.targets[0].id} = {node.value.value!r}", []).append(path.name)
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twice, twice


def test_the_checks_fire_on_planted_copies():
    defaults = schema_defaults()
    planted = ("def f(x, *, ci_level=0.95, chunk_size=7):\n    return x.attrs.get('tau_mem_threshold', 0.1)\n"
               "R = 1 / 3\n")
    assert restated_defaults(planted, defaults) == ["line 1: f(ci_level=0.95)", "line 2: .get('tau_mem_threshold', 0.1)"]
    assert thirds(planted) == [3]
