"""mkdocs hook: the configuration reference, generated from the schema when the docs are built.

Replaces the line `<!-- config-reference -->` of docs/configuration.md with
`diffmem.config_docs.reference_markdown()`, so the reference never falls behind
src/diffmem/schemas/config.schema.yaml. Registered under `hooks:` in mkdocs.yml.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from diffmem.config_docs import reference_markdown
except ImportError:  # building the docs from a checkout where diffmem is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from diffmem.config_docs import reference_markdown

MARKER = "<!-- config-reference -->"


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri != "configuration.md":
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/configuration.md lost its marker line {MARKER!r}")
    return markdown.replace(MARKER, reference_markdown(), 1)
