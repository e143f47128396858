"""Griffe extension for the API pages: read ppokit's ``Example:`` sections as examples.

ppokit's docstrings use the Google style with a singular ``Example:`` heading (the doctests
run with ``pytest --doctest-modules``). Griffe's Google parser only treats ``Examples:`` as a
section of code examples and renders ``Example:`` as a Markdown admonition, where the
``>>>`` lines would read as nested block quotes. This extension renames the heading before
parsing, so the examples render as Python code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename a docstring's ``Example:`` heading to ``Examples:``."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
