"""The configuration reference of the docs, generated from the JSON schema of config.yaml.

`reference_markdown()` renders one Markdown table per section of an experiment (data, model, train,
sample, score, fit, quality, resources) and one for the top-level keys: key, type or allowed values,
default, description, with every `$ref` resolved. The schema is the one source of each default, so
the docs cannot drift from it. The mkdocs hook `docs/hooks/config_reference.py` puts the result
where `docs/configuration.md` has the line `<!-- config-reference -->`; to print it:

    python -m diffmem.config_docs
"""

from __future__ import annotations

import json
from typing import Any

from diffmem.config import load_schema, resolve_ref

# the order of an experiment's sections in the reference (the schema's order too)
SECTION_ORDER = ("data", "model", "train", "sample", "score", "fit", "quality", "resources")


def _value(value: Any) -> str:
    """A value as config.yaml spells it (auto, null, true, [1, 2]), in code style."""
    return f"`{value if isinstance(value, str) else json.dumps(value)}`"


def _bounds(node: dict) -> str:
    parts = []
    for key, symbol in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            parts.append(f"{symbol} {json.dumps(node[key])}")
    return ", ".join(parts)


def type_text(node: dict, root: dict) -> str:
    """What a key accepts: its type with bounds, its allowed values, or its alternatives."""
    node = resolve_ref(node, root)
    if "enum" in node:
        return "one of " + ", ".join(_value(v) for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(type_text(alt, root) for alt in node["oneOf"])
    types = node.get("type")
    types = list(types) if isinstance(types, list) else [types] if types else []
    words = []
    for kind in types:
        if kind == "array":
            items = node.get("items")
            words.append(f"list of {type_text(items, root)}" if items else "list")
        elif kind == "object":
            names = node.get("propertyNames", {}).get("pattern")
            values = node.get("additionalProperties")
            word = "mapping"
            if isinstance(values, dict) and "$ref" in values:
                key = f"name matching `{names}`" if names else "name"
                word += f" of {key} to {values['$ref'].rsplit('/', 1)[-1]}"
            words.append(word)
        else:
            words.append(kind)
    text = " or ".join(words) if words else "any"
    bounds = _bounds(node)
    if bounds:
        text += f" ({bounds})"
    if "pattern" in node:
        text += f" matching `{node['pattern']}`"
    low, high = node.get("minItems"), node.get("maxItems")
    if low and low == high:
        text += f", exactly {low} items"
    elif low:
        text += f", at least {low} item{'s' if low > 1 else ''}"
    if high and high != low:
        text += f", at most {high} items"
    if node.get("uniqueItems"):
        text += ", no repeats"
    return text


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no raw HTML, no column breaks, no stray emphasis.

    Code spans (between backticks) are left as they are: Markdown shows them literally, and the
    table extension does not split a row at a `|` inside one.
    """
    pieces = text.split("`")
    for i in range(0, len(pieces), 2):  # the even pieces lie outside code spans
        pieces[i] = (
            pieces[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("*", "\\*")
        )
    return "`".join(pieces)


def _table(rows: list[tuple[str, dict]], root: dict) -> str:
    lines = ["| key | type / allowed values | default | description |", "|---|---|---|---|"]
    for key, node in rows:
        node = resolve_ref(node, root)
        default = _value(node["default"]) if "default" in node else "—"
        description = " ".join(str(node.get("description", "")).split())
        lines.append(f"| `{key}` | {_cell(type_text(node, root))} | {default} | {_cell(description)} |")
    return "\n".join(lines)


def reference_markdown() -> str:
    """The configuration reference as Markdown: the top-level keys, then one table per section."""
    root = load_schema()
    experiment = resolve_ref(root["$defs"]["experiment"], root)
    required = set(root.get("required", []))
    top_rows = []
    for key, node in root["properties"].items():
        if key == "experiments" and "description" not in node:
            node = {**node, "description": "One experiment per name, each with the sections below."}
        if key in required:
            node = {**node, "description": f"Required. {node.get('description', '')}".strip()}
        top_rows.append((key, node))
    out = [
        "### Top-level keys",
        "",
        _table(top_rows, root),
        "",
    ]
    sections = [s for s in SECTION_ORDER if s in experiment["properties"]]
    sections += [s for s in experiment["properties"] if s not in sections]
    for section in sections:
        node = resolve_ref(experiment["properties"][section], root)
        needed = node.get("required", [])
        out.append(f"### {section}")
        out.append("")
        where = f"Under `experiments.<name>.{section}`."
        if section in experiment.get("required", []):
            where += " This section is required."
        if needed:
            where += " Required keys: " + ", ".join(f"`{section}.{k}`" for k in needed) + "."
        out.append(where)
        out.append("")
        out.append(_table([(f"{section}.{key}", sub) for key, sub in node.get("properties", {}).items()], root))
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference_markdown())
