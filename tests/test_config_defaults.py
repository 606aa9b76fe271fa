"""One source per default: every dataclass default equals the schema's default for the same key.

Generic over the schema, so a key added later to a section (schema and dataclass) is checked too.
"""

from __future__ import annotations

import dataclasses

import pytest

from diffmem import config as cfg_module
from diffmem.config import SECTIONS, load_schema

SCHEMA = load_schema()
# Sections with a dataclass: <Section>Config in diffmem.config (resources has none: only Snakemake reads it).
CLASSES = {s: getattr(cfg_module, f"{s.capitalize()}Config") for s in SECTIONS if hasattr(cfg_module, f"{s.capitalize()}Config")}
# Schema keys that never reach a dataclass: resolved into another key by validate_config.
RESOLVED_AWAY = {("data", "psi_n")}  # -> data.n_train


def _properties(section: str) -> dict:
    return SCHEMA["$defs"][section]["properties"]


def _as_field_value(value):
    return tuple(value) if isinstance(value, list) else value  # _from_dict stores lists as tuples


def test_every_section_but_resources_has_a_dataclass():
    assert set(CLASSES) == set(SECTIONS) - {"resources"}


@pytest.mark.parametrize("section", sorted(CLASSES))
def test_dataclass_fields_are_the_schema_keys(section):
    fields = {f.name for f in dataclasses.fields(CLASSES[section])}
    keys = {k for k in _properties(section) if (section, k) not in RESOLVED_AWAY}
    assert fields == keys, f"only in the dataclass: {fields - keys}; only in the schema: {keys - fields}"


@pytest.mark.parametrize("section", sorted(CLASSES))
def test_dataclass_defaults_equal_schema_defaults(section):
    props = _properties(section)
    mismatches = []
    for field in dataclasses.fields(CLASSES[section]):
        has_default = field.default is not dataclasses.MISSING
        if "default" not in props[field.name]:
            # required in the schema (data.dataset, seeds) or filled by resolution (n_train from psi_n):
            # a dataclass default would be a second, unchecked source
            if has_default and field.name not in ("n_train", "seeds"):
                mismatches.append(f"{field.name}: dataclass default {field.default!r}, schema has none")
            continue
        want = _as_field_value(props[field.name]["default"])
        if not has_default:
            mismatches.append(f"{field.name}: schema default {want!r}, the dataclass has none")
        elif field.default != want or isinstance(field.default, bool) != isinstance(want, bool):  # 0 == False
            mismatches.append(f"{field.name}: dataclass {field.default!r} != schema {want!r}")
    assert not mismatches, f"{section}: " + "; ".join(mismatches)


def test_the_check_catches_a_drifted_default(monkeypatch):
    """The comparison above fails when a dataclass default moves away from the schema's."""
    drifted = dataclasses.make_dataclass("ScoreConfig", [("ratio_threshold", float, dataclasses.field(default=0.5)),
                                                         ("num_bootstrap", int, dataclasses.field(default=200)),
                                                         ("chunk_size", int, dataclasses.field(default=1024)),
                                                         ("device", str, dataclasses.field(default="cpu"))])
    monkeypatch.setitem(CLASSES, "score", drifted)
    with pytest.raises(AssertionError, match=r"ratio_threshold: dataclass 0.5 != schema 0.333"):
        test_dataclass_defaults_equal_schema_defaults("score")
